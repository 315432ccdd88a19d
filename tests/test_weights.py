"""Weights on disk: HF names, the tied head stored once, the same bytes from a model or a gathered state dict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from edulm.config import ModelConfig
from edulm.model import LlamaLM
from edulm.checkpoint.weights import TIED_HEAD, has_tied_head, load_weights, save_weights, without_tied_head


@pytest.mark.parametrize("tied", [True, False])
def test_a_gathered_state_dict_is_saved_like_the_model(tmp_path, tiny_model_config, tied):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "tie_embeddings": tied})
    torch.manual_seed(0)
    model = LlamaLM(cfg)
    assert has_tied_head(model) == tied
    save_weights(model, tmp_path / "model.safetensors")
    # What FSDP's full-state gathering hands the checkpoint writer: every name, the tied head included.
    gathered = {k: v.clone() for k, v in model.state_dict().items()}
    kept = {name: t.contiguous() for name, t in without_tied_head(gathered, tied).items()}
    save_file(kept, str(tmp_path / "gathered.safetensors"), metadata={"format": "pt"})
    assert TIED_HEAD in gathered  # the caller's dict is left as it was
    assert (tmp_path / "model.safetensors").read_bytes() == (tmp_path / "gathered.safetensors").read_bytes()
    assert (TIED_HEAD in load_file(str(tmp_path / "model.safetensors"))) == (not tied)

    torch.manual_seed(1)
    other = LlamaLM(cfg)
    load_weights(other, tmp_path / "gathered.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    if tied:
        assert other.lm_head.weight is other.model.embed_tokens.weight


def test_without_tied_head():
    state = {"model.embed_tokens.weight": torch.zeros(1), TIED_HEAD: torch.zeros(1)}
    assert set(without_tied_head(state, tied=True)) == {"model.embed_tokens.weight"}
    assert set(without_tied_head(state, tied=False)) == set(state)

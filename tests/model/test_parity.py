"""edulm logits equal transformers' LlamaForCausalLM logits on the same weights, both directions.

edulm -> transformers goes through ``edulm export`` and ``from_pretrained``; transformers -> edulm
through ``save_pretrained`` and ``edulm.hf.load_model``. fp32, max abs difference < 1e-4.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from edulm.config import ModelConfig
from edulm.hf import export, load_model

MAX_ABS_DIFF = 1e-4

TINY_SHAPES = {
    "tied-gqa": dict(tie_embeddings=True, n_kv_heads=2),
    "untied-mha": dict(tie_embeddings=False, n_kv_heads=4),
    "untied-mqa": dict(tie_embeddings=False, n_kv_heads=1),
}


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


def load_hf(folder):
    from transformers import LlamaForCausalLM

    model, info = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


@pytest.fixture(params=list(TINY_SHAPES))
def tiny_config(request, tiny_model_config) -> ModelConfig:
    return ModelConfig(**{**tiny_model_config.__dict__, **TINY_SHAPES[request.param]})


@pytest.mark.compat
def test_edulm_to_transformers(tiny_config, edulm_model, checkpoint_dir, tiny_tokenizer_dir, tmp_path):
    ours = edulm_model(tiny_config, seed=1)
    ckpt = checkpoint_dir(ours, tokenizer=str(tiny_tokenizer_dir))
    theirs = load_hf(export(ckpt, tmp_path / "hf"))
    ids = torch.randint(0, tiny_config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    assert max_abs_diff(logits_of(ours, ids), logits_of(theirs, ids)) < MAX_ABS_DIFF


@pytest.mark.compat
def test_transformers_to_edulm(tiny_config, hf_model, tmp_path):
    theirs = hf_model(tiny_config, seed=2)
    theirs.save_pretrained(str(tmp_path / "hf"))
    ours, resolved = load_model(tmp_path / "hf")
    assert resolved.kind == "hf" and resolved.model_config == tiny_config
    ids = torch.randint(0, tiny_config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    assert max_abs_diff(logits_of(ours, ids), logits_of(theirs, ids)) < MAX_ABS_DIFF


@pytest.mark.compat
def test_export_import_export_is_lossless(tiny_model_config, edulm_model, checkpoint_dir, tiny_tokenizer_dir, tmp_path):
    ckpt = checkpoint_dir(edulm_model(tiny_model_config, seed=3), tokenizer=str(tiny_tokenizer_dir))
    for dtype in ("float32", "bfloat16"):
        first = export(ckpt, tmp_path / f"first-{dtype}", dtype=dtype)
        second = export(first, tmp_path / f"second-{dtype}", dtype=dtype)
        a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
        assert a.keys() == b.keys()
        for name in a:
            assert a[name].dtype == b[name].dtype == getattr(torch, dtype)
            assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), name  # same bytes


@pytest.mark.slow
def test_135m_shape_both_directions(edulm_model, checkpoint_dir, tiny_tokenizer_dir, tmp_path):
    cfg = ModelConfig()  # 30 layers, d_model 576, 9 heads / 3 KV heads, tied, 49,152 vocab
    ours = edulm_model(cfg, seed=4)
    ckpt = checkpoint_dir(ours, tokenizer=str(tiny_tokenizer_dir))
    ids = torch.randint(0, cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    ours_logits = logits_of(ours, ids)
    del ours
    theirs = load_hf(export(ckpt, tmp_path / "exported"))
    theirs_logits = logits_of(theirs, ids)
    assert max_abs_diff(ours_logits, theirs_logits) < MAX_ABS_DIFF  # edulm -> transformers
    theirs.save_pretrained(str(tmp_path / "saved"))
    del theirs
    back, _ = load_model(tmp_path / "saved")
    assert max_abs_diff(logits_of(back, ids), theirs_logits) < MAX_ABS_DIFF  # transformers -> edulm


@pytest.mark.slow
@pytest.mark.compat
def test_real_smollm2_weights(smollm2):
    theirs, folder, tokenizer = smollm2
    ours, resolved = load_model(folder)
    assert resolved.model_config.n_layers == 30 and resolved.model_config.tie_embeddings
    ids = torch.tensor([tokenizer("Gravity is the force that pulls objects toward", add_special_tokens=False)["input_ids"]])
    assert max_abs_diff(logits_of(ours, ids), logits_of(theirs, ids)) < MAX_ABS_DIFF

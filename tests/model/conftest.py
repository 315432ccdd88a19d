"""Fixtures for the model tests: random models on both sides, checkpoint dirs (the real SmolLM2 weights: tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from edulm.checkpoint import folders as checkpoint
from edulm.config import Config, ModelConfig, RunConfig, TokenizerConfig, save_config
from edulm.model import LlamaLM
from edulm.base.layout import MODEL_FILE
from edulm.checkpoint.weights import save_weights

def _randomize_norms(model: torch.nn.Module, seed: int) -> None:
    """Random RMSNorm weights (init makes them all 1), so a mix-up between norms changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)


@pytest.fixture
def edulm_model() -> Callable[..., LlamaLM]:
    """Factory: an edulm model with random weights (norms included) in eval mode."""

    def make(cfg: ModelConfig, seed: int = 0) -> LlamaLM:
        torch.manual_seed(seed)
        model = LlamaLM(cfg).eval()
        _randomize_norms(model, seed)
        return model

    return make


@pytest.fixture
def hf_model():
    """Factory: a transformers LlamaForCausalLM with random weights and the architecture of an edulm config."""
    from transformers import LlamaForCausalLM

    from edulm.hf import to_hf_config

    def make(cfg: ModelConfig, seed: int = 0, std: float = 0.02):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(to_hf_config(cfg, initializer_range=std, bos_token_id=0, eos_token_id=0)).eval()
        _randomize_norms(model, seed)
        return model

    return make


@pytest.fixture
def checkpoint_dir(tmp_path) -> Callable[..., Path]:
    """Factory: an edulm checkpoint dir as the trainer writes one (model.safetensors + the run's config.yaml)."""

    def make(model: LlamaLM, tokenizer: str, step: int = 1) -> Path:
        run_dir = tmp_path / "run"
        cfg = Config(run=RunConfig(out_dir=str(run_dir)), model=model.config, tokenizer=TokenizerConfig(name=tokenizer))
        cfg.train.seq_len = min(cfg.train.seq_len, model.config.max_seq_len)
        save_config(cfg, run_dir / "config.yaml")
        folder = checkpoint.begin(run_dir, step)
        save_weights(model, folder / MODEL_FILE)
        save_config(cfg, folder / "config.yaml")
        return checkpoint.commit(folder, step)

    return make


TOKENIZER_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "A prime number has exactly two divisors: one and itself.",
    "Rivers carry sediment from mountains to the sea.",
] * 4


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A 320-token byte-level BPE tokenizer folder (fits the tiny model configs)."""
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    out = tmp_path_factory.mktemp("tiny-tokenizer")
    save_tokenizer(train_bpe(TOKENIZER_TEXTS, 320), out)
    return out

"""Fixtures of the Hugging Face interop tests: a tiny tokenizer, a run dir."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_helpers import TEXTS

from edulm.config import Config, RunConfig, TokenizerConfig, save_config


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A 320-token BPE tokenizer folder, as edulm saves one."""
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_bpe(TEXTS, 320), out)
    return out


@pytest.fixture
def run_dir(tmp_path, tiny_model_config, tokenizer_dir):
    """A run dir with its config.yaml and no checkpoints yet."""
    run = tmp_path / "run"
    cfg = Config(run=RunConfig(out_dir=str(run)), model=tiny_model_config, tokenizer=TokenizerConfig(name=str(tokenizer_dir)))
    cfg.train.seq_len = tiny_model_config.max_seq_len
    save_config(cfg, run / "config.yaml")
    return run

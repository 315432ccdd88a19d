"""Shared test set-up: offline, small, deterministic."""

from __future__ import annotations

import os

# Tests never reach a hub; set before transformers / datasets are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from edulm.config import ModelConfig

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def tiny_model_config() -> ModelConfig:
    """A 2-layer GQA model small enough to train in a test."""
    return ModelConfig(vocab_size=320, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=64)

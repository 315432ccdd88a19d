"""Helpers shared by the Hugging Face interop tests: checkpoints written the trainer's way, tiny models, logits."""

from __future__ import annotations

from pathlib import Path

import torch

from edulm.checkpoint import folders as checkpoint
from edulm.config import ModelConfig
from edulm.model import LlamaLM
from edulm.base.layout import MODEL_FILE
from edulm.checkpoint.weights import save_weights

TEXTS = ["Water boils at one hundred degrees.", "Cells divide by mitosis.", "The moon orbits the earth."] * 3
"""What the tiny test tokenizer is trained on."""

IDS = torch.arange(1, 17).unsqueeze(0) * 7 % 320
"""A (1, 16) batch of token ids inside the tiny vocabulary."""


def add_checkpoint(run: Path, model: LlamaLM, step: int) -> Path:
    """A checkpoint written the trainer's way (edulm.checkpoint.folders: temporary folder, manifest, rename)."""
    tmp = checkpoint.begin(run, step)
    save_weights(model, tmp / MODEL_FILE)
    (tmp / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    return checkpoint.commit(tmp, step)


def tiny_model(cfg: ModelConfig, seed: int = 0) -> LlamaLM:
    """A random edulm model in eval mode."""
    torch.manual_seed(seed)
    return LlamaLM(cfg).eval()


def logits(model, ids):
    """Logits of an edulm or a transformers model, without autograd."""
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)

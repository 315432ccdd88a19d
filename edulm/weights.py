"""Model weights on disk: one ``model.safetensors`` with Hugging Face Llama names.

Used by checkpoints and by export, so both hold byte-for-byte the same tensors. With tied
embeddings ``lm_head.weight`` is the embedding matrix and is not stored (transformers ties it
again on load), exactly as transformers itself saves a tied Llama.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edulm.layout import MODEL_FILE  # noqa: F401 (the weights' file name, re-exported for its readers)


def weights_state_dict(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's parameters under their HF names, contiguous, on CPU; tied ``lm_head.weight`` left out."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    out = {}
    for name, tensor in model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        t = tensor.detach().to("cpu")
        out[name] = (t.to(dtype) if dtype is not None else t).contiguous()
    return out


def save_weights(model: nn.Module, path: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the model's weights to ``path`` (a .safetensors file) with ``format: pt`` metadata."""
    save_file(weights_state_dict(model, dtype), str(path), metadata={"format": "pt"})


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a .safetensors file into ``model``; every parameter must be present and nothing else."""
    load_state(model, load_file(str(path)), path)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str | Path) -> None:
    """Load HF-named tensors into ``model``; every parameter must be present and nothing else
    (``ValueError`` naming ``where`` otherwise). A tied ``lm_head.weight`` in ``state`` is ignored."""
    model = getattr(model, "_orig_mod", model)
    tied = getattr(getattr(model, "config", None), "tie_embeddings", False)
    if tied:
        state.pop("lm_head.weight", None)  # HF folders may still carry the tied copy
    expected = {name for name in model.state_dict() if not (tied and name == "lm_head.weight")}
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{where}: weights do not fit the model (missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    model.load_state_dict(state, strict=False)

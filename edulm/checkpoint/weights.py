"""Model weights on disk: one ``model.safetensors`` with Hugging Face Llama names.

Used by checkpoints and by export, so both hold byte-for-byte the same tensors. With tied
embeddings ``lm_head.weight`` is the embedding matrix and is not stored (transformers ties it
again on load), exactly as transformers itself saves a tied Llama. That rule lives here only:
:func:`without_tied_head` applies it to any state dict, a model's own or one gathered from FSDP shards.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

TIED_HEAD = "lm_head.weight"
"""The output projection's name; with tied embeddings it is the embedding matrix and is never stored."""


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # torch.compile wraps the model


def has_tied_head(model: nn.Module) -> bool:
    """True when the model's config ties the output projection to the embeddings."""
    return bool(getattr(getattr(_unwrapped(model), "config", None), "tie_embeddings", False))


def without_tied_head(state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    """``state`` without ``lm_head.weight`` when ``tied`` (a new dict; ``state`` is left as it is)."""
    return {name: t for name, t in state.items() if not (tied and name == TIED_HEAD)}


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (its header unreadable, or the file shorter or longer than the
    header says), from the header alone; None when it is whole. Cheap: a truncated download or copy is named before
    any library meets it mid-load."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            length = int.from_bytes(f.read(8), "little")
            if size < 8 or length > size - 8:
                return f"{size:,} bytes, shorter than its own header"
            header = json.loads(f.read(length))
        end = max((entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        return f"unreadable header ({type(err).__name__})"
    if 8 + length + end != size:
        return f"{size:,} bytes where its header says {8 + length + end:,}"
    return None


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """The names of the model's floating-point tensors (this process's part, for a sharded model) that hold a NaN
    or an infinity: weights that must never be checkpointed or exported as a model."""
    bad = []
    for name, tensor in _unwrapped(model).state_dict().items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # FSDP2: this rank's shard
        if local.is_floating_point() and not bool(torch.isfinite(local).all()):
            bad.append(name)
    return bad


def weights_state_dict(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The model's parameters under their HF names, contiguous, on CPU; tied ``lm_head.weight`` left out."""
    model = _unwrapped(model)
    out = {}
    for name, tensor in without_tied_head(model.state_dict(), has_tied_head(model)).items():
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
    (``ValueError`` naming ``where`` otherwise). A tied ``lm_head.weight`` in ``state`` is ignored
    (HF folders may still carry the tied copy)."""
    model = _unwrapped(model)
    tied = has_tied_head(model)
    state = without_tied_head(state, tied)
    expected = set(without_tied_head(model.state_dict(), tied))
    missing, unexpected = expected - state.keys(), state.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{where}: weights do not fit the model (missing: {sorted(missing)[:5]}, unexpected: {sorted(unexpected)[:5]})"
        )
    model.load_state_dict(state, strict=False)

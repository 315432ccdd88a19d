"""What a training checkpoint holds, and putting it back.

Files inside ``checkpoints/step-N/`` (besides ``manifest.json``, see :mod:`edulm.checkpoint`):

- ``model.safetensors``: the weights, Hugging Face names (the same file an export holds).
- ``config.yaml``: the full resolved run config.
- ``optimizer.pt``: the AdamW state, keyed by parameter name (unsharded, so a run can resume on a
  different strategy, DDP or FSDP).
- ``trainer_state.json``: step, tokens, schedule length, batch geometry, counters and the totals
  the summary needs.
- ``rank-00000.pt`` (one per process): that process's data-loader position and every RNG state
  (python, numpy, torch CPU, CUDA).

Everything loads with ``torch.load(weights_only=True)``: only tensors and plain containers are stored.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edulm import checkpoint
from edulm.config import Config, save_config
from edulm.train.distributed import DistEnv, full_model_state, full_optimizer_state, load_optimizer_state
from edulm.weights import MODEL_FILE, has_tied_head, load_weights, save_state, save_weights

OPTIMIZER_FILE = "optimizer.pt"
TRAINER_STATE_FILE = "trainer_state.json"


def rank_file(rank: int) -> str:
    """Name of one process's loader + RNG file."""
    return f"rank-{rank:05d}.pt"


def capture_rng() -> dict[str, Any]:
    """Every RNG state of this process, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` recorded."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(
    run_dir: Path,
    step: int,
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    trainer_state: dict[str, Any],
    env: DistEnv,
    sharded: bool,
) -> Path | None:
    """Write the checkpoint of ``step`` atomically (every process takes part); returns its path on rank 0.

    ``sharded`` says the parameters are FSDP-sharded, so the full weights are gathered first.
    """
    tmp = checkpoint.begin(run_dir, step) if env.is_main else None
    env.barrier()  # the temporary folder exists before anyone writes into it
    tmp_path = env.broadcast(str(tmp) if tmp else None)
    torch.save({"loader": loader.state_dict(), "rng": capture_rng()}, Path(tmp_path) / rank_file(env.rank))
    # Gathering sharded state is a collective: every process calls it, rank 0 receives it.
    model_state = full_model_state(model) if sharded else None
    optim_state = full_optimizer_state(model, optimizer)
    final = None
    if env.is_main:
        if sharded:
            save_state(model_state, tmp / MODEL_FILE, tied=has_tied_head(model))
        else:
            save_weights(model, tmp / MODEL_FILE)
        torch.save(optim_state, tmp / OPTIMIZER_FILE)
        save_config(cfg, tmp / "config.yaml")
        (tmp / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    env.barrier()  # every rank file is on disk before the folder is sealed
    if env.is_main:
        final = checkpoint.commit(tmp, step)
    env.barrier()
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The ``trainer_state.json`` of a checkpoint."""
    return json.loads((Path(path) / TRAINER_STATE_FILE).read_text())


def load_model_weights(path: Path, model: nn.Module) -> None:
    """Weights of a checkpoint into an unwrapped model (before DDP/FSDP wrap it)."""
    load_weights(model, Path(path) / MODEL_FILE)


def load_optimizer(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Optimizer state of a checkpoint into this process's optimizer."""
    state = torch.load(Path(path) / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    load_optimizer_state(model, optimizer, state)


def load_rank_state(path: Path, rank: int) -> dict[str, Any]:
    """This process's loader position and RNG states."""
    return torch.load(Path(path) / rank_file(rank), map_location="cpu", weights_only=True)

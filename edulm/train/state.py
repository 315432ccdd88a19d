"""What a training checkpoint holds: a mapping of stateful components, saved and restored generically.

A component is anything with ``state_dict()`` / ``load_state_dict(state)`` (:class:`Stateful`),
registered under a name with where its state lives (:class:`Component`):

- shared (``per_rank=False``): one state for the whole run. Every process calls ``state_dict()``
  (gathering sharded state is a collective) and rank 0 writes it to ``NAME.EXT`` in the format the
  component names: ``safetensors`` (a flat mapping of tensors), ``json`` (plain values) or ``torch``
  (tensors in plain containers, ``torch.save``).
- per process (``per_rank=True``): each process's own state; all of a process's per-rank
  components go into its ``rank-NNNNN.pt`` as ``{name: state}``.

The trainer's mapping (``TrainingRun.components`` in :mod:`edulm.train.trainer`) gives these files::

    model.safetensors    "model"          ModelWeights: Hugging Face names, the tied head left out
    optimizer.pt         "optimizer"      edulm.train.optim.Optimizers: unsharded, keyed by parameter name
    trainer_state.json   "trainer_state"  edulm.train.train_state.TrainState
    rank-00000.pt        "loader", "rng"  the data position and every RNG state of that process

plus the run's ``config.yaml``. A new stateful piece is one more entry in that mapping; nothing here
changes. Everything loads with ``torch.load(weights_only=True)``: only tensors and plain containers.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edulm import checkpoint
from edulm.config import Config, save_config
from edulm.files import write_json
from edulm.layout import CONFIG_FILE, rank_file
from edulm.train.distributed import DistEnv, full_model_state
from edulm.weights import has_tied_head, load_state, weights_state_dict, without_tied_head

Format = Literal["safetensors", "json", "torch"]
EXTENSIONS: dict[str, str] = {"safetensors": "safetensors", "json": "json", "torch": "pt"}
"""File extension per storage format (a shared component ``NAME`` is stored as ``NAME.EXT``)."""


class Stateful(Protocol):
    """Anything a checkpoint can hold."""

    def state_dict(self) -> dict[str, Any]:
        """The component's state (for a shared component: the full, unsharded state)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned."""
        ...


@dataclass(frozen=True)
class Component:
    """A stateful piece of a run and how a checkpoint stores it."""

    state: Stateful
    """The object whose ``state_dict`` / ``load_state_dict`` are called."""
    per_rank: bool = False
    """True: every process saves its own (inside ``rank-NNNNN.pt``); False: one for the run, written by rank 0."""
    format: Format = "torch"
    """Storage of a shared component (``NAME.EXT``); per-rank ones always go into the rank file."""


def component_file(name: str, fmt: Format) -> str:
    """File name of a shared component inside a checkpoint."""
    return f"{name}.{EXTENSIONS[fmt]}"


class ModelWeights:
    """The model's weights as a checkpoint holds them: Hugging Face names, no tied ``lm_head.weight``.

    ``sharded``: the parameters are FSDP2 shards, so saving gathers the full tensors first (a
    collective; complete on rank 0). Loading expects the unwrapped, unsharded model: the trainer
    restores weights before it compiles and wraps the model, so every strategy starts alike.
    """

    def __init__(self, model: nn.Module, sharded: bool = False) -> None:
        self.model = model
        self.sharded = sharded

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The full weights on CPU, contiguous, under HF names (tied head left out)."""
        if not self.sharded:
            return weights_state_dict(self.model)
        state = without_tied_head(full_model_state(self.model), has_tied_head(self.model))
        return {k: v.contiguous() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy the weights in; every parameter must be present and nothing else."""
        load_state(self.model, dict(state), "checkpoint weights")


class RNGState:
    """Every random number generator of this process: python, numpy, torch CPU and CUDA."""

    def state_dict(self) -> dict[str, Any]:
        """The generators' states as tensors and plain values."""
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

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the generators back where :meth:`state_dict` found them."""
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _write(path: Path, fmt: Format, state: dict[str, Any]) -> None:
    if fmt == "safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    elif fmt == "json":
        write_json(path, state)
    else:
        torch.save(state, path)


def read_component(path: str | Path, name: str, fmt: Format) -> dict[str, Any]:
    """The saved state of shared component ``name`` from checkpoint ``path`` (on CPU)."""
    file = Path(path) / component_file(name, fmt)
    if fmt == "safetensors":
        return load_file(str(file))
    if fmt == "json":
        return json.loads(file.read_text())
    return torch.load(file, map_location="cpu", weights_only=True)


def save_checkpoint(run_dir: Path, step: int, cfg: Config, components: Mapping[str, Component], env: DistEnv) -> Path | None:
    """Write the checkpoint of ``step`` atomically; every process takes part. Returns its path on rank 0, else None."""
    tmp = checkpoint.begin(run_dir, step) if env.is_main else None
    env.barrier()  # the temporary folder exists before anyone writes into it
    tmp_path = Path(env.broadcast(str(tmp) if tmp else None))
    own = {name: c.state.state_dict() for name, c in components.items() if c.per_rank}
    if own:
        torch.save(own, tmp_path / rank_file(env.rank))
    # Every process asks for the shared states: gathering sharded state is a collective.
    shared = {name: c.state.state_dict() for name, c in components.items() if not c.per_rank}
    final = None
    if env.is_main:
        for name, state in shared.items():
            _write(tmp_path / component_file(name, components[name].format), components[name].format, state)
        save_config(cfg, tmp_path / CONFIG_FILE)
    env.barrier()  # every rank file is on disk before the folder is sealed
    if env.is_main:
        final = checkpoint.commit(tmp_path, step)
    env.barrier()
    return final


def restore(path: str | Path, components: Mapping[str, Component], rank: int) -> None:
    """Load every component of ``components`` from checkpoint ``path``, in the mapping's order.

    Put what must come last (the RNG states: nothing may draw random numbers after them) last.
    """
    path = Path(path)
    own = None
    for name, component in components.items():
        if component.per_rank:
            if own is None:
                own = torch.load(path / rank_file(rank), map_location="cpu", weights_only=True)
            component.state.load_state_dict(own[name])
        else:
            component.state.load_state_dict(read_component(path, name, component.format))

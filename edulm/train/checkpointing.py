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
    trainer_state.json   "trainer_state"  edulm.train.state.TrainState
    rank-00000.pt        "loader", "rng"  the data position and every RNG state of that process

plus the run's ``config.yaml``. A new stateful piece is one more entry in that mapping; nothing here
changes. Everything loads with ``torch.load(weights_only=True)``: only tensors and plain containers.
Before a run resumes from a checkpoint, :func:`load_problem` loads every file of it once: a file
that holds other objects (a pickle that would run code), or JSON of the wrong shape, makes the
checkpoint damaged, and ``--resume auto`` falls back to the previous one.

A full disk while a checkpoint is written is one line (:class:`~edulm.base.errors.DiskFullError` naming
the step and saying to resume) and the half-written temporary folder is removed. Torch files are
written through a Python file object so that the disk's ``ENOSPC`` reaches
:func:`edulm.base.files.is_disk_full` (``torch.save`` to a path name reports only "unexpected pos").
"""

from __future__ import annotations

import json
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edulm.checkpoint import folders as checkpoint
from edulm.config import Config, save_config
from edulm.data.manifest import shape_problem
from edulm.base.errors import first_line
from edulm.base.files import disk_full_error, is_disk_full, remove_path, write_json
from edulm.base.layout import CONFIG_FILE, RANK_FILE_PREFIX, TRAINER_STATE_FILE, rank_file
from edulm.train.distributed import DistEnv, full_model_state
from edulm.train.state import TrainState
from edulm.checkpoint.weights import has_tied_head, load_state, weights_state_dict, without_tied_head

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


def _torch_save(state: Any, path: Path) -> None:
    # Through a Python file object: a full disk then surfaces as the file's OSError (see the module docstring).
    with open(path, "wb") as f:
        torch.save(state, f)


def _write(path: Path, fmt: Format, state: dict[str, Any]) -> None:
    if fmt == "safetensors":
        save_file(state, str(path), metadata={"format": "pt"})
    elif fmt == "json":
        write_json(path, state)
    else:
        _torch_save(state, path)


def read_component(path: str | Path, name: str, fmt: Format) -> dict[str, Any]:
    """The saved state of shared component ``name`` from checkpoint ``path`` (on CPU)."""
    file = Path(path) / component_file(name, fmt)
    if fmt == "safetensors":
        return load_file(str(file))
    if fmt == "json":
        return json.loads(file.read_text())
    return torch.load(file, map_location="cpu", weights_only=True)


def save_checkpoint(run_dir: Path, step: int, cfg: Config, components: Mapping[str, Component], env: DistEnv) -> Path | None:
    """Write the checkpoint of ``step`` atomically; every process takes part. Returns its path on rank 0, else None.

    On a full disk: :class:`~edulm.base.errors.DiskFullError` ("no space left on RUN/checkpoints while
    writing checkpoint step N; free space and run again with --resume auto"), the temporary folder
    removed (by rank 0; a rank that fails alone ends its process, and ``torchrun`` stops the others).
    """
    tmp = None
    try:
        tmp = checkpoint.begin(run_dir, step) if env.is_main else None
        env.barrier()  # the temporary folder exists before anyone writes into it
        tmp_path = Path(env.broadcast(str(tmp) if tmp else None))
        own = {name: c.state.state_dict() for name, c in components.items() if c.per_rank}
        if own:
            _torch_save(own, tmp_path / rank_file(env.rank))
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
    except BaseException as err:
        if tmp is not None:
            remove_path(tmp)  # gone already when the rename happened: then nothing is removed
        if is_disk_full(err):
            raise disk_full_error(checkpoint.checkpoints_dir(run_dir), f"checkpoint step {step}") from err  # advice: train()
        raise


def load_problem(path: str | Path) -> str | None:
    """What of checkpoint ``path`` does not load safely, or None when every file does.

    Every torch file must load with ``torch.load(weights_only=True)`` as a mapping (a pickle of other
    objects, which could run code, is refused), a rank file must map component names to states,
    every JSON file must be a mapping, ``trainer_state.json`` a trainer state, and every safetensors
    header must read. The trainer passes this to :func:`edulm.checkpoint.folders.resolve_resume`, so such a
    checkpoint counts as damaged and an older one is used.
    """
    from safetensors import SafetensorError, safe_open

    for file in sorted(Path(path).iterdir()):
        try:
            if file.suffix == ".pt":
                # mmap: the tensors are not read here (restore reads them); the safe unpickler still checks every object.
                state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            elif file.suffix == ".json":
                state = json.loads(file.read_text(encoding="utf-8"))
            elif file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    list(f.keys())
                continue
            else:
                continue
        except pickle.UnpicklingError:
            return f"holds objects edulm does not load (in {file.name})"
        except (OSError, ValueError, RuntimeError, EOFError, SafetensorError) as err:
            return f"{file.name} does not load ({first_line(err)})"
        problem = shape_problem(state, dict, file.name)
        if problem is None and file.name.startswith(RANK_FILE_PREFIX):  # {component name: its state}
            problem = next(filter(None, (shape_problem(v, dict, f"{file.name}['{k}']") for k, v in state.items())), None)
        if problem is None and file.name == TRAINER_STATE_FILE:
            problem = _trainer_state_problem(state)
        if problem:
            return f"{problem} (valid, but of the wrong shape)"
    return None


def _trainer_state_problem(state: dict[str, Any]) -> str | None:
    problem = shape_problem(state, {"step": int, "tokens": int}, TRAINER_STATE_FILE)
    if problem:
        return problem
    try:
        TrainState().load_state_dict(state)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        return f"{TRAINER_STATE_FILE} is not a trainer state ({type(err).__name__}: {err})"
    return None


def restore(path: str | Path, components: Mapping[str, Component], rank: int) -> None:
    """Load every component of ``components`` from checkpoint ``path``, in the mapping's order.

    Put what must come last (the RNG states: nothing may draw random numbers after them) last.
    """
    path = Path(path)
    own = None
    for name, component in components.items():
        if component.per_rank:
            if own is None:
                # A process the checkpoint's run did not have (a resume on more processes) starts from rank 0's
                # states: the data position is shared by all ranks (each loader maps it to its own share), and
                # every rank's generators were seeded alike.
                mine = path / rank_file(rank)
                own = torch.load(mine if mine.is_file() else path / rank_file(0), map_location="cpu", weights_only=True)
            component.state.load_state_dict(own[name])
        else:
            component.state.load_state_dict(read_component(path, name, component.format))

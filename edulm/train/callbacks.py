"""The loop's side jobs as callbacks: the protocol, and the event a step hands them.

The training loop (:mod:`edulm.train.trainer`) only trains; everything else that happens around a
step — evaluation, metrics rows and their sinks, the progress bar, checkpoints, retention, the
summary, plots, the final export — is a :class:`Callback`. A new logger or an in-loop evaluation
is one class added to the list built by :func:`edulm.train.core_callbacks.default_callbacks`, which is
also the one place that decides what runs on rank 0 only.

Hooks, in the order the run calls them (every hook is optional; the base class does nothing):

1. ``on_start(run)`` once, after set-up (fresh or resumed), before the first step;
2. ``on_step_end(run, event)`` after every optimizer step, callbacks in list order; a callback may
   add values to ``event.values`` (they join that step's metrics row) or save a checkpoint
   (``event.saved``);
3. ``on_save(run, path)`` after a checkpoint is on disk (``path`` on rank 0, None elsewhere);
4. ``on_end(run, status)`` when the loop ends without an error: ``status`` is ``"completed"`` or
   ``"stopped (SIGTERM)"`` / ``"stopped (SIGINT)"``;
5. ``close()`` always, last, also after an error (release files, bars, connections).

``run`` is what :class:`Run` describes (the trainer's ``TrainingRun`` is one); a callback changes
nothing of it but what its docstring says.

**Stateful callbacks.** A callback that has ``state_dict()`` (plain JSON values) and
``load_state_dict(state)`` keeps its state across a restart: every checkpoint saves it (as
``callback.NAME.json``, NAME its ``state_name`` or its class name) and a resume restores it before
``on_start``; a checkpoint from before the callback existed leaves it as constructed. A callback that
keeps a file of one row per step writes it through :class:`edulm.base.step_file.StepFile`, which a
resume cuts back to the checkpoint's step, so no step appears twice.

**Your own callbacks** need no edit of edulm: ``train.callbacks: [mypackage.module:MyCallback]`` adds
them on every process (:func:`configured_callbacks`; a callback that writes files checks
``run.env.is_main``), just before the built-in checkpointing (``edulm.train.core_callbacks.with_callbacks``):
they see each step after its evaluation and metrics row, and the checkpoint of a step holds their
state after that step. A list passed to ``train(cfg, callbacks=...)`` should place a stateful callback
there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Protocol

import torch
from torch import nn

from edulm.config import Config
from edulm.base.errors import UsageError
from edulm.base.layout import RunLayout
from edulm.train.console import Console
from edulm.train.distributed import DistEnv
from edulm.train.optim import Optimizers
from edulm.train.checkpointing import Component
from edulm.train.step import StepResult
from edulm.train.state import TrainState


class Run(Protocol):
    """What a callback sees of a training run."""

    cfg: Config
    """The config as asked, with the model section settled at set-up (``model.init_from``'s shape, or a resumed
    checkpoint's); never rewritten after that (the resolved batch shape is ``state.batch``)."""
    env: DistEnv
    """Rank, world size, device; ``env.is_main`` on the process that writes."""
    layout: RunLayout
    """Paths in the run dir."""
    state: TrainState
    """Step, tokens, total steps, batch geometry, counters, totals."""
    model: nn.Module
    """The model, unwrapped (FSDP2 shards it in place)."""
    wrapped: nn.Module
    """What the steps and the evaluation call: the model, or DDP around it (compiled with ``train.compile``)."""
    optimizer: Optimizers
    """The optimizer object (one or more torch optimizers)."""
    loader: Any
    """The training batch iterator (``state_dict`` / ``load_state_dict``)."""
    components: Mapping[str, Component]
    """The stateful pieces a checkpoint saves, by name."""
    console: Console
    """Printed lines (silent off rank 0)."""
    amp_dtype: torch.dtype | None
    """Autocast dtype, or None for full precision."""
    device_info: dict[str, Any]
    """Name and memory of the device."""
    flops_per_token: int
    """Training FLOPs per token of the model at ``train.seq_len``."""
    peak_flops: float | None
    """The device's dense bf16 peak in FLOP/s when training in bf16 on a known device, else None."""
    gpu_hourly_rate: float | None
    """Price per GPU-hour for the cost estimate, if given."""
    started_at: datetime
    """When this process's segment of the run began (UTC)."""
    resumed_from: Path | None
    """The checkpoint this process started from, or None for a fresh run."""
    last_checkpoint: Path | None
    """The newest checkpoint written (rank 0)."""
    downstream_subsets: list[dict[str, Any]]
    """``train.downstream``'s tasks as scored: task, examples, chance level (rank 0; empty without downstream tasks)."""

    def elapsed(self) -> float:
        """Wall seconds of the whole run, earlier segments included."""
        ...


@dataclass
class StepEnd:
    """What the loop knows at the end of one optimizer step, handed to every ``on_step_end``."""

    step: int
    """The step just done (1-based)."""
    lr: float
    """Learning rate of the base parameter groups for this step (the schedule's value)."""
    result: StepResult
    """Loss, gradient norm and whether the update was applied."""
    seconds: float
    """Wall time of the step itself (forward, backward, update)."""
    last: bool
    """This is the run's last step."""
    stopping: bool
    """A stop was requested (SIGTERM / SIGINT on any process): the run ends after this step."""
    diverged: bool
    """The loss has been non-finite ``train.max_nonfinite_steps`` times in a row: the run fails after this step."""
    values: dict[str, float] = field(default_factory=dict)
    """Extra metrics of this step from earlier callbacks (e.g. ``val_loss``, ``val_ppl``); any value forces a metrics row."""
    row: dict[str, Any] | None = None
    """The metrics row written for this step, if one was."""
    saved: bool = False
    """A checkpoint of this step was written (``on_save`` follows)."""


class Callback:
    """Base class of the loop's side jobs; override the hooks you need (see the module docstring)."""

    def on_start(self, run: Run) -> None:
        """Once, before the first step."""

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        """After every optimizer step."""

    def on_save(self, run: Run, path: Path | None) -> None:
        """After a checkpoint is on disk (``path`` on rank 0, None on the other ranks)."""

    def on_end(self, run: Run, status: str) -> None:
        """When the loop ends without an error."""

    def close(self) -> None:
        """Always, last (also after an error); must be safe to call twice."""


def configured_callbacks(names: list[str]) -> list[Callback]:
    """One instance of each ``'package.module:ClassName'`` of ``train.callbacks``; a name that does not import or
    is not a :class:`Callback` is one :class:`~edulm.base.errors.UsageError` before anything is written."""
    from edulm.base.plugins import import_named

    made = []
    for name in names:
        cls = import_named(name, "train.callbacks", Callback)
        if not isinstance(cls, type):
            raise UsageError(f"train.callbacks: {name!r} is a Callback instance; give its class ('package.module:ClassName')")
        made.append(cls())
    return made


CALLBACK_PREFIX = "callback."
"""The checkpoint component names of the callbacks' states start with this."""


def stateful_callbacks(callbacks: list[Callback]) -> dict[str, Component]:
    """``{"callback.NAME": Component}`` of the callbacks that keep state (see the module docstring)."""
    out: dict[str, Component] = {}
    for callback in callbacks:
        if callable(getattr(callback, "state_dict", None)) and callable(getattr(callback, "load_state_dict", None)):
            name = f"{CALLBACK_PREFIX}{getattr(callback, 'state_name', type(callback).__name__)}"
            if name in out:
                raise ValueError(f"two callbacks keep their state as {name}: give one of them its own state_name")
            out[name] = Component(callback, format="json")
    return out


"""Learning-rate schedules keyed by ``train.schedule``: each one :class:`~edulm.train.schedule.base.ScheduleKind`.

The built-in ones are the modules of this folder that define ``SCHEDULE`` (``cosine.py``, ``wsd.py``,
``constant.py``); a project's own is ``train.schedule: 'package.module:Name'`` (a ``ScheduleKind`` subclass or
instance). Adding one to edulm is one module here plus its test: ``docs/architecture.md`` "Extending the trainer".
"""

from __future__ import annotations

import math

from edulm.base.errors import UsageError
from edulm.base.plugins import builtin_kinds, kind_named
from edulm.config import TrainConfig
from edulm.train.schedule.base import ScheduleKind, warmup_rate

__all__ = ["SCHEDULES", "ScheduleKind", "lr_at", "schedule_kind", "total_steps", "warmup_rate"]


SCHEDULES: dict[str, ScheduleKind] = builtin_kinds(__name__, __path__, "SCHEDULE", ScheduleKind)
"""The built-in values of ``train.schedule`` and their kinds."""


def schedule_kind(name: str) -> ScheduleKind:
    """The kind ``train.schedule`` names: a built-in name or ``'package.module:Name'``; anything else is one
    :class:`~edulm.base.errors.UsageError`."""
    return kind_named(name, SCHEDULES, "train.schedule", ScheduleKind)


def total_steps(train: TrainConfig, step_tokens: int) -> int:
    """Optimizer steps of the run: ``max_steps`` when set, else ``ceil(token_budget / step_tokens)``."""
    if train.max_steps > 0:
        return train.max_steps
    if train.token_budget > 0:
        return math.ceil(train.token_budget / step_tokens)
    raise UsageError("train.max_steps and train.token_budget are both 0; set one of them (e.g. train.max_steps=100)")


def lr_at(step: int, train: TrainConfig, last_step: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based) in a run of ``last_step`` steps, by ``train.schedule``."""
    return schedule_kind(train.schedule).rate(step, last_step, train)

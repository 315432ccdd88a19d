"""Learning-rate schedules keyed by ``train.schedule``: each one :class:`~edulm.train.schedule.base.ScheduleKind`.

The built-in ones are the modules of this folder that define ``SCHEDULE`` (``cosine.py``, ``wsd.py``,
``constant.py``); a project's own is ``train.schedule: 'package.module:Name'`` (a ``ScheduleKind`` subclass or
instance). Adding one to edulm is one module here plus its test: ``docs/architecture.md`` "Extending the trainer".
"""

from __future__ import annotations

import importlib
import math
import pkgutil

from edulm.base.errors import UsageError
from edulm.base.plugins import import_named, is_import_path
from edulm.base.suggest import did_you_mean
from edulm.config import TrainConfig
from edulm.train.schedule.base import ScheduleKind, warmup_rate

__all__ = ["SCHEDULES", "ScheduleKind", "lr_at", "schedule_kind", "total_steps", "warmup_rate"]


def _builtin_schedules() -> dict[str, ScheduleKind]:
    """``{name: kind}`` of every module of this folder that defines ``SCHEDULE``."""
    found = {}
    for module in pkgutil.iter_modules(__path__):
        kind = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SCHEDULE", None)
        if isinstance(kind, ScheduleKind):
            found[kind.name] = kind
    return dict(sorted(found.items()))


SCHEDULES: dict[str, ScheduleKind] = _builtin_schedules()
"""The built-in values of ``train.schedule`` and their kinds."""


def schedule_kind(name: str) -> ScheduleKind:
    """The kind ``train.schedule`` names: a built-in name or ``'package.module:Name'``; anything else is one
    :class:`~edulm.base.errors.UsageError`."""
    if is_import_path(name):
        found = import_named(name, "train.schedule", ScheduleKind)
        kind = found() if isinstance(found, type) else found
        if not kind.name:
            raise UsageError(f"train.schedule: {name!r} has no name (set the class attribute 'name')")
        return kind
    if name not in SCHEDULES:
        raise UsageError(f"train.schedule: unknown schedule {name!r}{did_you_mean(name, list(SCHEDULES))} "
                         f"(built in: {', '.join(SCHEDULES)}; or 'package.module:Name' of your own ScheduleKind)")
    return SCHEDULES[name]


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

"""``train.schedule: constant``: linear warmup, then ``lr`` to the end."""

from __future__ import annotations

from typing import Any, Mapping

from edulm.config import TrainConfig
from edulm.train.schedule.base import ScheduleKind, warmup_rate


def constant(step: int, last_step: int, train: TrainConfig) -> float:
    """Linear warmup, then ``lr`` for every later step (``last_step`` and ``min_lr_ratio`` play no part)."""
    rate = warmup_rate(step, train)
    return train.lr if rate is None else rate


class Constant(ScheduleKind):
    """:func:`constant`; every step after the warmup is at the peak, so the whole run is its stable phase."""

    name = "constant"

    def rate(self, step: int, total_steps: int, train: TrainConfig) -> float:
        return constant(step, total_steps, train)

    def stable_end(self, total_steps: int, train: TrainConfig) -> int | None:
        return total_steps

    def describe(self, train: Mapping[str, Any]) -> str:
        return "then constant"


SCHEDULE = Constant()

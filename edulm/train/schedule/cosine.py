"""``train.schedule: cosine`` (the default): linear warmup, then a half cosine down to ``min_lr_ratio × lr``."""

from __future__ import annotations

import math
from typing import Any, Mapping

from edulm.config import TrainConfig
from edulm.train.schedule.base import ScheduleKind, floor_words, warmup_rate


def cosine(step: int, last_step: int, train: TrainConfig) -> float:
    """Linear warmup, then a half cosine from ``lr`` to ``min_lr_ratio * lr`` at ``last_step``.

    ``step <= warmup_steps``: ``lr * step / warmup_steps`` (0 at step 0). After that
    ``floor + (lr - floor) * (1 + cos(pi * progress)) / 2`` with ``progress`` going from 0 at the end
    of the warmup to 1 at ``last_step``; it stays at the floor beyond it.
    """
    rate = warmup_rate(step, train)
    if rate is not None:
        return rate
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    warmup = train.warmup_steps
    decay_steps = last_step - warmup
    if decay_steps <= 0:
        return floor
    progress = min(1.0, (step - warmup) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


class Cosine(ScheduleKind):
    """:func:`cosine`; every rate after the warmup depends on the run's length (no stable phase)."""

    name = "cosine"

    def rate(self, step: int, total_steps: int, train: TrainConfig) -> float:
        return cosine(step, total_steps, train)

    def describe(self, train: Mapping[str, Any]) -> str:
        return f"cosine decay to {floor_words(train)}"


SCHEDULE = Cosine()

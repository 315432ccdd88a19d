"""``train.schedule: wsd``: warmup-stable-decay, extendable while in its stable phase."""

from __future__ import annotations

import math
from typing import Any, Mapping

from edulm.config import TrainConfig
from edulm.train.schedule.base import ScheduleKind, floor_words, warmup_rate


def decay_start(last_step: int, train: TrainConfig) -> int:
    """The last step at the peak of a WSD run of ``last_step`` steps: the decay takes the steps after it.

    The decay covers ``round(decay_fraction * last_step)`` steps (half up), never reaching into the
    warmup. A run that decays as its own short run from a stable checkpoint at step ``S`` over ``D``
    steps sets ``max_steps = S + D`` and ``decay_fraction = D / (S + D)``: this returns ``S``.
    """
    decay_steps = math.floor(train.decay_fraction * last_step + 0.5)
    return max(train.warmup_steps, last_step - decay_steps)


def wsd(step: int, last_step: int, train: TrainConfig) -> float:
    """Warmup-stable-decay: linear warmup, ``lr`` until :func:`decay_start`, then a straight line to
    ``min_lr_ratio * lr`` at ``last_step``; it stays at the floor beyond it.

    The stable phase has no end of its own, so a run stopped (or checkpointed) in it can be extended
    by raising ``max_steps``: the steps already taken keep their rates.
    """
    rate = warmup_rate(step, train)
    if rate is not None:
        return rate
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    start = decay_start(last_step, train)
    if step <= start or start >= last_step:  # the stable phase (decay_fraction 0: no decay at all)
        return peak
    if step >= last_step:
        return floor
    return peak - (peak - floor) * (step - start) / (last_step - start)


class WarmupStableDecay(ScheduleKind):
    """:func:`wsd`; its stable phase ends at :func:`decay_start`."""

    name = "wsd"

    def rate(self, step: int, total_steps: int, train: TrainConfig) -> float:
        return wsd(step, total_steps, train)

    def stable_end(self, total_steps: int, train: TrainConfig) -> int | None:
        return decay_start(total_steps, train)

    def describe(self, train: Mapping[str, Any]) -> str:
        return (f"constant, then decay to {floor_words(train)} over the last {train.get('decay_fraction', '?')} of the "
                "steps (warmup-stable-decay)")


SCHEDULE = WarmupStableDecay()

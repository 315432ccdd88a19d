"""Learning-rate schedules keyed by ``train.schedule``: pure functions of the step; the step count of a run.

Steps are counted from 1: step ``s`` is the ``s``-th optimizer update, and ``lr_at(s, ...)`` is the
learning rate that update uses. A schedule is a function ``(step, total_steps, train) -> lr`` that
returns the learning rate of the base parameter groups, in absolute units (``train.lr`` at the
peak); each group then trains at ``lr * group["lr_scale"]`` (see :mod:`edulm.train.optim`). It
returns the rate rather than a factor of ``train.lr`` so that the classic formulas keep their exact
floating-point values (``lr * step / warmup`` is not always bit-equal to ``lr * (step / warmup)``).

Adding a schedule: write ``NAME(step, total_steps, train) -> float`` below (starting, like the others,
with :func:`warmup_rate` unless it has a warmup of its own), add a :class:`ScheduleKind` for it to
:data:`SCHEDULES` (its rate function, where its stable phase ends, its words for the model card), and
add ``"NAME"`` to the ``Literal`` of ``TrainConfig.schedule`` (its docstring says what it does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from edulm.config import TrainConfig
from edulm.base.errors import UsageError


def total_steps(train: TrainConfig, step_tokens: int) -> int:
    """Optimizer steps of the run: ``max_steps`` when set, else ``ceil(token_budget / step_tokens)``."""
    if train.max_steps > 0:
        return train.max_steps
    if train.token_budget > 0:
        return math.ceil(train.token_budget / step_tokens)
    raise UsageError("train.max_steps and train.token_budget are both 0; set one of them (e.g. train.max_steps=100)")


def warmup_rate(step: int, train: TrainConfig) -> float | None:
    """The rate of ``step`` in the linear warmup every schedule starts with, None after it.

    ``lr * step / warmup_steps`` up to ``warmup_steps`` (0 at step 0; no warmup: ``lr`` from the start).
    """
    warmup = train.warmup_steps
    if step <= 0:
        return 0.0 if warmup > 0 else train.lr
    if step <= warmup:
        return train.lr * step / warmup
    return None


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


def constant(step: int, last_step: int, train: TrainConfig) -> float:
    """Linear warmup, then ``lr`` for every later step (``last_step`` and ``min_lr_ratio`` play no part)."""
    rate = warmup_rate(step, train)
    return train.lr if rate is None else rate


Schedule = Callable[[int, int, TrainConfig], float]
"""``(step, total_steps, train) -> learning rate of the base groups``; pure (no state, no side effects)."""


@dataclass(frozen=True)
class ScheduleKind:
    """Everything edulm needs to know of one value of ``train.schedule``, in one place: its rates, what a resume
    may extend, and how the model card describes it. No module outside this one branches on a schedule's name."""

    rate: Schedule
    """``(step, total_steps, train) -> lr`` (see the module docstring)."""
    stable_end: Callable[[int, TrainConfig], int | None]
    """``(total_steps, train) -> S``: the last step of a run of ``total_steps`` steps that is still at the peak and
    stays there whatever the run's length, so a run checkpointed at step S or before can train longer (a larger
    ``max_steps``) without any step's rate moving. None when every rate after the warmup depends on the length."""
    describe: Callable[[Mapping[str, Any]], str]
    """``(train section as a mapping) -> words after the warmup``, for the model card ("cosine decay to ...")."""


def _floor(t: Mapping[str, Any]) -> str:
    return f"{t.get('min_lr_ratio', '?')} × peak"


SCHEDULES: dict[str, ScheduleKind] = {
    "cosine": ScheduleKind(cosine, lambda total, train: None, lambda t: f"cosine decay to {_floor(t)}"),
    "wsd": ScheduleKind(wsd, decay_start, lambda t: (f"constant, then decay to {_floor(t)} over the last "
                                                     f"{t.get('decay_fraction', '?')} of the steps (warmup-stable-decay)")),
    "constant": ScheduleKind(constant, lambda total, train: total, lambda t: "then constant"),
}
"""``train.schedule`` value -> its :class:`ScheduleKind`."""


def lr_at(step: int, train: TrainConfig, last_step: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based) in a run of ``last_step`` steps, by ``train.schedule``."""
    return SCHEDULES[train.schedule].rate(step, last_step, train)

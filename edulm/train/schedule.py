"""The learning-rate schedule as a pure function of the step, and the step count of a run.

Steps are counted from 1: step ``s`` is the ``s``-th optimizer update, and ``lr_at(s, ...)`` is the
learning rate that update uses. Linear warmup rises from 0 (at step 0, before training) to the peak
at ``warmup_steps``; a cosine then falls to ``min_lr_ratio * lr``, reached exactly at the last step.
"""

from __future__ import annotations

import math

from edulm.config import TrainConfig
from edulm.errors import UsageError


def tokens_per_step(train: TrainConfig, micro_batch_size: int, grad_accum_steps: int, world_size: int = 1) -> int:
    """Training tokens consumed by one optimizer step across all processes."""
    return micro_batch_size * grad_accum_steps * train.seq_len * world_size


def total_steps(train: TrainConfig, step_tokens: int) -> int:
    """Optimizer steps of the run: ``max_steps`` when set, else ``ceil(token_budget / step_tokens)``."""
    if train.max_steps > 0:
        return train.max_steps
    if train.token_budget > 0:
        return math.ceil(train.token_budget / step_tokens)
    raise UsageError("train.max_steps and train.token_budget are both 0; set one of them (e.g. train.max_steps=100)")


def lr_at(step: int, train: TrainConfig, last_step: int) -> float:
    """Learning rate of optimizer step ``step`` (1-based) in a run of ``last_step`` steps.

    ``step <= warmup_steps``: ``lr * step / warmup_steps``. After that a half cosine from ``lr`` at
    ``warmup_steps`` to ``min_lr_ratio * lr`` at ``last_step`` (and it stays there beyond it).
    """
    peak, floor = train.lr, train.lr * train.min_lr_ratio
    warmup = train.warmup_steps
    if step <= 0:
        return 0.0 if warmup > 0 else peak
    if step <= warmup:
        return peak * step / warmup
    decay_steps = last_step - warmup
    if decay_steps <= 0:
        return floor
    progress = min(1.0, (step - warmup) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))

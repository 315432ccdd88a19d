"""One optimizer step: gradient accumulation, clipping, the non-finite guard.

The evaluation pass is :func:`edulm.evaluate.heldout.score_heldout`, shared with ``edulm perplexity``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from edulm.train.distributed import DistEnv, set_gradient_sync
from edulm.checkpoint.weights import nonfinite_tensors
from edulm.train.optim import Optimizers


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.precision`` on this device: bf16 on CUDA for 'auto', None (fp32) on CPU."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@dataclass
class StepResult:
    """What one optimizer step reports."""

    loss: float
    """Mean training loss over the step's micro-batches (and processes)."""
    grad_norm: float
    """Global gradient norm before clipping."""
    finite: bool
    """False when the loss or the gradient norm was not finite; the update was then skipped."""


def train_step(
    model: nn.Module,
    optimizer: Optimizers,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    grad_accum_steps: int,
    grad_clip: float,
    env: DistEnv,
    amp_dtype: torch.dtype | None,
) -> StepResult:
    """Accumulate ``grad_accum_steps`` micro-batches, clip, and update, unless the step is not finite.

    Each micro-batch loss is divided by ``grad_accum_steps`` so the gradient is that of the mean
    loss; gradient synchronisation between processes happens on the last micro-batch only. A
    non-finite loss or gradient norm zeroes the gradients and skips the update (the caller counts it).
    """
    device = env.device
    loss_sum = torch.zeros((), device=device, dtype=torch.float32)
    for micro in range(grad_accum_steps):
        inputs, targets = next(batches)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        set_gradient_sync(model, micro == grad_accum_steps - 1)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = model(inputs, targets)
        (loss / grad_accum_steps).backward()
        loss_sum += loss.detach().float()
    loss = env.mean(loss_sum / grad_accum_steps)
    # max_norm=inf measures the norm without changing the gradients (the clip factor is capped at 1).
    norm = torch.nn.utils.clip_grad_norm_(optimizer.params, grad_clip if grad_clip > 0 else math.inf, foreach=True)
    if hasattr(norm, "full_tensor"):  # FSDP2 returns a DTensor
        norm = norm.full_tensor()
    # One host sync per step: the values are needed to decide on the update and to log.
    loss_value, norm_value = torch.stack([loss, norm.float()]).tolist()
    finite = math.isfinite(loss_value) and math.isfinite(norm_value)
    if finite:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(loss=loss_value, grad_norm=norm_value, finite=finite)


class TrainingDiverged(RuntimeError):
    """The run cannot go on: the loss stayed non-finite for ``train.max_nonfinite_steps`` steps in a row, or the
    weights hold non-finite values when a checkpoint is due."""


def check_weights_finite(model: nn.Module, env: DistEnv, step: int, lr: float, resume_from: str | None) -> None:
    """Raise :class:`TrainingDiverged` when any process's weights hold a NaN or an infinity at ``step`` (one update
    can overflow them while the loss of the step before was finite): they are never checkpointed or exported."""
    bad = nonfinite_tensors(model)
    if env.any(bool(bad)):
        where = f" ({bad[0]}, ...)" if bad else ""
        then = f"continue from {resume_from} with --resume auto" if resume_from else "run again"
        raise TrainingDiverged(f"the weights hold NaN or infinite values after step {step}{where}, so no checkpoint of "
                               f"them was written; lower train.lr (now {lr:g}) or raise train.warmup_steps, then {then}")


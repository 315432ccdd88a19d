"""Scoring held-out batches: the one loop behind the trainer's validation rows and ``edulm perplexity``.

:func:`score_heldout` runs a model (or any :data:`LossFn`) over fixed ``(inputs, targets)`` batches
without gradients and returns the summed negative log-likelihood, the number of scored tokens and,
given a tokenizer's byte table (:func:`edulm.evaluate.bits_per_byte.token_byte_lengths`), the UTF-8 bytes those
tokens stand for. Targets equal to ``IGNORE_INDEX`` are not scored; every batch's mean loss is
weighted by its scored tokens, so the result is the token-weighted mean over all of them.

:func:`padded_to_one_shape` makes every batch of a list the shape of the largest one by adding
unscored rows and columns: a compiled model then sees one input shape, and compiles its evaluation
graph once instead of once more for a smaller last batch.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edulm.evaluate.bits_per_byte import bits_per_byte, scored_bytes
from edulm.base.logs import progress_bars
from edulm.base.metrics import perplexity
from edulm.model.loss import IGNORE_INDEX

Batch = tuple[torch.Tensor, torch.Tensor]
"""``(inputs, targets)``: token ids (B, T) and the ids to predict at each position (IGNORE_INDEX: not scored)."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(inputs, targets)``: mean negative log-likelihood (nats) over the targets that are not IGNORE_INDEX."""


@dataclass(frozen=True)
class HeldOutScore:
    """The summed loss of ``tokens`` scored tokens standing for ``bytes`` bytes of text."""

    nll_sum: float
    """Summed negative log-likelihood of the scored tokens (nats)."""
    tokens: int
    """Number of scored tokens."""
    windows: int
    """Number of windows (batch rows) with at least one scored token."""
    bytes: int = 0
    """UTF-8 bytes of the scored tokens (0 when not counted)."""

    @property
    def loss(self) -> float:
        """Mean negative log-likelihood per scored token (nats); NaN when nothing was scored."""
        return self.nll_sum / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        """exp(loss), inf when it overflows."""
        return perplexity(self.loss)

    @property
    def bits_per_byte(self) -> float | None:
        """Summed NLL in bits over the scored bytes; None when no bytes were counted."""
        return bits_per_byte(self.nll_sum, self.bytes)


@torch.no_grad()
def score_heldout(
    loss_fn: LossFn,
    batches: Iterable[Batch],
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    byte_table: np.ndarray | None = None,
    progress: bool = False,
) -> HeldOutScore:
    """Summed loss, scored tokens and scored bytes of ``loss_fn`` over ``batches``.

    ``loss_fn`` is an edulm model (``model(inputs, targets)`` is its mean loss, float32), the model
    wrapped for training (DDP), or :func:`edulm.evaluate.perplexity.hf_loss`; a module runs in eval
    mode and is put back in the mode it was in. ``amp_dtype``: autocast dtype (None: as the weights
    are). ``byte_table``: bytes per token id, to count the scored bytes. Tokens and bytes are
    counted from the targets where they are (on the host for the loader's batches) and the losses
    are summed on the device, so there is one host sync at the end, not one per batch. A batch with
    no scored target is skipped (its mean would be 0/0).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    module = loss_fn if isinstance(loss_fn, nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    tokens = windows = 0
    batches = batches if isinstance(batches, list) else list(batches)
    try:
        for inputs, targets in tqdm(batches, desc="scoring", unit="batch", disable=not (progress and progress_bars()),
                                    file=sys.stderr):
            scored_mask = targets != IGNORE_INDEX
            n = int(scored_mask.sum())
            if n == 0:
                continue
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                mean = loss_fn(inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True))
            total += mean.double() * n
            tokens += n
            windows += int(scored_mask.any(dim=1).sum())
    finally:
        if module is not None:
            module.train(was_training)
    n_bytes = scored_bytes(byte_table, batches) if byte_table is not None else 0
    return HeldOutScore(nll_sum=total.item(), tokens=tokens, windows=windows, bytes=n_bytes)


def padded_to_one_shape(batches: list[Batch]) -> list[Batch]:
    """``batches`` with every one padded to the rows and width of the largest: the same scores, one shape.

    Added rows and columns get input id 0 and IGNORE_INDEX targets, so they score nothing; padding
    columns sit after a row's tokens, where causal attention keeps them from changing any scored
    position. Batches already of that shape are returned as they are (no copy).
    """
    if not batches:
        return []
    rows = max(inputs.shape[0] for inputs, _ in batches)
    width = max(inputs.shape[1] for inputs, _ in batches)
    out = []
    for inputs, targets in batches:
        if inputs.shape == (rows, width):
            out.append((inputs, targets))
            continue
        padded_inputs = inputs.new_zeros(rows, width)
        padded_targets = targets.new_full((rows, width), IGNORE_INDEX)
        padded_inputs[: inputs.shape[0], : inputs.shape[1]] = inputs
        padded_targets[: targets.shape[0], : targets.shape[1]] = targets
        out.append((padded_inputs, padded_targets))
    return out

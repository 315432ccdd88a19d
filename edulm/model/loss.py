"""Language-model loss from the final hidden states.

``lm_loss`` projects hidden states onto the vocabulary and takes the cross-entropy. With
``chunk_size`` set, it does so a slice of tokens at a time and recomputes each slice's logits in the
backward pass, so the full (tokens x vocab) float32 logits never exist at once: for the 135M recipe
(6 x 2048 tokens x 49,152) that is 2.4 GB saved per micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
"""Target id that contributes nothing to the loss."""


def _chunk_loss_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = hidden @ weight.t()
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` over non-ignored tokens.

    hidden: (..., d) final normed hidden states; weight: (vocab, d); targets: (...) token ids.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    count = (targets != IGNORE_INDEX).sum().clamp(min=1)
    if chunk_size is None or chunk_size >= hidden.shape[0]:
        return _chunk_loss_sum(hidden, weight, targets) / count
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        end = start + chunk_size
        total = total + checkpoint(
            _chunk_loss_sum, hidden[start:end], weight, targets[start:end], use_reentrant=False
        )
    return total / count

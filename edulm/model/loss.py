"""Language-model loss from the final hidden states: LM-head projection + cross-entropy.

``lm_loss`` projects hidden states onto the vocabulary and takes the mean cross-entropy. With
``chunk_size`` set it runs the *fused* path: a slice of tokens at a time, each slice's logits are
computed in the compute dtype (bf16 under autocast), upcast to float32 for the softmax, and turned
into the gradients with respect to the hidden states and the head weight right away, in the forward
pass. The full (tokens x vocab) logits never exist at once, nothing of size tokens x vocab is kept
for the backward pass, and the backward pass only scales the stored gradients.

Why gradients in the forward pass rather than recomputing each slice's logits in the backward
(activation checkpointing of the head): the projection then costs three matrix products per slice
(logits, d hidden, d weight) instead of four, saving about 5% of the 135M model's training FLOPs; the price
is holding d hidden (the size of the hidden states) and a float32 d weight (vocab x d, 113 MB for the
135M model) from forward to backward. ``docs/performance.md`` has the measurements.

Everything here traces into one graph under ``torch.compile`` (no data-dependent Python branches,
no ``.item()``): the loop over slices has a length fixed by the shapes, so it unrolls.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100
"""Target id that contributes nothing to the loss."""


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the LM-head matrix product runs in: autocast's when it is on, else the hidden states'."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def plain_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference path: full logits ``hidden @ weight.T`` upcast to float32, then ``F.cross_entropy``."""
    hidden = hidden.reshape(-1, hidden.shape[-1])
    logits = hidden.to(compute_dtype(hidden)) @ weight.to(compute_dtype(hidden)).t()
    return torch.nn.functional.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def _softmax_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, keep: torch.Tensor, scale: torch.Tensor, with_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed cross-entropy of float32 ``logits`` (n, V) and, if asked, ``d logits = (softmax - one_hot) * scale``.

    targets: (n, 1) valid ids; keep: (n,) which rows count; scale: (n, 1) each row's share of the mean.
    Two spellings of the same arithmetic: under ``torch.compile`` a pure expression that inductor fuses
    into one reduction and one pointwise pass over the logits; in eager mode PyTorch's fused
    ``log_softmax`` kernel and in-place updates, so no (n, V) temporaries pile up.
    """
    if torch.compiler.is_compiling():
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (n, 1)
        loss_sum = ((lse - logits.gather(1, targets)).squeeze(1) * keep).sum()
        if not with_grad:
            return loss_sum, None
        one_hot = torch.arange(logits.shape[1], device=logits.device) == targets  # (n, V), fused away
        return loss_sum, (torch.exp(logits - lse) - one_hot.float()) * scale
    log_probs = torch.log_softmax(logits, dim=-1)  # (n, V)
    del logits  # the caller passes its only reference: free it before the next (n, V) buffer
    target_log_prob = log_probs.gather(1, targets)  # (n, 1)
    loss_sum = -(target_log_prob.squeeze(1) * keep).sum()
    if not with_grad:
        return loss_sum, None
    d_logits = log_probs.exp_()
    d_logits.scatter_add_(1, targets, torch.full_like(target_log_prob, -1.0))
    return loss_sum, d_logits.mul_(scale)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int,
    dtype: torch.dtype,
    grad_hidden: bool,
    grad_weight: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Mean cross-entropy of ``hidden @ weight.T`` and, if asked, its gradients, a slice of tokens at a time.

    hidden: (N, d); weight: (V, d); targets: (N,). The products run in ``dtype``; softmax and sums in
    float32. Returns ``(loss, d loss / d hidden or None, d loss / d weight or None)``, the gradients
    in the inputs' dtypes.
    """
    valid = targets != IGNORE_INDEX  # (N,)
    # A tensor, not a Python int: no host sync and no graph break under torch.compile.
    count = valid.sum().clamp(min=1).float()
    w = weight.to(dtype)
    with_grad = grad_hidden or grad_weight
    loss_sum = torch.zeros((), device=hidden.device, dtype=torch.float32)
    d_hidden_parts: list[torch.Tensor] = []
    d_weight: torch.Tensor | None = None
    for start in range(0, hidden.shape[0], chunk_size):
        h = hidden[start : start + chunk_size].to(dtype)  # (n, d)
        keep = valid[start : start + chunk_size]  # (n,)
        safe_targets = torch.where(keep, targets[start : start + chunk_size], 0).unsqueeze(1)  # (n, 1)
        scale = (keep.float() / count).unsqueeze(1)  # (n, 1): d(mean)/d(row loss), 0 for ignored rows
        # (n, V) float32 logits, handed over without keeping a reference here.
        chunk_loss, d_logits = _softmax_cross_entropy((h @ w.t()).float(), safe_targets, keep, scale, with_grad)
        loss_sum = loss_sum + chunk_loss
        if d_logits is None:
            continue
        d_logits = d_logits.to(dtype)
        if grad_hidden:
            d_hidden_parts.append((d_logits @ w).to(hidden.dtype))  # (n, d)
        if grad_weight:
            part = (d_logits.t() @ h).float()  # (V, d), summed over chunks in float32
            d_weight = part if d_weight is None else d_weight.add_(part)
            del part
        del d_logits  # eager mode: free this chunk's (n, V) buffer before the next one is made
    d_hidden = None
    if grad_hidden:
        d_hidden = d_hidden_parts[0] if len(d_hidden_parts) == 1 else torch.cat(d_hidden_parts)
    if d_weight is not None:
        d_weight = d_weight.to(weight.dtype)
    return loss_sum / count, d_hidden, d_weight


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """Autograd wrapper: gradients are computed in ``forward``; ``backward`` scales them by the upstream grad."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, dtype: torch.dtype):
        loss, d_hidden, d_weight = fused_linear_cross_entropy(
            hidden, weight, targets, chunk_size, dtype, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        ctx.save_for_backward(d_hidden, d_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        d_hidden, d_weight = ctx.saved_tensors
        # Always multiply (even by 1.0): a branch on the value would break the compiled graph.
        d_hidden = d_hidden * grad_loss.to(d_hidden.dtype) if d_hidden is not None else None
        d_weight = d_weight * grad_loss.to(d_weight.dtype) if d_weight is not None else None
        return d_hidden, d_weight, None, None, None


def lm_loss(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets`` over non-ignored tokens.

    hidden: (..., d) final normed hidden states; weight: (vocab, d); targets: (...) token ids, with
    ``IGNORE_INDEX`` for positions that do not count. ``chunk_size`` (tokens per slice) selects the
    fused path; ``None`` computes the full logits (the reference).
    """
    if chunk_size is None:
        return plain_lm_loss(hidden, weight, targets)
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    dtype = compute_dtype(hidden)
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets = targets.reshape(-1)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(hidden, weight, targets, chunk_size, dtype)
    loss, _, _ = fused_linear_cross_entropy(hidden, weight, targets, chunk_size, dtype, False, False)
    return loss

"""The Muon update's maths, and a Muon that also updates FSDP2-sharded matrices.

Muon (Keller Jordan, 2024, https://kellerjordan.github.io/posts/muon/) keeps a momentum buffer
per weight matrix, like SGD, but replaces each step's update by its nearest semi-orthogonal
matrix: the update ``U S V^T`` becomes (roughly) ``U V^T``, which gives every direction of the
update the same size. Computing that exactly needs an SVD; Muon approximates it with a few
steps of a quintic Newton-Schulz iteration that runs in bf16 matmuls.

Single process and DDP use ``torch.optim.Muon`` as it is. Under FSDP2 every parameter is a
DTensor holding one block of rows; the orthogonalisation is a function of the *whole* matrix.
``torch.optim.Muon`` accepts DTensors, but then each of the iteration's matmuls is a distributed
matmul with its own communication, and the result is rounded differently from one process's.
:class:`ShardedMuon` instead gathers each matrix's update once (one all-gather, like FSDP2's
own forward gather), orthogonalises the whole matrix on every process, and keeps its own rows:
the same numbers as one process, bit for bit, from the same gradient. Its hyperparameters, its
state (one ``momentum_buffer`` per matrix) and its checkpoints are ``torch.optim.Muon``'s, so a
run can resume under either. Every process orthogonalises every matrix; for the 20M-1B models
edulm trains that costs far less than the step's forward and backward.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""``(a, b, c)`` of the quintic ``a x + b x^3 + c x^5`` that each Newton-Schulz step applies to the
singular values: tuned by Keller Jordan to push small singular values up fast (five steps map
them into about [0.7, 1.2] rather than exactly 1, which training does not mind). torch's default."""

NS_EPS = 1e-7
"""Floor of the norm the update is divided by before the iteration (an all-zero update stays zero)."""


def newton_schulz(update: torch.Tensor, steps: int, coefficients: Sequence[float] = NS_COEFFICIENTS,
                  eps: float = NS_EPS) -> torch.Tensor:
    """``update``'s orthogonalisation (about ``U V^T`` of its SVD ``U S V^T``), in bf16, same shape.

    Dividing by the Frobenius norm puts every singular value in [0, 1]; then each step maps
    ``X -> a X + (b A + c A^2) X`` with ``A = X X^T``, which applies the odd quintic to the
    singular values and leaves the singular vectors alone. Working on the wide orientation
    (rows <= columns) keeps ``A`` the smaller of the two Gram matrices.
    """
    if update.ndim != 2:
        raise ValueError(f"Newton-Schulz orthogonalises matrices; got a tensor of shape {tuple(update.shape)}")
    a, b, c = coefficients
    tall = update.shape[0] > update.shape[1]
    x = update.bfloat16()
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        polynomial = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, polynomial, x, beta=a)  # a X + (b A + c A^2) X
    return x.T if tall else x


def update_scale(shape: Sequence[int], adjust_lr_fn: str | None) -> float:
    """How much the learning rate is multiplied by for a matrix of ``shape`` (rows, columns).

    'original' (Keller Jordan's Muon): ``sqrt(max(1, rows / cols))``, so tall matrices, whose
    orthogonalised updates have smaller entries, move as fast as wide ones. 'match_rms_adamw'
    (Moonshot AI, "Muon is Scalable for LLM Training", 2025): ``0.2 * sqrt(max(rows, cols))``,
    which gives the update the root-mean-square size of a typical AdamW update (about 0.2), so
    Muon can share AdamW's learning rate and weight decay. Anything else: 1.
    """
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


def orthogonalised(update: torch.Tensor, steps: int, coefficients: Sequence[float], eps: float) -> torch.Tensor:
    """:func:`newton_schulz` of the whole matrix; for a DTensor, of the gathered matrix, returned as
    a DTensor laid out like ``update`` (this process's rows, no further communication)."""
    if not isinstance(update, DTensor):
        return newton_schulz(update, steps, coefficients, eps)
    whole = newton_schulz(update.full_tensor(), steps, coefficients, eps)  # the one collective
    # src_data_rank=None: every process already holds the whole result and keeps its own block.
    return distribute_tensor(whole, update.device_mesh, update.placements, src_data_rank=None)


class ShardedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` whose step also handles DTensor (FSDP2-sharded) matrices correctly and cheaply.

    Same constructor, hyperparameters, parameter groups and state as ``torch.optim.Muon``; on plain
    tensors its updates are bitwise equal to it (``tests/train/test_muon.py`` checks both).
    Per matrix ``W`` with gradient ``G`` and momentum buffer ``B`` (all sharded alike)::

        B <- momentum * B + (1 - momentum) * G
        M <- (1 - momentum) * G + momentum * B   (nesterov)   or   B
        W <- W * (1 - lr * weight_decay) - lr * update_scale(W) * NS(M)

    Only ``NS`` needs the whole matrix; everything else stays on this process's rows.
    """

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every matrix that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"]
                buffer.lerp_(p.grad, 1 - momentum)
                direction = p.grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalised(direction, group["ns_steps"], group["ns_coefficients"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-lr * update_scale(p.shape, group["adjust_lr_fn"]))
        return loss

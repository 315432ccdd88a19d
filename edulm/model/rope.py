"""Rotary position embeddings in the rotate-half layout that transformers' Llama uses.

The head vector is split into two halves ``(x1, x2)``; position ``p`` rotates the pair
``(x1[i], x2[i])`` by the angle ``p * theta^(-2i/head_dim)``. Because this is the Hugging Face
layout (not the interleaved one of the original Llama code), q/k weights need no permutation on
export.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Precomputed cos/sin tables of shape (max_seq_len, head_dim), in float32."""

    def __init__(self, head_dim: int, max_seq_len: int, theta: float) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        cos, sin = self._tables(max_seq_len)
        # Not persistent: derived from the config, so they never enter a checkpoint.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, length: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float() / self.head_dim))
        pos = torch.arange(length, dtype=torch.int64, device=device).float()
        freqs = torch.outer(pos, inv_freq)  # (T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (T, hd)
        return emb.cos(), emb.sin()

    def reset_tables(self) -> None:
        """Recompute the tables in place (after the module was built on the meta device)."""
        cos, sin = self._tables(self.cos.shape[0], device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def forward(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for positions ``start .. start + length - 1``, each (length, head_dim)."""
        return self.cos[start : start + length], self.sin[start : start + length]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` of shape (B, H, T, hd) by the (T, hd) tables; computed in float32, returned in x's dtype."""
    dtype = x.dtype
    xf = x.float()
    out = xf * cos + rotate_half(xf) * sin
    return out.to(dtype)

"""Grouped-query causal self-attention through ``scaled_dot_product_attention``.

Query heads share key/value heads in groups of ``n_heads / n_kv_heads``. SDPA picks its fastest
kernel (flash / cuDNN / memory-efficient on GPU, a fused kernel on CPU); ``enable_gqa`` lets it read
the shared K/V heads without materialising repeated copies.

Which kernels read grouped K/V heads natively (torch's ``sdp_utils``): on CPU the fused kernel does;
on CUDA, flash attention and cuDNN do, but only for fp16/bf16 inputs, and flash takes no explicit
mask. The memory-efficient kernel (the one CUDA uses for float32) does not, and SDPA would then fall
back to the math kernel, which builds the whole (T x T) score matrix. So on CUDA in float32, or with a
mask, K/V heads are repeated first (:func:`native_gqa`): a little extra memory instead of a T x T one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edulm.model.rope import apply_rope


def native_gqa(device_type: str, dtype: torch.dtype, has_mask: bool) -> bool:
    """Whether SDPA's fast kernel for this device/dtype/mask reads grouped K/V heads without repeating them."""
    if device_type != "cuda":
        return True
    return dtype in (torch.float16, torch.bfloat16) and not has_mask


class KVCache:
    """Preallocated keys and values of one layer for incremental decoding, each (B, n_kv, max_len, hd)."""

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int, *, device, dtype) -> None:
        self.k = torch.zeros(batch, n_kv_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v`` (B, n_kv, T, hd) at positions ``start..start+T-1``; return all keys/values so far."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    """Causal GQA; names match transformers' ``LlamaAttention`` (q_proj, k_proj, v_proj, o_proj)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d_model, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, d_model, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None = None,
        start: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, n_kv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask = None
        is_causal = T > 1
        if cache is not None:
            k, v = cache.update(start, k, v)  # (B, n_kv, start + T, hd)
            if start > 0 and T > 1:
                # A chunk after earlier tokens: query i sees every cached key and its own prefix.
                mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(diagonal=start)
                is_causal = False
        grouped = self.n_kv_heads != self.n_heads
        if grouped and not native_gqa(q.device.type, q.dtype, mask is not None):
            repeats = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)  # (B, H, S, hd)
            grouped = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=grouped
        )  # (B, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))

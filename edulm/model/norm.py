"""RMSNorm, computed in float32 like transformers' ``LlamaRMSNorm``."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``; the statistics are taken in float32 whatever the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        # Cast back before scaling, as transformers does, so bf16 results match it bit for bit.
        out = self.weight * x.to(dtype)
        device_type = out.device.type
        if torch.is_autocast_enabled(device_type):
            # Every reader is a projection that autocast would cast anyway, each one separately:
            # casting once here lets q/k/v (gate/up) share one saved copy, the same values.
            out = out.to(torch.get_autocast_dtype(device_type))
        return out

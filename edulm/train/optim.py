"""AdamW with two parameter groups: weight decay on the linear weight matrices only.

Decayed: every 2-D weight of an ``nn.Linear`` (attention and MLP projections, and an untied LM
head). Not decayed: RMSNorm weights (1-D) and embedding matrices. With tied embeddings the one
matrix that is both the input embedding and the LM head counts as an embedding and is *not*
decayed: decaying it would pull the token representations themselves toward zero.
"""

from __future__ import annotations

import torch
from torch import nn

from edulm.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """``[{decayed params}, {not decayed params}]``, each with a ``names`` list (tied weights appear once)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = {"params": [], "names": [], "weight_decay": weight_decay}, {"params": [], "names": [], "weight_decay": 0.0}
    for name, p in model.named_parameters():  # named_parameters yields a shared (tied) tensor once
        if not p.requires_grad:
            continue
        group = decay if p.ndim == 2 and id(p) not in embedding_ids else no_decay
        group["params"].append(p)
        group["names"].append(name)
    return [decay, no_decay]


def describe_groups(groups: list[dict], tied: bool) -> str:
    """One line saying how many tensors and parameters each group holds and what is not decayed."""
    decay, no_decay = groups
    n_decay = sum(p.numel() for p in decay["params"])
    n_plain = sum(p.numel() for p in no_decay["params"])
    embeds = [n for n in no_decay["names"] if "embed" in n]
    return (
        f"weight decay {decay['weight_decay']} on {len(decay['params'])} matrices ({n_decay:,} params); "
        f"none on {len(no_decay['params'])} tensors ({n_plain:,} params: norms and embeddings {', '.join(embeds) or '-'}"
        f"{' (tied with lm_head)' if tied else ''})"
    )


def build_optimizer(model: nn.Module, train: TrainConfig) -> tuple[torch.optim.AdamW, list[dict]]:
    """AdamW over :func:`param_groups`; the fused CUDA kernel when every parameter is on CUDA, else foreach."""
    groups = param_groups(model, train.weight_decay)
    on_cuda = all(p.device.type == "cuda" for g in groups for p in g["params"])
    kind = {"fused": True} if on_cuda else {"foreach": True}
    optimizer = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups if g["params"]],
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
        **kind,
    )
    return optimizer, groups


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr

"""Optimizers keyed by ``train.optimizer``, behind one object the loop and the checkpoints use.

:class:`Optimizers` holds one or more torch optimizers (an optimizer that treats matrices and the
other parameters differently is two of them) and offers what the loop needs: ``step``,
``zero_grad``, ``param_groups``, ``params``, ``set_lr``, and an unsharded ``state_dict`` /
``load_state_dict`` keyed by parameter name (so a run can resume on another strategy, DDP or FSDP2).

Every parameter group carries ``lr_scale``, its learning rate as a multiple of the schedule's:
``set_lr(lr)`` sets ``group["lr"] = lr * group["lr_scale"]``, where ``lr`` is the schedule's value
for the base groups (``train.lr`` at the peak). AdamW's groups all have ``lr_scale`` 1.

Adding an optimizer: write ``build_NAME(model, train) -> Optimizers`` below, add it to
:data:`OPTIMIZERS`, and add ``"NAME"`` to the ``Literal`` of ``TrainConfig.optimizer`` (its docstring
says what it does).

AdamW's groups: weight decay on the linear weight matrices only. Decayed: every 2-D weight of an
``nn.Linear`` (attention and MLP projections, and an untied LM head). Not decayed: RMSNorm weights
(1-D) and embedding matrices. With tied embeddings the one matrix that is both the input embedding
and the LM head counts as an embedding and is *not* decayed: decaying it would pull the token
representations themselves toward zero.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import nn

from edulm.config import TrainConfig
from edulm.train.distributed import full_optimizer_state, load_optimizer_state


class Optimizers:
    """One or more torch optimizers over the parameters of ``model``, used as one.

    ``model`` is the module whose parameter names key the saved state (the unwrapped model; FSDP2
    shards it in place, which is fine). Every group must carry ``lr_scale``.
    """

    def __init__(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], description: str) -> None:
        self.model = model
        self.optimizers = list(optimizers)
        self.description = description  # one line for the run's announcement: what it is, how parameters are grouped
        missing = [i for i, g in enumerate(self.param_groups) if "lr_scale" not in g]
        if missing:
            raise ValueError(f"parameter groups {missing} have no 'lr_scale'; every group needs one")
        # The multipliers come from the config, not from a checkpoint: kept to put back after a load.
        self._lr_scales = [g["lr_scale"] for g in self.param_groups]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The live parameter groups of every optimizer, in order."""
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def params(self) -> list[nn.Parameter]:
        """Every parameter trained, in group order (what gradient clipping measures)."""
        return [p for g in self.param_groups for p in g["params"]]

    def set_lr(self, lr: float) -> None:
        """Set each group's learning rate to ``lr * lr_scale`` (``lr``: the schedule's value)."""
        for group in self.param_groups:
            group["lr"] = lr * group["lr_scale"]

    def step(self) -> None:
        """One update of every optimizer."""
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The full, unsharded state keyed by parameter name (a collective under FSDP2: every process calls it)."""
        return full_optimizer_state(self.model, self.optimizers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` into this process's (possibly sharded) optimizers.

        The saved hyperparameters of each group come back with it, except ``lr_scale``, which the
        config decides (and which checkpoints written before it existed do not hold).
        """
        load_optimizer_state(self.model, self.optimizers, state)
        for group, scale in zip(self.param_groups, self._lr_scales):
            group["lr_scale"] = scale


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


def build_adamw(model: nn.Module, train: TrainConfig) -> Optimizers:
    """AdamW over :func:`param_groups`; the fused CUDA kernel when every parameter is on CUDA, else foreach."""
    groups = param_groups(model, train.weight_decay)
    on_cuda = all(p.device.type == "cuda" for g in groups for p in g["params"])
    kind = {"fused": True} if on_cuda else {"foreach": True}
    optimizer = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": 1.0} for g in groups if g["params"]],
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
        **kind,
    )
    tied = bool(getattr(getattr(model, "config", None), "tie_embeddings", False))
    return Optimizers(model, [optimizer], f"AdamW, {describe_groups(groups, tied)}")


OptimizerBuilder = Callable[[nn.Module, TrainConfig], Optimizers]
"""``(model, train config) -> Optimizers``; called after the model is on its device and wrapped."""

OPTIMIZERS: dict[str, OptimizerBuilder] = {
    "adamw": build_adamw,
}
"""``train.optimizer`` value -> its builder."""


def build_optimizer(model: nn.Module, train: TrainConfig) -> Optimizers:
    """The optimizer ``train.optimizer`` names, over the parameters of ``model``."""
    return OPTIMIZERS[train.optimizer](model, train)

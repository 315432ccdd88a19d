"""``train.optimizer: adamw`` (the default): AdamW with weight decay on the linear weight matrices only."""

from __future__ import annotations

from torch import nn

from edulm.config import TrainConfig
from edulm.train.optim.base import OptimizerKind, Optimizers, adamw_over, describe_groups, is_tied, param_groups, state_size


class AdamW(OptimizerKind):
    """AdamW over :func:`~edulm.train.optim.base.param_groups` (``train.lr``, ``beta1``, ``beta2``, ``eps``,
    ``weight_decay``); the fused CUDA kernel when every parameter is on CUDA, else foreach. No settings of its own."""

    name = "adamw"

    def build(self, model: nn.Module, train: TrainConfig) -> Optimizers:
        groups = param_groups(model, train.weight_decay)
        return Optimizers(model, [adamw_over(groups, train)], f"AdamW, {describe_groups(groups, is_tied(model))}")

    def state_bytes(self, model: nn.Module, train: TrainConfig) -> int:
        """Two moments (``exp_avg``, ``exp_avg_sq``) per trained parameter, in its dtype."""
        return state_size((p for p in model.parameters() if p.requires_grad), 2)


OPTIMIZER = AdamW()

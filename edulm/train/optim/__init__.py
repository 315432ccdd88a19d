"""Optimizers keyed by ``train.optimizer``: each one :class:`~edulm.train.optim.base.OptimizerKind` object.

The built-in ones are the modules of this folder that define ``OPTIMIZER`` (``adamw.py``, ``muon.py``); a
project's own is ``train.optimizer: 'package.module:Name'`` (an ``OptimizerKind`` subclass or instance). Adding
one to edulm is one module here plus its test: ``docs/architecture.md`` "Extending the trainer".
"""

from __future__ import annotations

from torch import nn

from edulm.base.errors import UsageError
from edulm.base.plugins import builtin_kinds, kind_named
from edulm.config import TrainConfig
from edulm.train.optim.base import (OptimizerKind, Optimizers, adamw_over, block_matrices, describe_groups,
                                    param_groups)

__all__ = ["OPTIMIZERS", "OptimizerKind", "Optimizers", "adamw_over", "block_matrices", "build_optimizer",
           "check_resumed_optimizer", "describe_groups", "optimizer_kind", "optimizer_state_bytes", "param_groups"]


OPTIMIZERS: dict[str, OptimizerKind] = builtin_kinds(__name__, __path__, "OPTIMIZER", OptimizerKind)
"""The built-in values of ``train.optimizer`` and their kinds."""


def optimizer_kind(name: str) -> OptimizerKind:
    """The kind ``train.optimizer`` names: a built-in name or ``'package.module:Name'``; anything else is one
    :class:`~edulm.base.errors.UsageError`."""
    return kind_named(name, OPTIMIZERS, "train.optimizer", OptimizerKind)


def build_optimizer(model: nn.Module, train: TrainConfig) -> Optimizers:
    """The optimizer ``train.optimizer`` names, over the parameters of ``model``."""
    return optimizer_kind(train.optimizer).build(model, train)


def optimizer_state_bytes(model: nn.Module, train: TrainConfig) -> int:
    """Bytes of state the optimizer ``train.optimizer`` names keeps for ``model``."""
    return optimizer_kind(train.optimizer).state_bytes(model, train)


def check_resumed_optimizer(saved: TrainConfig, train: TrainConfig, checkpoint: str) -> None:
    """Refuse, before anything is written, a resume whose optimizer is not the checkpoint's (``saved``).

    A resume loads the optimizer's parameter groups with their hyperparameters, so another
    ``train.optimizer`` cannot load at all, and other values of what it keeps (betas, weight decay, its own
    settings but its rates) would be silently replaced by the checkpoint's while the start-up line, the run's
    config.yaml and the card showed the config's. One line names them.
    """
    fresh_start = f"or start a new run from its weights with model.init_from={checkpoint} (a fresh optimizer)"
    if saved.optimizer != train.optimizer:
        raise UsageError(f"{checkpoint}: the checkpoint was trained with train.optimizer={saved.optimizer}, the config "
                         f"says {train.optimizer}; resume with train.optimizer={saved.optimizer}, {fresh_start}")
    kind = optimizer_kind(train.optimizer)
    old, new = kind.kept_on_resume(saved), kind.kept_on_resume(train)
    changed = [key for key in new if old.get(key) != new[key]]
    if changed:
        moves = ", ".join(f"{key} {old.get(key)} -> {new[key]}" for key in changed)
        raise UsageError(f"{checkpoint}: the config changes the optimizer's settings ({moves}), but a resume keeps "
                         "the checkpoint's (only the learning rates follow the config); resume with the checkpoint's "
                         f"values, {fresh_start}")

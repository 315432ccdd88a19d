"""``train.optimizer: muon``: Muon on the weight matrices inside the decoder blocks, AdamW on the rest.

Muon (:mod:`edulm.train.optim.muon_update`) on attention q/k/v/o and MLP gate/up/down, with the settings of
``train.optimizer_settings`` (:class:`MuonSettings`) and ``lr_scale = lr / train.lr``; AdamW, exactly as
``adamw``, on everything else (the embedding and tied head, the norms, an untied head), at ``train.lr``. Muon
is for the hidden layers' matrices only: the embedding is a lookup table, not a linear map of its input, and
the head is tied to it or better served by Adam (Keller Jordan's Muon write-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from edulm.base.errors import UsageError
from edulm.config import TrainConfig
from edulm.train.optim.base import (OptimizerKind, Optimizers, adamw_over, block_matrices, describe_groups, is_tied,
                                    param_groups, state_size)
from edulm.train.optim.muon_update import ShardedMuon


@dataclass
class MuonSettings:
    """``train.optimizer_settings`` of ``train.optimizer: muon``."""

    lr: float = 0.0
    """Peak learning rate of the Muon matrices; 0 means train.lr, the natural choice with adjust_lr='match_rms_adamw'. The schedule scales it like train.lr."""
    adjust_lr: Literal["match_rms_adamw", "original"] = "match_rms_adamw"
    """How Muon sizes each matrix's update: 'match_rms_adamw' multiplies the lr by 0.2 x sqrt(max(rows, cols)) so updates have AdamW's RMS and share its lr and weight decay (Moonshot AI, 'Muon is Scalable for LLM Training', 2025); 'original' by sqrt(max(1, rows / cols)) (Keller Jordan's Muon; set lr, about 0.02)."""
    momentum: float = 0.95
    """Momentum of the Muon matrices, in [0, 1)."""
    nesterov: bool = True
    """Nesterov momentum for the Muon matrices."""
    ns_steps: int = 5
    """Newton-Schulz iterations that orthogonalise each update (1 to 99)."""
    weight_decay: float = 0.1
    """Decoupled weight decay of the Muon matrices (the lr times this each step); 0.1 as in Moonlight, matching train.weight_decay."""

    def check(self, train: TrainConfig) -> None:
        """A rate and a decay that are not negative, a momentum in [0, 1), 1 to 99 Newton-Schulz steps, and an
        explicit rate with 'original' scaling (whose updates are far smaller than AdamW's at the same lr)."""
        where = "train.optimizer_settings"
        for key in ("lr", "weight_decay"):
            if getattr(self, key) < 0:
                raise UsageError(f"{where}.{key} must not be negative, got {getattr(self, key)}")
        if not 0 <= self.momentum < 1:
            raise UsageError(f"{where}.momentum must be in [0, 1), got {self.momentum}")
        if not 1 <= self.ns_steps < 100:
            raise UsageError(f"{where}.ns_steps must be between 1 and 99, got {self.ns_steps}")
        if self.adjust_lr == "original" and self.lr == 0:
            raise UsageError(
                f"{where}.adjust_lr=original needs its own {where}.lr (about 0.02; sharing train.lr={train.lr} would "
                f"make Muon's updates far smaller than AdamW's); set {where}.lr, or use adjust_lr=match_rms_adamw")


class Muon(OptimizerKind):
    """Muon on :func:`~edulm.train.optim.base.block_matrices`, AdamW on everything else.

    ``torch.optim.Muon`` on plain tensors (one process, DDP); :class:`~edulm.train.optim.muon_update.ShardedMuon`
    when FSDP2 has made the matrices DTensors. Both have the same state, so checkpoints move between them.
    """

    name = "muon"
    Settings = MuonSettings
    settings_following_config = ("lr",)

    def lr_scales(self, train: TrainConfig) -> dict[str, float]:
        """The Muon group's rate as a multiple of the schedule's: ``lr / train.lr``, or 1 when ``lr`` is 0."""
        settings = self.settings(train)
        return {"Muon": settings.lr / train.lr if settings.lr > 0 else 1.0}

    def build(self, model: nn.Module, train: TrainConfig) -> Optimizers:
        s = self.settings(train)
        matrices = block_matrices(model)
        if not matrices:
            raise UsageError("train.optimizer=muon: the model has no weight matrices inside its blocks; use adamw")
        sharded = any(isinstance(p, DTensor) for p in matrices.values())
        muon_class = ShardedMuon if sharded else torch.optim.Muon
        scale = self.lr_scales(train)["Muon"]
        muon = muon_class(
            [{"params": list(matrices.values()), "lr_scale": scale}],
            lr=train.lr * scale,
            weight_decay=s.weight_decay,
            momentum=s.momentum,
            nesterov=s.nesterov,
            ns_steps=s.ns_steps,
            adjust_lr_fn=s.adjust_lr,
        )
        groups = param_groups(model, train.weight_decay, leave_out=matrices.values())
        n_matrices = sum(p.numel() for p in matrices.values())
        description = (
            f"Muon on {len(matrices)} block matrices ({n_matrices:,} params; lr {scale:g} x the schedule's, "
            f"momentum {s.momentum}{' Nesterov' if s.nesterov else ''}, {s.ns_steps} Newton-Schulz "
            f"steps, {s.adjust_lr} update scale, weight decay {s.weight_decay}; "
            f"{'edulm ShardedMuon' if sharded else 'torch.optim.Muon'}); "
            f"AdamW on the rest: {describe_groups(groups, is_tied(model))}"
        )
        return Optimizers(model, [muon, adamw_over(groups, train)], description)

    def state_bytes(self, model: nn.Module, train: TrainConfig) -> int:
        """One momentum buffer per block matrix, plus AdamW's two moments for every other parameter. (The
        Newton-Schulz iteration's bf16 work matrices live one matrix at a time: a few MiB, left to the headroom.)"""
        matrices = block_matrices(model).values()
        muon_ids = {id(p) for p in matrices}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in muon_ids]
        return state_size(matrices, 1) + state_size(rest, 2)


OPTIMIZER = Muon()

"""An optimizer, a schedule and a callback written as docs/architecture.md's recipes say, in a module of one's own
(used by test_extension_recipes.py through ``train.optimizer``, ``train.schedule`` and ``train.callbacks``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edulm.base.errors import UsageError
from edulm.train.callbacks import Callback
from edulm.train.optim import OptimizerKind, Optimizers, param_groups
from edulm.train.optim.base import state_size
from edulm.train.schedule import ScheduleKind, warmup_rate
from edulm.base.step_file import StepFile


@dataclass
class SGDSettings:
    """``train.optimizer_settings`` of SGD with momentum."""

    momentum: float = 0.9
    """Momentum, in [0, 1)."""

    def check(self, train) -> None:
        if not 0 <= self.momentum < 1:
            raise UsageError(f"train.optimizer_settings.momentum must be in [0, 1), got {self.momentum}")


class SGDMomentum(OptimizerKind):
    """SGD with momentum over AdamW's groups (decay on the linear matrices only)."""

    name = "sgdm"
    Settings = SGDSettings
    kept_train_keys = ("weight_decay",)

    def build(self, model, train) -> Optimizers:
        settings = self.settings(train)
        groups = param_groups(model, train.weight_decay)
        sgd = torch.optim.SGD([{"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": 1.0} for g in groups],
                              lr=train.lr, momentum=settings.momentum)
        return Optimizers(model, [sgd], f"SGD, momentum {settings.momentum}")

    def state_bytes(self, model, train) -> int:
        return state_size((p for p in model.parameters() if p.requires_grad), 1)  # one momentum buffer


@dataclass
class LinearSettings:
    """``train.schedule_settings`` of the linear decay."""

    end_ratio: float = 0.0
    """The rate at the last step as a share of the peak."""


class Linear(ScheduleKind):
    """Linear warmup, then a straight line from the peak to ``end_ratio`` x the peak at the last step."""

    name = "linear"
    Settings = LinearSettings

    def rate(self, step, total_steps, train) -> float:
        warm = warmup_rate(step, train)
        if warm is not None:
            return warm
        end = train.lr * self.settings(train).end_ratio
        progress = min(1.0, (step - train.warmup_steps) / max(1, total_steps - train.warmup_steps))
        return train.lr - (train.lr - end) * progress

    def describe(self, train) -> str:
        return "then a linear decay"


class LossLines(Callback):
    """``training/losses.jsonl``: every step's loss; ``state_dict`` keeps how many steps it has seen in all."""

    def __init__(self) -> None:
        self.seen = 0
        self.file: StepFile | None = None

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]

    def on_start(self, run) -> None:
        if run.env.is_main:
            self.file = StepFile(run.layout.training / "losses.jsonl").open(run.state.step if run.resumed_from else 0)

    def on_step_end(self, run, event) -> None:
        self.seen += 1
        if self.file is not None:
            self.file.write({"step": event.step, "loss": event.result.loss, "lr": event.lr, "seen": self.seen})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

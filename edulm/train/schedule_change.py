"""A resume whose schedule differs from the checkpoint's: what changed, and whether it may go on.

A run resumed from step ``S`` may be given other schedule settings (``train.max_steps`` or
``token_budget``, ``lr``, ``schedule``, ``warmup_steps``, ``min_lr_ratio``, ``decay_fraction``, the schedule's own
settings; and the ``lr_scales`` of an optimizer whose groups train at other rates, such as Muon's matrices, whose
change moves that group's rate at every step to come). The rule:

- the change is *continuous* when the new schedule gives step ``S`` the rate it trained with: the
  run goes on from where it is, without a jump. Extending a WSD (or constant) run in its stable
  phase is continuous, and so is a WSD decay that starts at ``S`` (a decay run); it goes ahead, with
  one line saying what changed.
- otherwise the rate of the next steps jumps (a longer cosine bends the curve back up; a WSD run
  already in its decay would climb back to the peak): refused unless ``--allow-schedule-change``.

Either way the change is recorded (:meth:`ScheduleChange.record`, kept in the trainer state and
written to the summary). Plain Python: pure functions of the settings, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edulm.config import TrainConfig
from edulm.train.optim import optimizer_kind
from edulm.train.schedule import lr_at, schedule_kind

SCHEDULE_KEYS = ("schedule", "lr", "warmup_steps", "min_lr_ratio", "decay_fraction")
"""The ``train.*`` keys the schedules read (with the run's step count, ``total_steps``)."""

LR_TOLERANCE = 1e-9
"""Relative difference below which two learning rates are the same (the schedules are exact, JSON keeps floats)."""


def schedule_settings(train: TrainConfig, total_steps: int) -> dict[str, Any]:
    """Everything that decides the rate of every step: the schedule keys, its own settings (when it has any),
    the step count, and the optimizer's ``lr_scales`` (its groups that train at another multiple of the
    schedule's rate, e.g. ``{"Muon": 1.0}``; absent when every group follows the schedule)."""
    settings = {"total_steps": total_steps, **{key: getattr(train, key) for key in SCHEDULE_KEYS}}
    if train.schedule_settings:
        settings["schedule_settings"] = dict(train.schedule_settings)
    scales = optimizer_kind(train.optimizer).lr_scales(train)
    if scales:
        settings["lr_scales"] = scales
    return settings


def _lr_scales(settings: dict[str, Any]) -> dict[str, float]:
    """The ``lr_scales`` of :func:`schedule_settings` (empty when every group follows the schedule)."""
    return dict(settings.get("lr_scales") or {})


def _scales_differ(old: dict[str, float], new: dict[str, float]) -> bool:
    """True when a group present in both records trains at another multiple of the schedule's rate."""
    return any(not math.isclose(old[group], new[group], rel_tol=LR_TOLERANCE) for group in old.keys() & new.keys())


@dataclass(frozen=True)
class ScheduleChange:
    """The schedule of a resumed run differs from its checkpoint's from step ``step + 1`` on."""

    step: int
    """The checkpoint's step (the last one trained under the old schedule)."""
    old: dict[str, Any]
    """:func:`schedule_settings` of the checkpoint."""
    new: dict[str, Any]
    """:func:`schedule_settings` of the resumed run."""
    lr_trained: float
    """The rate step ``step`` trained with."""
    lr_new_at_step: float
    """The rate the new schedule gives step ``step``."""
    next_lr_old: float
    """The rate the old schedule gives step ``step + 1``."""
    next_lr_new: float
    """The rate the new schedule gives step ``step + 1``."""

    @property
    def scale_changed(self) -> bool:
        """True when a group's rate moves against the schedule's (another ``lr_scale``, e.g. Muon's
        ``train.optimizer_settings.lr``): at every step to come."""
        steps_to_come = self.new["total_steps"] > self.step
        return steps_to_come and _scales_differ(_lr_scales(self.old), _lr_scales(self.new))

    @property
    def continuous(self) -> bool:
        """True when the new schedule passes through the rate the run trained its last step with, for every group."""
        return math.isclose(self.lr_new_at_step, self.lr_trained, rel_tol=LR_TOLERANCE) and not self.scale_changed

    def differences(self) -> str:
        """``total_steps 20 -> 40, schedule cosine -> wsd``: the settings that differ."""
        changed = [f"{key} {self.old[key]} -> {self.new[key]}" for key in self.new if self.old.get(key) != self.new[key]]
        return ", ".join(changed) or "the same settings"

    def describe(self) -> str:
        """The line printed at start-up."""
        return (f"schedule changed from step {self.step + 1:,} on ({self.differences()}): "
                f"lr {self.next_lr_new:.3e} at step {self.step + 1:,} (the old schedule: {self.next_lr_old:.3e})")

    def refusal(self, where: str) -> str:
        """The one-line reason a discontinuous change is refused without ``--allow-schedule-change``."""
        if self.scale_changed:
            old, new = _lr_scales(self.old), _lr_scales(self.new)
            moves = ", ".join(f"{group} {old[group]:g} -> {new[group]:g}" for group in old.keys() & new.keys()
                              if old[group] != new[group])
            return (f"{where}: the schedule differs from the checkpoint's ({self.differences()}) and would move the "
                    f"learning rate of the optimizer's groups against the schedule's ({moves} x the schedule's) at "
                    "every step to come; resume with the checkpoint's optimizer rates, or pass --allow-schedule-change "
                    "to continue with the new ones")
        return (f"{where}: the schedule differs from the checkpoint's ({self.differences()}) and would move the "
                f"learning rate: step {self.step:,} trained at {self.lr_trained:.3e}, the new schedule gives it "
                f"{self.lr_new_at_step:.3e} and step {self.step + 1:,} {self.next_lr_new:.3e} (the old schedule: "
                f"{self.next_lr_old:.3e}); resume with the checkpoint's schedule settings, or pass "
                f"--allow-schedule-change to continue with the new ones ({self._longer_hint()})")

    def _longer_hint(self) -> str:
        """How to train longer (or decay) without a jump, from where this run is."""
        old = _train_with(self.old)
        kind = schedule_kind(old.schedule)
        stable_end = kind.stable_end(self.old["total_steps"], old)
        if stable_end is None:
            return (f"every rate of a {kind.name} run depends on its length: to train longer without a jump, use a "
                    "schedule with a stable phase (train.schedule=wsd) and extend it while it is in that phase")
        if self.step <= stable_end:
            # The checkpoint is at the peak: the jump comes from the new settings (another lr or warmup, or
            # a decay placed before the checkpoint), not from where the run stands.
            s, d = f"{self.step:,}", "D"
            return (f"step {s} is in the stable phase, so keeping train.lr and train.warmup_steps continues it "
                    f"without a jump; a decay of {d} steps from it needs train.schedule=wsd, "
                    f"train.max_steps={s} + {d} and train.decay_fraction={d} / ({s} + {d}) or a little less")
        return (f"this {kind.name} run left its stable phase after step {stable_end:,}: to train longer without a "
                f"jump, resume a checkpoint of step {stable_end:,} or earlier into a new run.out_dir with --resume PATH")

    def record(self, allowed_by_flag: bool) -> dict[str, Any]:
        """The entry kept in the trainer state and listed in the summary's ``schedule_changes``."""
        return {"step": self.step + 1, "old": dict(self.old), "new": dict(self.new),
                "lr_before": self.lr_trained, "lr_after": self.next_lr_new, "allowed_by_flag": allowed_by_flag}


def _train_with(settings: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{key: settings[key] for key in SCHEDULE_KEYS},
                       schedule_settings=dict(settings.get("schedule_settings") or {}))


def schedule_change(old: dict[str, Any], new: dict[str, Any], step: int, lr_trained: float) -> ScheduleChange | None:
    """How resuming after ``step`` changes the schedule from ``old`` to ``new`` (:func:`schedule_settings`).

    None when nothing changes: the same step count and the same rate for every step still to come
    (a key that the schedule in use does not read, such as ``decay_fraction`` of a cosine run, changes nothing).
    """
    old_train, new_train = _train_with(old), _train_with(new)
    old_total, new_total = old["total_steps"], new["total_steps"]
    same_rates = all(
        lr_at(s, old_train, old_total) == lr_at(s, new_train, new_total) for s in range(step + 1, max(old_total, new_total) + 1)
    )
    same_scales = not _scales_differ(_lr_scales(old), _lr_scales(new)) or new_total <= step
    if old_total == new_total and same_rates and same_scales:
        return None
    return ScheduleChange(
        step=step, old=dict(old), new=dict(new), lr_trained=lr_trained,
        lr_new_at_step=lr_at(step, new_train, new_total),
        next_lr_old=lr_at(step + 1, old_train, old_total), next_lr_new=lr_at(step + 1, new_train, new_total),
    )

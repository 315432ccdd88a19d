"""What every schedule shares: the :class:`ScheduleKind` each value of ``train.schedule`` is, the warmup.

Steps are counted from 1: step ``s`` is the ``s``-th optimizer update, and ``lr_at(s, ...)`` is the
learning rate that update uses. A schedule's rate is a function ``(step, total_steps, train) -> lr`` that
returns the learning rate of the base parameter groups, in absolute units (``train.lr`` at the
peak); each group then trains at ``lr * group["lr_scale"]`` (see :mod:`edulm.train.optim`). It
returns the rate rather than a factor of ``train.lr`` so that the classic formulas keep their exact
floating-point values (``lr * step / warmup`` is not always bit-equal to ``lr * (step / warmup)``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping

from edulm.config import TrainConfig, own_settings


def warmup_rate(step: int, train: TrainConfig) -> float | None:
    """The rate of ``step`` in the linear warmup every schedule starts with, None after it.

    ``lr * step / warmup_steps`` up to ``warmup_steps`` (0 at step 0; no warmup: ``lr`` from the start).
    """
    warmup = train.warmup_steps
    if step <= 0:
        return 0.0 if warmup > 0 else train.lr
    if step <= warmup:
        return train.lr * step / warmup
    return None


class ScheduleKind:
    """One value of ``train.schedule``: its rates, what a resume may extend, its words in the model card, its
    settings. No module outside the schedule's own branches on its name: the loop, the resume rules
    (``schedule_change``) and the summary ask this object.

    A subclass sets :attr:`name` and writes :meth:`rate`; :meth:`stable_end` and :meth:`describe` have defaults
    that fit a schedule whose every rate depends on the run's length.
    """

    name: ClassVar[str] = ""
    """The value of ``train.schedule`` that selects it."""
    Settings: ClassVar[type | None] = None
    """A dataclass of its own keys, read from ``train.schedule_settings`` (a docstring under each field, a
    ``check(self, train)`` method for its ranges); None when it has none."""

    def settings(self, train: TrainConfig) -> Any:
        """``train.schedule_settings`` as :attr:`Settings` (defaults filled in); an unknown key, a wrong type or a
        value out of range is one :class:`~edulm.base.errors.UsageError`."""
        return own_settings(self.Settings, train.schedule_settings, "train.schedule_settings", f"train.schedule={train.schedule}",
                            train)

    def validate(self, train: TrainConfig) -> None:
        """Refuse settings this schedule cannot run with (by default: what :meth:`settings` refuses)."""
        self.settings(train)

    def rate(self, step: int, total_steps: int, train: TrainConfig) -> float:
        """The learning rate of the base groups at ``step`` of a run of ``total_steps`` steps; pure (no state)."""
        raise NotImplementedError

    def stable_end(self, total_steps: int, train: TrainConfig) -> int | None:
        """The last step of a run of ``total_steps`` steps that is still at the peak and stays there whatever the
        run's length, so a run checkpointed at that step or before can train longer (a larger ``max_steps``)
        without any step's rate moving. None (the default) when every rate after the warmup depends on the length."""
        return None

    def describe(self, train: Mapping[str, Any]) -> str:
        """Its words after the warmup, for the model card ("cosine decay to ..."), from the ``train`` section as a
        mapping (a summary's, so a key may be missing)."""
        return f"then the `{self.name}` schedule"


def floor_words(t: Mapping[str, Any]) -> str:
    """``0.1 × peak``: the floor the decaying schedules end at, in the card's words."""
    return f"{t.get('min_lr_ratio', '?')} × peak"

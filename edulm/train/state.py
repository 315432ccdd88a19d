"""The trainer's own state in one object: counters, batch geometry, the totals the summary needs.

:class:`TrainState` is one of the stateful components a checkpoint saves (as ``trainer_state.json``,
see :mod:`edulm.train.checkpointing`); everything else the loop counts lives here too, so adding a counter
is one field, saved and restored with the rest. Plain Python only (no torch).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class BatchShape:
    """The batch geometry a run trains with, resolved at its start (and kept by its checkpoints)."""

    micro_batch_size: int
    """Sequences per forward/backward pass on each process."""
    grad_accum_steps: int
    """Micro-batches accumulated into one optimizer step on each process."""
    world_size: int
    """Processes (one per device)."""
    seq_len: int
    """Tokens per sequence."""

    @property
    def sequences_per_step(self) -> int:
        """Sequences per optimizer step over all processes (what ``train.global_batch_size`` asks for)."""
        return self.micro_batch_size * self.grad_accum_steps * self.world_size

    @property
    def tokens_per_step(self) -> int:
        """Training tokens per optimizer step over all processes."""
        return self.sequences_per_step * self.seq_len

    def describe(self) -> str:
        """``6 x 43 accumulation x 1 processes x 2048 tokens = 528,384 tokens/step``."""
        return (f"{self.micro_batch_size} x {self.grad_accum_steps} accumulation x {self.world_size} processes x "
                f"{self.seq_len} tokens = {self.tokens_per_step:,} tokens/step")


@dataclass
class Tally:
    """Running totals of a run, carried across resumes in the checkpoint."""

    step_time_s: float = 0.0
    """Seconds spent in training steps (no evaluation or checkpoint writing)."""
    step_tokens: int = 0
    """Tokens trained in those steps."""
    after_warmup_time_s: float = 0.0
    """Step time after the warmup (and never a process's first step, which includes compilation)."""
    after_warmup_tokens: int = 0
    """Tokens of those steps."""
    wall_time_s: float = 0.0
    """Wall time of the run up to the last checkpoint or the end, over all resumed segments."""
    peak_memory_gb: float = 0.0
    """Largest memory figure reported by any row."""
    downstream_time_s: float = 0.0
    """Seconds spent scoring the downstream tasks (``train.downstream``)."""

    def add_step(self, seconds: float, tokens: int, after_warmup: bool) -> None:
        """Count one training step."""
        self.step_time_s += seconds
        self.step_tokens += tokens
        if after_warmup:
            self.after_warmup_time_s += seconds
            self.after_warmup_tokens += tokens

    def state_dict(self) -> dict[str, Any]:
        """Plain values for the checkpoint."""
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "Tally":
        """Rebuild from :meth:`state_dict` output (unknown keys ignored, missing ones default)."""
        return cls(**{k: v for k, v in state.items() if k in cls.__dataclass_fields__})


_BATCH_KEYS = tuple(f.name for f in fields(BatchShape))


@dataclass
class TrainState:
    """Where the run stands after ``step`` optimizer steps."""

    step: int = 0
    """Optimizer steps done."""
    tokens: int = 0
    """Training tokens seen (all processes)."""
    total_steps: int = 0
    """Steps the run is set to reach."""
    batch: BatchShape | None = None
    """The batch geometry (None until the run resolves it)."""
    lr: float = 0.0
    """Learning rate of the base parameter groups at the last step."""
    skipped_steps: int = 0
    """Steps whose update was skipped for a non-finite loss or gradient norm."""
    consecutive_nonfinite: int = 0
    """Non-finite steps in a row up to now (the divergence guard)."""
    last_loss: float | None = None
    """Training loss of the last step."""
    last_val_loss: float | None = None
    """Held-out loss of the last evaluation."""
    last_val_bpb: float | None = None
    """Held-out bits per byte of the last evaluation (None when the scored text has no bytes)."""
    tally: Tally = field(default_factory=Tally)
    """Time, token and memory totals for the summary."""
    init_from: dict[str, Any] | None = None
    """What the run continued from (``model.init_from``; ``edulm.train.init_from.InitSource.record``), None for a fresh model."""
    schedule_changes: list[dict[str, Any]] = field(default_factory=list)
    """Schedule changes made by resumes, oldest first (``edulm.train.schedule_change.ScheduleChange.record``)."""
    branched_from: list[dict[str, Any]] = field(default_factory=list)
    """Checkpoints of other run dirs this run was resumed from (``step``, ``checkpoint``), oldest first: its
    steps up to ``step`` were trained there (a decay run from a stable checkpoint, a run continued elsewhere)."""

    def record_step(self, loss: float, finite: bool) -> None:
        """Count one finished optimizer step (tokens, loss, non-finite counters)."""
        self.tokens += self.batch.tokens_per_step if self.batch else 0
        self.last_loss = loss
        if finite:
            self.consecutive_nonfinite = 0
        else:
            self.skipped_steps += 1
            self.consecutive_nonfinite += 1

    def state_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field (the ``trainer_state.json`` format: the batch keys sit at the top level)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, BatchShape):
                out.update(asdict(value))
            elif isinstance(value, Tally):
                out[f.name] = value.state_dict()
            elif f.name != "batch":
                out[f.name] = value
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`state_dict` returned (fields an older checkpoint lacks keep their defaults)."""
        fresh = TrainState()
        for f in fields(self):
            if f.name == "batch":
                value = BatchShape(**{k: state[k] for k in _BATCH_KEYS}) if all(k in state for k in _BATCH_KEYS) else None
            elif f.name == "tally":
                value = Tally.from_state_dict(state.get(f.name, {}))
            else:
                value = state.get(f.name, getattr(fresh, f.name))
            setattr(self, f.name, value)

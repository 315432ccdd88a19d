"""Everything a run tells the outside world, in one place and on rank 0 only.

:class:`Reporter` owns the progress bar, the metrics CSV, the optional TensorBoard and Weights &
Biases sinks, and the printed lines; on other ranks it is built with ``enabled=False`` and does
nothing. :class:`Tally` keeps the running totals the summary needs (and that survive a resume).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from edulm.config import Config
from edulm.errors import UsageError
from edulm.metrics import MetricsCSV, code_revision, cost_estimate, mfu, perplexity, versions, write_json
from edulm.model.llama import count_parameters, flops_per_token

TRAINING_DIR = "training"
METRICS_FILE = "training_metrics.csv"
SUMMARY_FILE = "training_summary.json"


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
        """Rebuild from :meth:`state_dict` output."""
        return cls(**{k: v for k, v in state.items() if k in cls.__dataclass_fields__})


class Reporter:
    """Progress bar, metrics rows and messages (a no-op unless ``enabled``)."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int, total_steps: int, resume_step: int | None, enabled: bool) -> None:
        self.enabled = enabled
        self.training_dir = run_dir / TRAINING_DIR
        self._csv = self._bar = self._tb = self._wandb = None
        if not enabled:
            return
        # The optional sinks first: a missing package is reported before any file is touched.
        self._tb = _tensorboard(self.training_dir / "tensorboard") if cfg.train.tensorboard else None
        self._wandb = _wandb(cfg) if cfg.train.wandb else None
        self._csv = MetricsCSV(self.training_dir / METRICS_FILE, resume_step=resume_step)
        self._bar = tqdm(total=total_steps, initial=start_step, unit="step", desc=cfg.run.name,
                         dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def info(self, message: str) -> None:
        """A line on stdout that does not break the progress bar."""
        if self.enabled:
            tqdm.write(message, file=sys.stdout)
            sys.stdout.flush()

    def warn(self, message: str) -> None:
        """A warning line on stderr."""
        if self.enabled:
            tqdm.write(f"edulm: warning: {message}", file=sys.stderr)

    def step(self, loss: float, lr: float, tokens_per_s: float | None) -> None:
        """Advance the bar by one step and show the latest loss and throughput."""
        if self._bar is not None:
            post = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
            if tokens_per_s:
                post["tok/s"] = f"{tokens_per_s:,.0f}"
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(1)

    def row(self, values: dict[str, Any]) -> None:
        """One metrics row to the CSV (and TensorBoard / W&B when enabled)."""
        if not self.enabled:
            return
        self._csv.write(values)
        step = int(values["step"])
        scalars = {k: v for k, v in values.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"train/{key}", value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        """Close the bar, the CSV and the sinks (safe to call twice)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._csv is not None:
            self._csv.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def write_summary(
    path: Path, *, status: str, cfg: Config, tally: Tally, step: int, total: int, tokens: int, step_tokens: int,
    skipped: int, last_loss: float | None, last_val: float | None, wall_time_s: float, device: dict[str, Any],
    device_type: str, world_size: int, amp: bool, peak_flops: float | None, gpu_hourly_rate: float | None,
    started_at: datetime,
) -> None:
    """Write ``training_summary.json``: totals, throughput, memory, device, time, cost, versions."""
    t = cfg.train
    fpt = flops_per_token(cfg.model, t.seq_len)
    after = tally.after_warmup_tokens / tally.after_warmup_time_s if tally.after_warmup_time_s > 0 else None
    summary = {
        "run": cfg.run.name,
        "status": status,
        "parameters": count_parameters(cfg.model),
        "flops_per_token": fpt,
        "steps": step,
        "total_steps": total,
        "tokens": tokens,
        "tokens_per_step": step_tokens,
        "batch": {"micro_batch_size": t.micro_batch_size, "grad_accum_steps": t.grad_accum_steps,
                  "world_size": world_size, "seq_len": t.seq_len},
        "skipped_steps": skipped,
        "final_train_loss": last_loss,
        "final_val_loss": last_val,
        "final_val_ppl": perplexity(last_val) if last_val is not None else None,
        "mean_tokens_per_s": tally.step_tokens / tally.step_time_s if tally.step_time_s > 0 else None,
        "mean_tokens_per_s_after_warmup": after,
        "mfu_after_warmup": mfu(after, fpt, peak_flops, world_size) if after else None,
        "peak_memory_gb": round(tally.peak_memory_gb, 4),
        "device": device,
        "precision": "bf16 autocast" if amp else "fp32",
        "distributed": t.distributed if world_size > 1 else None,
        "wall_time_s": round(wall_time_s, 3),
        "wall_time_h": round(wall_time_s / 3600, 6),
        **cost_estimate(wall_time_s, world_size if device_type == "cuda" else 0, gpu_hourly_rate),
        "versions": versions(),
        "code_revision": code_revision(),
        "segment_started_at": started_at.isoformat(timespec="seconds"),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(path, summary)


def _tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("train.tensorboard is true but the tensorboard package is not installed; "
                         "pip install tensorboard (or set train.tensorboard=false)") from None
    return SummaryWriter(log_dir=str(log_dir))


def _wandb(cfg: Config):
    try:
        import wandb
    except ImportError:
        raise UsageError("train.wandb is true but the wandb package is not installed; "
                         "pip install wandb (or set train.wandb=false)") from None
    from edulm.config import config_to_dict

    return wandb.init(project="edulm", name=cfg.run.name, config=config_to_dict(cfg), resume="allow")

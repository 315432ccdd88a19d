"""What a run tells the outside world: the progress bar, metrics rows and their sinks (CSV,
TensorBoard, W&B), the summary JSON, the plots. The plain log lines and ``train.log`` are
:mod:`edulm.train.run_log`.

These callbacks are built on rank 0 only (:func:`edulm.train.core_callbacks.default_callbacks`). A new metrics destination is one :class:`MetricsSink`
class (``open``, ``write``, ``close``) handed to :class:`MetricsLogger`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from edulm.config import Config
from edulm.base.errors import UsageError
from edulm.base.files import write_json
from edulm.base.metrics import MetricsCSV, perplexity, read_metrics
from edulm.evaluate.in_loop import score_names
from edulm.model.llama import count_parameters
from edulm.train.provenance import code_revision, cost_estimate, versions
from edulm.train.throughput import mfu, take_peak_memory_gb
from edulm.train.callbacks import Callback, Run, StepEnd
from edulm.train.schedule import schedule_kind


class ProgressBar(Callback):
    """The tqdm bar on stderr: steps, latest loss, learning rate and throughput."""

    def __init__(self) -> None:
        self._bar = None
        self._tokens_per_s: float | None = None

    def on_start(self, run: Run) -> None:
        self._bar = tqdm(total=run.state.total_steps, initial=run.state.step, unit="step", desc=run.cfg.run.name,
                         dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        if event.row is not None and event.row.get("tokens_per_s"):
            self._tokens_per_s = event.row["tokens_per_s"]
        post = {"loss": f"{event.result.loss:.4f}", "lr": f"{event.lr:.2e}"}
        if self._tokens_per_s:
            post["tok/s"] = f"{self._tokens_per_s:,.0f}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class MetricsSink(Protocol):
    """A destination of metrics rows."""

    def open(self, run: Run) -> None:
        """Get ready to write (called at the run's start, after set-up)."""
        ...

    def write(self, row: dict[str, Any]) -> None:
        """One row: ``step`` and the values of that step (None for what was not measured)."""
        ...

    def close(self) -> None:
        """Flush and release (safe to call twice, and without ``open``)."""
        ...


class CSVSink:
    """``training/training_metrics.csv`` (cut back to the checkpoint's step on resume)."""

    def __init__(self) -> None:
        self._csv: MetricsCSV | None = None

    def open(self, run: Run) -> None:
        resume_step = run.state.step if run.resumed_from else None
        self._csv = MetricsCSV(run.layout.metrics, resume_step=resume_step,
                               extra_columns=score_names(run.cfg.train.downstream))

    def write(self, row: dict[str, Any]) -> None:
        self._csv.write(row)

    def close(self) -> None:
        if self._csv is not None:
            self._csv.close()


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and v is not None}


class TensorBoardSink:
    """TensorBoard event files under ``training/tensorboard`` (``train.tensorboard``)."""

    def __init__(self) -> None:
        try:  # checked when the run is built, so a missing package stops it before any file is written
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError("train.tensorboard is true but the tensorboard package is not installed; "
                             "pip install tensorboard (or set train.tensorboard=false)") from None
        self._writer_class = SummaryWriter
        self._writer = None

    def open(self, run: Run) -> None:
        self._writer = self._writer_class(log_dir=str(run.layout.tensorboard))

    def write(self, row: dict[str, Any]) -> None:
        for key, value in _scalars(row).items():
            self._writer.add_scalar(f"train/{key}", value, int(row["step"]))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class WandbSink:
    """A Weights & Biases run (``train.wandb``): project ``train.wandb_project``, entity
    ``train.wandb_entity``, named ``run.name``, with the run's config.

    Its files go to ``training/wandb/`` in the run dir, wherever the command was started. The W&B
    run id is kept in ``training/wandb_run.json``: a resumed run continues that W&B run (same id,
    ``resume="allow"``), a new run starts a new one.
    """

    def __init__(self) -> None:
        try:
            import wandb
        except ImportError:
            raise UsageError("train.wandb is true but the wandb package is not installed; "
                             "pip install wandb (or set train.wandb=false)") from None
        self._wandb = wandb
        self._run = None

    def open(self, run: Run) -> None:
        from edulm.config import config_to_dict
        from edulm.base.logs import NORMAL, console_level

        t, layout = run.cfg.train, run.layout
        layout.training.mkdir(parents=True, exist_ok=True)
        self._run = self._wandb.init(
            project=t.wandb_project, entity=t.wandb_entity or None, name=run.cfg.run.name,
            id=saved_wandb_id(layout.wandb_run) if run.resumed_from else None, resume="allow",
            dir=str(layout.training), config=config_to_dict(run.cfg),
            settings=self._wandb.Settings(quiet=console_level() > NORMAL),
        )
        write_json(layout.wandb_run, {"id": self._run.id, "project": self._run.project, "entity": self._run.entity or None,
                                      "url": self._run.url}, "the W&B run id")

    def write(self, row: dict[str, Any]) -> None:
        self._run.log(_scalars(row), step=int(row["step"]))

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None


def saved_wandb_id(path: Path) -> str | None:
    """The W&B run id recorded in ``path`` (``training/wandb_run.json``), or None when there is none."""
    try:
        run_id = json.loads(path.read_text(encoding="utf-8")).get("id")
    except (OSError, ValueError, AttributeError):
        return None
    return run_id if isinstance(run_id, str) and run_id else None


def metrics_sinks(tensorboard: bool, wandb: bool) -> list[MetricsSink]:
    """The sinks a config asks for: the CSV always, TensorBoard and W&B when switched on."""
    # The optional ones first: a missing package is reported before anything is written.
    optional = ([TensorBoardSink()] if tensorboard else []) + ([WandbSink()] if wandb else [])
    return [*optional, CSVSink()]


class MetricsLogger(Callback):
    """Builds a metrics row when one is due and writes it to every sink.

    A row is due at step 1, every ``train.log_interval`` steps, at the last step, when a stop was
    requested or the run diverged, and whenever an earlier callback added values (an evaluation).
    ``tokens_per_s`` is measured over the steps since the previous row.
    """

    def __init__(self, sinks: list[MetricsSink]) -> None:
        self.sinks = sinks
        self._tokens = 0
        self._seconds = 0.0

    def on_start(self, run: Run) -> None:
        for sink in self.sinks:
            sink.open(run)

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        self._tokens += run.state.batch.tokens_per_step
        self._seconds += event.seconds
        due = (event.step % run.cfg.train.log_interval == 0 or event.step == 1 or event.values or event.last
               or event.stopping or event.diverged)
        if not due:
            return
        tokens_per_s = self._tokens / self._seconds if self._seconds > 0 else None
        self._tokens, self._seconds = 0, 0.0
        memory = take_peak_memory_gb(run.env.device)
        tally = run.state.tally
        tally.peak_memory_gb = max(tally.peak_memory_gb, memory)
        row = {
            "step": event.step,
            "tokens": run.state.tokens,
            "loss": event.result.loss,
            "lr": event.lr,
            "grad_norm": event.result.grad_norm,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu(tokens_per_s, run.flops_per_token, run.peak_flops, run.env.world_size) if tokens_per_s else None,
            "memory": round(memory, 4),
            "elapsed": round(run.elapsed(), 3),
            "val_loss": None,
            "val_ppl": None,
            "val_bpb": None,
            "skipped": run.state.skipped_steps,
            **event.values,
        }
        for sink in self.sinks:
            sink.write(row)
        event.row = row

    def on_end(self, run: Run, status: str) -> None:
        self.close()  # flushed before anything reads the CSV (plots, card)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def shards_manifest(cfg: Config) -> dict[str, Any] | None:
    """The run's shards manifest (read once per process for the summary); None when streaming or unreadable."""
    if cfg.data.streaming or cfg.train.objective == "sft":
        return None
    from edulm.data.shards import read_manifest

    try:
        return read_manifest(cfg.data.shards_dir)
    except (UsageError, OSError):
        return None  # the loader read it at start-up; a summary never fails the run over it


def chat_report(loader_state: dict[str, Any], seq_len: int) -> dict[str, Any]:
    """What a fine-tuning run's rows were (from the chat loader's state, :mod:`edulm.data.chat_loader`): the set's
    counts (conversations, held out, truncated, left out), the rows trained so far and the share of their
    positions that were trained targets (the rest: prompts, headers, padding)."""
    positions = loader_state["rows_seen"] * seq_len
    return {**loader_state["report"], "rows_trained": loader_state["rows_seen"],
            "trained_tokens": loader_state["trained_tokens"],
            "trained_token_share": loader_state["trained_tokens"] / positions if positions else None}


def data_report(cfg: Config, manifest: dict[str, Any] | None, tokens: int,
                loader_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the run's data really was, for the summary: the held-out split as prepared (the shards
    ``manifest``'s ``held_out``: tokens, documents, requested, short) and, for a mixture, what the run drew
    from each source (:func:`edulm.data.mixture.realised_mixture` for ``tokens``: tokens, share, epochs).

    None for what is not known: streaming runs have no manifest (a streamed mixture's draws are still
    known, without the prepared tokens and epochs: :func:`edulm.data.mixture.streamed_mixture`), and
    shards prepared before the manifest recorded ``held_out`` have none.
    """
    from edulm.data.mixture import realised_mixture, streamed_mixture

    if cfg.train.objective == "sft":  # chat records, read directly: no shards, no mixture
        chat = chat_report(loader_state, cfg.train.seq_len) if loader_state and loader_state.get("kind") == "chat" else None
        return {"shards_dir": None, "held_out": None, "mixture": None, "chat": chat}
    report: dict[str, Any] = {"shards_dir": None if cfg.data.streaming else cfg.data.shards_dir,
                              "held_out": None, "mixture": None}
    if cfg.data.streaming and cfg.data.is_mixture:
        entries = cfg.data.source
        usage = streamed_mixture([e.source for e in entries], [e.weight for e in entries], cfg.run.seed,
                                 cfg.train.seq_len, tokens)
        report["mixture"] = [dataclasses.asdict(u) for u in usage]
    if manifest is None:
        return report

    report["held_out"] = manifest.get("held_out")
    if "mixture" in manifest:
        usage = realised_mixture(manifest, cfg.run.seed, cfg.train.seq_len, tokens)
        report["mixture"] = [dataclasses.asdict(u) for u in usage]
    return report


def write_summary(run: Run, status: str, manifest: dict[str, Any] | None, provenance: dict[str, Any],
                  failure: dict[str, str] | None = None) -> None:
    """Write ``training/training_summary.json``: totals, throughput, memory, device, time, cost, versions, and
    for a failed run ``failure`` (``error``: what failed, ``advice``: how to finish).

    ``manifest`` (:func:`shards_manifest`) and ``provenance`` (``versions``, ``code_revision``) are read
    once per process: the summary is rewritten after every checkpoint while the other ranks wait.
    """
    cfg, state, env = run.cfg, run.state, run.env
    tally, batch = state.tally, state.batch
    wall = run.elapsed()
    after = tally.after_warmup_tokens / tally.after_warmup_time_s if tally.after_warmup_time_s > 0 else None
    summary = {
        "run": cfg.run.name,
        "status": status,
        "parameters": count_parameters(cfg.model),
        "flops_per_token": run.flops_per_token,
        "steps": state.step,
        "total_steps": state.total_steps,
        "tokens": state.tokens,
        "tokens_per_step": batch.tokens_per_step,
        "batch": {"micro_batch_size": batch.micro_batch_size, "grad_accum_steps": batch.grad_accum_steps,
                  "world_size": batch.world_size, "seq_len": batch.seq_len,
                  "global_batch_size": batch.sequences_per_step},
        "optimizer": cfg.train.optimizer,
        "optimizer_description": run.optimizer.description,
        "schedule": cfg.train.schedule,
        # The schedule's own words after its warmup, for the card (which reads runs, not edulm.train).
        "schedule_description": schedule_kind(cfg.train.schedule).describe(dataclasses.asdict(cfg.train)),
        "data": data_report(cfg, manifest, state.tokens, run.loader.state_dict() if run.loader is not None else None),
        "schedule_changes": state.schedule_changes,
        "branched_from": state.branched_from,
        "init_from": state.init_from,
        "skipped_steps": state.skipped_steps,
        "final_train_loss": state.last_loss,
        "final_val_loss": state.last_val_loss,
        "final_val_ppl": perplexity(state.last_val_loss) if state.last_val_loss is not None else None,
        "final_val_bpb": state.last_val_bpb,
        "downstream": downstream_report(run, wall) if cfg.train.downstream else None,
        "mean_tokens_per_s": tally.step_tokens / tally.step_time_s if tally.step_time_s > 0 else None,
        "mean_tokens_per_s_after_warmup": after,
        "mfu_after_warmup": mfu(after, run.flops_per_token, run.peak_flops, env.world_size) if after else None,
        "peak_memory_gb": round(tally.peak_memory_gb, 4),
        "device": run.device_info,
        "precision": "bf16 autocast" if run.amp_dtype is not None else "fp32",
        "distributed": cfg.train.distributed if env.world_size > 1 else None,
        "wall_time_s": round(wall, 3),
        "wall_time_h": round(wall / 3600, 6),
        **cost_estimate(wall, env.world_size if env.device.type == "cuda" else 0, run.gpu_hourly_rate),
        **provenance,
        "segment_started_at": run.started_at.isoformat(timespec="seconds"),
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if failure is not None:
        summary["failure"] = failure
    write_json(run.layout.summary, summary, "the training summary")


def downstream_report(run: Run, wall: float) -> dict[str, Any]:
    """``train.downstream`` for the summary: each task's subset (examples, chance level), the scores of every
    scoring (step, tokens, values) from the metrics CSV, the tokens after which each score stood above chance by
    two standard errors, and the time the scoring took (seconds and share of the run's wall time)."""
    from edulm.evaluate.in_loop import DOWNSTREAM_METRICS, score_names, tokens_above_chance

    names = [n for n in score_names(run.cfg.train.downstream) if not n.endswith("_stderr")]
    rows = read_metrics(run.layout.metrics) if run.layout.metrics.is_file() else []
    curve = [{"step": int(r["step"]), "tokens": int(r["tokens"]) if r.get("tokens") is not None else None,
              "scores": {n: r.get(n) for n in names}} for r in rows if any(r.get(n) is not None for n in names)]
    chance = {s["task"]: s["chance"] for s in run.downstream_subsets}
    above = {name: tokens_above_chance([(r["tokens"], r[name], r.get(f"{name}_stderr")) for r in rows if r.get(name) is not None],
                                       chance.get(name.split("/")[1])) for name in names}
    seconds = run.state.tally.downstream_time_s
    return {"tasks": run.downstream_subsets, "metrics": list(DOWNSTREAM_METRICS), "curve": curve,
            "final": curve[-1]["scores"] if curve else None, "above_chance_after_tokens": above,
            "time_s": round(seconds, 3), "time_share": round(seconds / wall, 6) if wall > 0 else None}


class SummaryFile(Callback):
    """``training_summary.json``: rewritten after every checkpoint (status ``running``), at the end (``completed``
    once ``final/`` and its card are in place, or ``stopped (SIG...)``), and when the run fails (``failed``, with
    the error and how to finish)."""

    def __init__(self) -> None:
        self._run: Run | None = None

    def on_start(self, run: Run) -> None:
        self._run = run
        self._manifest = shards_manifest(run.cfg)
        self._provenance = {"versions": versions(), "code_revision": code_revision()}

    def on_save(self, run: Run, path) -> None:
        write_summary(run, "running", self._manifest, self._provenance)

    def on_end(self, run: Run, status: str) -> None:
        self._run = None
        write_summary(run, status, self._manifest, self._provenance)

    def close(self) -> None:
        # Called while an error propagates out of the run (see RunLog.close): the summary must not keep saying
        # "running", nor "completed" when the last step was trained but final/ could not be written.
        run, self._run = self._run, None
        err = sys.exc_info()[1]
        if run is None or not isinstance(err, Exception):
            return
        error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        saved = run.last_checkpoint or run.resumed_from
        advice = (f"the last checkpoint ({saved}) is intact: run the same 'edulm train ... --resume auto' again to "
                  "continue (with no step left, it only writes final/ and its card)" if saved is not None else
                  "no checkpoint was written: run the same 'edulm train' again")
        try:
            write_summary(run, "failed", self._manifest, self._provenance, failure={"error": error, "advice": advice})
        except Exception:  # noqa: BLE001 - the original error is the one to report (a full disk, say)
            pass


class Plots(Callback):
    """``training_curves.png``, ``loss_curve_zoom.png`` (and ``downstream_curves.png``) from the metrics CSV, at the end."""

    def on_end(self, run: Run, status: str) -> None:
        from edulm.train.plots import plot_training

        plot_training(run.layout.metrics, run.layout.training, warmup_steps=run.cfg.train.warmup_steps,
                      title=run.cfg.run.name)
        if run.downstream_subsets:
            from edulm.train.plots import plot_downstream

            plot_downstream(run.layout.metrics, run.layout.training, run.downstream_subsets, title=run.cfg.run.name)

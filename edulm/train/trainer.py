"""``edulm train``: set a run up (fresh or resumed), run the loop, hand the rest to callbacks.

The loop does one thing: optimizer steps, each at the learning rate the schedule gives
(:mod:`edulm.train.schedule`), with the optimizer that ``train.optimizer`` names
(:mod:`edulm.train.optim`). After each step it hands a :class:`~edulm.train.callbacks.StepEnd` to
the callbacks (:mod:`edulm.train.core_callbacks`: evaluation, metrics, checkpoints, summary, plots,
``final/``). Everything the run must carry across a restart is in ``TrainingRun.components``,
which checkpoints save and restore as one mapping (:mod:`edulm.train.checkpointing`), so the steps after a
resume repeat the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
import math
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edulm.checkpoint import folders as checkpoint
from edulm.config import Config, load_config
from edulm.base.errors import DiskFullError, UsageError
from edulm.base.files import disk_full_error
from edulm.base.layout import CONFIG_FILE, RunLayout
from edulm.model.llama import LlamaLM, count_parameters, flops_per_token
from edulm.train.throughput import device_info, peak_bf16_flops
from edulm.train.autobatch import fresh_batch_notes, kept_batch_note, regroup_batch, resolve_batch_shape
from edulm.train.core_callbacks import default_callbacks, with_callbacks
from edulm.train.callbacks import CALLBACK_PREFIX, Callback, StepEnd, configured_callbacks, stateful_callbacks
from edulm.train.distributed import DistEnv, init_distributed, teardown, wrap_model
from edulm.train.downstream import downstream_scorer
from edulm.train.init_from import check_vocabulary, load_initial_weights, resumed_config, start_config, tokenizer_mismatch
from edulm.train.optim import build_optimizer, check_resumed_optimizer, optimizer_kind
from edulm.train.console import Console
from edulm.train.run_dir import hold_run_dir
from edulm.train.schedule import lr_at, schedule_kind, total_steps
from edulm.train.schedule_change import ScheduleChange, schedule_change, schedule_settings
from edulm.train.signals import EXIT_CODES, GracefulStop
from edulm.train.checkpointing import Component, ModelWeights, RNGState, component_file, load_problem, restore
from edulm.train.step import TrainingDiverged, autocast_dtype, train_step
from edulm.train.state import TrainState


RESUME_ADVICE = "free space and run again with --resume auto"
"""What to do after a full disk stopped a run (its last complete checkpoint is intact): every full-disk
error of a run is said with this advice (:func:`train`)."""


def train(
    cfg: Config,
    resume: str | None = None,
    gpu_hourly_rate: float | None = None,
    callbacks: list[Callback] | None = None,
    allow_schedule_change: bool = False,
) -> Path:
    """Train a model as ``cfg`` says and return the run dir.

    ``resume``: None (a new run; refused if the run dir already holds one), ``"auto"`` (the latest
    intact checkpoint of the run dir, or a new run when there is none) or a checkpoint path. After a
    SIGTERM or SIGINT the run saves a checkpoint and exits with code 143 or 130. ``callbacks``
    replaces :func:`~edulm.train.core_callbacks.default_callbacks` (build on that list to add one).
    ``allow_schedule_change``: resume even when the config's schedule moves the learning rate away
    from the one the checkpoint trained with (:mod:`edulm.train.schedule_change`).

    The run dir is checked, locked and cleared of dead writers' temporaries first, and held until
    the end (:func:`~edulm.train.run_dir.hold_run_dir`): a second run on it is refused. A full disk
    anywhere is one line that says to free space and resume.
    """
    if gpu_hourly_rate is not None and not (math.isfinite(gpu_hourly_rate) and gpu_hourly_rate >= 0):
        # A negative price made a negative cost; nan wrote NaN into the summary, which strict JSON readers refuse.
        raise UsageError(f"--gpu-hourly-rate must be a finite price of 0 or more, got {gpu_hourly_rate}")
    env = init_distributed(cfg.train.device)
    clean = False
    stopped_by = None
    try:
        with GracefulStop() as stop, hold_run_dir(cfg.run.out_dir, env):
            run = TrainingRun(cfg, env, stop, gpu_hourly_rate, callbacks, allow_schedule_change)
            try:
                run.setup(resume)
                stopped_by = run.loop()
                run.finish(stopped_by)
            finally:
                run.close()  # still holding the run dir: closing flushes files into it
        clean = True
        if stopped_by is None and stop.requested:
            # Asked to stop after the last step, while final/ and its card were written (a few seconds): the run
            # finished first, and the exit code still tells the scheduler its signal was heard.
            stopped_by = stop.signum
            logging.getLogger("edulm").warning("%s arrived after the last step; the run completed first (final/ and "
                                               "its card are in place)", _signal_name(stopped_by))
    except DiskFullError as err:
        if getattr(err, "what", None) is None:
            raise
        raise disk_full_error(err.folder, err.what, RESUME_ADVICE) from err
    finally:
        teardown(env, clean=clean)
    if stopped_by is not None:
        raise SystemExit(EXIT_CODES[stopped_by])
    return Path(cfg.run.out_dir)


def check_recipe(train_cfg) -> None:
    """The optimizer and the schedule ``train`` names exist and accept their settings (one line if not)."""
    optimizer_kind(train_cfg.optimizer).validate(train_cfg)
    schedule_kind(train_cfg.schedule).validate(train_cfg)


class TrainingRun:
    """One training process: its config, components, counters and callbacks (what callbacks read of
    it is :class:`~edulm.train.callbacks.Run`)."""

    def __init__(self, cfg: Config, env: DistEnv, stop: GracefulStop, gpu_hourly_rate: float | None,
                 callbacks: list[Callback] | None = None, allow_schedule_change: bool = False) -> None:
        self.cfg = cfg
        self.allow_schedule_change = allow_schedule_change
        self.schedule_change: ScheduleChange | None = None
        self.env = env
        self.stop = stop
        self.gpu_hourly_rate = gpu_hourly_rate
        self.layout = RunLayout.of(cfg.run.out_dir)
        # Built first: a sink whose package is missing stops the run before anything is written.
        self.callbacks = with_callbacks(callbacks if callbacks is not None else default_callbacks(
            cfg.train.tensorboard, cfg.train.wandb, env.is_main), configured_callbacks(cfg.train.callbacks))
        self.console = Console(enabled=env.is_main)  # from here on, close() must run
        self.state = TrainState()
        self.loader = None
        self.resumed_from: Path | None = None
        self.notes: list[str] = []  # lines for the start-up announcement
        self.downstream_subsets: list[dict] = []  # train.downstream's tasks as scored (set by DownstreamEvaluation)
        self.downstream_scorer = None  # their scorer, loaded by the checks (rank 0)
        self.last_checkpoint: Path | None = None
        self.started_at = datetime.now(timezone.utc)
        self._segment_start = time.perf_counter()
        self._wall_before = 0.0  # wall time of the earlier segments of a resumed run

    # -----------------------------------------------------------------------------------------
    # Set-up
    # -----------------------------------------------------------------------------------------

    def _find_checkpoint(self, resume: str | None) -> Path | None:
        """The checkpoint to resume from (decided on rank 0, shared with the others)."""
        def decide() -> str | None:
            # A checkpoint whose files do not load safely (a foreign pickle, JSON of the wrong shape)
            # counts as damaged like a failed checksum: --resume auto takes an older one.
            found = checkpoint.resolve_resume(self.layout.root, resume, check=load_problem) if resume else None
            if found is None:
                self._refuse_to_overwrite(resume)
            return str(found) if found else None

        path = self.env.decide_on_main(decide)
        return Path(path) if path else None

    def _refuse_to_overwrite(self, resume: str | None) -> None:
        """Refuse to start a new run in a run dir that holds one (nothing of it may be overwritten)."""
        root = self.layout.root
        existing = checkpoint.list_checkpoints(root)
        if existing and resume:  # every one failed its check (each was named in a warning)
            raise UsageError(
                f"{root}: all {len(existing)} checkpoints are damaged, so there is nothing to resume; copy an intact "
                f"checkpoint folder back into {self.layout.checkpoints}, or start over with a new run.out_dir"
            )
        if existing:
            raise UsageError(f"{root} already holds a previous run; continue it with --resume auto "
                             "(or a checkpoint path), or choose a new run.out_dir")
        if self.layout.final.exists():
            raise UsageError(f"{root} already holds a finished run (final/) and no checkpoint to continue from; "
                             "choose a new run.out_dir")

    def setup(self, resume: str | None) -> None:
        """Check, build, restore: everything the loop needs, then ``on_start`` of every callback.

        1. :meth:`_check_before_building`: the config settled (a resume's, or MODEL's shape) and every check a
           resume or a config can fail, before anything is built or written;
        2. :meth:`_build`: model, batch geometry, wrapping, optimizer, loader, the components a checkpoint holds;
        3. :meth:`_restore_and_start`: the rest of a checkpoint, the callbacks' start, the random state last.
        """
        ckpt = self.resumed_from = self._find_checkpoint(resume)
        source, run_fingerprint = self._check_before_building(ckpt)
        self._build(ckpt, source, run_fingerprint)
        self._restore_and_start(ckpt)

    def _check_before_building(self, ckpt: Path | None):
        """Settle the config and refuse, with nothing built or written, what cannot run: an optimizer or schedule
        that does not exist or whose settings are wrong, token ids past the embedding, for a resume a checkpoint
        whose batch, length, optimizer or schedule the config contradicts, and a downstream task that cannot be
        loaded. Returns MODEL (for ``model.init_from``, else None) and the run's tokenizer fingerprint."""
        env = self.env
        ckpt_cfg = load_config(ckpt / CONFIG_FILE) if ckpt else None
        # A resume takes the checkpoint's model section (MODEL is not read again); a fresh run with
        # model.init_from reads MODEL's shape.
        source = None
        if ckpt_cfg:
            self.cfg = resumed_config(self.cfg, ckpt_cfg, ckpt)
        elif self.cfg.model.init_from:
            self.cfg, source = start_config(self.cfg)
        cfg = self.cfg
        check_recipe(cfg.train)
        run_fingerprint = check_vocabulary(cfg)  # a token id past the embedding table would fail only mid-step
        if ckpt:
            self._check_resume(ckpt, ckpt_cfg)
        env.decide_on_main(self._load_downstream_tasks)  # last: it reads the tasks' data
        return source, run_fingerprint

    def _load_downstream_tasks(self) -> None:
        """``train.downstream``'s tasks loaded once, on rank 0 (the one that scores them): a task that cannot be is
        refused here, before anything is built."""
        train_cfg = self.cfg.train
        self.downstream_scorer = downstream_scorer(train_cfg, self.cfg.tokenizer.name) if train_cfg.downstream else None

    def _check_resume(self, ckpt: Path, ckpt_cfg: Config) -> None:
        """The checkpoint's trainer state against the config: batch geometry, sequence length, step count, optimizer
        settings and schedule (see :meth:`_check_before_building`)."""
        cfg, env, state = self.cfg, self.env, self.state
        restore(ckpt, {"trainer_state": Component(state, format="json")}, env.rank)  # counters and batch geometry
        self._wall_before = state.tally.wall_time_s
        if ckpt.resolve().parent.parent != self.layout.root.resolve():  # its metrics and log stay over there
            state.branched_from.append({"step": state.step, "checkpoint": str(ckpt.resolve())})
        if state.batch is None:
            raise UsageError(f"{ckpt}: its trainer state records no batch geometry; resume another checkpoint")
        if state.batch.world_size != env.world_size:  # the same global batch, regrouped over these processes
            before = state.batch
            state.batch = regroup_batch(before, env.world_size, str(ckpt))
            self.notes.append(f"resumed on {env.world_size} processes from a checkpoint of {before.world_size}: "
                              f"{before.describe()} is now {state.batch.describe()}, the same "
                              f"{state.batch.sequences_per_step} sequences per step")
        if state.batch.seq_len != cfg.train.seq_len:  # the loader would refuse it, but only after the log and sinks started
            raise UsageError(
                f"{ckpt} was trained with train.seq_len={state.batch.seq_len}, the config says {cfg.train.seq_len}; "
                f"resume with train.seq_len={state.batch.seq_len} (the data position counts windows of that length), "
                f"or start a new run from its weights with model.init_from={ckpt}"
            )
        if note := kept_batch_note(cfg, state.batch):
            self.notes.append(note)
        resumed_total, state.total_steps = state.total_steps, total_steps(cfg.train, state.batch.tokens_per_step)
        if state.total_steps < state.step:  # not a schedule change: no step is left to change
            raise UsageError(
                f"{ckpt}: the checkpoint is at step {state.step:,}, past the {state.total_steps:,} steps that "
                "train.max_steps / train.token_budget now give, so nothing would be trained; set train.max_steps "
                f"to {state.step:,} or more, or resume an earlier checkpoint into a new run.out_dir"
            )
        check_resumed_optimizer(ckpt_cfg.train, cfg.train, str(ckpt))
        self._check_schedule_change(ckpt, schedule_settings(ckpt_cfg.train, resumed_total))

    def _build(self, ckpt: Path | None, source, run_fingerprint: str) -> None:
        """The model (fresh, MODEL's weights, or the checkpoint's, loaded before it is moved, compiled and wrapped, so
        every strategy starts from the same tensors), the batch geometry of a fresh run, the optimizer, the loader,
        and the components a checkpoint holds (the stateful callbacks' among them)."""
        cfg, env, state = self.cfg, self.env, self.state
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed % 2**32)
        torch.manual_seed(cfg.run.seed)
        if source is not None:  # continued pretraining: MODEL's weights, a fresh optimizer and schedule
            model = load_initial_weights(source, cfg.model)
            state.init_from = env.broadcast(source.record() if env.is_main else None)  # rank 0 checksums the weights
            if env.is_main and (mismatch := tokenizer_mismatch(source, run_fingerprint)):
                self.notes.append(mismatch)
        else:
            model = LlamaLM(cfg.model)  # initialised on CPU: the same weights whatever the device
        self.sharded = env.distributed and cfg.train.distributed == "fsdp"
        self.components: dict[str, Component] = {
            "model": Component(ModelWeights(model, self.sharded), format="safetensors"),
            "trainer_state": Component(state, format="json"),
        }
        if ckpt:
            restore(ckpt, {"model": self.components["model"]}, env.rank)
        model.grad_checkpointing = cfg.train.grad_checkpointing
        model.fused_loss = cfg.train.fused_loss
        model.to(env.device)
        if not ckpt:  # rank 0's answer for everyone (each rank probes its own device on CUDA)
            state.batch = env.broadcast(resolve_batch_shape(cfg, model, env.device, env.world_size))
            self.notes += fresh_batch_notes(cfg.train, state.batch, env.device.type)
            state.total_steps = total_steps(cfg.train, state.batch.tokens_per_step)
        if 0 < state.total_steps <= cfg.train.warmup_steps:  # e.g. train.max_steps=20 on a config that warms up for 30
            self.notes.append(f"train.warmup_steps ({cfg.train.warmup_steps:,}) is not below the run's {state.total_steps:,} "
                              f"steps: the learning rate warms up for the whole run and never follows its {cfg.train.schedule} "
                              "schedule; lower train.warmup_steps")

        self.model = model
        # Wrapped (DDP / FSDP2) and compiled in the order each strategy needs, in place: the model's
        # parameter names stay Hugging Face's.
        self.wrapped = wrap_model(model, env, cfg.train.distributed, compile=cfg.train.compile)
        self.optimizer = build_optimizer(model, cfg.train)

        from edulm.data.loader import make_train_loader

        self.loader = make_train_loader(cfg, rank=env.rank, world_size=env.world_size,
                                        micro_batch_size=state.batch.micro_batch_size)
        self.components.update({
            "optimizer": Component(self.optimizer),
            "loader": Component(self.loader, per_rank=True),
            "rng": Component(RNGState(), per_rank=True),  # last: nothing may draw random numbers after it
        })
        # Callbacks that keep state across a restart: saved with every checkpoint, restored before on_start.
        self.components.update(stateful_callbacks(self.callbacks))

        self.amp_dtype = autocast_dtype(cfg.train.precision, env.device)
        self.device_info = device_info(env.device)
        self.flops_per_token = flops_per_token(cfg.model, cfg.train.seq_len)
        bf16_peak = peak_bf16_flops(self.device_info["name"]) if env.device.type == "cuda" else None
        self.peak_flops = bf16_peak if self.amp_dtype == torch.bfloat16 else None

    def _restore_and_start(self, ckpt: Path | None) -> None:
        """The optimizer, loader and callback states of a checkpoint (before any callback writes: a state that does
        not fit this config, such as another run.seed or other data, is refused with nothing written; a callback the
        checkpoint predates starts as constructed), every callback's ``on_start``, the announcement, and the
        random state last (the callbacks may draw random numbers)."""
        env = self.env
        if ckpt:
            kept = {name: c for name, c in self.components.items() if name not in ("model", "trainer_state", "rng")}
            restore(ckpt, {name: c for name, c in kept.items()
                           if not name.startswith(CALLBACK_PREFIX) or (ckpt / component_file(name, c.format)).is_file()},
                    env.rank)
        for callback in self.callbacks:
            callback.on_start(self)
        self._announce()
        if ckpt:
            restore(ckpt, {"rng": self.components["rng"]}, env.rank)

    def _check_schedule_change(self, ckpt: Path, resumed: dict) -> None:
        """Compare the schedule with the checkpoint's (``resumed``): refuse a jump in the learning rate
        unless allowed, and record any change in the trainer state."""
        state = self.state
        change = schedule_change(resumed, schedule_settings(self.cfg.train, state.total_steps), state.step, state.lr)
        if change is None:
            return
        if not change.continuous and not self.allow_schedule_change:
            raise UsageError(change.refusal(str(ckpt)))
        self.schedule_change = change
        state.schedule_changes.append(change.record(allowed_by_flag=not change.continuous))

    def _announce(self) -> None:
        cfg, say, state = self.cfg, self.console.info, self.state
        say(f"run dir: {self.layout.root}")
        say(f"device: {self.device_info['name']} x {self.env.world_size} ({self.env.device.type}, "
            f"{'bf16 autocast' if self.amp_dtype else 'fp32'}{', ' + cfg.train.distributed if self.env.distributed else ''})")
        say(f"model: {count_parameters(cfg.model):,} parameters, {self.flops_per_token:,} FLOPs/token")
        say(f"batch: {state.batch.describe()}; {state.total_steps:,} steps "
            f"({state.batch.tokens_per_step * state.total_steps:,} tokens)")
        say(f"optimizer: {self.optimizer.description}; schedule: {cfg.train.schedule}")
        if self.peak_flops is None:
            say("mfu: unknown (no bf16 peak for this device and precision)")
        if state.init_from and not self.resumed_from:
            say(f"continued from {state.init_from['model']} ({state.init_from['kind']}: {state.init_from['weights']})")
        if self.resumed_from:
            say(f"resumed from {self.resumed_from} at step {state.step:,}")
        if self.schedule_change:
            say(self.schedule_change.describe())
        for note in self.notes:
            self.console.warn(note)

    # -----------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall seconds of the whole run (earlier segments included)."""
        return self._wall_before + (time.perf_counter() - self._segment_start)

    def loop(self) -> int | None:
        """Train until the last step or a stop request; returns the signal that stopped it, if any."""
        env, t, state = self.env, self.cfg.train, self.state
        batches = iter(self.loader)
        first_step_of_process = True
        while state.step < state.total_steps:
            state.step += 1
            state.lr = lr_at(state.step, t, state.total_steps)
            self.optimizer.set_lr(state.lr)
            start = time.perf_counter()
            result = train_step(self.wrapped, self.optimizer, batches, state.batch.grad_accum_steps, t.grad_clip, env,
                                self.amp_dtype)
            seconds = time.perf_counter() - start
            state.record_step(result.loss, result.finite)
            state.tally.add_step(seconds, state.batch.tokens_per_step, state.step > t.warmup_steps and not first_step_of_process)
            first_step_of_process = False
            if not result.finite:
                self.console.warn(f"step {state.step}: loss {result.loss} / gradient norm {result.grad_norm} is not finite; "
                                  f"update skipped ({state.consecutive_nonfinite} in a row, {state.skipped_steps} in all)")
            event = StepEnd(step=state.step, lr=state.lr, result=result, seconds=seconds,
                            last=state.step == state.total_steps, stopping=env.any(self.stop.requested),
                            diverged=state.consecutive_nonfinite >= t.max_nonfinite_steps)
            for callback in self.callbacks:
                callback.on_step_end(self, event)
            if event.saved:
                for callback in self.callbacks:
                    callback.on_save(self, self.last_checkpoint if env.is_main else None)
            if event.diverged:
                raise TrainingDiverged(self._divergence_message())
            if event.stopping:
                signum = env.broadcast(self.stop.signum)
                self.console.info(f"stopped at step {state.step:,} ({_signal_name(signum)}); checkpoint: {self.last_checkpoint}; "
                                  "continue with the same command and --resume auto")
                return signum or 15
        return None

    def _divergence_message(self) -> str:
        state = self.state
        said = (f"the loss was not finite for {state.consecutive_nonfinite} steps in a row (up to step {state.step}); "
                "lower train.lr or raise train.warmup_steps, then ")
        saved = self.last_checkpoint or self.resumed_from
        if saved is not None:
            return said + f"continue from the last checkpoint ({saved.name}) with --resume auto"
        return said + "run again (no checkpoint was written, so the run starts over)"

    # -----------------------------------------------------------------------------------------
    # The end
    # -----------------------------------------------------------------------------------------

    def finish(self, stopped_by: int | None) -> None:
        """``on_end`` of every callback: ``completed`` when the run reached its last step, else ``stopped (SIG...)``."""
        done = stopped_by is None and self.state.step >= self.state.total_steps
        status = "completed" if done else f"stopped ({_signal_name(stopped_by)})"
        for callback in self.callbacks:
            callback.on_end(self, status)
        self.console.info(f"metrics: {self.layout.training}")

    def close(self) -> None:
        """Stop the data workers, close every callback, then the log file (safe after a failed set-up)."""
        try:
            if self.loader is not None and hasattr(self.loader, "close"):
                self.loader.close()
        finally:
            try:
                for callback in self.callbacks:
                    callback.close()
            finally:
                self.console.close()


def _signal_name(signum: int | None) -> str:
    import signal

    return signal.Signals(signum).name if signum else "signal"

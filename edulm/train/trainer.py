"""``edulm train``: set a run up (fresh or resumed), run the loop and its cadence, finish the run dir.

The cadence at the end of step ``s`` (steps count from 1):

1. evaluate on the held-out split when ``s`` is a multiple of ``eval_interval`` or the last step;
2. write a metrics row when ``s`` is 1 or a multiple of ``log_interval``, an evaluation ran, or the
   run stops here;
3. write a checkpoint when ``s`` is a multiple of ``ckpt_interval``, the last step, or a stop was
   requested (SIGTERM / SIGINT), then apply retention.

At the end: ``training_summary.json``, the plots, and ``final/`` exported from the last checkpoint
through the same code path as ``edulm export``. Resuming restores everything a checkpoint holds
(:mod:`edulm.train.state`), so the steps after it repeat the uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edulm import checkpoint
from edulm.config import Config, load_config, save_config
from edulm.errors import UsageError
from edulm.metrics import device_info, mfu, peak_bf16_flops, perplexity, take_peak_memory_gb
from edulm.model.llama import LlamaLM, count_parameters, flops_per_token
from edulm.train import state as ckpt_state
from edulm.train.distributed import DistEnv, init_distributed, teardown, wrap_model
from edulm.train.optim import build_optimizer, describe_groups, set_lr
from edulm.train.reporting import SUMMARY_FILE, Reporter, Tally, write_summary
from edulm.train.schedule import lr_at, tokens_per_step, total_steps
from edulm.train.signals import EXIT_CODES, GracefulStop
from edulm.train.step import autocast_dtype, evaluate, train_step


class TrainingDiverged(RuntimeError):
    """The loss stayed non-finite for ``train.max_nonfinite_steps`` steps in a row."""


def train(cfg: Config, resume: str | None = None, gpu_hourly_rate: float | None = None) -> Path:
    """Train a model as ``cfg`` says and return the run dir.

    ``resume``: None (a new run; refused if the run dir already holds one), ``"auto"`` (the latest
    intact checkpoint of the run dir, or a new run when there is none) or a checkpoint path. After a
    SIGTERM or SIGINT the run saves a checkpoint and exits with code 143 or 130.
    """
    env = init_distributed(cfg.train.device)
    clean = False
    stopped_by = None
    try:
        with GracefulStop() as stop:
            run = TrainingRun(cfg, env, stop, gpu_hourly_rate)
            try:
                run.setup(resume)
                stopped_by = run.loop()
                run.finish(stopped_by)
            finally:
                run.close()
        clean = True
    finally:
        teardown(env, clean=clean)
    if stopped_by is not None:
        raise SystemExit(EXIT_CODES[stopped_by])
    return Path(cfg.run.out_dir)


class TrainingRun:
    """The state of one training process: model, optimizer, loader, counters, reporter."""

    def __init__(self, cfg: Config, env: DistEnv, stop: GracefulStop, gpu_hourly_rate: float | None) -> None:
        self.cfg = cfg
        self.env = env
        self.stop = stop
        self.gpu_hourly_rate = gpu_hourly_rate
        self.run_dir = Path(cfg.run.out_dir)
        self.loader = None
        self.reporter: Reporter | None = None
        self.started_at = datetime.now(timezone.utc)
        self.segment_start = time.perf_counter()

    # -----------------------------------------------------------------------------------------
    # Set-up
    # -----------------------------------------------------------------------------------------

    def _find_checkpoint(self, resume: str | None) -> Path | None:
        """The checkpoint to resume from (decided on rank 0, shared with the others)."""
        answer: tuple[str | None, str | None] = (None, None)
        if self.env.is_main:
            try:
                found = checkpoint.resolve_resume(self.run_dir, resume) if resume else None
                if found is None:
                    self._refuse_to_overwrite(resume)
                answer = (str(found) if found else None, None)
            except UsageError as err:
                answer = (None, str(err))
        path, error = self.env.broadcast(answer)
        if error:
            raise UsageError(error)
        return Path(path) if path else None

    def _refuse_to_overwrite(self, resume: str | None) -> None:
        existing = checkpoint.list_checkpoints(self.run_dir)
        if existing or (self.run_dir / "final").exists():
            what = "damaged checkpoints only" if existing and resume else "a previous run"
            raise UsageError(
                f"{self.run_dir} already holds {what}; continue it with --resume auto (or a checkpoint path), "
                "or choose a new run.out_dir"
            )

    def setup(self, resume: str | None) -> None:
        """Build or restore everything the loop needs."""
        cfg, env = self.cfg, self.env
        ckpt = self._find_checkpoint(resume)
        saved = ckpt_state.read_trainer_state(ckpt) if ckpt else None
        if saved and saved["world_size"] != env.world_size:
            raise UsageError(
                f"{ckpt} was written by {saved['world_size']} processes but this run has {env.world_size}; "
                "resume with the same --nproc_per_node x nodes (the data position is kept per process)"
            )
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed % 2**32)
        torch.manual_seed(cfg.run.seed)

        model = LlamaLM(cfg.model)  # initialised on CPU: the same weights whatever the device
        if ckpt:
            saved_model = load_config(ckpt / "config.yaml").model
            if saved_model != cfg.model:
                raise UsageError(f"{ckpt}: its model section differs from the config's; resume with the config it was trained with")
            ckpt_state.load_model_weights(ckpt, model)
        model.grad_checkpointing = cfg.train.grad_checkpointing
        model.fused_loss = cfg.train.fused_loss
        model.to(env.device)

        self.notes: list[str] = []
        if saved:  # the batch geometry of the checkpoint keeps the data position meaningful
            micro, accum = saved["micro_batch_size"], saved["grad_accum_steps"]
            asked = (cfg.train.micro_batch_size, cfg.train.grad_accum_steps)
            if cfg.train.micro_batch_size != "auto" and cfg.train.global_batch_size == 0 and asked != (micro, accum):
                self.notes.append(f"the config asks for micro-batch {asked[0]} x accumulation {asked[1]}; "
                                  f"continuing with the checkpoint's {micro} x {accum}")
        else:
            from edulm.train.autobatch import resolve_micro_batch

            micro, accum = env.broadcast(resolve_micro_batch(cfg, model, env.device))
        train_cfg = dataclasses.replace(cfg.train, micro_batch_size=micro, grad_accum_steps=accum, global_batch_size=0)
        self.cfg = cfg = dataclasses.replace(cfg, train=train_cfg)
        self.step_tokens = tokens_per_step(cfg.train, micro, accum, env.world_size)
        self.total = total_steps(cfg.train, self.step_tokens)

        self.sharded = env.distributed and cfg.train.distributed == "fsdp"
        if cfg.train.compile:
            # In place, so parameter names stay free of the "_orig_mod." prefix. Under FSDP2 each block
            # is compiled on its own before sharding (the sharding hooks sit between blocks).
            for module in (model.model.layers if self.sharded else [model]):
                module.compile()
        self.model = model
        self.wrapped = wrap_model(model, env, cfg.train.distributed)
        self.optimizer, groups = build_optimizer(model, cfg.train)
        self.params = [p for g in groups for p in g["params"]]
        if ckpt:
            ckpt_state.load_optimizer(ckpt, model, self.optimizer)

        from edulm.data.loader import make_train_loader

        self.loader = make_train_loader(cfg, rank=env.rank, world_size=env.world_size)
        rank_state = ckpt_state.load_rank_state(ckpt, env.rank) if ckpt else None
        if rank_state:
            self.loader.load_state_dict(rank_state["loader"])

        self.step = saved["step"] if saved else 0
        self.tokens = saved["tokens"] if saved else 0
        self.skipped = saved["skipped_steps"] if saved else 0
        self.nonfinite_run = saved["consecutive_nonfinite"] if saved else 0
        self.last_val = saved.get("last_val_loss") if saved else None
        self.last_loss = saved.get("last_loss") if saved else None
        self.tally = Tally.from_state_dict(saved["tally"]) if saved else Tally()
        self.last_ckpt = ckpt
        self.saved_step = self.step if ckpt else None

        self.amp_dtype = autocast_dtype(cfg.train.precision, env.device)
        self.device = device_info(env.device)
        self.flops_per_token = flops_per_token(cfg.model, cfg.train.seq_len)
        bf16_peak = peak_bf16_flops(self.device["name"]) if env.device.type == "cuda" else None
        self.peak_flops = bf16_peak if self.amp_dtype == torch.bfloat16 else None

        self.reporter = Reporter(cfg, self.run_dir, self.step, self.total, self.step if ckpt else None, env.is_main)
        if env.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            checkpoint.remove_stale_temporaries(self.run_dir)
        self._announce(ckpt, groups)
        if rank_state:
            ckpt_state.restore_rng(rank_state["rng"])  # last: nothing may draw random numbers after this

    def _announce(self, ckpt: Path | None, groups: list[dict]) -> None:
        cfg, say = self.cfg, self.reporter.info
        say(f"run dir: {self.run_dir}")
        say(f"device: {self.device['name']} x {self.env.world_size} ({self.env.device.type}, "
            f"{'bf16 autocast' if self.amp_dtype else 'fp32'}{', ' + cfg.train.distributed if self.env.distributed else ''})")
        say(f"model: {count_parameters(cfg.model):,} parameters, {self.flops_per_token:,} FLOPs/token")
        say(f"batch: {cfg.train.micro_batch_size} x {cfg.train.grad_accum_steps} accumulation x {self.env.world_size} "
            f"processes x {cfg.train.seq_len} tokens = {self.step_tokens:,} tokens/step; {self.total:,} steps "
            f"({self.step_tokens * self.total:,} tokens)")
        say(f"optimizer: AdamW, {describe_groups(groups, cfg.model.tie_embeddings)}")
        if self.peak_flops is None:
            say("mfu: unknown (no bf16 peak for this device and precision)")
        if ckpt:
            say(f"resumed from {ckpt} at step {self.step:,}")
        for note in self.notes:
            self.reporter.warn(note)

    # -----------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Wall seconds of the whole run (earlier segments included)."""
        return self.tally.wall_time_s + (time.perf_counter() - self.segment_start)

    def loop(self) -> int | None:
        """Train until the last step or a stop request; returns the signal that stopped it, if any."""
        env, t = self.env, self.cfg.train
        batches = iter(self.loader)
        first_step_of_process = True
        interval_tokens, interval_time = 0, 0.0
        tokens_per_s = None
        while self.step < self.total:
            self.step += 1
            lr = lr_at(self.step, t, self.total)
            set_lr(self.optimizer, lr)
            start = time.perf_counter()
            result = train_step(self.wrapped, self.params, self.optimizer, batches, t.grad_accum_steps,
                                t.grad_clip, env, self.amp_dtype)
            seconds = time.perf_counter() - start
            self.tokens += self.step_tokens
            self.tally.add_step(seconds, self.step_tokens, self.step > t.warmup_steps and not first_step_of_process)
            first_step_of_process = False
            interval_tokens += self.step_tokens
            interval_time += seconds
            self.last_loss = result.loss
            if result.finite:
                self.nonfinite_run = 0
            else:
                self.skipped += 1
                self.nonfinite_run += 1
                self.reporter.warn(f"step {self.step}: loss {result.loss} / gradient norm {result.grad_norm} is not finite; "
                                   f"update skipped ({self.nonfinite_run} in a row, {self.skipped} in all)")
            self.reporter.step(result.loss, lr, tokens_per_s)

            last = self.step == self.total
            val_loss = None
            if t.eval_interval > 0 and t.eval_tokens > 0 and (self.step % t.eval_interval == 0 or last):
                val_loss = self._evaluate()
            diverged = self.nonfinite_run >= t.max_nonfinite_steps
            stopping = env.any(self.stop.requested)
            if self.step % t.log_interval == 0 or self.step == 1 or val_loss is not None or last or stopping or diverged:
                tokens_per_s = interval_tokens / interval_time if interval_time > 0 else None
                self._row(result, lr, tokens_per_s, val_loss)
                interval_tokens, interval_time = 0, 0.0
            if diverged:
                raise TrainingDiverged(
                    f"the loss was not finite for {self.nonfinite_run} steps in a row (up to step {self.step}); "
                    f"lower train.lr or raise train.warmup_steps, then continue from the last checkpoint with --resume auto"
                )
            if (t.ckpt_interval > 0 and self.step % t.ckpt_interval == 0) or last or stopping:
                self._save()
            if stopping:
                signum = env.broadcast(self.stop.signum)
                self.reporter.info(f"stopped at step {self.step:,} ({_signal_name(signum)}); checkpoint: {self.last_ckpt}; "
                                   "continue with the same command and --resume auto")
                return signum or 15
        return None

    def _evaluate(self) -> float | None:
        from edulm.data.loader import make_val_batches

        batches = make_val_batches(self.cfg, self.cfg.train.micro_batch_size, self.cfg.train.eval_tokens)
        if not batches:
            self.reporter.warn("no held-out tokens to evaluate on (data.val_tokens is 0?); evaluation skipped")
            return None
        loss = evaluate(self.model, batches, self.env.device, self.amp_dtype)
        self.last_val = loss
        self.reporter.info(f"step {self.step:,}: val_loss {loss:.4f}, val_ppl {perplexity(loss):.2f}")
        return loss

    def _row(self, result, lr: float, tokens_per_s: float | None, val_loss: float | None) -> None:
        memory = take_peak_memory_gb(self.env.device)
        self.tally.peak_memory_gb = max(self.tally.peak_memory_gb, memory)
        self.reporter.row({
            "step": self.step,
            "tokens": self.tokens,
            "loss": result.loss,
            "lr": lr,
            "grad_norm": result.grad_norm,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu(tokens_per_s, self.flops_per_token, self.peak_flops, self.env.world_size) if tokens_per_s else None,
            "memory": round(memory, 4),
            "elapsed": round(self.elapsed(), 3),
            "val_loss": val_loss,
            "val_ppl": perplexity(val_loss) if val_loss is not None else None,
            "skipped": self.skipped,
        })

    def _trainer_state(self) -> dict:
        tally = dataclasses.replace(self.tally, wall_time_s=self.elapsed())
        return {
            "step": self.step,
            "tokens": self.tokens,
            "total_steps": self.total,
            "micro_batch_size": self.cfg.train.micro_batch_size,
            "grad_accum_steps": self.cfg.train.grad_accum_steps,
            "seq_len": self.cfg.train.seq_len,
            "world_size": self.env.world_size,
            "lr": lr_at(self.step, self.cfg.train, self.total),
            "skipped_steps": self.skipped,
            "consecutive_nonfinite": self.nonfinite_run,
            "last_loss": self.last_loss,
            "last_val_loss": self.last_val,
            "tally": tally.state_dict(),
        }

    def _save(self) -> None:
        if self.saved_step == self.step:
            return  # this step is already on disk
        path = ckpt_state.save_training_checkpoint(
            self.run_dir, self.step, self.cfg, self.model, self.optimizer, self.loader, self._trainer_state(),
            self.env, self.sharded,
        )
        self.saved_step = self.step
        if self.env.is_main:
            self.last_ckpt = path
            deleted = checkpoint.apply_retention(self.run_dir, self.cfg.train.keep_last)
            self.reporter.info(f"checkpoint: {path}" + (f" (removed {', '.join(p.name for p in deleted)})" if deleted else ""))
            self._write_summary("running")

    # -----------------------------------------------------------------------------------------
    # The end
    # -----------------------------------------------------------------------------------------

    def finish(self, stopped_by: int | None) -> None:
        """Summary and plots (always); ``final/`` when the run reached its last step."""
        if not self.env.is_main:
            return
        self.reporter.close()  # flushes the CSV the plots read
        done = stopped_by is None and self.step >= self.total
        self._write_summary("completed" if done else f"stopped ({_signal_name(stopped_by)})")
        from edulm.plots import plot_training
        from edulm.train.reporting import METRICS_FILE

        plot_training(self.reporter.training_dir / METRICS_FILE, self.reporter.training_dir,
                      warmup_steps=self.cfg.train.warmup_steps, title=self.cfg.run.name)
        if done:
            from edulm.hf import export

            final_ckpt = self.last_ckpt or checkpoint.find_latest_good(self.run_dir)
            out = export(final_ckpt, self.run_dir / "final")
            self.reporter.info(f"final model (Hugging Face folder): {out}")
        self.reporter.info(f"metrics: {self.reporter.training_dir}")

    def _write_summary(self, status: str) -> None:
        write_summary(
            self.reporter.training_dir / SUMMARY_FILE, status=status, cfg=self.cfg, tally=self.tally,
            step=self.step, total=self.total, tokens=self.tokens, step_tokens=self.step_tokens, skipped=self.skipped,
            last_loss=self.last_loss, last_val=self.last_val, wall_time_s=self.elapsed(), device=self.device,
            device_type=self.env.device.type, world_size=self.env.world_size, amp=self.amp_dtype is not None,
            peak_flops=self.peak_flops, gpu_hourly_rate=self.gpu_hourly_rate, started_at=self.started_at,
        )

    def close(self) -> None:
        """Stop the data workers and close files (safe after a failed set-up)."""
        try:
            if self.loader is not None and hasattr(self.loader, "close"):
                self.loader.close()
        finally:
            if self.reporter is not None:
                self.reporter.close()


def _signal_name(signum: int | None) -> str:
    import signal

    return signal.Signals(signum).name if signum else "signal"

"""What happens around the steps, and when: evaluation, checkpoints, retention, the run's record,
the final export and its model card; and :func:`default_callbacks`, the one place that decides which callbacks run on
rank 0 only.

Cadence at the end of step ``s`` (callbacks in list order, see :mod:`edulm.train.callbacks`):

1. :class:`Evaluation` on the held-out split when ``s`` is a multiple of ``train.eval_interval`` or
   the last step (every process: the forward pass may be sharded), then
   :class:`~edulm.train.downstream.DownstreamEvaluation` of ``train.downstream`` when due (rank 0 scores; with
   FSDP2 every process gathers the weights);
2. :class:`~edulm.train.reporting.MetricsLogger` writes a metrics row when one is due, its plain
   line goes to ``train.log`` (:class:`~edulm.train.run_log.StepLines`), then the progress bar
   moves (rank 0);
3. :class:`Checkpointing` when ``s`` is a multiple of ``train.ckpt_interval``, the last step, or a
   stop was requested (every process: saving gathers sharded state), unless the run diverged;
   then, on rank 0, :class:`CheckpointRetention` and the summary.

When the run completes: the summary, the plots, ``final/`` (:class:`FinalExport`) and its model
card (:class:`FinalCard`), in that order, on rank 0.
"""

from __future__ import annotations

from pathlib import Path

from edulm.checkpoint import folders as checkpoint
from edulm.evaluate.bits_per_byte import bits_per_byte
from edulm.config import save_config
from edulm.data.split import VAL_EVERY
from edulm.evaluate.heldout import padded_to_one_shape, score_heldout
from edulm.base.metrics import perplexity
from edulm.train.callbacks import Callback, Run, StepEnd
from edulm.train.console import progress_display
from edulm.train.downstream import DownstreamEvaluation
from edulm.train.reporting import MetricsLogger, Plots, ProgressBar, SummaryFile, metrics_sinks
from edulm.train.run_log import StepLines, TrainLog
from edulm.train.checkpointing import save_checkpoint
from edulm.train.step import check_weights_finite


class Evaluation(Callback):
    """Held-out loss every ``train.eval_interval`` steps and at the last step; adds ``val_loss``, ``val_ppl`` and
    ``val_bpb`` to the step's values and sets ``run.state.last_val_loss`` and ``run.state.last_val_bpb``.

    The held-out batches are built once, at the start: the loader's fixed windows
    (:func:`edulm.data.loader.make_val_batches`) padded to one shape (:func:`edulm.evaluate.heldout.padded_to_one_shape`),
    so a compiled model compiles its evaluation graph once rather than once more for a smaller last
    batch. The bytes their scored targets stand for are counted once too, from the run tokenizer's
    byte table (:mod:`edulm.evaluate.bits_per_byte`); each evaluation then only sums the loss. The model
    evaluated is ``run.wrapped``, the module the steps call (compiled as it is, under DDP too).
    """

    def __init__(self) -> None:
        self._batches: list | None = None
        self._bytes = 0

    def on_start(self, run: Run) -> None:
        t = run.cfg.train
        if t.eval_interval <= 0 or t.eval_tokens <= 0:
            return  # evaluation is off: no batches, so on_step_end does nothing
        from edulm.evaluate.bits_per_byte import scored_bytes, token_byte_lengths
        from edulm.data.loader import make_val_batches
        from edulm.tokenizer.loading import load_tokenizer

        batches = make_val_batches(run.cfg, run.state.batch.micro_batch_size, run.cfg.train.eval_tokens)
        self._batches = padded_to_one_shape(batches)
        if not self._batches:
            # Not only val_tokens 0: a small source may yield no held-out document at all (prepare warned then).
            run.console.warn(f"no held-out window of {t.seq_len + 1} tokens to evaluate on (data.val_tokens is 0, or the "
                             f"source had too few documents to hold any out: about 1 in {VAL_EVERY} is); evaluation skipped")
            return
        self._bytes = scored_bytes(token_byte_lengths(load_tokenizer(run.cfg.tokenizer.name)), self._batches)

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        if not self._batches or not (event.step % run.cfg.train.eval_interval == 0 or event.last):
            return
        score = score_heldout(run.wrapped, self._batches, run.env.device, run.amp_dtype)
        loss, bpb = score.loss, bits_per_byte(score.nll_sum, self._bytes)
        run.state.last_val_loss, run.state.last_val_bpb = loss, bpb
        event.values.update(val_loss=loss, val_ppl=perplexity(loss), val_bpb=bpb)
        bpb_text = f", val_bpb {bpb:.4f}" if bpb is not None else ""
        run.console.info(f"step {event.step:,}: val_loss {loss:.4f}, val_ppl {perplexity(loss):.2f}{bpb_text}")


class Checkpointing(Callback):
    """Saves every stateful component (``run.components``) every ``train.ckpt_interval`` steps,
    at the last step and when stopping; sets ``run.last_checkpoint`` (rank 0) and ``event.saved``."""

    def __init__(self) -> None:
        self._saved_step: int | None = None

    def on_start(self, run: Run) -> None:
        self._saved_step = run.state.step if run.resumed_from else None  # that step is already on disk

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        t = run.cfg.train
        due = (t.ckpt_interval > 0 and event.step % t.ckpt_interval == 0) or event.last or event.stopping
        if not due or event.diverged or self._saved_step == event.step:
            return  # a diverged run fails without saving: its weights are not worth resuming from
        saved = run.last_checkpoint or run.resumed_from
        check_weights_finite(run.model, run.env, event.step, event.lr, saved.name if saved else None)
        run.state.tally.wall_time_s = run.elapsed()
        path = save_checkpoint(run.layout.root, event.step, run.cfg, run.components, run.env)
        if path is not None:
            run.last_checkpoint = path
        self._saved_step = event.step
        event.saved = True


class CheckpointRetention(Callback):
    """Keeps the newest ``train.keep_last`` complete checkpoints and says what was written and removed."""

    def on_save(self, run: Run, path: Path | None) -> None:
        deleted = checkpoint.apply_retention(run.layout.root, run.cfg.train.keep_last)
        run.console.info(f"checkpoint: {path}" + (f" (removed {', '.join(p.name for p in deleted)})" if deleted else ""))


class RunRecord(Callback):
    """At the start: ``config.yaml`` (the config as asked) in the run dir. (Dead writers' temporaries
    were removed before set-up, by :func:`edulm.train.run_dir.hold_run_dir`.)"""

    def on_start(self, run: Run) -> None:
        save_config(run.cfg, run.layout.config)


class FinalExport(Callback):
    """When the run completes: ``final/``, a Hugging Face folder of the last checkpoint (``edulm export``'s code)."""

    def on_end(self, run: Run, status: str) -> None:
        if status != "completed":
            return
        from edulm.hf import export

        # The last checkpoint written, or (a resume that had no step left to train) the one resumed from,
        # which may lie in another run dir.
        source = run.last_checkpoint or run.resumed_from
        out = export(source, run.layout.final)
        run.console.info(f"final model (Hugging Face folder): {out}")


class FinalCard(Callback):
    """After ``final/`` is exported: a model card for its weights, ``final/README.md``, from the run's
    training artifacts (:func:`edulm.release.card.write_card`, evaluation left for ``edulm release``).

    A card is never left describing other weights: the export keeps ``final/README.md`` only when the
    weights are the same ones (then it is left as it is, evaluation included), and otherwise sets it
    aside as ``README.previous.md``; a fresh card is then written here, and plot copies beside it
    that the run no longer has are removed, so the card links only plots that exist.
    """

    def on_end(self, run: Run, status: str) -> None:
        if status != "completed" or not run.layout.final.is_dir():
            return
        from edulm.release.card import write_card
        from edulm.base.files import remove_path
        from edulm.base.layout import PLOT_FILES

        card = run.layout.card
        if card.exists():
            run.console.info(f"model card: {card} (kept: it describes these same weights)")
            return
        for name in PLOT_FILES:
            if not (run.layout.training / name).is_file():
                remove_path(run.layout.final / name)
        write_card(run.layout.root, card, evaluation=False)
        run.console.info(f"model card: {card} (training only; 'edulm release {run.layout.root}' adds the evaluation)")


def default_callbacks(tensorboard: bool, wandb: bool, is_main: bool) -> list[Callback]:
    """The callbacks of ``edulm train``, in order; the rank-0-only ones exist on rank 0 only.

    Every process evaluates and checkpoints (both may be collectives); only rank 0 prints, writes
    the log file, metrics, the summary, the plots, ``config.yaml`` and ``final/`` with its card, and
    applies retention. Step figures reach the console as a progress bar or as plain lines
    (:func:`~edulm.train.console.progress_display`); ``train.log`` always gets the lines.
    """
    if not is_main:
        return [Evaluation(), DownstreamEvaluation(), Checkpointing()]
    sinks = metrics_sinks(tensorboard, wandb)  # first: a missing package stops the run before anything is written
    bar, lines = progress_display()
    return [
        TrainLog(),
        RunRecord(),
        Evaluation(),
        DownstreamEvaluation(),
        MetricsLogger(sinks),
        StepLines(console=lines),
        *([ProgressBar()] if bar else []),
        Checkpointing(),
        CheckpointRetention(),
        Plots(),
        FinalExport(),
        FinalCard(),
        # Last: "completed" only once final/ and its card are in place (a failed export leaves the failure there).
        SummaryFile(),
    ]


def with_callbacks(callbacks: list[Callback], extra: list[Callback]) -> list[Callback]:
    """``callbacks`` with ``extra`` placed just before checkpointing: they see each step after the evaluation and
    the metrics row, and the checkpoint of a step holds their state after that step (appended when there is no
    :class:`Checkpointing`)."""
    at = next((i for i, c in enumerate(callbacks) if isinstance(c, Checkpointing)), len(callbacks))
    return [*callbacks[:at], *extra, *callbacks[at:]]


"""``train.downstream``: benchmark scores of the model being trained, at its evaluations, by lm-eval itself.

:class:`DownstreamEvaluation` scores the tasks on the weights in memory (:mod:`edulm.evaluate.in_loop`) every
``train.downstream_interval`` steps (0: with every held-out evaluation) and at the last step. Its scores join
that step's metrics row (CSV columns ``downstream/TASK/METRIC``, TensorBoard, W&B), one line in the log, the
summary (each task's subset and chance level, the last scores, the share of the run's time they took) and the
plots. Rank 0 scores: with DDP it holds a whole replica; with FSDP2 every process first gathers the weights
(a collective), which rank 0 then scores. A task that fails during the run is one warning and training goes on;
a task that cannot be loaded stops the run before anything is built (the trainer loads them in its checks).
"""

from __future__ import annotations

import time

from edulm.base.errors import UsageError, first_line
from edulm.config import TrainConfig
from edulm.evaluate.in_loop import DownstreamScorer
from edulm.train.callbacks import Callback, Run, StepEnd


def downstream_scorer(train: TrainConfig, tokenizer_name: str) -> DownstreamScorer:
    """The scorer of ``train.downstream`` (its tasks loaded: a :class:`UsageError` names one that cannot be)."""
    from edulm.tokenizer.loading import load_tokenizer

    try:
        return DownstreamScorer(train.downstream, train.downstream_include_path or None, train.downstream_limit,
                                load_tokenizer(tokenizer_name), train.downstream_batch_size)
    except UsageError as err:
        raise UsageError(f"train.downstream: {err}") from None


class DownstreamEvaluation(Callback):
    """Scores ``train.downstream`` on the model in memory; adds ``downstream/TASK/METRIC`` to the step's values."""

    def __init__(self) -> None:
        self.scorer: DownstreamScorer | None = None
        self.active = False

    def on_start(self, run: Run) -> None:
        t = run.cfg.train
        self.active = bool(t.downstream)
        if self.active and run.env.is_main:
            # Loaded by the trainer's checks before the run was built (a script's run without them loads them here).
            self.scorer = getattr(run, "downstream_scorer", None) or downstream_scorer(t, run.cfg.tokenizer.name)
            run.downstream_subsets = self.scorer.describe()
            subsets = ", ".join(f"{s['task']} ({s['examples']} examples)" for s in run.downstream_subsets)
            when = f"every {self.interval(t):,} steps and at the last step" if self.interval(t) > 0 else "at the last step"
            run.console.info(f"downstream tasks: {subsets}, scored {when}")

    @staticmethod
    def interval(train: TrainConfig) -> int:
        """Steps between two scorings (``downstream_interval``, else the held-out evaluation's)."""
        return train.downstream_interval or train.eval_interval

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        interval = self.interval(run.cfg.train)
        if not self.active or not ((interval > 0 and event.step % interval == 0) or event.last):
            return
        started = time.perf_counter()
        state = self._weights(run)
        if self.scorer is not None:
            try:
                scores = self.scorer.score(state, run.cfg.model, run.env.device, run.amp_dtype)
            except Exception as err:  # noqa: BLE001 - a benchmark never stops the training it watches
                run.console.warn(f"step {event.step:,}: downstream scoring failed ({type(err).__name__}: {first_line(err)}); "
                                 "training goes on")
            else:
                event.values.update(scores)
                shown = [f"{name.split('/')[1]} {name.split('/')[2]} {value:.4f}" for name, value in scores.items()
                         if value is not None and not name.endswith("_stderr")]
                run.console.info(f"step {event.step:,}: downstream {', '.join(shown)}")
        run.state.tally.downstream_time_s += time.perf_counter() - started

    @staticmethod
    def _weights(run: Run) -> dict:
        """The weights to score, keyed by transformers' names: the training tensors themselves, or with FSDP2 the
        whole model gathered onto rank 0's device (every process takes part)."""
        if getattr(run, "sharded", False):
            from edulm.train.distributed import full_model_state

            gathered = full_model_state(run.model)
            return {name: tensor.to(run.env.device) for name, tensor in gathered.items()}
        return run.model.state_dict()

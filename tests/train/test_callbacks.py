"""The loop's side jobs are callbacks: a new one (a logger, an in-loop measurement) is one class."""

from __future__ import annotations

from edulm.config import config_from_dict
from edulm.base.metrics import read_metrics
from edulm.train.core_callbacks import CheckpointRetention, Checkpointing, Evaluation, default_callbacks
from edulm.train.downstream import DownstreamEvaluation
from edulm.train.callbacks import Callback
from edulm.train.reporting import CSVSink, MetricsLogger
from edulm.train.trainer import train

from train_helpers import tiny_config


class Recorder(Callback):
    """Every hook call, in order, plus an extra value on even steps."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_start(self, run) -> None:
        self.calls.append(("start", run.state.step, run.state.batch.tokens_per_step))

    def on_step_end(self, run, event) -> None:
        self.calls.append(("step", event.step, event.last))
        if event.step % 2 == 0:
            event.values["weight_norm"] = float(sum(p.detach().norm() ** 2 for p in run.model.parameters()) ** 0.5)

    def on_save(self, run, path) -> None:
        self.calls.append(("save", run.state.step, path.name))

    def on_end(self, run, status) -> None:
        self.calls.append(("end", status))

    def close(self) -> None:
        self.calls.append(("close",))


class ListSink:
    """A metrics sink that keeps rows in memory."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.opened = self.closed = False

    def open(self, run) -> None:
        self.opened = True

    def write(self, row: dict) -> None:
        self.rows.append(dict(row))

    def close(self) -> None:
        self.closed = True


def test_hooks_run_in_order_and_values_reach_every_sink(corpus, tmp_path):
    recorder, sink = Recorder(), ListSink()
    callbacks = default_callbacks(tensorboard=False, wandb=False, is_main=True)
    # The extra value must be there before the metrics row is built: insert before the logger.
    logger = next(i for i, c in enumerate(callbacks) if isinstance(c, MetricsLogger))
    callbacks.insert(logger, recorder)
    callbacks[logger + 1].sinks.append(sink)
    cfg = config_from_dict(tiny_config(corpus, tmp_path / "run", max_steps=6, eval_interval=3, ckpt_interval=4,
                                       log_interval=5))
    train(cfg, callbacks=callbacks)

    assert recorder.calls[0] == ("start", 0, 2 * 2 * 32)
    steps = [c for c in recorder.calls if c[0] == "step"]
    assert steps == [("step", s, s == 6) for s in range(1, 7)]
    saves = [c for c in recorder.calls if c[0] == "save"]
    assert saves == [("save", 4, "step-0000004"), ("save", 6, "step-0000006")]
    assert recorder.calls[-2:] == [("end", "completed"), ("close",)]
    # Rows at step 1, every log_interval, every evaluation, every step with extra values, and the last.
    assert [r["step"] for r in sink.rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in sink.rows if "weight_norm" in r] == [2, 4, 6]
    assert [r["step"] for r in sink.rows if r["val_loss"] is not None] == [3, 6]
    assert sink.opened and sink.closed
    csv = read_metrics(tmp_path / "run" / "training" / "training_metrics.csv")
    assert [r["loss"] for r in csv] == [r["loss"] for r in sink.rows]  # the CSV keeps its columns only
    assert "weight_norm" not in csv[0]


def test_only_rank_zero_writes():
    def kinds(callbacks):
        return [type(c) for c in callbacks]

    others = default_callbacks(tensorboard=False, wandb=False, is_main=False)
    assert kinds(others) == [Evaluation, DownstreamEvaluation, Checkpointing]  # the collectives, nothing that writes or prints
    main = kinds(default_callbacks(tensorboard=False, wandb=False, is_main=True))
    assert main.index(Evaluation) < main.index(MetricsLogger) < main.index(Checkpointing) < main.index(CheckpointRetention)
    logger = next(c for c in default_callbacks(False, False, True) if isinstance(c, MetricsLogger))
    assert [type(s) for s in logger.sinks] == [CSVSink]

"""The extension recipes of docs/architecture.md, followed as written: a file-writing, stateful callback added
through the config key `train.callbacks` (no edit of edulm), killed and resumed like any run."""

from __future__ import annotations

import json
import os
import signal

import pytest

from edulm.config import config_from_dict
from edulm.base.errors import UsageError
from edulm.base.metrics import read_metrics
from edulm.train.callbacks import Callback
from edulm.train.trainer import train

from train_helpers import tiny_config

CALLBACK = "recipe_callbacks:LossLines"


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, run, event) -> None:
        if event.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's pre-emption, to the real handler


def _config(corpus, run_dir):
    return config_from_dict(tiny_config(corpus, run_dir, max_steps=10, ckpt_interval=4, callbacks=[CALLBACK]))


def test_a_stateful_file_writing_callback_from_the_config_survives_a_stop_and_resume(corpus, tmp_path):
    from edulm.train.core_callbacks import default_callbacks

    straight = tmp_path / "straight"
    train(_config(corpus, straight))
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):  # SIGTERM after step 6: a checkpoint of step 6, rows of steps 1-6 written
        train(_config(corpus, stopped), callbacks=[*default_callbacks(False, False, True), StopAt(6)])
    train(_config(corpus, stopped), resume="auto")

    def rows(run_dir):
        return [json.loads(line) for line in (run_dir / "training" / "losses.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows(stopped)] == list(range(1, 11))  # every step once, none twice
    assert rows(stopped) == rows(straight)  # the losses bit for bit, and the count carried by the checkpoint
    assert rows(stopped)[-1]["seen"] == 10
    assert [r["loss"] for r in read_metrics(stopped / "training" / "training_metrics.csv")] == [
        r["loss"] for r in read_metrics(straight / "training" / "training_metrics.csv")]
    assert (stopped / "checkpoints" / "step-0000010" / "callback.LossLines.json").is_file()


def test_a_callback_that_does_not_import_is_one_line_before_any_work(corpus, tmp_path):
    raw = tiny_config(corpus, tmp_path / "run", callbacks=["recipe_callbacks:NoSuchClass"])
    with pytest.raises(UsageError, match="train.callbacks: cannot import 'recipe_callbacks:NoSuchClass'"):
        train(config_from_dict(raw))
    raw["train"]["callbacks"] = ["json:dumps"]
    with pytest.raises(UsageError, match="is not an edulm.train.callbacks.Callback subclass"):
        train(config_from_dict(raw))
    assert not (tmp_path / "run").exists()

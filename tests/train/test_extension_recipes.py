"""The extension recipes of docs/architecture.md, followed as written (tests/train/recipe_extensions.py): an optimizer,
a schedule with a setting of its own and a file-writing, stateful callback, each added through its config key
(`train.optimizer`, `train.schedule`, `train.callbacks`) without an edit of edulm, then stopped and resumed like any
run."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest

from edulm.config import config_from_dict
from edulm.base.errors import UsageError
from edulm.base.metrics import read_metrics
from edulm.train.callbacks import Callback
from edulm.train.trainer import train

from train_helpers import tiny_config

CALLBACK = "recipe_extensions:LossLines"
OWN = {"optimizer": "recipe_extensions:SGDMomentum", "optimizer_settings": {"momentum": 0.8},
       "schedule": "recipe_extensions:Linear", "schedule_settings": {"end_ratio": 0.25}, "lr": 0.05}


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, run, event) -> None:
        if event.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's pre-emption, to the real handler


def _config(corpus, run_dir, **train):
    return config_from_dict(tiny_config(corpus, run_dir, max_steps=10, ckpt_interval=4, callbacks=[CALLBACK], **train))


@pytest.mark.parametrize("own", [False, True], ids=["builtin-optimizer", "own-optimizer-and-schedule"])
def test_extensions_from_the_config_survive_a_stop_and_resume(corpus, tmp_path, own):
    from edulm.train.core_callbacks import default_callbacks

    extra = OWN if own else {}
    straight = tmp_path / "straight"
    train(_config(corpus, straight, **extra))
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):  # SIGTERM after step 6: a checkpoint of step 6, rows of steps 1-6 written
        train(_config(corpus, stopped, **extra), callbacks=[*default_callbacks(False, False, True), StopAt(6)])
    train(_config(corpus, stopped, **extra), resume="auto")

    def rows(run_dir):
        return [json.loads(line) for line in (run_dir / "training" / "losses.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows(stopped)] == list(range(1, 11))  # every step once, none twice
    assert rows(stopped) == rows(straight)  # the losses bit for bit, and the count carried by the checkpoint
    assert rows(stopped)[-1]["seen"] == 10
    assert [r["loss"] for r in read_metrics(stopped / "training" / "training_metrics.csv")] == [
        r["loss"] for r in read_metrics(straight / "training" / "training_metrics.csv")]
    assert (stopped / "checkpoints" / "step-0000010" / "callback.LossLines.json").is_file()
    if own:  # the schedule's own setting and the optimizer's are in force: SGD's momentum buffers, the linear end
        assert rows(stopped)[-1]["lr"] == pytest.approx(0.05 * 0.25)
        summary = json.loads((stopped / "training" / "training_summary.json").read_text())
        assert summary["optimizer_description"] == "SGD, momentum 0.8"
        assert summary["schedule_description"] == "then a linear decay"


def test_a_linear_run_is_not_extended_as_if_it_were_wsd(corpus, tmp_path, capsys):
    """The resume rules ask the schedule itself where its stable phase ends (a linear decay has none)."""
    from edulm.cli import main

    from train_helpers import write_config

    cfg = write_config(tmp_path / "own.yaml", tiny_config(corpus, tmp_path / "run", max_steps=10, ckpt_interval=4, **OWN))
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "train.max_steps=20", "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "every rate of a linear run depends on its length" in err and "WSD" not in err


@pytest.mark.parametrize("override, message", [
    ("train.optimizer=sgdx", "train.optimizer: unknown optimizer 'sgdx'"),
    ("train.optimizer=recipe_extensions:Nothing", "train.optimizer: cannot import 'recipe_extensions:Nothing'"),
    ("train.optimizer=recipe_extensions:Linear", "train.optimizer: 'recipe_extensions:Linear' is no OptimizerKind"),
    ("train.schedule=cosin", "train.schedule: unknown schedule 'cosin'.*cosine"),
    ("train.optimizer_settings.momentum=1.5", "train.optimizer_settings.momentum must be in \\[0, 1\\)"),
    ("train.schedule_settings.end=0.1", "train.schedule_settings: unknown key 'end'"),
])
def test_a_wrong_optimizer_or_schedule_is_one_line_and_nothing_written(corpus, tmp_path, capsys, override, message):
    from edulm.cli import main

    from train_helpers import write_config

    cfg = write_config(tmp_path / "own.yaml", tiny_config(corpus, tmp_path / "run", **OWN))
    assert main(["train", str(cfg), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "run").exists()


def test_a_callback_that_does_not_import_is_one_line_before_any_work(corpus, tmp_path):
    raw = tiny_config(corpus, tmp_path / "run", callbacks=["recipe_extensions:NoSuchClass"])
    with pytest.raises(UsageError, match="train.callbacks: cannot import 'recipe_extensions:NoSuchClass'"):
        train(config_from_dict(raw))
    raw["train"]["callbacks"] = ["json:dumps"]
    with pytest.raises(UsageError, match="is no Callback"):
        train(config_from_dict(raw))
    assert not (tmp_path / "run").exists()

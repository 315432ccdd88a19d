"""train.downstream: lm-eval scores of the model in memory during training, equal to `edulm eval` of the checkpoint
of the same step, kept exactly across a stop and resume, and refused at the start when a task cannot be loaded."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from edulm.base.metrics import read_metrics
from edulm.cli import main
from edulm.config import config_from_dict
from edulm.train.callbacks import Callback
from edulm.train.trainer import train

from train_helpers import tiny_config, write_config

TASKS = ["tiny_quiz", "tiny_cloze"]
TASK_FILES = Path(__file__).parents[1] / "evaluate" / "tasks"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The evaluation tests' local tasks (multiple choice and a cloze), their data paths made absolute."""
    out = tmp_path_factory.mktemp("downstream-tasks")
    for name in TASKS:
        shutil.copy(TASK_FILES / f"{name}.jsonl", out / f"{name}.jsonl")
        (out / f"{name}.yaml").write_text((TASK_FILES / f"{name}.yaml").read_text().replace("__TASK_DIR__", str(out)))
    return out


def _raw(corpus, run_dir, task_dir, **train):
    settings = dict(max_steps=6, eval_interval=3, ckpt_interval=3, downstream=TASKS, downstream_limit=5,
                    downstream_include_path=str(task_dir))
    settings.update(train)
    return tiny_config(corpus, run_dir, **settings)


def _downstream_rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k == "step" or k.startswith("downstream/")}
            for row in read_metrics(run_dir / "training" / "training_metrics.csv") if row["downstream/tiny_quiz/acc"] is not None]


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, run, event) -> None:
        if event.step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_in_loop_scores_equal_edulm_eval_of_the_checkpoint_and_survive_a_resume(corpus, tmp_path, task_dir, capsys):
    from edulm.train.core_callbacks import default_callbacks

    straight = tmp_path / "straight"
    train(config_from_dict(_raw(corpus, straight, task_dir)))
    rows = _downstream_rows(straight)
    assert [r["step"] for r in rows] == [3, 6]
    assert all(r[f"downstream/{t}/acc"] is not None for r in rows for t in TASKS)
    assert all(r["downstream/tiny_quiz/acc_norm"] is not None and r["downstream/tiny_cloze/acc_norm"] is None for r in rows)

    # Equal to lm-eval: `edulm eval` on the checkpoint of step 3, the same tasks and --limit.
    out = tmp_path / "eval" / "results.json"
    assert main(["eval", str(straight / "checkpoints" / "step-0000003"), "--out", str(out), "--tasks", ",".join(TASKS),
                 "--include-path", str(task_dir), "--limit", "5"]) == 0, capsys.readouterr().err
    results = json.loads(out.read_text())["results"]
    for task in TASKS:
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in results[task]:
                assert rows[0][f"downstream/{task}/{metric}"] == pytest.approx(results[task][f"{metric},none"], abs=1e-9)
                assert rows[0][f"downstream/{task}/{metric}_stderr"] == pytest.approx(
                    results[task][f"{metric}_stderr,none"], abs=1e-9)

    summary = json.loads((straight / "training" / "training_summary.json").read_text())["downstream"]
    assert summary["tasks"] == [{"task": "tiny_quiz", "examples": 5, "chance": 0.25},
                                {"task": "tiny_cloze", "examples": 5, "chance": None}]
    assert [point["step"] for point in summary["curve"]] == [3, 6] and summary["final"] == summary["curve"][-1]["scores"]
    assert 0 < summary["time_s"] and 0 < summary["time_share"] < 1
    assert "downstream tiny_quiz acc" in (straight / "training" / "train.log").read_text()

    # Stopped after step 4 (a checkpoint of step 3 and one written at the stop), resumed: the same rows, none twice.
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit):
        train(config_from_dict(_raw(corpus, stopped, task_dir)), callbacks=[*default_callbacks(False, False, True), StopAt(4)])
    train(config_from_dict(_raw(corpus, stopped, task_dir)), resume="auto")
    assert _downstream_rows(stopped) == rows


def test_a_task_that_cannot_be_loaded_stops_the_run_before_anything_is_written(corpus, tmp_path, task_dir, capsys):
    cfg = write_config(tmp_path / "run.yaml", _raw(corpus, tmp_path / "run", task_dir))
    assert main(["train", str(cfg), "train.downstream=[tiny_quizz]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.downstream: unknown lm-eval task 'tiny_quizz'" in err[0] and "tiny_quiz" in err[0], err
    (task_dir / "gone").mkdir()
    moved = task_dir / "gone" / "tiny_cloze.yaml"
    yaml_text = (task_dir / "tiny_cloze.yaml").read_text().replace(str(task_dir / "tiny_cloze.jsonl"), "/nonexistent/c.jsonl")
    moved.write_text(yaml_text)
    assert main(["train", str(cfg), f"train.downstream_include_path={task_dir / 'gone'}", "train.downstream=[tiny_cloze]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "/nonexistent/c.jsonl does not exist" in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_scoring_that_fails_during_the_run_is_one_warning_and_training_goes_on(corpus, tmp_path, task_dir, monkeypatch):
    from edulm.evaluate.in_loop import DownstreamScorer

    def broken(self, *args, **kwargs):
        raise RuntimeError("the task's data went away")

    monkeypatch.setattr(DownstreamScorer, "score", broken)  # a fault injected into a real run
    run_dir = train(config_from_dict(_raw(corpus, tmp_path / "run", task_dir, max_steps=3)))
    assert json.loads((run_dir / "training" / "training_summary.json").read_text())["status"] == "completed"
    assert "step 3: downstream scoring failed (RuntimeError: the task's data went away); training goes on" in (
        run_dir / "training" / "train.log").read_text()


def test_the_card_and_the_plot_tell_what_the_in_loop_scores_say(corpus, tmp_path, task_dir):
    run_dir = train(config_from_dict(_raw(corpus, tmp_path / "run", task_dir, max_steps=3)))
    assert (run_dir / "training" / "downstream_curves.png").stat().st_size > 0
    card = (run_dir / "final" / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith("| Benchmarks during training |"))
    assert "tiny_quiz acc" in row and "(5 examples)" in row and "of the run's time" in row
    assert "tiny_cloze" not in row  # no choices, so no chance level to rise above


class Draws(Callback):
    """Draws from each generator after every step (after the downstream scoring), as a sampling callback would."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def on_step_end(self, run, event) -> None:
        import random

        import numpy as np
        import torch

        self.seen.append((random.random(), float(np.random.rand()), float(torch.rand(1))))


def test_the_scoring_leaves_the_runs_random_numbers_as_they_were(corpus, tmp_path, task_dir):
    """lm-eval seeds every generator of the process; the training run draws the same numbers with or without it."""
    from edulm.train.core_callbacks import default_callbacks

    draws = {}
    for downstream in (True, False):
        raw = _raw(corpus, tmp_path / str(downstream), task_dir, max_steps=4, eval_interval=2)
        if not downstream:
            raw["train"]["downstream"] = []
        recorder = Draws()
        train(config_from_dict(raw), callbacks=[*default_callbacks(False, False, True), recorder])
        draws[downstream] = recorder.seen
    assert draws[True] == draws[False]


def test_edulm_compare_runs_puts_two_recipes_curves_side_by_side(corpus, tmp_path, task_dir, capsys):
    adamw = train(config_from_dict(_raw(corpus, tmp_path / "adamw", task_dir)))
    muon = train(config_from_dict(_raw(corpus, tmp_path / "muon", task_dir, optimizer="muon", schedule="wsd")))
    plain = train(config_from_dict(_raw(corpus, tmp_path / "plain", task_dir, max_steps=3, downstream=[])))
    out = tmp_path / "compared"
    assert main(["compare", "--runs", str(adamw), str(muon), str(plain), "--out", str(out)]) == 0, capsys.readouterr().err
    doc = json.loads((out / "runs_comparison.json").read_text())
    first, second, third = doc["runs"]
    assert (first["optimizer"], second["optimizer"], second["schedule"], first["tokens"]) == ("adamw", "muon", "wsd", 6 * 128)
    # The curves are the runs' own CSV rows; the final score is the last one, the difference second minus first.
    assert [p[1] for p in first["downstream"]["downstream/tiny_quiz/acc"]["curve"]] == \
        [r["downstream/tiny_quiz/acc"] for r in _downstream_rows(adamw)]
    quiz = next(d for d in doc["differences"] if d["metric"] == "downstream/tiny_quiz/acc")
    assert quiz["difference"] == pytest.approx(second["downstream"]["downstream/tiny_quiz/acc"]["final"]
                                               - first["downstream"]["downstream/tiny_quiz/acc"]["final"])
    assert third["downstream"] == {} and third["final_val_loss"] is not None  # no downstream columns: the loss alone
    table = (out / "runs_comparison.md").read_text()
    assert [r["name"] for r in doc["runs"]] == ["adamw", "muon", "plain"]  # one run.name for all: their folders tell them apart
    assert "tiny_quiz/acc" in table and "| plain |" in table
    # The cloze task has no chance level; its 'above chance' says so rather than 'not yet'.
    assert "adamw, tiny_cloze/acc: no chance level" in table
    assert all(d["comparable"] for d in doc["differences"])  # both scored at the same tokens, on 5 examples
    assert (out / "runs_comparison.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "wrote" in printed and "tiny_quiz/acc" in printed
    # Equal run names and equal folder names: the folders' distinct parts tell them apart.
    shutil.copytree(adamw, tmp_path / "exp1" / "run")
    shutil.copytree(muon, tmp_path / "exp2" / "run")
    assert main(["compare", "--runs", str(tmp_path / "exp1" / "run"), str(tmp_path / "exp2" / "run"), "--out", str(out)]) == 0
    assert [r["name"] for r in json.loads((out / "runs_comparison.json").read_text())["runs"]] == ["exp1/run", "exp2/run"]
    capsys.readouterr()
    # Bad usage: one line, exit 2, nothing written.
    for argv in (["compare", "--runs", str(adamw)], ["compare", "--runs", str(adamw), str(tmp_path / "missing")],
                 ["compare", "--runs", str(adamw), str(adamw)], ["compare", "--runs", str(adamw), str(muon), "--bpb-text", "x"],
                 ["compare", str(out), str(out), "--runs", str(adamw), str(muon)], ["compare"]):
        assert main([*argv, "--out", str(tmp_path / "refused")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "refused").exists()

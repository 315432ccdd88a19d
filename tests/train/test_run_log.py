"""Logs a cluster can keep: plain step lines when the output is a file, training/train.log always."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from edulm.base.metrics import read_metrics

from train_helpers import REPO, cli_env, tiny_config, write_config

STEP_LINE = re.compile(r"^step (\d+)/(\d+) \| tokens ([\d,]+) \| loss \d+\.\d{4} \| lr \d\.\d{3}e[-+]\d+ \| "
                       r"grad_norm \d+\.\d{3} \| [\d,]+ tok/s \| eta (\d+:)?\d+:\d\d$")
LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4} (INFO|WARNING|ERROR|DEBUG)\s+")


def train_redirected(tmp_path, config, *args: str, name: str) -> tuple[int, str, str]:
    """``python -m edulm train CONFIG ARGS`` with stdout and stderr redirected to files, as SLURM or nohup do."""
    out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.run([sys.executable, "-m", "edulm", "train", str(config), *args], env=cli_env(), cwd=REPO,
                              stdout=stdout, stderr=stderr, timeout=600).returncode
    return code, out.read_text(), err.read_text()


def log_messages(run_dir) -> list[str]:
    """train.log's lines without their timestamp and level (every line must have both)."""
    lines = (run_dir / "training" / "train.log").read_text().splitlines()
    assert all(LOG_PREFIX.match(line) for line in lines), lines
    return [LOG_PREFIX.sub("", line) for line in lines]


def step_lines(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for m in map(STEP_LINE.match, lines) if m]


@pytest.mark.slow
def test_redirected_output_is_plain_lines_and_train_log_keeps_them_across_a_resume(corpus, tmp_path):
    run_dir = tmp_path / "run"
    # A constant rate, so the run can be extended without a schedule change.
    raw = tiny_config(corpus, run_dir, max_steps=6, log_interval=2, eval_interval=3, ckpt_interval=3, schedule="constant")
    config = write_config(tmp_path / "tiny.yaml", raw)

    code, out, err = train_redirected(tmp_path, config, name="first")
    assert code == 0, err
    assert "\r" not in out + err  # no progress bar in a file
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    # One line per metrics row: step 1, every log_interval, the evaluation at 3, the last step.
    assert step_lines(out.splitlines()) == [r["step"] for r in rows] == [1, 2, 3, 4, 6]
    tokens = {int(m.group(1)): int(m.group(3).replace(",", "")) for m in map(STEP_LINE.match, out.splitlines()) if m}
    assert tokens == {r["step"]: r["tokens"] for r in rows}
    logged = log_messages(run_dir)
    assert logged[0].startswith("===== edulm train tiny: new run of 6 steps")
    assert logged[-1] == "===== completed at step 6 ====="
    assert [line for line in logged if not line.startswith("=====")] == out.splitlines()  # the same lines, in order
    assert any(line.startswith("step 3: val_loss") for line in logged)

    # Extended with --quiet: nothing but warnings on the console, the log file as complete as ever.
    code, out, err = train_redirected(tmp_path, config, "train.max_steps=8", "--resume", "auto", "--quiet", name="second")
    assert code == 0, err
    assert out == ""
    assert all(line.startswith("edulm: warning: ") for line in err.splitlines())
    logged = log_messages(run_dir)
    resumed = logged.index(next(line for line in logged if "resumed from" in line))
    assert logged[resumed].startswith(f"===== edulm train tiny: resumed from {run_dir / 'checkpoints' / 'step-0000006'} "
                                      "at step 6 of 8")
    assert step_lines(logged[:resumed]) == [1, 2, 3, 4, 6] and step_lines(logged[resumed:]) == [8]
    assert logged[-1] == "===== completed at step 8 ====="
    warnings = [line for line in (run_dir / "training" / "train.log").read_text().splitlines() if " WARNING " in line]
    assert [line.split(" WARNING ", 1)[1].strip() for line in warnings] == [
        line.removeprefix("edulm: warning: ") for line in err.splitlines()]


def test_a_failed_run_ends_its_log_with_the_error(corpus, tmp_path):
    from edulm.config import config_from_dict
    from edulm.train.trainer import TrainingDiverged, train

    run_dir = tmp_path / "run"
    raw = tiny_config(corpus, run_dir, lr=1e30, warmup_steps=0, max_nonfinite_steps=2, eval_interval=0, ckpt_interval=0,
                      max_steps=6)
    with pytest.raises(TrainingDiverged):
        train(config_from_dict(raw))
    logged = log_messages(run_dir)
    assert any("update skipped" in line for line in logged)  # the warnings are there
    assert logged[-1].startswith("===== failed at step ") and "TrainingDiverged: the loss was not finite" in logged[-1]


def test_a_refused_run_writes_no_log(corpus, tmp_path):
    from edulm.config import config_from_dict
    from edulm.base.errors import UsageError
    from edulm.train.trainer import train

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step-0000001").mkdir(parents=True)  # damaged: no manifest
    with pytest.raises(UsageError):
        train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2)))
    assert not (run_dir / "training").exists()


def test_summary_records_the_held_out_split_as_prepared(corpus, tmp_path):
    from edulm.config import config_from_dict
    from edulm.data.shards import read_manifest
    from edulm.train.trainer import train

    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_config(corpus, run_dir, max_steps=1, eval_interval=0)))
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["data"]["held_out"] == read_manifest(corpus["shards"])["held_out"]
    assert summary["data"]["mixture"] is None  # one source
    assert summary["optimizer"] == "adamw" and summary["optimizer_description"].startswith("AdamW")


def two_source_mixture(corpus, tmp_path) -> tuple[dict, list[str]]:
    """A tiny run's raw config on a 3:1 mixture of two JSONL sources (written under ``tmp_path``), and the sources."""
    from train_helpers import synthetic_documents

    sources = []
    for name, seed in (("a", 1), ("b", 2)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in synthetic_documents(200, seed=seed)))
        sources.append(str(path))
    raw = tiny_config(corpus, tmp_path / "run", max_steps=3, eval_interval=0)
    raw["data"].update(source=[{"source": sources[0], "weight": 3.0}, {"source": sources[1], "weight": 1.0}],
                       shards_dir=str(tmp_path / "shards"), val_tokens=1000)
    return raw, sources


def test_a_mixture_run_reports_what_it_drew_in_its_summary_and_card(corpus, tmp_path):
    import dataclasses

    from edulm.config import config_from_dict
    from edulm.data.mixture import realised_mixture
    from edulm.data.prepare import prepare
    from edulm.train.trainer import train

    raw, sources = two_source_mixture(corpus, tmp_path)
    cfg = config_from_dict(raw)
    prepare(cfg)
    train(cfg)

    summary = json.loads((tmp_path / "run" / "training" / "training_summary.json").read_text())
    mixture = summary["data"]["mixture"]
    assert mixture == [dataclasses.asdict(u) for u in realised_mixture(tmp_path / "shards", 7, 32, 3 * 128)]
    assert [m["source"] for m in mixture] == sources and sum(m["tokens"] for m in mixture) == summary["tokens"]
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    assert "of a mixture of 2 sources with edulm" in card
    for m, weight in zip(mixture, ("3.0 (75.0%)", "1.0 (25.0%)")):
        assert f"| `{m['source']}` | {weight} | {m['tokens']:,} | {m['share']:.1%} | {m['epochs']:.2f} |" in card


def test_a_streamed_mixture_reports_what_it_drew_too(corpus, tmp_path):
    # A streamed mixture draws each window's source from the same sequence as a prepared one, but its
    # summary said "mixture": null and the card had no table: the data it trained on was not reported.
    from edulm.config import config_from_dict
    from edulm.data.mixture import realised_mixture
    from edulm.data.prepare import prepare
    from edulm.train.trainer import train

    raw, _ = two_source_mixture(corpus, tmp_path)
    prepare(config_from_dict(raw))  # only to compare with what a prepared run of the same draws reports
    raw["data"]["streaming"] = True
    train(config_from_dict(raw))

    summary = json.loads((tmp_path / "run" / "training" / "training_summary.json").read_text())
    mixture = summary["data"]["mixture"]
    prepared = realised_mixture(tmp_path / "shards", 7, 32, summary["tokens"])
    assert [(m["source"], m["windows"], m["tokens"], m["share"], m["target_share"]) for m in mixture] == [
        (u.source, u.windows, u.tokens, u.share, u.target_share) for u in prepared]
    assert all(m["prepared_tokens"] is None and m["epochs"] is None for m in mixture)
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    for m, weight in zip(mixture, ("3.0 (75.0%)", "1.0 (25.0%)")):
        assert f"| `{m['source']}` | {weight} | {m['tokens']:,} | {m['share']:.1%} | not recorded |" in card

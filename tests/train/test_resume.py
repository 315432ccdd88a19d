"""Real processes: an uninterrupted run, then runs stopped by SIGTERM and SIGKILL and resumed.

The resumed runs must log bitwise the same per-step losses as the uninterrupted one, and no run may
end with a traceback or "terminate called without an active exception".
"""

from __future__ import annotations

import json
import signal
import time

import pytest

from edulm import checkpoint
from edulm.metrics import read_metrics

from train_helpers import run_cli, start_cli, tiny_config, write_config

pytestmark = pytest.mark.slow

STEPS = 200


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "terminate called" not in stderr, stderr


def losses(run_dir):
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    return {int(r["step"]): r["loss"] for r in rows}, rows


def wait_for_checkpoint(proc, run_dir, step: int, timeout: float = 120) -> None:
    target = run_dir / "checkpoints" / checkpoint.checkpoint_name(step)
    deadline = time.monotonic() + timeout
    while not target.exists():
        assert proc.poll() is None, f"the run ended before step {step}: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


def config(corpus, tmp_path, name):
    raw = tiny_config(corpus, tmp_path / name, max_steps=STEPS, ckpt_interval=20, eval_interval=50, keep_last=3)
    return str(write_config(tmp_path / f"{name}.yaml", raw)), tmp_path / name


def test_stopped_and_killed_runs_resume_exactly(corpus, tmp_path):
    ref_cfg, ref_dir = config(corpus, tmp_path, "reference")
    done = run_cli("train", ref_cfg)
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    expected, ref_rows = losses(ref_dir)
    assert sorted(expected) == list(range(1, STEPS + 1))

    cfg, run_dir = config(corpus, tmp_path, "interrupted")
    # 1. SIGTERM: the run saves a checkpoint at the next step boundary and exits with 143.
    proc = start_cli("train", cfg)
    wait_for_checkpoint(proc, run_dir, 20)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert_clean(err)
    stopped_at = checkpoint.step_of(checkpoint.find_latest_good(run_dir))
    assert 20 <= stopped_at < STEPS
    got, _ = losses(run_dir)
    assert max(got) == stopped_at  # the stop step is logged and checkpointed
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["status"] == "stopped (SIGTERM)" and summary["steps"] == stopped_at
    assert not (run_dir / "final").exists()

    # 2. Resume, then SIGKILL somewhere after the next checkpoint: no chance to clean up.
    proc = start_cli("train", cfg, "--resume", "auto")
    wait_for_checkpoint(proc, run_dir, (stopped_at // 20 + 1) * 20)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "final").exists()

    # 3. Resume to the end.
    done = run_cli("train", cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    assert "resumed from" in done.stdout
    got, rows = losses(run_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]  # no duplicated or missing rows
    assert got == expected  # bitwise: floats are written in full precision
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref_rows]
    assert (run_dir / "final" / "model.safetensors").read_bytes() == (ref_dir / "final" / "model.safetensors").read_bytes()

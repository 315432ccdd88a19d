"""Real processes: an uninterrupted run, then runs stopped by SIGTERM and SIGKILL and resumed.

The resumed runs must log bitwise the same per-step losses as the uninterrupted one, and no run may
end with a traceback or "terminate called without an active exception". Forty steps with a
checkpoint every five are enough: what is tested is the boundary, not the length. Each
interrupted process is frozen (SIGSTOP) the moment the test sees what it waits for, so a fast
machine cannot finish the run before the signal lands.
"""

from __future__ import annotations

import json
import signal

import pytest

from edulm.checkpoint import folders as checkpoint
from edulm.config import load_config
from edulm.base.metrics import read_metrics
from edulm.train.trainer import train

from processes import freeze_when
from train_helpers import run_cli, start_cli, tiny_config, write_config

pytestmark = pytest.mark.slow

STEPS = 40
EVERY = 5


def assert_clean(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "terminate called" not in stderr, stderr


def losses(run_dir):
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    return {int(r["step"]): r["loss"] for r in rows}, rows


def last_logged_step(run_dir) -> int:
    try:
        return max((int(r["step"]) for r in read_metrics(run_dir / "training" / "training_metrics.csv")), default=0)
    except (OSError, ValueError, TypeError):
        return 0  # not written yet, or a row being written


def config(corpus, tmp_path, name):
    raw = tiny_config(corpus, tmp_path / name, max_steps=STEPS, ckpt_interval=EVERY, eval_interval=10, keep_last=3)
    return str(write_config(tmp_path / f"{name}.yaml", raw)), tmp_path / name


def kill_after_next_checkpoint(proc, run_dir, after: int, every: int) -> None:
    """SIGKILL ``proc`` once it has written the first checkpoint (every ``every`` steps) past step ``after`` and
    logged two more steps (rows that the resumed run must replace, not repeat)."""
    target = (after // every + 1) * every
    freeze_when(proc, lambda: last_logged_step(run_dir) >= target + 2
                and (run_dir / "checkpoints" / checkpoint.checkpoint_name(target)).is_dir(), timeout=120)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "final").exists()


@pytest.mark.compat
def test_stopped_and_killed_runs_resume_exactly(corpus, tmp_path):
    ref_cfg, ref_dir = config(corpus, tmp_path, "reference")
    train(load_config(ref_cfg))  # in this process: the subprocesses below must reproduce it bit for bit
    expected, ref_rows = losses(ref_dir)
    assert sorted(expected) == list(range(1, STEPS + 1))

    cfg, run_dir = config(corpus, tmp_path, "interrupted")
    # 1. SIGTERM: the run saves a checkpoint at the next step boundary and exits with 143.
    proc = start_cli("train", cfg)
    freeze_when(proc, lambda: (run_dir / "checkpoints" / checkpoint.checkpoint_name(EVERY)).is_dir(), timeout=120)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert_clean(err)
    stopped_at = checkpoint.step_of(checkpoint.find_latest_good(run_dir))
    assert EVERY <= stopped_at < STEPS
    got, _ = losses(run_dir)
    assert max(got) == stopped_at  # the stop step is logged and checkpointed
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["status"] == "stopped (SIGTERM)" and summary["steps"] == stopped_at
    assert not (run_dir / "final").exists()

    # 2. Resume, then SIGKILL two logged steps after the next checkpoint: no chance to clean up, and
    #    rows past the checkpoint that the resumed run must not repeat.
    kill_after_next_checkpoint(start_cli("train", cfg, "--resume", "auto"), run_dir, after=stopped_at, every=EVERY)
    assert last_logged_step(run_dir) > checkpoint.step_of(checkpoint.find_latest_good(run_dir))

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

"""A Muon run on a WSD schedule killed twice with SIGKILL and resumed each time logs bitwise the
losses of an uninterrupted one, and ends with the same weights: Muon's momentum buffers and AdamW's
moments come back from the checkpoints exactly, and the last resume continues inside the decay."""

from __future__ import annotations


import pytest
from test_resume import assert_clean, kill_after_next_checkpoint, losses
from train_helpers import run_cli, start_cli, tiny_config, write_config

from edulm.checkpoint import folders as checkpoint
from edulm.config import load_config
from edulm.train.trainer import train

pytestmark = pytest.mark.slow

STEPS = 12
EVERY = 3


def config(corpus, tmp_path, name):
    # WSD decaying over the last half: the stable phase ends at step 6, so the resumes land on both sides of it.
    raw = tiny_config(corpus, tmp_path / name, optimizer="muon", schedule="wsd", decay_fraction=0.5, max_steps=STEPS,
                      ckpt_interval=EVERY, eval_interval=6, keep_last=3)
    return str(write_config(tmp_path / f"{name}.yaml", raw)), tmp_path / name


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted Muon run (in this process): its config path and run dir."""
    ref_cfg, ref_dir = config(corpus, tmp_path_factory.mktemp("muon-reference"), "reference")
    train(load_config(ref_cfg))
    return ref_cfg, ref_dir


def test_muon_run_killed_twice_resumes_exactly(corpus, tmp_path, reference):
    _, ref_dir = reference
    expected, ref_rows = losses(ref_dir)
    assert sorted(expected) == list(range(1, STEPS + 1))

    cfg, run_dir = config(corpus, tmp_path, "killed")
    kill_after_next_checkpoint(start_cli("train", cfg), run_dir, after=0, every=EVERY)
    first = checkpoint.step_of(checkpoint.find_latest_good(run_dir))
    assert EVERY <= first < STEPS
    kill_after_next_checkpoint(start_cli("train", cfg, "--resume", "auto"), run_dir, after=first, every=EVERY)
    assert checkpoint.step_of(checkpoint.find_latest_good(run_dir)) > first

    done = run_cli("train", cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr
    assert_clean(done.stderr)
    assert "resumed from" in done.stdout and "optimizer: Muon" in done.stdout
    got, rows = losses(run_dir)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    assert got == expected  # bitwise
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref_rows]
    lr = [r["lr"] for r in rows]
    assert lr == [r["lr"] for r in ref_rows] and lr[5] == pytest.approx(3e-3) and lr[-1] == pytest.approx(3e-4)
    assert (run_dir / "final" / "model.safetensors").read_bytes() == (ref_dir / "final" / "model.safetensors").read_bytes()


def test_resuming_with_another_optimizer_is_refused_in_one_line(reference):
    ref_cfg, ref_dir = reference
    metrics = (ref_dir / "training" / "training_metrics.csv").read_bytes()
    log = (ref_dir / "training" / "train.log").read_bytes()
    done = run_cli("train", ref_cfg, "train.optimizer=adamw", "--resume", "auto")
    assert done.returncode == 2
    assert_clean(done.stderr)
    # One line, from the checkpoint's config, before the run's log or metrics are touched.
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    assert "trained with train.optimizer=muon, the config says adamw; resume with train.optimizer=muon" in errors[0]
    assert (ref_dir / "training" / "training_metrics.csv").read_bytes() == metrics
    assert (ref_dir / "training" / "train.log").read_bytes() == log

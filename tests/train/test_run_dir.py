"""The run dir before a run: writable, held by one run, cleared of what killed writers left (no training here)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from edulm.base.errors import UsageError
from edulm.base.files import temp_path
from edulm.base.lock import folder_lock, lock_path
from edulm.train.distributed import DistEnv
from edulm.train.run_dir import LOCK_PURPOSE, check_out_dir, hold_run_dir, remove_leftovers

ONE_PROCESS = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


def stale(path):
    """A temporary name for ``path`` as a writer that has exited would have chosen it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return path.with_name(temp_path(path).name.replace(f"-{os.getpid()}@", f"-{child.pid}@"))


def test_out_dir_checks_create_nothing(tmp_path):
    assert check_out_dir(tmp_path / "a" / "run") == (tmp_path / "a" / "run").absolute()
    assert list(tmp_path.iterdir()) == []  # proven writable without creating it
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(UsageError, match="runs through the file"):
        check_out_dir(tmp_path / "file" / "run")
    if os.geteuid() != 0:  # root writes into read-only folders; the battery mounts a read-only tmpfs instead
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(UsageError, match="cannot write in"):
            check_out_dir(tmp_path / "ro" / "run")


@pytest.mark.parametrize("files, named", [
    (["config.json", "model.safetensors", "tokenizer.json"], "a Hugging Face model folder"),
    (["config.yaml", "model.safetensors", "manifest.json"], "a checkpoint"),
    (["manifest.json", "train-000000.bin"], "prepared token shards"),
])
def test_out_dir_of_another_kind_is_refused_untouched(tmp_path, files, named):
    folder = tmp_path / "other"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("x")
    with pytest.raises(UsageError, match=f"holds {named}.*not a training run; choose a new or empty folder"):
        check_out_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    run = tmp_path / "run"
    (run / "training").mkdir(parents=True)
    (run / "config.yaml").write_text("x")  # a run that stopped before its first checkpoint: still a run dir
    assert check_out_dir(run) == run.absolute()


def test_leftovers_of_dead_writers_go_and_live_ones_stay(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-0000002").mkdir(parents=True)
    (run / "training").mkdir()
    dead = [stale(run / "checkpoints" / "step-0000004"), stale(run / "training" / "training_metrics.csv"),
            stale(run / "config.yaml"), stale(run / "final")]
    for p in dead:
        p.mkdir() if p.name.startswith((".step", ".final")) else p.write_bytes(b"half")
    live = temp_path(run / "training" / "training_summary.json")  # this process: still writing it
    live.write_text("{}")
    assert sorted(remove_leftovers(run)) == sorted(dead)
    assert live.exists() and (run / "checkpoints" / "step-0000002").is_dir()
    assert not (run / "final").exists()  # a half export is never put in place


def test_the_run_dir_is_held_until_the_block_ends(tmp_path):
    run = tmp_path / "run"
    with hold_run_dir(run, ONE_PROCESS):
        with pytest.raises(UsageError, match=rf"in use by {LOCK_PURPOSE} \(PID {os.getpid()} on "):
            with hold_run_dir(run, ONE_PROCESS):
                pass
    assert not lock_path(run).exists()
    with folder_lock(run, "edulm train"), pytest.raises(UsageError, match="in use by"):
        with hold_run_dir(run, ONE_PROCESS):
            pass

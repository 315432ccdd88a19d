"""One writer per folder: a second process is refused with the holder's PID; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edulm.base.errors import UsageError
from edulm.base.lock import FolderLock, folder_lock, lock_path, read_holder

HOLD = """
import sys, time
from edulm.base.lock import FolderLock
lock = FolderLock(sys.argv[1], "edulm train").acquire()
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_is_refused_naming_the_holder_then_takes_over_after_sigkill(tmp_path):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir)
    try:
        with pytest.raises(UsageError) as refused:
            FolderLock(run_dir, "edulm train").acquire()
        message = str(refused.value)
        assert f"PID {proc.pid}" in message and "edulm train" in message and "\n" not in message
        assert read_holder(run_dir)["pid"] == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The kernel dropped the dead process's lock: the next command takes it without any clean-up.
    with folder_lock(run_dir, "edulm train --resume auto") as lock:
        assert lock.held and read_holder(run_dir)["pid"] == os.getpid()
    assert not lock_path(run_dir).exists()


def test_lock_is_reentrant_across_sequential_commands_and_guards_missing_folders(tmp_path):
    out = tmp_path / "exports" / "model"
    for _ in range(2):
        with folder_lock(out, "edulm export"):
            assert lock_path(out).is_file() and not out.exists()
    assert not lock_path(out).exists()


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    with folder_lock(tmp_path / "shards", "edulm prepare"):
        with pytest.raises(UsageError, match="in use by edulm prepare"):
            FolderLock(tmp_path / "shards", "edulm prepare").acquire()


def test_pid_fallback_when_the_file_system_has_no_flock(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path(run_dir).write_text('{"pid": %d, "host": "%s", "purpose": "edulm train"}' % (proc.pid, os.uname().nodename))
        with pytest.raises(UsageError, match=f"PID {proc.pid}"):
            FolderLock(run_dir, "edulm train").acquire()
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.05)
    with folder_lock(run_dir, "edulm train") as lock:
        assert read_holder(run_dir)["pid"] == os.getpid() and lock.held
    assert not lock_path(run_dir).exists()


def test_a_folder_named_through_a_symbolic_link_is_the_same_folder(tmp_path):
    # Two prepares (or trains) of one real folder, one through a link, must not both write it.
    real = tmp_path / "shards"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert lock_path(tmp_path / "alias") == lock_path(real)
    with FolderLock(real, "edulm prepare"):
        with pytest.raises(UsageError, match="in use by edulm prepare"):
            FolderLock(tmp_path / "alias", "edulm prepare").acquire()
    # A link to a folder that does not exist yet guards the folder it will be.
    (tmp_path / "later").symlink_to(tmp_path / "run")
    with FolderLock(tmp_path / "run", "edulm train"):
        with pytest.raises(UsageError):
            FolderLock(tmp_path / "later", "edulm train").acquire()

"""Processes from a test's point of view (Linux ``/proc``): is one alive, which does it own, and the
temporaries a writer that has exited leaves behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable


def _stat_fields(pid: int | str, task: int | str | None = None) -> list[str]:
    """The fields of ``/proc/PID/stat`` (or of one of its threads, ``/proc/PID/task/TASK/stat``) after the
    command name (which may hold spaces)."""
    path = Path(f"/proc/{pid}") if task is None else Path(f"/proc/{pid}/task/{task}")
    return (path / "stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie has exited; only its parent's wait is missing)."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``: its children, theirs, and so on."""
    found, frontier = set(), {pid}
    while frontier:
        parents, frontier = frontier, set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parent = int(_stat_fields(entry.name)[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent in parents and int(entry.name) not in found:
                found.add(int(entry.name))
                frontier.add(int(entry.name))
    return found


def dead_pid() -> int:
    """The number of a process that has exited (the writer of a temporary "left by a killed process")."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def stale_temp(path: Path) -> Path:
    """The temporary name a writer that has exited would have used for ``path`` (nothing is created)."""
    from edulm.base.files import temp_path

    host_and_tag = temp_path(path).name.split("@", 1)[1]
    return path.with_name(f".{path.name}.tmp-{dead_pid()}@{host_and_tag}")


def stopped(pid: int) -> bool:
    """True once every thread of process ``pid`` has stopped (``kill`` only queues SIGSTOP: a thread inside a
    system call, a rename say, finishes it first), or once the process has ended."""
    try:
        tasks = [task.name for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return True  # gone (the caller learns it from poll())
    for task in tasks:
        try:
            if _stat_fields(pid, task)[0] not in "tTZX":
                return False
        except OSError:
            continue  # that thread has just ended
    return True


def freeze_when(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 180) -> None:
    """SIGSTOP ``proc`` at a moment ``condition()`` holds, and return with it stopped there (so a fast machine
    cannot run past it).

    The condition is checked again once the stop has landed: on a busy machine the process may run on for a
    while between the check and the stop (this process preempted, a system call finishing), and a passing
    moment (a temporary that exists while something is written) may be over by then. Then the process is
    let go again until the next such moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        while not condition():
            if proc.poll() is not None:
                raise AssertionError(f"the process ended before the fault could be placed: {proc.communicate()}")
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting to place the fault")
            time.sleep(0.001)
        proc.send_signal(signal.SIGSTOP)
        while not stopped(proc.pid):
            time.sleep(0.001)
        if proc.poll() is not None:
            raise AssertionError(f"the process ended before the fault could be placed: {proc.communicate()}")
        if condition():
            return
        proc.send_signal(signal.SIGCONT)

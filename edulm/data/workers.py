"""Helper processes of the data pipeline: how many to start, and making sure none outlives its parent.

`edulm prepare` tokenizes in worker processes and streaming tokenizes in one background process. When
the parent is killed (SIGKILL, the out-of-memory killer, a scheduler's hard limit) nothing tells those
processes to stop; left alone they keep their memory, reparented to PID 1, indefinitely.
:func:`exit_with_parent` makes a helper process end as soon as its parent is gone: on Linux the kernel
sends it SIGKILL (``prctl(PR_SET_PDEATHSIG)``), and everywhere a watchdog thread checks the parent's PID
twice a second, as a fallback. This module imports only the standard library, so it costs a helper
process nothing at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5
"""How often the watchdog thread checks that the parent is still there."""


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(requested: int, world_size: int = 1) -> int:
    """``requested`` when above 0; else the cores shared evenly among ``world_size`` processes (at least 1)."""
    if requested > 0:
        return requested
    return max(1, cpu_count() // max(1, world_size))


def kill_on_parent_death() -> bool:
    """Ask Linux to SIGKILL this process when its parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


QUIET_RESOURCE_TRACKER = "ignore:resource_tracker:UserWarning"
"""A warnings filter for multiprocessing's resource tracker (see :func:`quiet_resource_tracker`)."""


def quiet_resource_tracker() -> None:
    """Call before starting spawned helpers. When this process is killed (SIGKILL), multiprocessing's resource
    tracker removes the semaphores its helpers shared, which is all that is needed, and then warns "There appear
    to be N leaked semaphore objects", a line that surfaces at the user's next command as if that one had
    leaked something. The tracker is a process of its own started with this process's ``-W`` options, so the
    filter goes there; its clean-up is unchanged."""
    if QUIET_RESOURCE_TRACKER not in sys.warnoptions:
        sys.warnoptions.append(QUIET_RESOURCE_TRACKER)


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(WATCH_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(1)  # the parent is gone: nobody will read our results


def exit_with_parent(parent: int) -> None:
    """Make this (helper) process end when process ``parent`` does; call first thing in the helper.

    ``parent`` is the PID the parent had when it started us: if it is already gone (it died while we
    were starting), we exit at once.
    """
    kill_on_parent_death()
    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="edulm-parent-watch", daemon=True).start()

"""One writer per folder: a lock held for the whole life of a command that writes a folder.

``edulm train`` holds its run dir, ``edulm prepare`` its shards dir and ``edulm export`` its output
folder. A second process that asks for a held folder — a fresh run, a ``--resume``, a second export —
is refused at once with :class:`~edulm.base.errors.UsageError` (exit 2) naming the holder's PID, host and
command.

The lock is ``fcntl.flock`` on a hidden file beside the folder (``PARENT/.NAME.lock``), so it also
guards a folder that does not exist yet or that is replaced by a rename. The kernel releases a flock
when its process dies, so a lock left by a killed process (SIGKILL, power loss of a node that shares
the file system) is taken over by the next command without any clean-up; the file itself only
records who holds it, for the message. Where the file system has no flock (some network mounts),
the lock falls back to the recorded PID: it counts as held while that process is alive.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
from edulm.base.files import NOT_WRITABLE, process_alive
from edulm.base.files import is_disk_full

_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}


def lock_path(folder: str | Path) -> Path:
    """The lock file that guards ``folder``: ``PARENT/.NAME.lock`` of the real folder, symbolic links resolved, so
    that two commands naming one folder by two paths (``d`` and a link ``alias -> d``) ask for the same lock."""
    folder = Path(folder).resolve()
    return folder.with_name(f".{folder.name}.lock")


def _holder_record(purpose: str) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
            "command": " ".join(sys.argv[:4]), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def read_holder(folder: str | Path) -> dict[str, Any] | None:
    """What the lock file of ``folder`` says about its holder (None when there is no readable record)."""
    try:
        data = json.loads(lock_path(folder).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another process"
    return f"{holder.get('purpose') or 'a command'} (PID {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')})"


def _pid_alive(holder: dict[str, Any] | None) -> bool:
    if not holder or holder.get("host") != socket.gethostname():
        return bool(holder)  # another machine's process cannot be checked: assume it is alive
    try:
        return process_alive(int(holder["pid"]))
    except (KeyError, TypeError, ValueError):
        return True  # a record we cannot read: do not take the lock from whoever wrote it


class FolderLock:
    """An exclusive lock on a folder for one process; use as a context manager or call acquire/release."""

    def __init__(self, folder: str | Path, purpose: str) -> None:
        self.folder = Path(folder)
        self.purpose = purpose
        self.path = lock_path(folder)
        self._fd: int | None = None
        self._pid_file = False

    def _refuse(self, holder: dict[str, Any] | None) -> UsageError:
        return UsageError(
            f"{self.folder} is in use by {_describe(holder)}; wait for it to finish or stop it "
            "(a lock of a process that is gone is taken over automatically)"
        )

    def _holder_once_recorded(self, patience_s: float = 1.0) -> dict[str, Any] | None:
        """The holder's record; a holder that took the lock an instant ago writes it just after, so wait a little."""
        deadline = time.monotonic() + patience_s
        while (holder := read_holder(self.folder)) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return holder

    def _open(self) -> int:
        """The lock file, opened (created when missing); a place that takes no file is the user's bad choice."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            # ENOENT with the folder there: a file system that takes no new file (/proc, say).
            if err.errno in NOT_WRITABLE or (err.errno == errno.ENOENT and self.path.parent.is_dir()):
                raise UsageError(f"{self.folder}: cannot write in {self.path.parent} ({err.strerror}); "
                                 "choose a writable folder") from None
            raise

    def acquire(self) -> "FolderLock":
        """Take the lock, or raise :class:`UsageError` naming the holder."""
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refuse(self._holder_once_recorded()) from None
            except OSError as err:
                os.close(fd)
                if err.errno in _NO_FLOCK:
                    return self._acquire_by_pid()
                raise
            # The holder before us may have deleted the file after we opened it: then our lock is on a
            # file nobody else will see, so start again with the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(_holder_record(self.purpose)) + "\n").encode())
        except OSError as err:
            if not is_disk_full(err):
                os.close(fd)
                raise
            # A full disk: the lock is held all the same, only the record of who holds it is missing
            # (the holder may be about to free space, e.g. a resumed run removing dead writers' files).
        self._fd = fd
        return self

    def _acquire_by_pid(self) -> "FolderLock":
        holder = read_holder(self.folder)
        if holder and _pid_alive(holder) and holder.get("pid") != os.getpid():
            raise self._refuse(holder)
        self.path.write_text(json.dumps(_holder_record(self.purpose)) + "\n")
        self._pid_file = True
        return self

    def release(self) -> None:
        """Give the lock up and remove the lock file (safe to call twice)."""
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # while still holding it, so no one locks the file we delete
            os.close(self._fd)  # closing releases the flock
            self._fd = None
        elif self._pid_file:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._pid_file = False

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None or self._pid_file

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


folder_lock = FolderLock
"""``with folder_lock(run_dir, "edulm train"):`` hold ``folder`` for the block; refuse if it is held."""

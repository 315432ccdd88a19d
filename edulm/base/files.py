"""Writing files so that a crash never leaves half of one: atomic writes, one temporary-name scheme,
finding the temporaries of dead processes, and one clear error for a full disk.

Every file and folder edulm writes in place goes first to a hidden sibling named by
:func:`temp_path` — ``.NAME.tmp-PID@HOST-RANDOM`` — and is renamed over its final name once
complete (``os.replace`` is atomic on POSIX file systems). The name records which process wrote it,
so :func:`remove_stale_temps` can delete exactly the temporaries whose writer is gone (killed,
crashed, out of power) and leave those of a live writer alone.

A full disk (``ENOSPC``, or ``EDQUOT`` for a quota) becomes :class:`~edulm.base.errors.DiskFullError`,
one line that names the folder and what was being written; the half-written temporary is removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from pathlib import Path
from typing import Any, Iterator

from edulm.base.errors import DiskFullError

_TEMP = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]*)-(?P<tag>[0-9a-f]{8})$")
_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
NOT_WRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
"""``errno`` of a path the user chose that cannot be written (a read-only file system, no permission): every
command reports it as bad input (one line, exit 2), never as a failure of its own."""
_SPACE_TEXT = re.compile(rf"\(os error (?:{errno.ENOSPC}|{errno.EDQUOT})\)")
"""How Rust's I/O errors (safetensors) name a full disk: they reach Python as text, without an errno."""


def _host() -> str:
    """This machine's name, reduced to the characters a temporary name may carry."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64]


def temp_path(path: str | Path) -> Path:
    """A new hidden sibling name for ``path``: ``.NAME.tmp-PID@HOST-RANDOM`` (nothing is created)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}@{_host()}-{uuid.uuid4().hex[:8]}")


def temp_target(path: str | Path) -> str | None:
    """The final name a temporary stands for (``.x.tmp-...`` -> ``x``), or None when ``path`` is no temporary."""
    match = _TEMP.match(Path(path).name)
    return match.group("target") if match else None


def _process_started_after(pid: int, when: float) -> bool:
    """True when process ``pid`` started after the time ``when`` (so it reused the number of a dead writer)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + start_ticks / os.sysconf("SC_CLK_TCK") > when + 1.0
    except (OSError, ValueError, IndexError, StopIteration):
        return False  # not Linux, or gone meanwhile: no evidence of reuse


def owner_alive(path: str | Path) -> bool:
    """Whether the process that created the temporary ``path`` may still be writing it.

    A temporary of another machine counts as alive (its process cannot be checked from here); on this
    machine the writer is alive when a process with its number exists and started before the temporary.
    """
    path = Path(path)
    match = _TEMP.match(path.name)
    if match is None:
        return False
    if match.group("host") != _host():
        return True
    try:
        created = path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return process_alive(int(match.group("pid")), started_before=created)


def process_alive(pid: int, started_before: float | None = None) -> bool:
    """Whether process ``pid`` of this machine exists; with ``started_before``, only if it started before that
    time (a later process that reused the number of a dead one does not count)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return started_before is None or not _process_started_after(pid, started_before)


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def stale_temps(folder: str | Path, target: str | None = None) -> list[Path]:
    """The temporaries in ``folder`` (not below it) whose writer is gone; only those standing for the name
    ``target`` when it is given."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [
        entry for entry in folder.iterdir()
        if _TEMP.match(entry.name) and (target is None or temp_target(entry) == target) and not owner_alive(entry)
    ]


def remove_stale_temps(folder: str | Path, target: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (not below it) whose writer is gone (only those of the name
    ``target`` when it is given); returns what was removed."""
    removed = stale_temps(folder, target)
    for entry in removed:
        remove_path(entry)
    return removed


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_disk_full(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) says the disk or the quota is full.

    Libraries hide the errno in different ways: ``torch.save`` into a Python file object raises a
    ``RuntimeError`` ("unexpected pos") *while handling* the ``OSError`` of the file's ``write`` (so
    the errno is in ``__context__``); safetensors' Rust writer keeps only the text
    ``(os error 28)``. Both count; ``torch.save`` to a path name keeps nothing, so edulm never
    writes torch files that way.
    """
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, DiskFullError) or (isinstance(cause, OSError) and cause.errno in _SPACE_ERRNOS):
            return True
        if _SPACE_TEXT.search(str(cause)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def disk_full_error(folder: str | Path, what: str, advice: str = "free some space and run the command again") -> DiskFullError:
    """The one-line error for a full disk: where, while doing what, and what to do.

    The error keeps ``folder`` and ``what`` as attributes, so a caller that knows better advice (the
    trainer: continue with ``--resume auto``) can say the same with its own.
    """
    error = DiskFullError(f"no space left on {folder} while writing {what}; {advice}")
    error.folder, error.what = Path(folder), what
    return error


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str | None = None, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is renamed over ``path``.

    On any error the temporary is removed and ``path`` is left as it was; a full disk is reported as
    :class:`~edulm.base.errors.DiskFullError` naming ``what`` (default: the file's name). ``fsync`` flushes
    the data before the rename (for files whose loss after a power cut would matter).
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        remove_path(tmp)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(path.parent, what or path.name) from err
        raise


def write_bytes(path: str | Path, data: bytes, what: str | None = None, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, what, fsync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, what: str | None = None, fsync: bool = False) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    write_bytes(path, text.encode("utf-8"), what, fsync)


def write_json(path: str | Path, data: Any, what: str | None = None, fsync: bool = False) -> None:
    """Write ``data`` as indented JSON (values JSON cannot hold are written as their text) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2, default=str) + "\n", what, fsync)

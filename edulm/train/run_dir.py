"""The run dir before a run touches it: usable, held by this run alone, and cleared of what killed writers left.

:func:`hold_run_dir` is the first thing ``edulm train`` does after joining its process group, and
it lasts until the process ends:

1. ``run.out_dir`` must be a folder this process can write (not a file, not read-only) that holds no
   other kind of edulm folder (an export, a checkpoint, prepared shards: :func:`edulm.base.layout.folder_kind`),
   else one line and exit 2, before any work (a refused run creates nothing but the folders above the run dir);
2. the run dir is locked (:mod:`edulm.base.lock`, purpose ``edulm train``) for the run's whole life, so a
   second ``edulm train`` on the same folder, fresh or ``--resume``, is refused with one line naming
   this process's PID and host; the lock of a process that died (SIGKILL, power loss) is taken over;
3. temporaries whose writer is gone are removed — half-written checkpoints, metrics, summary or
   config, a killed final export's ``.final.tmp-*`` — before anything is written, so a run killed
   on a full disk frees that space for its own resume.

Rank 0 does all three; its answer reaches every rank (as an error or as "go on"), so under
``torchrun`` no rank waits for a run that was refused.
"""

from __future__ import annotations

import contextlib
import errno
from pathlib import Path
from typing import Iterator

from edulm.checkpoint import folders as checkpoint
from edulm.base.errors import UsageError
from edulm.base.files import NOT_WRITABLE, disk_full_error, is_disk_full, remove_stale_temps, stale_temps, temp_path
from edulm.base.layout import FOLDER_KINDS, RunLayout, folder_kind
from edulm.base.lock import FolderLock, lock_path
from edulm.train.distributed import DistEnv

LOCK_PURPOSE = "edulm train"
"""How the run dir's lock names its holder (``... is in use by edulm train (PID N on HOST ...)``)."""



def check_out_dir(out_dir: str | Path) -> Path:
    """Prove that ``run.out_dir`` can be written without creating it: files can be created in it, or
    (while it does not exist) in the nearest folder above it; returns it.

    A path that is a file (or runs through one), a folder that holds something else than a run (a
    Hugging Face folder, a checkpoint, prepared shards), a read-only file system or a folder without
    write permission is a :class:`UsageError` naming the folder; a full disk is a
    :class:`~edulm.base.errors.DiskFullError`.
    """
    out = Path(out_dir).absolute()
    kind = folder_kind(out)
    if kind not in (None, "run"):  # a run's files would be mixed into it (and `--resume auto` would start afresh there)
        raise UsageError(f"run.out_dir {out_dir}: holds {FOLDER_KINDS[kind]}, not a training run; "
                         "choose a new or empty folder for the run")
    nearest = next(p for p in (out, *out.parents) if p.exists())
    if not nearest.is_dir():
        where = "is a file" if nearest == out else f"runs through the file {nearest}"
        raise UsageError(f"run.out_dir {out_dir}: {where}, not a folder; choose a folder for the run")
    probe = temp_path(nearest / "write-test")
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        if is_disk_full(err):
            raise disk_full_error(nearest, "the run dir") from err
        # ENOENT here: the folder exists but takes no new file (/proc, say).
        if err.errno in NOT_WRITABLE or err.errno == errno.ENOENT:
            raise UsageError(f"run.out_dir {out_dir}: cannot write in {nearest} ({err.strerror}); "
                             "choose a writable folder") from None
        raise
    return out


def remove_leftovers(run_dir: str | Path) -> list[Path]:
    """Delete the temporaries of ``run_dir`` whose writer is gone; returns what was removed.

    Checkpoint folders (and older versions' ``.tmp-step-*``), files of the run dir and of
    ``training/``, and a killed final export (:func:`edulm.hf.export_folder.settle_stale_exports`,
    which also puts back a complete ``final/`` lost between an export's two renames).
    """
    from edulm.hf.export_folder import settle_stale_exports

    layout = RunLayout.of(run_dir)
    removed = checkpoint.remove_stale_temporaries(layout.root)
    removed += remove_stale_temps(layout.training)
    stale_exports = stale_temps(layout.root, layout.final.name)
    settle_stale_exports(layout.final)
    removed += [p for p in stale_exports if not p.exists()]
    removed += remove_stale_temps(layout.root)  # after the exports: they may put one back as final/
    return removed


@contextlib.contextmanager
def hold_run_dir(out_dir: str | Path, env: DistEnv) -> Iterator[None]:
    """Check, lock and clean the run dir on rank 0 (see the module docstring) and hold it for the block.

    A refusal raises the same :class:`UsageError` (or :class:`~edulm.base.errors.DiskFullError`) on every rank.
    """
    held: list[FolderLock] = []

    def take() -> None:
        out = check_out_dir(out_dir)
        lock = FolderLock(out, LOCK_PURPOSE)
        try:
            lock.acquire()
        except OSError as err:
            if err.errno not in NOT_WRITABLE:
                raise
            raise UsageError(f"{lock_path(out)}: cannot create the run's lock file ({err.strerror}); "
                             "choose a run.out_dir in a writable folder") from None
        try:
            remove_leftovers(out)
        except BaseException:
            lock.release()
            raise
        held.append(lock)  # kept here: a lock is this process's, never sent to the other ranks

    env.decide_on_main(take)
    try:
        yield
    finally:
        for lock in held:
            lock.release()

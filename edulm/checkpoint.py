"""Checkpoint folders on disk: atomic writes, integrity manifests, retention, finding the latest good one.

A checkpoint is ``RUN/checkpoints/step-0001000/``. It is written into a hidden temporary folder
(``.tmp-step-0001000``) and renamed once every file is on disk, so a folder named ``step-*`` is
never half-written. Its ``manifest.json``, written last, records the size and SHA-256 of every other
file; :func:`verify` checks them, so a truncated or damaged checkpoint (a full disk, a bad copy) is
noticed and :func:`find_latest_good` falls back to the previous one with a warning.

What goes inside (weights, optimizer, RNG, data position) is the trainer's business; this module
only moves folders and checks files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from edulm.errors import UsageError

CHECKPOINTS_DIR = "checkpoints"
MANIFEST_FILE = "manifest.json"
_NAME = re.compile(r"^step-(\d+)$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".old-"

log = logging.getLogger("edulm")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps, e.g. ``step-0001000``."""
    return f"step-{step:07d}"


def checkpoints_dir(run_dir: str | Path) -> Path:
    """The ``checkpoints/`` folder of a run dir (or the folder itself when given one)."""
    run_dir = Path(run_dir)
    return run_dir if run_dir.name == CHECKPOINTS_DIR else run_dir / CHECKPOINTS_DIR


def step_of(path: str | Path) -> int | None:
    """The step encoded in a checkpoint folder name, or None when the name is not ``step-N``."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished (renamed) checkpoint folders of a run, oldest first; contents are not checked."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p))


def begin(run_dir: str | Path, step: int) -> Path:
    """Create (empty) the temporary folder that the checkpoint of ``step`` is written into."""
    tmp = checkpoints_dir(run_dir) / (_TMP_PREFIX + checkpoint_name(step))
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, step: int) -> Path:
    """Seal a temporary checkpoint folder: manifest of sizes and checksums, fsync, rename to ``step-N``.

    An existing checkpoint of the same step is replaced (moved aside first, deleted after the rename).
    """
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {
        "format": "edulm-checkpoint",
        "version": 1,
        "step": step,
        "files": {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    for p in [*files, tmp / MANIFEST_FILE]:
        _fsync(p)
    final = tmp.parent / checkpoint_name(step)
    trash = None
    if final.exists():
        trash = tmp.parent / (_TRASH_PREFIX + final.name)
        if trash.exists():
            shutil.rmtree(trash)
        final.rename(trash)
    tmp.rename(final)
    _fsync(tmp.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def verify(path: str | Path, checksums: bool = True) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong with it.

    ``checksums=False`` checks only that every file of the manifest exists with its recorded size
    (fast; what retention uses); ``True`` also recomputes every SHA-256.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest.json (the checkpoint was not finished)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "manifest.json is unreadable"
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, expected {meta['bytes']} (truncated?)"
        if checksums and _sha256(f) != meta["sha256"]:
            return f"{name} does not match its checksum (corrupted)"
    return None


def find_latest_good(run_dir: str | Path) -> Path | None:
    """The newest complete, intact checkpoint of a run (checksums verified), or None.

    Every newer checkpoint that fails verification is reported with a warning and skipped.
    """
    for path in reversed(list_checkpoints(run_dir)):
        problem = verify(path)
        if problem is None:
            return path
        log.warning("edulm: warning: skipping checkpoint %s: %s; using an older one", path, problem)
    return None


def resolve_resume(run_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint that ``--resume`` names: ``auto`` (latest good of the run dir, None if there is none),
    a checkpoint folder, or a run dir (its latest good). A named checkpoint that fails verification is a
    :class:`UsageError`."""
    if resume == "auto":
        return find_latest_good(run_dir)
    path = Path(resume)
    if not path.is_dir():
        raise UsageError(f"--resume {resume}: no such checkpoint folder; pass 'auto' or a checkpoints/step-N folder")
    if step_of(path) is None:
        found = find_latest_good(path)
        if found is None:
            raise UsageError(f"--resume {resume}: no intact checkpoint found in it; pass a checkpoints/step-N folder")
        return found
    problem = verify(path)
    if problem is not None:
        raise UsageError(f"--resume {resume}: checkpoint is damaged: {problem}; pick an older one or use --resume auto")
    return path


def apply_retention(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; return what was deleted.

    Only checkpoints that pass the quick check count as complete. Damaged ones older than the newest
    complete checkpoint are deleted too; nothing is deleted when no complete checkpoint exists, so the
    only good checkpoint is never lost.
    """
    keep_last = max(1, keep_last)
    folders = list_checkpoints(run_dir)
    good = [p for p in folders if verify(p, checksums=False) is None]
    if not good:
        return []
    keep = set(good[-keep_last:])
    newest_good = step_of(good[-1])
    doomed = [p for p in folders if p not in keep and step_of(p) < newest_good]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete temporary folders left by a run that was killed while writing a checkpoint."""
    root = checkpoints_dir(run_dir)
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
                shutil.rmtree(p, ignore_errors=True)

"""Checkpoint folders on disk: atomic writes, integrity manifests, retention, finding the latest good one.

A checkpoint is ``RUN/checkpoints/step-0001000/`` (names: :mod:`edulm.base.layout`). It is written into a
hidden temporary folder named by :func:`edulm.base.files.temp_path` and renamed once every file is on
disk, so a folder named ``step-*`` is never half-written. Its ``manifest.json``, written last, records the size and SHA-256 of every other
file; :func:`verify` checks them, so a truncated or damaged checkpoint (a full disk, a bad copy) is
noticed and :func:`find_latest_good` falls back to the previous one with a warning. Valid JSON of
the wrong shape (``files`` a list, an entry without ``bytes``) is damage like a flipped byte
(:func:`manifest_problem`), and so is whatever a caller's ``check`` finds (the trainer's: files that
do not load safely), so a damaged checkpoint is skipped, never a crash, and retention never counts it.

What goes inside (weights, optimizer, RNG, data position) is the trainer's business
(:mod:`edulm.train.checkpointing`); this module only moves folders and checks files.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

from edulm.data.manifest import inside_folder, shape_problem
from edulm.base.errors import UsageError
from edulm.base.files import fsync_path, remove_path, remove_stale_temps, sha256_file, temp_path, temp_target
from edulm.base.layout import CHECKPOINTS_DIR, MANIFEST_FILE, checkpoint_name, step_of

__all__ = [
    "begin", "commit", "verify", "manifest_problem", "problem_of", "Check", "find_latest_good", "resolve_resume",
    "apply_retention", "remove_stale_temporaries", "list_checkpoints", "checkpoints_dir", "checkpoint_name", "step_of",
]

_LEGACY_TEMP_PREFIXES = (".tmp-", ".old-")
"""Temporary folder names of checkpoints written before the common temporary-name scheme."""

log = logging.getLogger("edulm")

Check = Callable[[Path], "str | None"]
"""A further check of a checkpoint folder that passed :func:`verify`: what is wrong with it, or None."""

_FILE_ENTRY = {"bytes": int, "sha256": str}
"""What ``manifest.json`` records of every file."""


def checkpoints_dir(run_dir: str | Path) -> Path:
    """The ``checkpoints/`` folder of a run dir (or the folder itself when given one)."""
    run_dir = Path(run_dir)
    return run_dir if run_dir.name == CHECKPOINTS_DIR else run_dir / CHECKPOINTS_DIR


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished (renamed) checkpoint folders of a run, oldest first; contents are not checked."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p))


def begin(run_dir: str | Path, step: int) -> Path:
    """Create (empty) the temporary folder that the checkpoint of ``step`` is written into."""
    tmp = temp_path(checkpoints_dir(run_dir) / checkpoint_name(step))
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, step: int) -> Path:
    """Seal a temporary checkpoint folder: manifest of sizes and checksums, fsync, rename to ``step-N``.

    An existing checkpoint of the same step is replaced (moved aside first, deleted after the rename).
    """
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST_FILE)
    manifest = {
        "format": "edulm-checkpoint",
        "version": 1,
        "step": step,
        "files": {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files},
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    for p in [*files, tmp / MANIFEST_FILE, tmp]:  # the folder too: its entries must survive a power cut
        fsync_path(p)
    final = tmp.parent / checkpoint_name(step)
    trash = None
    if final.exists():
        trash = temp_path(final)  # moved aside under a temporary name: cleaned up if we die right here
        final.rename(trash)
    tmp.rename(final)
    fsync_path(tmp.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return final


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with the shape of a checkpoint's parsed ``manifest.json``, or None when it fits:
    ``{"files": {NAME: {"bytes": int >= 0, "sha256": str}, ...}}`` with every NAME a path inside the folder."""
    problem = shape_problem(manifest, {"files": dict})
    if problem:
        return problem
    for name, meta in manifest["files"].items():
        problem = shape_problem(meta, _FILE_ENTRY, f"files['{name}']")
        if problem:
            return problem
        if not inside_folder(name) or name == MANIFEST_FILE:
            return f"files names '{name}', not a file inside the checkpoint"
        if meta["bytes"] < 0:
            return f"files['{name}'].bytes is negative"
    return None


def _read_manifest(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest of checkpoint ``path``, or None and what is wrong with it."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return None, "no manifest.json (the checkpoint was not finished)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, "manifest.json is unreadable"
    problem = manifest_problem(manifest)
    if problem:
        return None, f"manifest.json is damaged ({problem})"
    return manifest, None


def verify(path: str | Path, checksums: bool = True) -> str | None:
    """None when the checkpoint is complete and intact, else what is wrong with it.

    ``checksums=False`` checks only the manifest's shape and that every file of it exists with its
    recorded size (fast; what retention uses); ``True`` also recomputes every SHA-256.
    """
    path = Path(path)
    manifest, problem = _read_manifest(path)
    if manifest is None:
        return problem
    for name, meta in manifest["files"].items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["bytes"]:
            return f"{name} has {f.stat().st_size} bytes, expected {meta['bytes']} (truncated?)"
        if checksums and sha256_file(f) != meta["sha256"]:
            return f"{name} does not match its checksum (corrupted)"
    return None


def problem_of(path: str | Path, check: Check | None = None) -> str | None:
    """What is wrong with checkpoint ``path`` (:func:`verify` with checksums, then ``check``), or None."""
    problem = verify(path)
    if problem is None and check is not None:
        problem = check(Path(path))
    return problem


def find_latest_good(run_dir: str | Path, check: Check | None = None) -> Path | None:
    """The newest complete, intact checkpoint of a run (checksums verified, and ``check`` passed), or None.

    Every newer checkpoint that fails is reported with a one-line warning and skipped.
    """
    for path in reversed(list_checkpoints(run_dir)):
        problem = problem_of(path, check)
        if problem is None:
            return path
        log.warning("%s: %s; treated as damaged, trying an older checkpoint", path, problem)
    return None


def resolve_resume(run_dir: str | Path, resume: str, check: Check | None = None) -> Path | None:
    """The checkpoint that ``--resume`` names: ``auto`` (latest good of the run dir, None if there is none),
    a checkpoint folder, or a run dir (its latest good). A named checkpoint that fails verification (or
    ``check``) is a :class:`UsageError`, and so is one older than a complete checkpoint that ``run_dir``
    already holds (:func:`_refuse_later_checkpoints`)."""
    if resume == "auto":
        return find_latest_good(run_dir, check)
    path = Path(resume)
    if not path.is_dir():
        raise UsageError(f"--resume {resume}: no such checkpoint folder; pass 'auto' or a checkpoints/step-N folder")
    if step_of(path) is None:
        found = find_latest_good(path, check)
        if found is None:
            raise UsageError(f"--resume {resume}: no intact checkpoint found in it; pass a checkpoints/step-N folder")
        if checkpoints_dir(path).resolve() != checkpoints_dir(run_dir).resolve():  # the run's own dir: as auto
            _refuse_later_checkpoints(run_dir, found, resume)
        return found
    problem = problem_of(path, check)
    if problem is not None:
        raise UsageError(f"--resume {resume}: checkpoint is damaged: {problem}; pick an older one or use --resume auto")
    _refuse_later_checkpoints(run_dir, path, resume)
    return path


def _refuse_later_checkpoints(run_dir: str | Path, found: Path, resume: str) -> None:
    """Refuse to continue from ``found`` in a run dir that holds complete checkpoints of later steps.

    They belong to another history of the run (the one being rewound, or another run's): the new
    history would overwrite some of them and leave the rest, and a later ``--resume auto``, ``final/``
    and the summary would mix the two. (Incomplete later ones are as ``--resume auto`` treats them.)
    """
    step = step_of(found)
    later = [p for p in list_checkpoints(run_dir)
             if step_of(p) > step and p.resolve() != found.resolve() and verify(p, checksums=False) is None]
    if later:
        folder = checkpoints_dir(run_dir)
        raise UsageError(
            f"--resume {resume}: {folder} already holds later checkpoints ({', '.join(p.name for p in later)}), so "
            f"continuing from step {step:,} there would mix two histories of the run (a later --resume auto would "
            f"take {later[-1].name}); resume into a new run dir (run.out_dir=NEW --resume {resume}), or move the "
            f"later checkpoints out of {folder} first"
        )


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


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete temporary checkpoint folders whose writer is gone (a run killed while writing one); returns them."""
    root = checkpoints_dir(run_dir)
    removed = remove_stale_temps(root)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(_LEGACY_TEMP_PREFIXES) and temp_target(p) is None:
                remove_path(p)
                removed.append(p)
    return removed

"""What an unfinished `edulm prepare` leaves in its folder so that rerunning it continues to the same bytes.

After each complete training shard two files are brought up to date, in this order:

- ``.val-partial.bin``: the held-out tokens so far (uint16, no header), *appended* to — a prepare of
  the reference size holds out millions of tokens, and rewriting them after every shard would cost
  gigabytes of writes;
- ``.prepare-state.json`` (atomically replaced): the settings and the list of complete shards, each with
  the :class:`Progress` at its end — where the next shard starts and every counter, including how many
  held-out tokens the partial file holds at that point.

A kill between the two (or in the middle of an append) leaves held-out tokens past what the state knows
of; resuming cuts the partial file back to the state's count, so they are read again, once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edulm.data.manifest import check_state
from edulm.data.shards import TOKEN_DTYPE, read_header
from edulm.base.errors import UsageError
from edulm.base.files import fsync_path, write_json

STATE = ".prepare-state.json"
VAL_PARTIAL = ".val-partial.bin"


@dataclass
class Progress:
    """Everything a resumed run needs besides the shards themselves (the ``end`` of each state entry)."""

    doc: int = 0
    """Record number where the next training token comes from."""
    skip: int = 0
    """Tokens of record ``doc`` already written (it started in the previous shard)."""
    source_start: int = 0
    """Record number at which to reopen the source (at or before ``doc``)..."""
    source_token: Any = None
    """...with this resume token from the source stream."""
    records: int = 0
    """Records up to the last document used (empty ones included)."""
    empty_records: int = 0
    """Empty or whitespace-only records among them."""
    train_docs: int = 0
    """Training documents written (a document cut by a shard boundary counts once)."""
    val_docs: int = 0
    """Held-out documents."""
    train_tokens: int = 0
    """Training tokens written."""
    val_tokens: int = 0
    """Held-out tokens (the partial file's length at this point)."""
    wall_time_s: float = 0.0
    """Time spent in earlier (interrupted) runs."""


@dataclass
class PrepareState:
    """The settings an unfinished prepare runs with and its complete training shards."""

    settings: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)
    """Manifest entries (file, tokens, crc32) of the complete training shards, each with its :class:`Progress` under "end"."""

    def progress(self) -> Progress:
        """Where the last complete shard ended (a fresh :class:`Progress` when there is none)."""
        if not self.shards:
            return Progress()
        end = self.shards[-1]["end"]
        return Progress(**{name: end[name] for name in Progress.__dataclass_fields__})


def differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that differ, as 'key: old -> new'; '' when the shards would be the same.

    The tokenizer's name is left out: the fingerprint decides (a hub id and a local copy of the same
    tokenizer make identical shards).
    """
    keys = [k for k in sorted(set(old) | set(new)) if k != "tokenizer" and old.get(k) != new.get(k)]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)


def load_state(out: Path, settings: dict[str, Any]) -> PrepareState:
    """The resume state of ``out`` (fresh when none), trimmed to the shards still intact on disk.

    Refuses a state made with other settings; cuts ``.val-partial.bin`` back to the held-out tokens the
    state knows of (UsageError when it holds fewer).
    """
    path = out / STATE
    if not path.is_file():
        state = PrepareState(settings)
    else:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"{path}: unreadable resume state; delete {out} and run 'edulm prepare' again") from None
        raw = check_state(raw, path)
        state = PrepareState(raw["settings"], raw["shards"])
        if differences(state.settings, settings):
            raise UsageError(
                f"{out} holds an unfinished 'edulm prepare' with other settings ({differences(state.settings, settings)}); "
                "rerun with the same settings to finish it, or choose another data.shards_dir"
            )
    intact = []
    for entry in state.shards:
        try:
            header = read_header(out / entry["file"])
        except UsageError:
            break
        if header.n_tokens != entry["tokens"] or header.crc32 != entry["crc32"]:
            break
        intact.append(entry)
    state.shards = intact
    _cut_val_partial(out, state.progress().val_tokens)
    return state


def _cut_val_partial(out: Path, held: int) -> None:
    path = out / VAL_PARTIAL
    size = path.stat().st_size if path.is_file() else 0
    want = held * TOKEN_DTYPE.itemsize
    if size < want:
        raise UsageError(f"{path}: held-out tokens are missing; delete {out} and run 'edulm prepare' again")
    if size > want:
        os.truncate(path, want)  # appended after the last state was written: they will be read again


def append_val(out: Path, pieces: list[np.ndarray]) -> None:
    """Append held-out tokens to ``.val-partial.bin`` and flush them to the disk."""
    if not pieces:
        return
    path = out / VAL_PARTIAL
    with open(path, "ab") as f:
        for piece in pieces:
            f.write(memoryview(np.ascontiguousarray(piece, dtype=TOKEN_DTYPE)).cast("B"))
    fsync_path(path)


def save_state(out: Path, state: PrepareState, new_val: list[np.ndarray]) -> None:
    """Record a complete shard: the held-out tokens since the last one first, then the state that counts them."""
    append_val(out, new_val)
    write_json(out / STATE, {"settings": state.settings, "shards": state.shards}, "the resume state")


def read_val(out: Path) -> np.ndarray:
    """All held-out tokens in ``.val-partial.bin``."""
    path = out / VAL_PARTIAL
    return np.fromfile(path, dtype=TOKEN_DTYPE) if path.is_file() else np.zeros(0, dtype=TOKEN_DTYPE)


def remove_state(out: Path) -> None:
    """Delete the resume files once the manifest is written."""
    for name in (STATE, VAL_PARTIAL):
        (out / name).unlink(missing_ok=True)

"""The folder an export lands in: who may replace it, what of it survives a re-export, and clean-up after a crash.

An export is built in a hidden temporary sibling of ``out`` (``edulm.base.files.temp_path``), validated,
then swapped in with two renames, so ``out`` is always a complete export. Re-exporting into a folder
replaces only the files an export writes (listed in ``edulm_export.json``); every other file and
folder the user put there (``NOTES.md``, ``extra/eval.json``) is carried into the new folder (hard
links, so nothing is copied twice on disk). The model card ``README.md`` is carried over only when the
new weights come from the same source weights as the old ones (the same bytes, checked by SHA-256);
otherwise it would describe weights that are no longer there, so it is kept aside as
``README.previous.md`` and a one-line note says so.

A folder that is neither empty nor an earlier export is refused. An export killed half-way leaves a
temporary sibling; the next export into the same folder removes it (and should a crash fall between
the two renames, puts the complete export back at ``out`` first).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError
from edulm.base.files import remove_path, remove_stale_temps, stale_temps, temp_path
from edulm.base.layout import CARD_FILE

EXPORT_MARKER = "edulm_export.json"
"""File that marks a folder as written by ``edulm export``: source, dtype, digests, the files it wrote."""
PREVIOUS_CARD_FILE = "README.previous.md"
"""Where a card that describes the weights of an earlier, different source is kept (replacing an older one)."""
LEGACY_EXPORT_FILES = (
    "config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "chat_template.jinja", "added_tokens.json", EXPORT_MARKER,
)
"""What an export wrote before markers listed their files: replaced, never carried over."""


def check_out_folder(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a non-empty folder that no export wrote."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is a file; choose a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / EXPORT_MARKER).is_file():
        raise UsageError(
            f"{out}: folder is not empty and was not written by edulm export; choose a new or empty folder"
        )


def read_marker(folder: Path) -> dict[str, Any]:
    """The export marker of ``folder`` ({} when there is none or it is unreadable)."""
    try:
        data = json.loads((folder / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def settle_stale_exports(out: Path) -> None:
    """Remove the temporary siblings of ``out`` whose writer is gone (a killed export).

    When ``out`` itself is missing because an export died between moving the old folder aside and
    moving the new one in, the newest complete one of them (it holds its marker) is put back at ``out``.
    """
    if not out.exists():
        complete = [p for p in stale_temps(out.parent, target=out.name) if (p / EXPORT_MARKER).is_file()]
        if complete:
            os.replace(max(complete, key=lambda p: p.stat().st_mtime), out)
    remove_stale_temps(out.parent, target=out.name)


def same_source(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the new export's source weights are the old export's source weights or its very output."""
    known = {old.get("source_sha256"), old.get("model_sha256")} - {None}
    return new.get("source_sha256") in known


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def _carry(entry: Path, dst: Path) -> None:
    if entry.is_symlink():
        os.symlink(os.readlink(entry), dst)
    elif entry.is_dir():
        shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(str(entry), str(dst))


def carry_over(out: Path, new: Path, marker: dict[str, Any]) -> str | None:
    """Bring into the new export ``new`` everything of ``out`` that no export wrote; returns a note for
    the user (a warning line) when the model card was kept aside (see the module docstring), else None."""
    if not out.is_dir():
        return None
    old = read_marker(out)
    written = set(old.get("files") or LEGACY_EXPORT_FILES) | set(marker["files"])
    note = None
    for entry in sorted(out.iterdir()):
        if entry.name in written or (new / entry.name).exists():
            continue
        if entry.name == CARD_FILE and not same_source(old, marker):
            continue  # placed below, after any README.previous.md of the user's has been carried
        _carry(entry, new / entry.name)
    card = out / CARD_FILE
    if card.is_file() and not same_source(old, marker):
        remove_path(new / PREVIOUS_CARD_FILE)
        _carry(card, new / PREVIOUS_CARD_FILE)
        note = (
            f"{card} described the weights exported from {old.get('source', 'another source')}, "
            f"not these; it is kept as {PREVIOUS_CARD_FILE} (a run that finishes writes a fresh one; else write it with 'edulm card')"
        )
    return note


def replace_folder(new: Path, out: Path) -> None:
    """Put ``new`` at ``out``; a previous ``out`` is moved aside first and deleted only afterwards."""
    old = None
    if out.exists():
        old = temp_path(out)
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        remove_path(old)

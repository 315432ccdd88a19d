"""The shape of the JSON files `edulm prepare` writes, checked in one place before anything reads them.

Valid JSON of the wrong shape — ``shards`` a string, ``tokenizer`` a list, an entry without ``crc32``,
a file name that leaves the folder — is damage like a flipped byte: the reader says so in one line
(:class:`~edulm.base.errors.UsageError`, exit 2) and never fails later with ``AttributeError`` or
``KeyError``. A shape is written as data: a ``dict`` of key -> shape (the keys required, others
allowed), a one-item ``list`` (every item has that shape), a type or a tuple of types (``int`` never
accepts ``True``), or ``object`` (anything).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from edulm.base.errors import UsageError

NUMBER = (int, float)

SHARD_ENTRY = {"file": str, "tokens": int, "crc32": int}
"""One shard in a split's list (``source``: the mixture source it belongs to, in a mixture's manifest)."""

MANIFEST_SHAPE = {
    "format_version": int,
    "tokenizer": {"name": str, "fingerprint": str, "vocab_size": int, "eos_id": int},
    "documents": dict,
    "tokens": {"train": int, "val": int},
    "splits": {
        "train": {"documents": int, "tokens": int, "shards": [SHARD_ENTRY]},
        "val": {"documents": int, "tokens": int, "shards": [SHARD_ENTRY]},
    },
    "settings": dict,
}
"""What every reader of ``manifest.json`` may rely on."""

MIXTURE_SOURCE = {"folder": str, "source": str, "weight": NUMBER, "tokens": {"train": int, "val": int}}
"""One entry of a mixture manifest's ``mixture`` list."""

PROGRESS_SHAPE = {
    "doc": int, "skip": int, "source_start": int, "source_token": object, "records": int, "empty_records": int,
    "train_docs": int, "val_docs": int, "train_tokens": int, "val_tokens": int, "wall_time_s": NUMBER,
}
"""Where an unfinished `edulm prepare` stands after a complete shard (``end`` of a state entry)."""

STATE_SHAPE = {"settings": dict, "shards": [dict(SHARD_ENTRY, end=PROGRESS_SHAPE)]}
"""``.prepare-state.json``."""


_NAMES = {dict: "mapping", list: "list", str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _name(tp: type) -> str:
    """'a mapping', 'an integer': the type with its article."""
    name = _NAMES.get(tp, tp.__name__)
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def shape_problem(value: Any, shape: Any, where: str = "") -> str | None:
    """What is wrong with ``value`` against ``shape`` (see the module docstring), or None when it fits."""
    label = where or "the top level"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{label} is {_name(type(value))}, not a mapping"
        for key, inner in shape.items():
            if key not in value:
                return f"{label} has no '{key}'"
            problem = shape_problem(value[key], inner, f"{where}.{key}" if where else key)
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{label} is {_name(type(value))}, not a list"
        for i, item in enumerate(value):
            problem = shape_problem(item, shape[0], f"{where}[{i}]")
            if problem:
                return problem
        return None
    if shape is object:
        return None
    types = shape if isinstance(shape, tuple) else (shape,)
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        return f"{label} is {_name(type(value))}, not {' or '.join(_name(t) for t in types)}"
    return None


def inside_folder(name: str) -> bool:
    """Whether a file name recorded in a manifest stays inside its folder (not empty, not absolute, no ``..``)."""
    path = PurePosixPath(name)
    return bool(path.parts) and not path.is_absolute() and ".." not in path.parts


def _file_problem(entries: list[dict[str, Any]], where: str) -> str | None:
    """A shard file name that is absolute or climbs out of the folder (``..``)."""
    for i, entry in enumerate(entries):
        if not inside_folder(entry["file"]):
            return f"{where}[{i}].file '{entry['file']}' is not a path inside the folder"
    return None


def _source_problem(entries: list[dict[str, Any]], n_sources: int, where: str) -> str | None:
    """A mixture's shard entry whose ``source`` is not the number of one of its ``n_sources`` sources."""
    for i, entry in enumerate(entries):
        source = entry.get("source")
        if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < n_sources:
            return f"{where}[{i}].source is not the number of a mixture source"
    return None


def _total_problem(manifest: dict[str, Any], split: str, entries: list[dict[str, Any]]) -> str | None:
    """A split's token total that is not the sum of its shards' (the loaders and the summary read the total)."""
    total, stated = sum(entry["tokens"] for entry in entries), manifest["splits"][split]["tokens"]
    if total != stated:
        return f"splits.{split}.tokens is {stated:,} but its shards hold {total:,}"
    return None


def _manifest_problem(manifest: Any) -> str | None:
    problem = shape_problem(manifest, MANIFEST_SHAPE)
    if problem:
        return problem
    splits = {split: manifest["splits"][split]["shards"] for split in ("train", "val")}
    for split, entries in splits.items():
        problem = _file_problem(entries, f"splits.{split}.shards") or _total_problem(manifest, split, entries)
        if problem:
            return problem
    if "mixture" not in manifest:
        return None
    problem = shape_problem(manifest["mixture"], [MIXTURE_SOURCE], "mixture")
    for split, entries in splits.items():
        problem = problem or _source_problem(entries, len(manifest["mixture"]), f"splits.{split}.shards")
    return problem


REBUILD_MANIFEST = "delete it and run 'edulm prepare' again, which rebuilds it"
"""What to do about a damaged ``manifest.json``: `edulm prepare` refuses a folder whose manifest it cannot read
(the manifest says the folder is finished), so "run it again" alone would meet the same error."""


def check_manifest(manifest: Any, path: Any) -> dict[str, Any]:
    """``manifest`` when it has the shape of a finished prepare's ``manifest.json``; else UsageError naming ``path``."""
    problem = _manifest_problem(manifest)
    if problem:
        raise UsageError(f"{path}: damaged manifest ({problem}); {REBUILD_MANIFEST}")
    return manifest


def check_state(state: Any, path: Any) -> dict[str, Any]:
    """``state`` when it has the shape of ``.prepare-state.json``; else UsageError naming ``path``."""
    problem = shape_problem(state, STATE_SHAPE) or _file_problem(state["shards"], "shards")
    if problem:
        raise UsageError(f"{path}: damaged resume state ({problem}); delete the folder and run 'edulm prepare' again")
    return state

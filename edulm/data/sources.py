"""Where documents come from: local parquet/jsonl/txt files, the Hugging Face hub, or the built-in sample.

A *source* is named by one string (``data.source``):

- ``hf://OWNER/NAME[/CONFIG][@SPLIT]`` — a hub dataset, streamed (see :mod:`edulm.data.hub_dataset`);
- ``builtin:sample`` — English prose harvested from installed docstrings (see :mod:`edulm.data.builtin_sample`);
- a file, a folder (searched recursively) or a glob of ``.parquet``, ``.jsonl``/``.ndjson`` and ``.txt``
  files (``.jsonl.gz`` and ``.txt.gz`` too), read in sorted path order. A folder must hold one kind of
  data file unless a *pattern* (``data.pattern``) chooses its files.

Every source is a sequence of *records*, numbered from 0 in a fixed order. A parquet row or a jsonl line
is one record (its ``text_field`` is the document); a ``.txt`` file is one record as a whole, so a folder
of text files is a folder of documents. Empty and whitespace-only records are part of the numbering
(so positions stay stable) and are skipped by the consumers, which count them.

``source.open(start, token)`` returns a :class:`~edulm.data.records.RecordStream` positioned at record
``start``; its ``resume_token()`` is a small JSON-able value that lets a later ``open`` continue at the
same record cheaply (local sources skip by file metadata and need none; hub streams use it to avoid
re-reading).
"""

from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from edulm.data.records import BUILTIN_SAMPLE, HUB_PREFIX, RecordStream, Source, TEXT_FIELD_HINT, record_text
from edulm.base.errors import UsageError
from edulm.base.layout import FOLDER_KINDS, folder_kind

_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".jsonl.gz", ".txt", ".txt.gz")


def open_source(source: str, text_field: str = "text", pattern: str = "") -> Source:
    """Resolve a ``data.source`` string into a :class:`Source` (bad names raise :class:`UsageError`).

    ``pattern`` chooses the files of a folder source (see :func:`resolve_paths`).
    """
    source = source.strip()
    if pattern and source.startswith((HUB_PREFIX, "builtin:")):
        raise UsageError(f"data.source '{source}' is not a folder; a pattern ('{pattern}') only applies to a folder source")
    if source.startswith(HUB_PREFIX):
        from edulm.data.hub_dataset import HubSource

        return HubSource.from_spec(source, text_field)
    if source == BUILTIN_SAMPLE:
        from edulm.data.builtin_sample import BuiltinSample

        return BuiltinSample()
    if source.startswith("builtin:"):
        raise UsageError(f"unknown built-in source '{source}'; the only one is '{BUILTIN_SAMPLE}'")
    return LocalFiles(source, text_field, pattern)


def iter_texts(source: str, text_field: str = "text") -> Iterator[str]:
    """Non-empty documents of ``source`` in its fixed order."""
    with open_source(source, text_field).open() as stream:
        for text in stream:
            if text.strip():
                yield text


# ---------------------------------------------------------------------------------------------
# Local files
# ---------------------------------------------------------------------------------------------


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz")):
        return "jsonl"
    if name.endswith((".txt", ".txt.gz")):
        return "txt"
    return None


def _kinds_summary(files: list[Path]) -> str:
    counts: dict[str, int] = {}
    for f in files:
        counts[_kind(f) or "?"] = counts.get(_kind(f) or "?", 0) + 1
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def resolve_paths(spec: str, pattern: str = "") -> list[Path]:
    """The data files named by a file, folder or glob, in sorted order (UsageError when there are none).

    A folder without ``pattern`` must hold data files of one kind only (parquet, jsonl or txt): a stray
    ``notes.txt`` among parquet files would otherwise become training text without a word. ``pattern``
    (a glob relative to the folder, ``**`` for subfolders) chooses the files explicitly.
    """
    hint = f"supported files: {', '.join(_SUFFIXES)}"
    is_glob = any(ch in spec for ch in "*?[")
    path = Path(spec).expanduser()
    if pattern and (is_glob or not path.is_dir()):
        what = "a glob, which already chooses the files" if is_glob else "not a folder"
        raise UsageError(f"data.source '{spec}' is {what}; a pattern ('{pattern}') only applies to a folder source")
    if is_glob:
        matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        files = [p for p in matches if p.is_file() and _kind(p)]
        if not files:
            raise UsageError(f"data.source '{spec}' matches no data files ({hint})")
        return files
    if path.is_dir():
        kind = None if pattern else folder_kind(path)
        if kind is not None:  # read as text, a run dir would train on (or audit) its own JSONL reports
            raise UsageError(f"data.source '{spec}' holds {FOLDER_KINDS[kind]}, not text documents; pass the folder of "
                             "parquet, jsonl or txt files it came from (a run's is its data.source; shards are data.shards_dir), "
                             "or choose this folder's files with a pattern")
        candidates = path.glob(pattern) if pattern else path.rglob("*")
        files = sorted((p for p in candidates if p.is_file() and _kind(p)), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            where = f"pattern '{pattern}' matches no data files in folder '{spec}'" if pattern else f"data.source folder '{spec}' holds no data files"
            raise UsageError(f"{where} ({hint})")
        if not pattern and len({_kind(p) for p in files}) > 1:
            raise UsageError(
                f"data.source folder '{spec}' holds data files of several kinds ({_kinds_summary(files)}); choose the files "
                "with a pattern (data.pattern, or 'pattern' in a data.source entry) such as '*.parquet', or a glob such as "
                f"'{path / '*.parquet'}'"
            )
        return files
    if path.is_file():
        if not _kind(path):
            raise UsageError(f"data.source '{spec}' is not a data file ({hint})")
        return [path]
    raise UsageError(
        f"data.source '{spec}': no such file or folder; name local files, 'hf://OWNER/NAME[/CONFIG]' or '{BUILTIN_SAMPLE}'"
    )


class LocalFiles(Source):
    """Parquet, jsonl and txt files read in sorted path order; see the module docstring."""

    def __init__(self, spec: str, text_field: str = "text", pattern: str = ""):
        self.name = spec
        self.text_field = text_field
        self.paths = resolve_paths(spec, pattern)

    def total_records(self) -> int | None:
        if any(_kind(p) == "jsonl" for p in self.paths):
            return None  # counting lines would mean reading every file twice
        return sum(_parquet_rows(p) if _kind(p) == "parquet" else 1 for p in self.paths)

    def open(self, start: int = 0, token: Any = None) -> RecordStream:
        return RecordStream(self._records(start), start)

    def check(self) -> None:
        """Every parquet file's text column (from its footer) and every jsonl file's first record."""
        for path in self.paths:
            kind = _kind(path)
            if kind == "parquet":
                _text_column(_parquet_file(path), path, self.text_field)
            elif kind == "jsonl":
                records = _jsonl_records(path, self.text_field, 0)
                next(records, None)
                records.close()

    def _records(self, start: int) -> Iterator[str]:
        skip = start
        for path in self.paths:
            kind = _kind(path)
            if kind == "txt":
                if skip:
                    skip -= 1
                    continue
                yield _read_txt(path)
            elif kind == "parquet":
                rows = _parquet_rows(path)
                if skip >= rows:
                    skip -= rows
                    continue
                yield from _parquet_records(path, self.text_field, skip)
                skip = 0
            else:
                skipped = yield from _jsonl_records(path, self.text_field, skip)
                skip -= skipped


def _decode(data: bytes, path: Path, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(
            f"{path}{where}: not valid UTF-8 (byte {err.start}); convert the file to UTF-8 or leave it out of data.source"
        ) from None


def _read_txt(path: Path) -> str:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        return _decode(f.read(), path)


def _jsonl_records(path: Path, field: str, skip: int) -> Iterator[str]:
    """Records of one jsonl file after skipping ``skip`` of them; returns how many were skipped."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    skipped = 0
    with opener(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines are not records
            if skipped < skip:
                skipped += 1
                continue
            where = f" line {line_no}"
            try:
                record = json.loads(_decode(line, path, where))
            except json.JSONDecodeError as err:
                raise UsageError(f"{path}{where}: not valid JSON ({err.msg}); fix or remove the line") from None
            yield record_text(record, field, f"{path}{where}")
    return skipped


def _parquet_file(path: Path):
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise UsageError(f"{path}: not a readable parquet file ({err}); re-download or remove it") from None


def _parquet_rows(path: Path) -> int:
    return _parquet_file(path).metadata.num_rows


def _text_column(pf: Any, path: Path, field: str) -> bool:
    """Check that parquet file ``pf`` has a text column ``field``; True when it is stored as bytes."""
    import pyarrow as pa

    names = pf.schema_arrow.names
    if field not in names:
        raise UsageError(f"{path}: no column '{field}' (columns: {', '.join(names)}); {TEXT_FIELD_HINT}")
    column_type = pf.schema_arrow.field(field).type
    is_binary = pa.types.is_binary(column_type) or pa.types.is_large_binary(column_type)
    if not (is_binary or pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UsageError(f"{path}: column '{field}' holds {column_type}, not text; {TEXT_FIELD_HINT}")
    return is_binary


def _parquet_records(path: Path, field: str, skip: int) -> Iterator[str]:
    import pyarrow as pa

    pf = _parquet_file(path)
    is_binary = _text_column(pf, path, field)
    # Skip whole row groups through the footer metadata, then rows inside the first one kept.
    groups, offset = [], skip
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if not groups and offset >= rows:
            offset -= rows
            continue
        groups.append(g)
    try:
        for batch in pf.iter_batches(batch_size=1024, row_groups=groups, columns=[field]):
            values = batch.column(0)
            if offset:
                cut = min(offset, len(values))
                values, offset = values.slice(cut), offset - cut
            for value in values.to_pylist():
                if value is None:
                    yield ""
                else:
                    yield _decode(value, path) if is_binary else value
    except UnicodeDecodeError:
        raise UsageError(f"{path}: column '{field}' holds text that is not valid UTF-8; fix or remove the file") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise UsageError(f"{path}: cannot read parquet data ({err}); re-download or remove the file") from None

"""Where documents come from: local parquet/jsonl/txt files, the Hugging Face hub, or the built-in sample.

A *source* is named by one string (``data.source``):

- ``hf://OWNER/NAME[/CONFIG][@SPLIT]`` — a hub dataset, streamed (see :mod:`edulm.data.hub`);
- ``builtin:sample`` — English prose harvested from installed docstrings (see :mod:`edulm.data.builtin_sample`);
- a file, a folder (searched recursively) or a glob of ``.parquet``, ``.jsonl``/``.ndjson`` and ``.txt``
  files (``.jsonl.gz`` and ``.txt.gz`` too), read in sorted path order. A folder must hold one kind of
  data file unless a *pattern* (``data.pattern``) chooses its files.

Every source is a sequence of *records*, numbered from 0 in a fixed order. A parquet row or a jsonl line
is one record (its ``text_field`` is the document); a ``.txt`` file is one record as a whole, so a folder
of text files is a folder of documents. Empty and whitespace-only records are part of the numbering
(so positions stay stable) and are skipped by the consumers, which count them.

``source.open(start, token)`` returns a :class:`RecordStream` positioned at record ``start``; its
``resume_token()`` is a small JSON-able value that lets a later ``open`` continue at the same record
cheaply (local sources skip by file metadata and need none; hub streams use it to avoid re-reading).
"""

from __future__ import annotations

import glob
import gzip
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from edulm.errors import UsageError

BATCH_DOCS = 256
"""Documents per tokenization batch (larger batches amortise inter-process traffic)."""
BATCH_CHARS = 2_000_000
"""A batch closes early once its texts hold this many characters."""
HUB_PREFIX = "hf://"
BUILTIN_SAMPLE = "builtin:sample"
_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".jsonl.gz", ".txt", ".txt.gz")


class RecordStream:
    """An iterator of record texts (``""`` for a missing/empty one) that knows its position.

    ``index`` is the number of the next record it will yield. Always ``close()`` it (or use it as a
    context manager): some readers hold threads that must be shut down before the interpreter exits.
    """

    def __init__(self, records: Iterator[str], start: int):
        self._records = records
        self.index = start

    def __iter__(self) -> "RecordStream":
        return self

    def __next__(self) -> str:
        text = next(self._records)
        self.index += 1
        return text

    def resume_token(self) -> Any:
        """A JSON-able value that, with ``index``, reopens the source at the next record (None: not needed)."""
        return None

    def close(self) -> None:
        """Release files and reader threads."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "RecordStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Source(ABC):
    """A named, ordered collection of records."""

    name: str

    def total_records(self) -> int | None:
        """Number of records when cheap to know (for progress bars), else None."""
        return None

    @abstractmethod
    def open(self, start: int = 0, token: Any = None) -> RecordStream:
        """A stream positioned at record ``start`` (``token`` from a previous stream's ``resume_token()``)."""

    def check(self) -> None:
        """Cheap checks that catch a wrong text field before any work (UsageError); reading may still find more."""


def open_source(source: str, text_field: str = "text", pattern: str = "") -> Source:
    """Resolve a ``data.source`` string into a :class:`Source` (bad names raise :class:`UsageError`).

    ``pattern`` chooses the files of a folder source (see :func:`resolve_paths`).
    """
    source = source.strip()
    if pattern and source.startswith((HUB_PREFIX, "builtin:")):
        raise UsageError(f"data.source '{source}' is not a folder; a pattern ('{pattern}') only applies to a folder source")
    if source.startswith(HUB_PREFIX):
        from edulm.data.hub import HubSource

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


class BatchInfo(NamedTuple):
    """Where a batch of documents came from (travels with the batch through tokenization)."""

    first: int
    """Record number at which the stream stood when the batch began..."""
    token: Any
    """...and its resume token: reopening there and skipping reaches any document of the batch."""
    indices: list[int]
    """Record number of each document."""
    empty_before: list[int]
    """Empty records seen (from the stream's start document on) before each document."""
    empty_total: int
    """Empty records seen up to the end of the batch."""


def document_batches(
    stream: RecordStream, start_doc: int = 0, keep: Callable[[int], bool] | None = None
) -> Iterator[tuple[BatchInfo, list[str]]]:
    """Batches of non-empty documents from record ``start_doc`` on, for tokenization.

    ``keep(index)`` can leave documents out (they are still read). When the stream runs out, a last
    batch is yielded even if it holds no document, so ``empty_total`` covers trailing empty records.
    """
    first, token = stream.index, stream.resume_token()
    indices: list[int] = []
    empty_before: list[int] = []
    texts: list[str] = []
    chars = empty = 0
    for text in stream:
        index = stream.index - 1
        if index < start_doc:
            continue
        if not text.strip():
            empty += 1
            continue
        if keep is not None and not keep(index):
            continue
        indices.append(index)
        empty_before.append(empty)
        texts.append(text)
        chars += len(text)
        if len(texts) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield BatchInfo(first, token, indices, empty_before, empty), texts
            first, token = stream.index, stream.resume_token()
            indices, empty_before, texts, chars = [], [], [], 0
    yield BatchInfo(first, token, indices, empty_before, empty), texts


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


def record_text(record: Any, field: str, where: str) -> str:
    """The text in ``record[field]`` ("" for null); a missing field or non-text value is a UsageError."""
    if not isinstance(record, dict) or field not in record:
        keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise UsageError(f"{where}: no field '{field}' (found: {keys}); set data.text_field to the text field")
    value = record[field]
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: field '{field}' is a {type(value).__name__}, not text; set data.text_field")
    return value or ""


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
        raise UsageError(f"{path}: no column '{field}' (columns: {', '.join(names)}); set data.text_field to the text column")
    column_type = pf.schema_arrow.field(field).type
    is_binary = pa.types.is_binary(column_type) or pa.types.is_large_binary(column_type)
    if not (is_binary or pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise UsageError(f"{path}: column '{field}' holds {column_type}, not text; set data.text_field to the text column")
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

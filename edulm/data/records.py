"""What every source is made of: numbered records, a resumable stream of them, batches for tokenization.

A *source* is a sequence of *records*, numbered from 0 in a fixed order. ``source.open(start, token)``
returns a :class:`RecordStream` positioned at record ``start``; its ``resume_token()`` is a small
JSON-able value that lets a later ``open`` continue at the same record cheaply. The kinds of source
(:mod:`edulm.data.sources`, :mod:`edulm.data.hub_dataset`, :mod:`edulm.data.builtin_sample`) build on this
module, which depends on none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator, NamedTuple

from edulm.base.errors import UsageError

BATCH_DOCS = 256
"""Documents per tokenization batch (larger batches amortise inter-process traffic)."""
BATCH_CHARS = 2_000_000
"""A batch closes early once its texts hold this many characters."""
HUB_PREFIX = "hf://"
BUILTIN_SAMPLE = "builtin:sample"

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


TEXT_FIELD_HINT = ("set data.text_field to the field that holds the text (in a mixture, that entry's text_field; "
                   "--text-field for sample-text and tokenizer train)")
"""The advice of every "no such text field" error: sources serve configs, mixture entries and command-line flags."""


def record_text(record: Any, field: str, where: str) -> str:
    """The text in ``record[field]`` ("" for null); a missing field or non-text value is a UsageError."""
    if not isinstance(record, dict) or field not in record:
        keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise UsageError(f"{where}: no field '{field}' (found: {keys}); {TEXT_FIELD_HINT}")
    value = record[field]
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{where}: field '{field}' is a {type(value).__name__}, not text; {TEXT_FIELD_HINT}")
    return value or ""

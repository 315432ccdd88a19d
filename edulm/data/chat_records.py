"""Chat records for supervised fine-tuning: conversations read from local jsonl or parquet files.

A chat record is one jsonl line or one parquet row whose ``data.messages_field`` (``messages`` by default)
holds a conversation: a list of ``{"role": "system" | "user" | "assistant", "content": "..."}``, the
layout of most chat datasets on the hub (save one locally as jsonl or parquet first). ``data.source``
names a file, a folder (``data.pattern`` chooses its files) or a glob, as for text
(:func:`edulm.data.sources.resolve_paths`); the records are numbered in sorted path order, so the same
files give the same numbering, which the held-out split and the shuffling build on.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

from edulm.base.errors import UsageError
from edulm.data.records import BUILTIN_SAMPLE, HUB_PREFIX
from edulm.data.sources import resolve_paths
from edulm.tokenizer.chat_template import check_messages

FIELD_HINT = "set data.messages_field to the field that holds each conversation's list of {role, content} messages"


def chat_files(source: str, pattern: str = "") -> list[Path]:
    """The jsonl and parquet files of a chat ``data.source`` (one line if it names anything else)."""
    source = source.strip()
    if source.startswith((HUB_PREFIX, "builtin:")) or source == BUILTIN_SAMPLE:
        raise UsageError(f"data.source '{source}': fine-tuning reads chat records from local jsonl or parquet files; "
                         "save the dataset locally first (datasets: load_dataset(...).to_json('chat.jsonl'))")
    files = resolve_paths(source, pattern)
    text = [p for p in files if p.name.lower().endswith((".txt", ".txt.gz"))]
    if text:
        raise UsageError(f"data.source '{source}': {text[0]} is plain text; chat records are jsonl lines or parquet rows "
                         "with a list of {role, content} messages")
    return files


def read_conversations(source: str, field: str = "messages", pattern: str = "") -> Iterator[list[dict[str, str]]]:
    """Every conversation of ``source``, checked (:func:`edulm.tokenizer.chat_template.check_messages`), in order."""
    for path in chat_files(source, pattern):
        if path.name.lower().endswith(".parquet"):
            yield from _parquet_conversations(path, field)
        else:
            yield from _jsonl_conversations(path, field)


def _messages(record: object, field: str, where: str) -> list[dict[str, str]]:
    if not isinstance(record, dict) or field not in record:
        keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise UsageError(f"{where}: no field '{field}' (found: {keys}); {FIELD_HINT}")
    return check_messages(record[field], where)


def _jsonl_conversations(path: Path, field: str) -> Iterator[list[dict[str, str]]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue  # blank lines are not records
            where = f"{path} line {line_no}"
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise UsageError(f"{where}: not valid UTF-8 (byte {err.start}); convert the file to UTF-8") from None
            except json.JSONDecodeError as err:
                raise UsageError(f"{where}: not valid JSON ({err.msg}); fix or remove the line") from None
            yield _messages(record, field, where)


def _parquet_conversations(path: Path, field: str) -> Iterator[list[dict[str, str]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError for damaged files
        raise UsageError(f"{path}: not a readable parquet file ({err}); re-download or remove it") from None
    if field not in pf.schema_arrow.names:
        raise UsageError(f"{path}: no column '{field}' (columns: {', '.join(pf.schema_arrow.names)}); {FIELD_HINT}")
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=[field]):
        for messages in batch.column(0).to_pylist():
            yield check_messages(messages, f"{path} row {row}")
            row += 1

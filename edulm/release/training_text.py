"""Training documents read back: the documents of prepared shards, samples written by ``edulm sample-text``,
and what ``--train`` of ``edulm contamination`` names.

From prepared shards: the training split is one token stream with an end-of-document token after
every document, so document ``i`` is the tokens between the ``i``-th separator and the next
(:class:`ShardDocuments`). A sample is a JSONL file of ``{"text", "doc_index"}`` records with a
``<sample>.meta.json`` beside it saying what it was drawn from and out of how many documents
(:func:`read_meta`), so a contamination report can say how much of the training data it checked.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from edulm.base.errors import UsageError
from edulm.base.logs import progress_bars

META_SUFFIX = ".meta.json"
"""Appended to a sample file's name for its description."""

DECODE_BATCH = 256
"""Documents decoded per tokenizer call."""


class ShardDocuments:
    """The documents of a prepared split: where each starts and ends in the concatenated shards."""

    def __init__(self, shards_dir: str | Path, tokenizer_name: str | None = None, split: str = "train") -> None:
        from edulm.data.shards import open_split, read_manifest
        from edulm.tokenizer.loading import load_tokenizer, tokenizer_fingerprint

        self.shards_dir = Path(shards_dir)
        if not self.shards_dir.is_dir():
            raise UsageError(f"{shards_dir}: no such folder; pass a prepared shards dir (from 'edulm prepare')")
        manifest = read_manifest(self.shards_dir)
        recorded = manifest.get("tokenizer", {})
        name = tokenizer_name or recorded.get("name")
        if not name:
            raise UsageError(f"{self.shards_dir}: the manifest names no tokenizer; pass --tokenizer")
        self.tokenizer_name = name
        self.tokenizer = load_tokenizer(name)
        if recorded.get("fingerprint") and tokenizer_fingerprint(self.tokenizer) != recorded["fingerprint"]:
            raise UsageError(
                f"--tokenizer {name}: not the tokenizer these shards were made with ('{recorded.get('name')}'); "
                "leave --tokenizer out to use the recorded one"
            )
        self.eos_id = int(recorded.get("eos_id", self._separator()))
        self.arrays = open_split(self.shards_dir, split)
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.ends = self._find_ends()
        self.starts = np.concatenate([[0], self.ends[:-1] + 1]).astype(np.int64)

    def _separator(self) -> int:
        from edulm.tokenizer.loading import document_separator_id

        return document_separator_id(self.tokenizer)

    def _find_ends(self) -> np.ndarray:
        """Global positions of every separator token, in order."""
        chunk = 1 << 26  # scan 64 Mi tokens at a time to bound memory
        found = []
        total = int(self.offsets[-1])
        with tqdm(total=total, unit="tok", unit_scale=True, desc="finding documents", file=sys.stderr,
                  disable=total < chunk or not progress_bars()) as bar:
            for base, array in zip(self.offsets, self.arrays):
                for first in range(0, len(array), chunk):
                    part = np.asarray(array[first : first + chunk])
                    found.append(np.flatnonzero(part == self.eos_id).astype(np.int64) + int(base) + first)
                    bar.update(len(part))
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ends)

    def tokens(self, index: int) -> np.ndarray:
        """Token ids of document ``index`` (without its separator), read across shard boundaries."""
        start, end = int(self.starts[index]), int(self.ends[index])
        pieces = []
        shard = int(np.searchsorted(self.offsets, start, side="right")) - 1  # the shard the document starts in
        while start < end and shard < len(self.arrays):
            base = int(self.offsets[shard])
            hi = min(end, base + len(self.arrays[shard]))
            pieces.append(np.asarray(self.arrays[shard][start - base : hi - base]))
            start, shard = hi, shard + 1
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)

    def texts(self, indices: Iterator[int] | list[int]) -> Iterator[tuple[int, str]]:
        """``(index, text)`` of the given documents, decoded in batches."""
        batch: list[int] = []
        for index in indices:
            batch.append(int(index))
            if len(batch) == DECODE_BATCH:
                yield from self._decode(batch)
                batch = []
        if batch:
            yield from self._decode(batch)

    def _decode(self, batch: list[int]) -> list[tuple[int, str]]:
        texts = self.tokenizer.batch_decode([self.tokens(i).tolist() for i in batch], skip_special_tokens=False)
        return list(zip(batch, texts))


def meta_path(sample: str | Path) -> Path:
    """The description file beside a sample: ``<sample>.meta.json``."""
    sample = Path(sample)
    return sample.with_name(sample.name + META_SUFFIX)


def read_meta(sample: str | Path) -> dict[str, Any] | None:
    """The description of a sample written by ``edulm sample-text``, or None (also when it is damaged)."""
    path = meta_path(sample)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except ValueError:
        return None
    counts_ok = isinstance(meta, dict) and all(isinstance(meta.get(k, 0), int) for k in ("documents", "total_documents"))
    return meta if counts_ok else None  # damaged (not a mapping, counts that are not numbers): as if cut short


@dataclass
class TrainingText:
    """Training documents to scan, and what they stand for."""

    spec: str
    """What ``--train`` named."""
    kind: str
    """'shards' (every training document), 'sample' (from edulm sample-text) or 'source'."""
    documents: Iterable[str]
    """The documents' texts, read lazily."""
    total_documents: int | None = None
    """Documents in the whole training data, when known."""
    sample: dict[str, Any] | None = None
    """The sample's description (from sample-text)."""
    expected: int | None = None
    """Documents the scan will read, when known (for the progress bar)."""


def open_training_text(spec: str, text_field: str = "text") -> TrainingText:
    """Open ``--train``: a shards dir, a sample written by sample-text, or any data source."""
    from edulm.data.shards import MANIFEST

    path = Path(spec)
    if path.is_dir() and (path / MANIFEST).is_file():
        documents = ShardDocuments(path)
        texts = (text for _, text in documents.texts(range(len(documents))))
        return TrainingText(spec, "shards", texts, total_documents=len(documents), expected=len(documents))
    from edulm.data.sources import iter_texts, open_source

    if not spec.startswith(("hf://", "builtin:")) and not path.exists() and not any(c in spec for c in "*?["):
        raise UsageError(f"--train {spec}: no such file or folder; pass a sample JSONL, a shards dir or a data source")
    open_source(spec, text_field)  # bad specs fail here with their own message
    meta = read_meta(path) if path.is_file() else None
    if meta is not None:
        return TrainingText(spec, "sample", iter_texts(spec, text_field), meta.get("total_documents"), meta, meta.get("documents"))
    return TrainingText(spec, "source", iter_texts(spec, text_field))

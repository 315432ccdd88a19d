"""``edulm sample-text``: a reproducible sample of training documents, as JSONL.

From prepared shards (``--data``): the training split is one token stream with an end-of-document
token after every document, so document ``i`` is the tokens between the ``i``-th separator and the
next. ``--docs`` document numbers are drawn without replacement from ``numpy.random.default_rng(seed)``
and the documents decoded with the tokenizer the manifest records. From a source (``--source``):
reservoir sampling over the source's documents in their fixed order, with ``random.Random(seed)``.
Either way the same inputs and seed give the same sample.

The output has one ``{"text", "doc_index"}`` object per line, in document order, and a
``<out>.meta.json`` beside it saying what the sample was drawn from and out of how many documents,
so a contamination report can say how much of the training data it checked.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm.auto import tqdm

from edulm.errors import UsageError

META_SUFFIX = ".meta.json"
"""Appended to the sample file's name for its description."""

DECODE_BATCH = 256
"""Documents decoded per tokenizer call."""


# ---------------------------------------------------------------------------------------------
# Documents in prepared shards
# ---------------------------------------------------------------------------------------------


class ShardDocuments:
    """The documents of a prepared split: where each starts and ends in the concatenated shards."""

    def __init__(self, shards_dir: str | Path, tokenizer_name: str | None = None, split: str = "train") -> None:
        from edulm.data.shards import open_split, read_manifest
        from edulm.tokenizer import load_tokenizer, tokenizer_fingerprint

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
        from edulm.tokenizer import document_separator_id

        return document_separator_id(self.tokenizer)

    def _find_ends(self) -> np.ndarray:
        """Global positions of every separator token, in order."""
        chunk = 1 << 26  # scan 64 Mi tokens at a time to bound memory
        found = []
        total = int(self.offsets[-1])
        with tqdm(total=total, unit="tok", unit_scale=True, desc="finding documents", file=sys.stderr,
                  disable=total < chunk) as bar:
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


def sample_shards(shards_dir: str | Path, docs: int, seed: int, tokenizer_name: str | None = None) -> tuple[list[dict], dict]:
    """``docs`` documents drawn from a shards dir's training split; returns ``(records, meta)``."""
    documents = ShardDocuments(shards_dir, tokenizer_name)
    total = len(documents)
    if total == 0:
        raise UsageError(f"{shards_dir}: the training split holds no complete document")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(docs, total), replace=False))
    records = [{"text": text, "doc_index": index} for index, text in
               tqdm(documents.texts(chosen), total=len(chosen), desc="decoding", unit="doc", file=sys.stderr)]
    meta = {"from": "shards", "shards_dir": str(Path(shards_dir).resolve()), "split": "train",
            "tokenizer": documents.tokenizer_name, "total_documents": total}
    return records, meta


# ---------------------------------------------------------------------------------------------
# Documents of a source
# ---------------------------------------------------------------------------------------------


def sample_source(source: str, docs: int, seed: int, text_field: str = "text", max_read: int = 0) -> tuple[list[dict], dict]:
    """Reservoir sample of ``docs`` documents from ``source`` (the first ``max_read`` only, when above 0)."""
    from edulm.data.sources import iter_texts

    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    seen = 0
    for seen, text in enumerate(tqdm(iter_texts(source, text_field), desc="reading", unit="doc", file=sys.stderr), 1):
        index = seen - 1
        if len(reservoir) < docs:
            reservoir.append((index, text))
        else:
            slot = rng.randrange(seen)
            if slot < docs:
                reservoir[slot] = (index, text)
        if max_read and seen >= max_read:
            break
    if not reservoir:
        raise UsageError(f"{source}: holds no non-empty document")
    records = [{"text": text, "doc_index": index} for index, text in sorted(reservoir)]
    meta = {"from": "source", "source": source, "text_field": text_field, "total_documents": seen,
            "read_all": not (max_read and seen >= max_read)}
    return records, meta


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def meta_path(sample: str | Path) -> Path:
    """The description file beside a sample: ``<sample>.meta.json``."""
    sample = Path(sample)
    return sample.with_name(sample.name + META_SUFFIX)


def read_meta(sample: str | Path) -> dict[str, Any] | None:
    """The description of a sample written by :func:`write_sample`, or None."""
    path = meta_path(sample)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def write_sample(out: str | Path, records: list[dict], meta: dict[str, Any]) -> Path:
    """Write the JSONL sample and its description (each through a temporary file, then renamed)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)),
        (meta_path(out), json.dumps({**meta, "documents": len(records)}, indent=2) + "\n"),
    ):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return out


def sample_text_command(args: argparse.Namespace) -> None:
    """``edulm sample-text (--data SHARDS_DIR | --source SOURCE) --out FILE``."""
    if (args.data is None) == (args.source is None):
        raise UsageError("pass exactly one of --data SHARDS_DIR or --source SOURCE to sample from")
    if args.docs < 1:
        raise UsageError(f"--docs {args.docs}: must be at least 1")
    if Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: is a folder; pass a file name such as {Path(args.out) / 'sample.jsonl'}")
    if args.data is not None:
        records, meta = sample_shards(args.data, args.docs, args.seed, args.tokenizer)
    else:
        records, meta = sample_source(args.source, args.docs, args.seed, args.text_field, getattr(args, "max_read", 0))
    meta["seed"] = args.seed
    write_sample(args.out, records, meta)
    print(f"sampled {len(records):,} of {meta['total_documents']:,} documents -> {args.out}")

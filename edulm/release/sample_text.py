"""``edulm sample-text``: a reproducible sample of training documents, as JSONL.

From prepared shards (``--data``): the documents of the training split
(:class:`edulm.release.training_text.ShardDocuments`). ``--docs`` document numbers are drawn without replacement from ``numpy.random.default_rng(seed)``
and the documents decoded with the tokenizer the manifest records. From a source (``--source``):
reservoir sampling over the source's documents in their fixed order, with ``random.Random(seed)``.
Either way the same inputs and seed give the same sample.

The output has one ``{"text", "doc_index"}`` object per line, in document order, and a
``<out>.meta.json`` beside it saying what the sample was drawn from and out of how many documents,
so a contamination report can say how much of the training data it checked.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from edulm.base.errors import UsageError
from edulm.base.logs import progress_bars
from edulm.release.training_text import ShardDocuments, meta_path

# ---------------------------------------------------------------------------------------------
# Documents in prepared shards
# ---------------------------------------------------------------------------------------------


def sample_shards(shards_dir: str | Path, docs: int, seed: int, tokenizer_name: str | None = None) -> tuple[list[dict], dict]:
    """``docs`` documents drawn from a shards dir's training split; returns ``(records, meta)``."""
    documents = ShardDocuments(shards_dir, tokenizer_name)
    total = len(documents)
    if total == 0:
        raise UsageError(f"{shards_dir}: the training split holds no complete document")
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=min(docs, total), replace=False))
    records = [{"text": text, "doc_index": index} for index, text in
               tqdm(documents.texts(chosen), total=len(chosen), desc="decoding", unit="doc", file=sys.stderr,
                    disable=not progress_bars())]
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
    for seen, text in enumerate(tqdm(iter_texts(source, text_field), desc="reading", unit="doc", file=sys.stderr,
                                           disable=not progress_bars()), 1):
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


def write_sample(out: str | Path, records: list[dict], meta: dict[str, Any]) -> Path:
    """Write the JSONL sample, then its description, each atomically (a sample without its description is unfinished).

    The old description goes first: a process stopped between the two files leaves a sample without one (drawn
    again by the next run), never a new sample beside the counts of an old one.
    """
    from edulm.base.files import remove_path, write_json, write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_path(meta_path(out))
    write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "the training sample")
    write_json(meta_path(out), {**meta, "documents": len(records)}, "the training sample's description")
    return out


def draw_sample(out: str | Path, data: str | Path | None = None, source: str | None = None, docs: int = 1000,
                seed: int = 0, tokenizer: str | None = None, text_field: str = "text", max_read: int = 0) -> dict[str, Any]:
    """Sample ``docs`` documents from a shards dir (``data``) or a data source (``source``) into ``out``; returns the description."""
    if (data is None) == (source is None):
        raise UsageError("pass exactly one of --data SHARDS_DIR or --source SOURCE to sample from")
    if docs < 1:
        raise UsageError(f"--docs {docs}: must be at least 1")
    if max_read < 0:
        raise UsageError(f"--max-read {max_read}: must be 0 (all) or more")
    if Path(out).is_dir():
        raise UsageError(f"--out {out}: is a folder; pass a file name such as {Path(out) / 'sample.jsonl'}")
    if Path(out).suffix.lower() != ".jsonl":  # also keeps a slip of the shell (--out SHARDS/manifest.json) from overwriting it
        raise UsageError(f"--out {out}: the sample file must end in .jsonl (one JSON document per line), "
                         f"such as {Path(out).with_suffix('.jsonl')}")
    from edulm.base.lock import folder_lock

    with folder_lock(out, "edulm sample-text"):  # one writer: two draws into one file would mix sample and counts
        if data is not None:
            records, meta = sample_shards(data, docs, seed, tokenizer)
        else:
            records, meta = sample_source(str(source), docs, seed, text_field, max_read)
        meta["seed"] = seed
        write_sample(out, records, meta)
    return {**meta, "documents": len(records)}


def sample_text_command(out: str | Path, data: str | Path | None = None, source: str | None = None, docs: int = 1000,
                        seed: int = 0, tokenizer: str | None = None, text_field: str = "text", max_read: int = 0) -> dict[str, Any]:
    """``edulm sample-text (--data SHARDS_DIR | --source SOURCE) --out FILE``: draw the sample and say how big it is."""
    meta = draw_sample(out, data, source, docs, seed, tokenizer, text_field, max_read)
    print(f"sampled {meta['documents']:,} of {meta['total_documents']:,} documents -> {out}")
    return meta

"""Prepare one source into one folder: the document walk into shards, the resume state, the manifest.

Training tokens fill ``train-NNNNNN.bin`` shards of ``data.shard_tokens`` tokens (a document may
continue into the next shard); held-out tokens go to ``val-NNNNNN.bin`` at the end; ``manifest.json``
is written last. After each complete training shard the resume state is brought up to date
(:mod:`edulm.data.prepare_state`), so an interrupted prepare continues to the same bytes.

``max_tokens`` stops the training split before the first document that would start once it already
holds that many tokens, so every document in the shards is whole; reading then goes on only as far as
needed to fill the held-out split by the same rule.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edulm.data.documents import DocumentWalk, WalkStart
from edulm.data.encode import BatchEncoder
from edulm.data.prepare_state import (
    PrepareState, Progress, append_val, differences, load_state, read_val, remove_state, save_state,
)
from edulm.data.shards import FORMAT_VERSION, MANIFEST, MAX_VOCAB, read_manifest, shard_name, write_shard
from edulm.data.records import Source
from edulm.data.split import VAL_EVERY
from edulm.data.workers import worker_count
from edulm.base.errors import UsageError
from edulm.base.files import remove_stale_temps, write_json
from edulm.base.logs import progress_bars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizerFacts:
    """What the shards record about the tokenizer."""

    name: str
    """``tokenizer.name`` as configured."""
    json: str
    """The raw ``tokenizers`` JSON, sent to the worker processes."""
    fingerprint: str
    """:func:`edulm.tokenizer.loading.tokenizer_fingerprint`: equal fingerprints, identical token ids."""
    eos_id: int
    """The separator written after every document."""
    vocab_size: int
    """Number of token ids (at most 65,536 for uint16 shards)."""

    @classmethod
    def load(cls, name: str) -> "TokenizerFacts":
        """Load tokenizer ``name``; UsageError when its ids do not fit uint16 shards."""
        from edulm.tokenizer.loading import document_separator_id, load_tokenizer, tokenizer_fingerprint

        tokenizer = load_tokenizer(name)
        vocab = len(tokenizer)
        if vocab > MAX_VOCAB:
            raise UsageError(f"tokenizer '{name}' has {vocab:,} tokens; uint16 shards hold at most {MAX_VOCAB:,} ids")
        return cls(name, tokenizer.backend_tokenizer.to_str(), tokenizer_fingerprint(tokenizer),
                   document_separator_id(tokenizer), vocab)


@dataclass(frozen=True)
class FolderPlan:
    """One source prepared into one folder (the whole job, or one source of a mixture)."""

    source: str
    """The source's name, as ``data.source`` (or a mixture entry's ``source``) gives it."""
    text_field: str
    """Field holding the text of its records."""
    pattern: str
    """Files chosen in a folder source ('' for all)."""
    seed: int
    """``run.seed``: decides the held-out documents."""
    val_tokens: int
    """Tokens to hold out (whole documents)."""
    max_tokens: int
    """Training-token budget; 0 reads the whole source."""
    shard_tokens: int
    """Tokens per training shard."""
    workers: int
    """Tokenizer processes (0: one per core)."""
    label: str = ""
    """How messages name this source ('' for a single source; 'source 2/3' in a mixture)."""

    def settings(self, tok: TokenizerFacts) -> dict[str, Any]:
        """What determines the shards' bytes; a resume or a rerun must match it exactly."""
        settings = {
            "format_version": FORMAT_VERSION, "source": self.source, "text_field": self.text_field,
            "tokenizer": tok.name, "fingerprint": tok.fingerprint, "eos_id": tok.eos_id, "vocab_size": tok.vocab_size,
            "seed": self.seed, "val_tokens": self.val_tokens, "val_every": VAL_EVERY,
            "shard_tokens": self.shard_tokens, "max_tokens": self.max_tokens,
        }
        if self.pattern:
            settings["pattern"] = self.pattern  # only when set: folders prepared before patterns existed stay valid
        return settings


def already_prepared(out: Path, settings: dict[str, Any], what: str = "") -> dict[str, Any] | None:
    """The manifest of ``out`` when it was prepared with ``settings`` (said in one line); None when it holds none.

    Shards prepared with other settings are a :class:`UsageError`: they are never mixed or overwritten.
    ``what`` adds to the line (e.g. " from 3 sources").
    """
    if not (out / MANIFEST).is_file():
        return None
    manifest = read_manifest(out)
    changed = differences(manifest["settings"], settings)
    if changed:
        raise UsageError(
            f"{out} already holds shards prepared with other settings ({changed}); choose another data.shards_dir or delete the folder"
        )
    print(f"{out}: already prepared ({manifest['tokens']['train']:,} training tokens{what}); nothing to do")
    return manifest


def prepare_folder(plan: FolderPlan, source: Source, tok: TokenizerFacts, out: Path) -> dict[str, Any]:
    """Prepare ``source`` into ``out`` (resuming an unfinished prepare there); return its manifest."""
    settings = plan.settings(tok)
    done = already_prepared(out, settings)
    if done is not None:
        return done
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # leftovers of an interrupted write; never complete files
    try:
        state = load_state(out, settings)
        if state.shards:
            print(f"{out}: resuming after {len(state.shards)} complete shard(s), {state.progress().train_tokens:,} training tokens")
        return _run(plan, source, tok, out, state)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty folder behind
        raise


class _Bar:
    """Progress: records against the source's total when known, else tokens (against the budget when set)."""

    def __init__(self, total_records: int | None, max_tokens: int, done: Progress, label: str):
        self.by_records = total_records is not None and not max_tokens
        total = total_records if self.by_records else (max_tokens or None)
        self.bar = tqdm(total=total, initial=done.records if self.by_records else done.train_tokens,
                        unit="doc" if self.by_records else "tok", unit_scale=True, dynamic_ncols=True,
                        desc=f"prepare {label}".strip(), file=sys.stderr, disable=not progress_bars())
        self.start, self.tokens0, self.records0 = time.time(), done.train_tokens + done.val_tokens, done.records

    def update(self, p: Progress) -> None:
        elapsed = max(time.time() - self.start, 1e-9)
        tokens = p.train_tokens + p.val_tokens - self.tokens0
        docs = p.records - self.records0
        if self.by_records:
            self.bar.update(p.records - self.bar.n)
            self.bar.set_postfix_str(f"{tokens / elapsed / 1e6:.2f}M tok/s", refresh=False)
        else:
            self.bar.update(p.train_tokens - self.bar.n)
            self.bar.set_postfix_str(f"{docs / elapsed:,.0f} doc/s", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _run(plan: FolderPlan, source: Source, tok: TokenizerFacts, out: Path, state: PrepareState) -> dict[str, Any]:
    started = time.time()  # wall time counts reading, tokenizing and writing, not loading the tokenizer
    p = state.progress()
    earlier_runs_s = p.wall_time_s
    new_val: list[np.ndarray] = []  # held-out documents since the last complete shard
    shard: list[np.ndarray] = []
    fill = 0

    def budget_spent() -> bool:
        return bool(plan.max_tokens) and p.train_tokens >= plan.max_tokens

    def wants_training(index: int) -> bool:
        # Past the budget only held-out documents are read on. Once both splits are full every
        # document is wanted again: the loop below must see one to stop, else reading would go on,
        # with nothing kept, to the end of the source (a whole hub dataset).
        return not budget_spent() or walk.held_out >= plan.val_tokens

    encoder = BatchEncoder(tok.json, tok.eos_id, worker_count(plan.workers))
    start = WalkStart(p.doc, p.skip, p.source_start, p.source_token, p.val_tokens)
    walk = DocumentWalk(source, encoder.imap, start, seed=plan.seed, val_tokens=plan.val_tokens, wants_training=wants_training)
    documents = iter(walk)
    bar = _Bar(source.total_records(), plan.max_tokens, p, plan.label)
    base_empty = p.empty_records
    batch = None
    try:
        for doc in documents:
            if doc.batch is not batch:
                bar.update(p)
                batch = doc.batch
            if not doc.resumed:
                if budget_spent() and doc.held_before >= plan.val_tokens:
                    break  # both splits were full before this document
                p.records, p.empty_records = doc.index + 1, base_empty + doc.empty_before
                if doc.is_val:
                    new_val.append(doc.tokens)
                    p.val_docs += 1
                    p.val_tokens += len(doc.tokens)
                    continue
                p.train_docs += 1
            used, tokens = doc.start, doc.tokens
            while used < len(tokens):
                take = min(plan.shard_tokens - fill, len(tokens) - used)
                shard.append(tokens[used : used + take])
                fill += take
                used += take
                p.train_tokens += take
                if fill < plan.shard_tokens:
                    continue
                # A shard is full: write it, then record where the next one starts.
                p.doc, p.skip = (doc.index, used) if used < len(tokens) else (doc.index + 1, 0)
                p.source_start, p.source_token = doc.batch.first, doc.batch.token
                entry = write_shard(out / shard_name("train", len(state.shards)), np.concatenate(shard), tok.fingerprint)
                entry["end"] = {**p.__dict__, "wall_time_s": earlier_runs_s + time.time() - started}
                state.shards.append(entry)
                save_state(out, state, new_val)
                shard, fill, new_val = [], 0, []
        if walk.exhausted and not budget_spent():  # the source ran out: trailing empty records count as read
            p.records, p.empty_records = walk.records_read, base_empty + walk.empty_total
        bar.update(p)
    finally:
        documents.close()
        encoder.close()
        bar.close()
    return _finish(plan, tok, out, state, shard, new_val, p, earlier_runs_s + time.time() - started)


def _finish(plan: FolderPlan, tok: TokenizerFacts, out: Path, state: PrepareState, shard: list[np.ndarray],
            new_val: list[np.ndarray], p: Progress, elapsed: float) -> dict[str, Any]:
    name = f"{plan.label} ('{plan.source}')" if plan.label else f"data.source '{plan.source}'"
    if p.train_tokens == 0:
        raise UsageError(f"{name} has no non-empty documents for training; check the files and data.text_field")
    train = [{k: e[k] for k in ("file", "tokens", "crc32")} for e in state.shards]
    if shard:
        train.append(write_shard(out / shard_name("train", len(train)), np.concatenate(shard), tok.fingerprint))
    append_val(out, new_val)  # the last held-out documents join the partial file, which becomes the val shards
    val_tokens = read_val(out)
    val_shards = [
        write_shard(out / shard_name("val", i), val_tokens[start : start + plan.shard_tokens], tok.fingerprint)
        for i, start in enumerate(range(0, len(val_tokens), plan.shard_tokens))
    ]
    if p.val_tokens < plan.val_tokens:
        share = " (its share of data.val_tokens)" if plan.label else ""
        log.warning("%s: held out %s tokens for validation, fewer than the %s asked%s: the source ran "
                    "out of held-out candidates (1 record in %d); the manifest records the real figure",
                    plan.label or out, f"{p.val_tokens:,}", f"{plan.val_tokens:,}", share, VAL_EVERY)
    manifest = {
        "format": "edulm-token-shards",
        "format_version": FORMAT_VERSION,
        "source": plan.source,
        "text_field": plan.text_field,
        "tokenizer": {"name": tok.name, "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
        "seed": plan.seed,
        "documents": {"read": p.records, "skipped_empty": p.empty_records, "train": p.train_docs, "val": p.val_docs,
                      "past_max_tokens": p.records - p.empty_records - p.train_docs - p.val_docs},
        "tokens": {"train": p.train_tokens, "val": p.val_tokens},
        "held_out": held_out_summary(plan.val_tokens, p.val_tokens, p.val_docs),
        "splits": {
            "train": {"documents": p.train_docs, "tokens": p.train_tokens, "shards": train},
            "val": {"documents": p.val_docs, "tokens": p.val_tokens, "shards": val_shards},
        },
        "stopped_at_max_tokens": bool(plan.max_tokens and p.train_tokens >= plan.max_tokens),
        "wall_time_s": round(elapsed, 3),
        "tokens_per_s": round((p.train_tokens + p.val_tokens) / max(elapsed, 1e-9), 1),
        "settings": state.settings,
    }
    write_json(out / MANIFEST, manifest, "the shards manifest")
    remove_state(out)
    keep = {e["file"] for e in train + val_shards}
    for path in out.glob("train-*.bin"):
        if path.name not in keep:
            path.unlink()  # written by an interrupted run past what this run produced
    print(f"{out}: {p.train_tokens:,} training tokens in {len(train)} shard(s), {p.val_tokens:,} held-out tokens; "
          f"{p.records:,} documents read ({p.empty_records:,} empty skipped); {manifest['tokens_per_s']:,.0f} tokens/s")
    return manifest


def held_out_summary(requested: int, tokens: int, documents: int) -> dict[str, Any]:
    """The manifest's ``held_out``: what was asked, what was really held out, and whether it fell short."""
    return {"requested_tokens": requested, "tokens": tokens, "documents": documents, "short": tokens < requested}

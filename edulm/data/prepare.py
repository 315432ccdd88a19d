"""``edulm prepare``: tokenize ``data.source`` into uint16 shards with a held-out split and a manifest.

Documents are read in source order by this process, tokenized in ``data.workers`` processes (results
come back in order), split into training and held-out documents (:mod:`edulm.data.split`), and each
followed by one end-of-document token. Training tokens fill ``train-NNNNNN.bin`` shards of
``data.shard_tokens`` tokens (a document may continue into the next shard); held-out tokens go to
``val-NNNNNN.bin`` at the end; ``manifest.json`` is written last.

Resuming: after each complete training shard, ``.prepare-state.json`` records where the next shard
starts (record number and token offset inside that record) together with the counters, and
``.val-partial.bin`` the held-out tokens so far. Running the same command again after an interrupt
(Ctrl-C, a crash, SIGKILL, a source that failed for good) continues after the last complete shard and
produces the same bytes as a run that was never interrupted. The output does not depend on
``data.workers``.

``data.max_tokens`` stops the training split before the first document that would start once it
already holds that many tokens, so every document in the shards is whole; reading then goes on only
as far as needed to fill the held-out split (``data.val_tokens``) by the same rule.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from edulm.config import Config
from edulm.data.documents import DocumentWalk, WalkStart
from edulm.data.encode import BatchEncoder
from edulm.data.shards import (
    FORMAT_VERSION, MANIFEST, MAX_VOCAB, TOKEN_DTYPE, read_header, read_manifest, shard_name, write_json_atomic, write_shard,
)
from edulm.data.sources import Source, open_source
from edulm.data.split import VAL_EVERY
from edulm.data.workers import worker_count
from edulm.errors import UsageError

STATE = ".prepare-state.json"
VAL_PARTIAL = ".val-partial.bin"


@dataclass
class Progress:
    """Everything a resumed run needs besides the shards themselves (JSON in ``.prepare-state.json``)."""

    doc: int = 0
    """Record number where the next training token comes from."""
    skip: int = 0
    """Tokens of record ``doc`` already written (it started in the previous shard)."""
    source_start: int = 0
    """Record number at which to reopen the source (at or before ``doc``)..."""
    source_token: Any = None
    """...with this resume token from the source stream."""
    records: int = 0
    """Records up to the last document used (empty ones included)."""
    empty_records: int = 0
    """Empty or whitespace-only records among them."""
    train_docs: int = 0
    val_docs: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    wall_time_s: float = 0.0
    """Time spent in earlier (interrupted) runs."""


@dataclass
class _State:
    settings: dict[str, Any]
    shards: list[dict[str, Any]] = field(default_factory=list)
    """Complete training shards, each with the :class:`Progress` at its end under "end"."""


def _settings(cfg: Config, tokenizer_name: str, fingerprint: str, eos_id: int, vocab: int) -> dict[str, Any]:
    """What determines the shards' bytes; a resume or a rerun must match it exactly."""
    d = cfg.data
    return {
        "format_version": FORMAT_VERSION, "source": d.source, "text_field": d.text_field,
        "tokenizer": tokenizer_name, "fingerprint": fingerprint, "eos_id": eos_id, "vocab_size": vocab,
        "seed": cfg.run.seed, "val_tokens": d.val_tokens, "val_every": VAL_EVERY,
        "shard_tokens": d.shard_tokens, "max_tokens": d.max_tokens,
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings that differ, as 'key: old -> new'; '' when the shards would be the same.

    The tokenizer's name is left out: the fingerprint decides (a hub id and a local copy of the same
    tokenizer make identical shards).
    """
    keys = [k for k in new if k != "tokenizer" and old.get(k) != new[k]]
    return ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in keys)


def _load_state(out: Path, settings: dict[str, Any]) -> tuple[_State, np.ndarray]:
    """The resume state (fresh when none), trimmed to the shards that are still intact on disk."""
    path = out / STATE
    if not path.is_file():
        return _State(settings), np.zeros(0, dtype=TOKEN_DTYPE)
    try:
        raw = json.loads(path.read_text())
        state = _State(raw["settings"], raw["shards"])
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{path}: unreadable resume state; delete {out} and run 'edulm prepare' again") from None
    if _differences(state.settings, settings):
        raise UsageError(
            f"{out} holds an unfinished 'edulm prepare' with other settings ({_differences(state.settings, settings)}); "
            "rerun with the same settings to finish it, or choose another data.shards_dir"
        )
    intact = []
    for entry in state.shards:
        try:
            header = read_header(out / entry["file"])
        except UsageError:
            break
        if header.n_tokens != entry["tokens"] or header.crc32 != entry["crc32"]:
            break
        intact.append(entry)
    state.shards = intact
    val = np.fromfile(out / VAL_PARTIAL, dtype=TOKEN_DTYPE) if (out / VAL_PARTIAL).is_file() else np.zeros(0, TOKEN_DTYPE)
    held = state.shards[-1]["end"]["val_tokens"] if state.shards else 0
    if len(val) < held:
        raise UsageError(f"{out / VAL_PARTIAL}: held-out tokens are missing; delete {out} and run 'edulm prepare' again")
    return state, val[:held].copy()


def _save_state(out: Path, state: _State, val: list[np.ndarray]) -> None:
    # The held-out tokens first, then the state that refers to them: a kill between the two leaves
    # the old state, which reads only the prefix it knows of.
    tmp = out / f".{VAL_PARTIAL}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        for piece in val:
            f.write(memoryview(np.ascontiguousarray(piece, dtype=TOKEN_DTYPE)).cast("B"))
    os.replace(tmp, out / VAL_PARTIAL)
    write_json_atomic(out / STATE, {"settings": state.settings, "shards": state.shards})


class _Bar:
    """Progress: records against the source's total when known, else tokens (against the budget when set)."""

    def __init__(self, total_records: int | None, max_tokens: int, done: Progress):
        self.by_records = total_records is not None and not max_tokens
        total = total_records if self.by_records else (max_tokens or None)
        self.bar = tqdm(total=total, initial=done.records if self.by_records else done.train_tokens,
                        unit="doc" if self.by_records else "tok", unit_scale=True, dynamic_ncols=True,
                        desc="prepare", file=sys.stderr, disable=None)
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


def prepare(cfg: Config, source: Source | None = None) -> dict[str, Any]:
    """Tokenize ``cfg.data.source`` (or the given ``source`` object) into ``cfg.data.shards_dir``; return the manifest."""
    from edulm.tokenizer import document_separator_id, load_tokenizer, tokenizer_fingerprint

    d = cfg.data
    out = Path(d.shards_dir)
    if source is None:
        source = open_source(d.source, d.text_field)  # bad paths fail here, before anything is written
    tokenizer = load_tokenizer(cfg.tokenizer.name)
    vocab = len(tokenizer)
    if vocab > MAX_VOCAB:
        raise UsageError(f"tokenizer '{cfg.tokenizer.name}' has {vocab:,} tokens; uint16 shards hold at most {MAX_VOCAB:,} ids")
    fingerprint = tokenizer_fingerprint(tokenizer)
    eos_id = document_separator_id(tokenizer)
    settings = _settings(cfg, cfg.tokenizer.name, fingerprint, eos_id, vocab)

    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        if not _differences(manifest.get("settings", {}), settings):
            print(f"{out}: already prepared ({manifest['tokens']['train']:,} training tokens); nothing to do")
            return manifest
        raise UsageError(
            f"{out} already holds shards prepared with other settings ({_differences(manifest.get('settings', {}), settings)}); "
            "choose another data.shards_dir or delete the folder"
        )

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp-*"):
        stale.unlink()  # leftovers of an interrupted write; never complete files
    state, val_done = _load_state(out, settings)
    progress = Progress(**state.shards[-1]["end"]) if state.shards else Progress()
    if state.shards:
        print(f"{out}: resuming after {len(state.shards)} complete shard(s), {progress.train_tokens:,} training tokens")
    started = time.time()  # wall time counts reading, tokenizing and writing, not loading the tokenizer
    try:
        manifest = _run(cfg, source, tokenizer, eos_id, out, state, val_done, progress, started)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty folder behind
        raise
    return manifest


def _run(cfg: Config, source: Source, tokenizer: Any, eos_id: int, out: Path, state: _State,
         val_done: np.ndarray, p: Progress, started: float) -> dict[str, Any]:
    d = cfg.data
    earlier_runs_s = p.wall_time_s
    val: list[np.ndarray] = [val_done] if len(val_done) else []
    shard: list[np.ndarray] = []
    fill = 0

    def budget_spent() -> bool:
        return bool(d.max_tokens) and p.train_tokens >= d.max_tokens

    def wants_training(index: int) -> bool:
        # Past the budget only held-out documents are read on. Once both splits are full every
        # document is wanted again: the loop below must see one to stop, else reading would go on,
        # with nothing kept, to the end of the source (a whole hub dataset).
        return not budget_spent() or walk.held_out >= d.val_tokens

    encoder = BatchEncoder(tokenizer.backend_tokenizer.to_str(), eos_id, worker_count(d.workers))
    start = WalkStart(p.doc, p.skip, p.source_start, p.source_token, p.val_tokens)
    walk = DocumentWalk(source, encoder.imap, start, seed=cfg.run.seed, val_tokens=d.val_tokens,
                        wants_training=wants_training)
    documents = iter(walk)
    bar = _Bar(source.total_records(), d.max_tokens, p)
    base_empty = p.empty_records
    batch = None
    try:
        for doc in documents:
            if doc.batch is not batch:
                bar.update(p)
                batch = doc.batch
            if not doc.resumed:
                if budget_spent() and doc.held_before >= d.val_tokens:
                    break  # both splits were full before this document
                p.records, p.empty_records = doc.index + 1, base_empty + doc.empty_before
                if doc.is_val:
                    val.append(doc.tokens)
                    p.val_docs += 1
                    p.val_tokens += len(doc.tokens)
                    continue
                p.train_docs += 1
            used = doc.start
            tokens = doc.tokens
            while used < len(tokens):
                take = min(d.shard_tokens - fill, len(tokens) - used)
                shard.append(tokens[used : used + take])
                fill += take
                used += take
                p.train_tokens += take
                if fill < d.shard_tokens:
                    continue
                # A shard is full: write it, then record where the next one starts.
                p.doc, p.skip = (doc.index, used) if used < len(tokens) else (doc.index + 1, 0)
                p.source_start, p.source_token = doc.batch.first, doc.batch.token
                entry = write_shard(out / shard_name("train", len(state.shards)), np.concatenate(shard), state.settings["fingerprint"])
                entry["end"] = {**p.__dict__, "wall_time_s": earlier_runs_s + time.time() - started}
                state.shards.append(entry)
                _save_state(out, state, val)
                shard, fill = [], 0
        if walk.exhausted and not budget_spent():  # the source ran out: trailing empty records count as read
            p.records, p.empty_records = walk.records_read, base_empty + walk.empty_total
        bar.update(p)
    finally:
        documents.close()
        encoder.close()
        bar.close()
    return _finish(cfg, out, state, shard, val, p, earlier_runs_s + time.time() - started)


def _finish(cfg: Config, out: Path, state: _State, shard: list[np.ndarray], val: list[np.ndarray],
            p: Progress, elapsed: float) -> dict[str, Any]:
    d = cfg.data
    fingerprint = state.settings["fingerprint"]
    if p.train_tokens == 0:
        raise UsageError(f"data.source '{d.source}' has no non-empty documents for training; check the files and data.text_field")
    train = [{k: e[k] for k in ("file", "tokens", "crc32")} for e in state.shards]
    if shard:
        train.append(write_shard(out / shard_name("train", len(train)), np.concatenate(shard), fingerprint))
    val_tokens = np.concatenate(val) if val else np.zeros(0, dtype=TOKEN_DTYPE)
    val_shards = [
        write_shard(out / shard_name("val", i), val_tokens[start : start + d.shard_tokens], fingerprint)
        for i, start in enumerate(range(0, len(val_tokens), d.shard_tokens))
    ]
    settings = state.settings
    manifest = {
        "format": "edulm-token-shards",
        "format_version": FORMAT_VERSION,
        "source": d.source,
        "text_field": d.text_field,
        "tokenizer": {"name": settings["tokenizer"], "fingerprint": fingerprint, "vocab_size": settings["vocab_size"],
                      "eos_id": settings["eos_id"]},
        "seed": cfg.run.seed,
        "documents": {"read": p.records, "skipped_empty": p.empty_records, "train": p.train_docs, "val": p.val_docs,
                      "past_max_tokens": p.records - p.empty_records - p.train_docs - p.val_docs},
        "tokens": {"train": p.train_tokens, "val": p.val_tokens},
        "splits": {
            "train": {"documents": p.train_docs, "tokens": p.train_tokens, "shards": train},
            "val": {"documents": p.val_docs, "tokens": p.val_tokens, "shards": val_shards},
        },
        "stopped_at_max_tokens": bool(d.max_tokens and p.train_tokens >= d.max_tokens),
        "wall_time_s": round(elapsed, 3),
        "tokens_per_s": round((p.train_tokens + p.val_tokens) / max(elapsed, 1e-9), 1),
        "settings": settings,
    }
    write_json_atomic(out / MANIFEST, manifest)
    for leftover in (out / STATE, out / VAL_PARTIAL):
        leftover.unlink(missing_ok=True)
    keep = {e["file"] for e in train + val_shards} | {MANIFEST}
    for path in out.glob("train-*.bin"):
        if path.name not in keep:
            path.unlink()  # written by an interrupted run past what this run produced
    print(f"{out}: {p.train_tokens:,} training tokens in {len(train)} shard(s), {p.val_tokens:,} held-out tokens; "
          f"{p.records:,} documents read ({manifest['documents']['skipped_empty']:,} empty skipped); "
          f"{manifest['tokens_per_s']:,.0f} tokens/s")
    return manifest


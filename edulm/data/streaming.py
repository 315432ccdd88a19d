"""``data.streaming: true``: train straight from ``data.source``, tokenizing in a background process.

For machines without disk for shards, and for reading ``hf://`` directly as the reference run did.
Batches have the same shape as from shards; what differs:

- order is the source's (no shuffling: FineWeb-Edu is already shuffled), and when the source runs out
  the next epoch starts again from its first record;
- ranks split by document (record number mod world size) rather than by window;
- held-out documents are chosen by the same rule as ``edulm prepare`` (:mod:`edulm.data.split`) and
  never trained on; :func:`held_out_segments` reads them for validation;
- a mixture streams every source at once, each window from the source the mixture's draw sequence
  names (:mod:`edulm.data.mixture`), with each source's share of ``data.val_tokens`` held out.

The loader's state is the position of the next window's first token: the record, the token offset in
it, where to reopen the source (with the source's resume token) and the held-out count at that record
(for a mixture: the next global draw and that position for every source). A resumed run continues at
exactly that token, whatever the background process had read ahead.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import multiprocessing
import os
import queue
import time
from typing import Any

import numpy as np
import torch

from edulm.config import Config
from edulm.data.documents import DocumentWalk, WalkStart, tokenize_here
from edulm.data.shards import MAX_VOCAB, TOKEN_DTYPE
from edulm.data.sources import open_source
from edulm.data.mixture import held_out_shares
from edulm.data.stream_worker import initial_state, produce
from edulm.data.windows import batch_buffers
from edulm.data.workers import quiet_resource_tracker, worker_count
from edulm.base.errors import UsageError

class StreamingLoader:
    """``(inputs, targets)`` batches tokenized on the fly by a background process; resumable to the token."""

    def __init__(self, cfg: Config, rank: int = 0, world_size: int = 1, prefetch: int = 8, *, micro_batch_size: int):
        """``micro_batch_size``: sequences per batch, as the run resolved them (see ``make_train_loader``)."""
        from edulm.tokenizer.loading import document_separator_id, load_tokenizer

        entries = cfg.data.sources()
        for entry in entries:
            open_source(entry.source, entry.text_field, entry.pattern).check()  # bad names fail here, in the caller's process
        tokenizer = load_tokenizer(cfg.tokenizer.name)
        if len(tokenizer) > MAX_VOCAB:
            raise UsageError(f"tokenizer '{cfg.tokenizer.name}' has {len(tokenizer):,} tokens; edulm's data path holds at most {MAX_VOCAB:,} ids")
        self.rank, self.world_size, self.seq_len = rank, world_size, cfg.train.seq_len
        self.source = [dataclasses.asdict(e) for e in cfg.data.source] if cfg.data.is_mixture else cfg.data.source
        weights = [e.weight for e in entries]
        self._job = {
            "tokenizer_json": tokenizer.backend_tokenizer.to_str(), "eos_id": document_separator_id(tokenizer),
            "sources": [{"source": e.source, "text_field": e.text_field, "pattern": e.pattern} for e in entries],
            "weights": weights, "val_tokens": held_out_shares(cfg.data),
            "threads": worker_count(cfg.data.workers, world_size),
            "shape": {"seq_len": cfg.train.seq_len, "batch_size": micro_batch_size, "seed": cfg.run.seed, "rank": rank, "world_size": world_size},
        }
        self.pin_memory = torch.cuda.is_available()
        self.prefetch = prefetch
        self._initial = initial_state(len(entries))
        self._state = copy.deepcopy(self._initial)
        self._proc: Any = None
        self._queue: Any = None
        self._stop: Any = None

    def _start(self) -> None:
        quiet_resource_tracker()
        context = multiprocessing.get_context("spawn")
        self._queue = context.Queue(self.prefetch)
        self._stop = context.Event()
        self._proc = context.Process(
            target=produce, args=(self._job, copy.deepcopy(self._state), self._queue, self._stop, os.getpid()),
            name="edulm-stream", daemon=True,
        )
        self._proc.start()

    def __iter__(self) -> "StreamingLoader":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._proc is None:
            self._start()
        while True:
            try:
                item = self._queue.get(timeout=1.0)
                break
            except queue.Empty:
                if not self._proc.is_alive() and self._queue.empty():
                    code = self._proc.exitcode
                    self.close()
                    raise RuntimeError(f"the streaming data process exited unexpectedly (exit code {code})") from None
        if item[0] == "error":
            self.close()
            raise (UsageError if item[1] else RuntimeError)(item[2])
        _, windows, self._state = item
        x, y = batch_buffers(len(windows), self.seq_len, self.pin_memory)  # one copy, into (pinned) int64
        np.copyto(x.numpy(), windows[:, :-1])
        np.copyto(y.numpy(), windows[:, 1:])
        return x, y

    def state_dict(self) -> dict[str, Any]:
        """The position of the next batch's first token (plain Python values only)."""
        return {"kind": "stream", **self._state, "source": self.source, "seq_len": self.seq_len,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of the same rank (restarts the background process if running)."""
        if state.get("kind") != "stream":
            raise UsageError("the checkpoint's data position is from prepared shards; set data.streaming=false to resume it")
        for key in ("source", "seq_len", "rank", "world_size"):
            if state.get(key) != getattr(self, key):
                raise UsageError(
                    f"the checkpoint's streaming position does not fit this run ({key}: checkpoint {state.get(key)!r}, "
                    f"now {getattr(self, key)!r}); resume with the settings the run started with"
                )
        if set(self._initial) - set(state):
            raise UsageError("the checkpoint's streaming position is incomplete; resume from another checkpoint")
        self.close()
        self._state = copy.deepcopy({key: state[key] for key in self._initial})

    def close(self) -> None:
        """Stop the background process and wait for it (it closes its source before exiting)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._stop.set()
        deadline = time.monotonic() + 10
        while proc.is_alive() and time.monotonic() < deadline:
            try:
                self._queue.get(timeout=0.05)  # make room for a pending put, so the process sees the stop
            except queue.Empty:
                pass
            proc.join(timeout=0.05)
        if proc.is_alive():  # stuck in a read that does not time out: end it
            proc.terminate()
            proc.join()
        self._queue.close()
        self._queue.join_thread()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: best effort only
            pass


@functools.lru_cache(maxsize=4)
def _held_out(source_name: str, text_field: str, pattern: str, tokenizer_name: str, seed: int, val_tokens: int) -> np.ndarray:
    from edulm.tokenizer.loading import document_separator_id, load_tokenizer

    if val_tokens <= 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    tokenizer = load_tokenizer(tokenizer_name)
    tokenize = tokenize_here(tokenizer.backend_tokenizer, document_separator_id(tokenizer))
    walk = DocumentWalk(open_source(source_name, text_field, pattern), tokenize, WalkStart(), seed=seed, val_tokens=val_tokens,
                        wants_training=lambda index: False)
    pieces: list[np.ndarray] = []
    documents = iter(walk)
    try:
        for doc in documents:
            pieces.append(doc.tokens)
            if walk.held_out >= val_tokens:
                break
    finally:
        documents.close()
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=TOKEN_DTYPE)


def held_out_segments(cfg: Config) -> list[np.ndarray]:
    """The held-out documents of each source (one array per mixture entry), tokenized and concatenated.

    The same documents `edulm prepare` holds out: each source's share by weight of ``data.val_tokens``.
    """
    entries = cfg.data.sources()
    shares = held_out_shares(cfg.data)
    return [_held_out(e.source, e.text_field, e.pattern, cfg.tokenizer.name, cfg.run.seed, share)
            for e, share in zip(entries, shares)]

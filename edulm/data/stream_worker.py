"""The background half of streaming: read, tokenize and pack a source into windows, in a worker process.

Kept free of torch so the worker process starts in a fraction of a second; :mod:`edulm.data.streaming`
is the training-side half.
"""

from __future__ import annotations

import os
import queue
import signal
from typing import Any, Iterator

import numpy as np

from edulm.data.documents import DocumentWalk, WalkStart, tokenize_here
from edulm.data.mixture import DrawSequence
from edulm.data.records import Source
from edulm.data.sources import open_source
from edulm.data.workers import exit_with_parent
from edulm.base.errors import UsageError

INITIAL_STATE = {"epoch": 0, "doc": 0, "skip": 0, "source_start": 0, "source_token": None, "held_out": 0}
"""Where a stream of one source starts."""


def initial_state(n_sources: int = 1) -> dict[str, Any]:
    """Where streaming starts: :data:`INITIAL_STATE` for one source; for a mixture the next global draw and each source's position."""
    if n_sources == 1:
        return dict(INITIAL_STATE)
    return {"draw": 0, "sources": [dict(INITIAL_STATE) for _ in range(n_sources)]}


class _Piece:
    """A document's training tokens in the buffer, with what it takes to reopen the source at it."""

    __slots__ = ("index", "tokens", "offset", "first", "token", "held_before", "epoch")

    def __init__(self, index: int, tokens: np.ndarray, offset: int, first: int, token: Any, held_before: int, epoch: int):
        self.index, self.tokens, self.offset = index, tokens, offset
        self.first, self.token, self.held_before, self.epoch = first, token, held_before, epoch


def stream_batches(
    source: Source, tokenizer: Any, eos_id: int, state: dict[str, Any], *, seq_len: int, batch_size: int,
    seed: int, val_tokens: int, rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """``(windows, state after them)``: ``batch_size`` rows of ``seq_len + 1`` tokens (uint16), forever.

    ``tokenizer`` is a raw ``tokenizers.Tokenizer``. Consecutive windows share one token, as with shards.
    """
    epoch = state["epoch"]
    start = WalkStart(state["doc"], state["skip"], state["source_start"], state["source_token"], state["held_out"])
    tokenize = tokenize_here(tokenizer, eos_id)
    pieces: list[_Piece] = []
    pos = 0  # cursor: the next window starts at pieces[0].tokens[pos]
    buffered = 0  # tokens from the cursor to the end of the buffer
    rows: list[np.ndarray] = []

    def cursor_state() -> dict[str, Any]:
        head = pieces[0]
        return {"epoch": head.epoch, "doc": head.index, "skip": head.offset + pos, "source_start": head.first,
                "source_token": head.token, "held_out": head.held_before}

    while True:
        walk = DocumentWalk(source, tokenize, start, seed=seed, val_tokens=val_tokens,
                            wants_training=lambda index: index % world_size == rank)
        trained = False
        documents = iter(walk)
        try:
            for doc in documents:
                if doc.is_val:
                    continue
                trained = True
                pieces.append(_Piece(doc.index, doc.tokens[doc.start :], doc.start, doc.batch.first, doc.batch.token,
                                     doc.held_before, epoch))
                buffered += len(pieces[-1].tokens)
                while buffered >= seq_len + 1:
                    rows.append(_take(pieces, pos, seq_len + 1))
                    pos = _advance(pieces, pos, seq_len)
                    buffered -= seq_len
                    if len(rows) == batch_size:
                        yield np.stack(rows), cursor_state()
                        rows = []
        finally:
            documents.close()
        if not trained and not pieces:
            raise UsageError(f"data.source '{source.name}' has no training documents for rank {rank} of {world_size}")
        epoch, start = epoch + 1, WalkStart()


def stream_mixture_batches(
    sources: list[Source], tokenizer: Any, eos_id: int, state: dict[str, Any], *, seq_len: int, batch_size: int,
    seed: int, weights: list[float], val_tokens: list[int], rank: int = 0, world_size: int = 1,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Like :func:`stream_batches`, each window from the source that the mixture's draw sequence names.

    Rank ``r`` takes global draws ``r, r + n, ...`` (:mod:`edulm.data.mixture`); each draw takes the next
    window of that source's own stream (this rank's documents). The state is the next global draw and,
    per source, the position of its next window.
    """
    states = [dict(s) for s in state["sources"]]
    streams = [stream_batches(source, tokenizer, eos_id, states[i], seq_len=seq_len, batch_size=1, seed=seed,
                              val_tokens=val_tokens[i], rank=rank, world_size=world_size) for i, source in enumerate(sources)]
    draws = DrawSequence(seed, weights)
    draw = state["draw"]
    step = batch_size * world_size
    try:
        while True:
            rows = []
            for source in draws.sources(draw, step)[rank::world_size].tolist():
                window, states[source] = next(streams[source])
                rows.append(window[0])
            draw += step
            yield np.stack(rows), {"draw": draw, "sources": [dict(s) for s in states]}
    finally:
        for stream in streams:
            stream.close()


def _take(pieces: list[_Piece], pos: int, n: int) -> np.ndarray:
    """``n`` tokens from the cursor on, across pieces."""
    head = pieces[0].tokens
    if pos + n <= len(head):
        return head[pos : pos + n]
    out, need, i, start = [], n, 0, pos
    while need:
        chunk = pieces[i].tokens[start : start + need]
        out.append(chunk)
        need -= len(chunk)
        i, start = i + 1, 0
    return np.concatenate(out)


def _advance(pieces: list[_Piece], pos: int, n: int) -> int:
    """Move the cursor ``n`` tokens on; drop consumed pieces but keep the last one (its end is a position)."""
    pos += n
    while len(pieces) > 1 and pos >= len(pieces[0].tokens):
        pos -= len(pieces[0].tokens)
        pieces.pop(0)
    return pos


def produce(job: dict[str, Any], state: dict[str, Any], out: Any, stop: Any, parent: int) -> None:
    """Body of the background process: put ``("batch", windows, state)`` items on ``out`` until stopped."""
    # Ctrl-C reaches the whole process group; the parent decides what happens, then stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    os.environ["RAYON_NUM_THREADS"] = str(job["threads"])
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if job["threads"] > 1 else "false"

    def put(item: Any) -> bool:
        while not stop.is_set() and os.getppid() == parent:
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    batches = None
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(job["tokenizer_json"])
        sources = [open_source(s["source"], s["text_field"], s["pattern"]) for s in job["sources"]]
        if len(sources) == 1:
            batches = stream_batches(sources[0], tokenizer, job["eos_id"], state, val_tokens=job["val_tokens"][0], **job["shape"])
        else:
            batches = stream_mixture_batches(sources, tokenizer, job["eos_id"], state, weights=job["weights"],
                                             val_tokens=job["val_tokens"], **job["shape"])
        for windows, after in batches:
            if not put(("batch", windows, after)):
                break
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which raises it
        put(("error", isinstance(err, UsageError), str(err) if isinstance(err, UsageError) else f"{type(err).__name__}: {err}"))
    finally:
        if batches is not None:
            batches.close()  # closes the source stream and its reader threads before we exit
        if stop.is_set() or os.getppid() != parent:
            out.cancel_join_thread()  # nobody will read what is left: exit without flushing it
        else:
            out.close()
            out.join_thread()  # make sure the parent receives the last item (an error, say)

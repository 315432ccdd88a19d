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

from edulm.data.encode import encode_texts, split_tokens
from edulm.data.sources import Source, document_batches, open_source
from edulm.data.split import SplitAssigner, is_val_candidate
from edulm.data.workers import exit_with_parent
from edulm.errors import UsageError

INITIAL_STATE = {"epoch": 0, "doc": 0, "skip": 0, "source_start": 0, "source_token": None, "held_out": 0}


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
    epoch, start_doc, skip = state["epoch"], state["doc"], state["skip"]
    source_start, source_token, held = state["source_start"], state["source_token"], state["held_out"]
    pieces: list[_Piece] = []
    pos = 0  # cursor: the next window starts at pieces[0].tokens[pos]
    buffered = 0  # tokens from the cursor to the end of the buffer
    rows: list[np.ndarray] = []

    def cursor_state() -> dict[str, Any]:
        head = pieces[0]
        return {"epoch": head.epoch, "doc": head.index, "skip": head.offset + pos, "source_start": head.first,
                "source_token": head.token, "held_out": head.held_before}

    while True:
        assigner = SplitAssigner(seed, val_tokens, held_out=held)
        trained = False

        def keep(index: int) -> bool:
            wanted = index % world_size == rank
            return wanted or (assigner.held_out < val_tokens and is_val_candidate(seed, index))

        stream = source.open(source_start, source_token)
        try:
            for info, texts in document_batches(stream, start_doc, keep):
                first, token = info.first, info.token
                for index, tokens in zip(info.indices, split_tokens(*encode_texts(tokenizer, texts, eos_id))):
                    held_before = assigner.held_out
                    offset = 0
                    if index == start_doc and skip:
                        offset = skip  # resumed inside this (training) document
                    elif assigner.is_val(index, len(tokens)) or index % world_size != rank:
                        continue
                    trained = True
                    pieces.append(_Piece(index, tokens[offset:], offset, first, token, held_before, epoch))
                    buffered += len(pieces[-1].tokens)
                    while buffered >= seq_len + 1:
                        rows.append(_take(pieces, pos, seq_len + 1))
                        pos = _advance(pieces, pos, seq_len)
                        buffered -= seq_len
                        if len(rows) == batch_size:
                            yield np.stack(rows), cursor_state()
                            rows = []
        finally:
            stream.close()
        if not trained and not pieces:
            raise UsageError(f"data.source '{source.name}' has no training documents for rank {rank} of {world_size}")
        epoch, start_doc, skip, source_start, source_token, held = epoch + 1, 0, 0, 0, None, 0


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
        source = open_source(job["source"], job["text_field"])
        batches = stream_batches(source, tokenizer, job["eos_id"], state, **job["shape"])
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

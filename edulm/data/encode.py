"""Tokenize batches of documents in worker processes, results in submission order.

Each worker holds the raw ``tokenizers.Tokenizer`` (sent once as JSON) and encodes a whole batch with
``encode_batch_fast`` on one thread; the parent keeps at most ``2 * workers`` batches in flight, so
memory stays bounded however large the source. Order is the submission order whatever finishes first,
which keeps shards identical for any number of workers. Workers ignore Ctrl-C (the parent decides and
shuts them down) and end when the parent dies (:func:`edulm.data.workers.exit_with_parent`). This
module imports only numpy, tokenizers and light edulm modules so that worker processes start fast.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from edulm.data.shards import TOKEN_DTYPE
from edulm.data.workers import exit_with_parent, quiet_resource_tracker

_worker_tokenizer: Any = None
_worker_eos: int = 0


def _init_worker(tokenizer_json: str, eos_id: int, parent: int) -> None:
    global _worker_tokenizer, _worker_eos
    exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent decides
    # One thread per process: the processes are the parallelism (and rayon threads would oversubscribe).
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _worker_tokenizer = Tokenizer.from_str(tokenizer_json)
    _worker_eos = eos_id


PIECE_CHARS = 1 << 20
"""A record longer than this (in characters) is tokenized piece by piece: a tokenizer's working memory grows
with the text it is given (about 165 bytes per character for one 32 MB line), the pieces' does not."""


def pieces(text: str, size: int = PIECE_CHARS) -> list[str]:
    """``text`` cut into pieces of at most ``size`` characters, each cut where a run of whitespace starts after a
    non-space character: byte-level BPE pre-tokenization always splits there (a run of whitespace is its own
    pre-token, or its last space starts the next word, at the start of a piece as in the whole text), so the pieces'
    tokens are exactly the whole text's. A stretch of ``size`` characters without whitespace is cut where it ends
    (the only place the tokens may differ from the whole text's)."""
    out, start = [], 0
    while len(text) - start > size:
        end = start + size
        cut = end
        while cut > start + 1 and not (text[cut].isspace() and not text[cut - 1].isspace()):
            cut -= 1
        cut = end if cut <= start + 1 else cut
        out.append(text[start:cut])
        start = cut
    out.append(text[start:])
    return out


def _ids(tokenizer: Any, text: str) -> list[int] | np.ndarray:
    """The ids of one text; a long one piece by piece (see :data:`PIECE_CHARS`)."""
    if len(text) <= PIECE_CHARS:
        return tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
    return np.concatenate([np.asarray(tokenizer.encode_batch_fast([piece], add_special_tokens=False)[0].ids,
                                      dtype=TOKEN_DTYPE) for piece in pieces(text, PIECE_CHARS)])


def encode_texts(tokenizer: Any, texts: Sequence[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, tokens)``: every text's ids followed by ``eos_id``, concatenated as uint16."""
    if any(len(text) > PIECE_CHARS for text in texts):
        ids = [_ids(tokenizer, text) for text in texts]
    else:
        ids = [encoding.ids for encoding in tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]
    lengths = np.fromiter((len(row) + 1 for row in ids), dtype=np.int64, count=len(ids))
    tokens = np.empty(int(lengths.sum()), dtype=TOKEN_DTYPE)
    pos = 0
    for row, n in zip(ids, lengths):
        tokens[pos : pos + n - 1] = row
        tokens[pos + n - 1] = eos_id
        pos += n
    return lengths, tokens


def _encode_in_worker(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    return encode_texts(_worker_tokenizer, texts, _worker_eos)


def split_tokens(lengths: np.ndarray, tokens: np.ndarray) -> list[np.ndarray]:
    """Cut the concatenated output of :func:`encode_texts` back into one array per document."""
    return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []


class BatchEncoder:
    """Ordered, bounded parallel tokenization: ``imap(batches)`` yields ``(batch, per-document token arrays)``.

    ``batches`` yields ``(payload, texts)`` pairs; the payload travels back unchanged with the result.
    With one worker the encoding runs in this process (no start-up cost, same result).
    """

    def __init__(self, tokenizer_json: str, eos_id: int, workers: int):
        self.tokenizer_json = tokenizer_json
        self.eos_id = eos_id
        self.workers = max(1, workers)
        self._pool: Any = None

    def imap(self, batches: Iterable[tuple[Any, Sequence[str]]]) -> Iterator[tuple[Any, list[np.ndarray]]]:
        if self.workers == 1:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(self.tokenizer_json)
            for payload, texts in batches:
                yield payload, split_tokens(*encode_texts(tokenizer, texts, self.eos_id))
            return
        # spawn, not fork: the parent may hold threads (tokenizers, datasets, torch) that fork would break.
        # An executor, not multiprocessing.Pool: a worker that dies (out of memory, say) is reported as
        # BrokenProcessPool instead of leaving the parent waiting forever.
        quiet_resource_tracker()
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(self.tokenizer_json, self.eos_id, os.getpid()),
        )
        pending: deque = deque()
        try:
            for payload, texts in batches:
                pending.append((payload, self._pool.submit(_encode_in_worker, texts)))
                if len(pending) >= 2 * self.workers:
                    payload, future = pending.popleft()
                    yield payload, split_tokens(*future.result())
            while pending:
                payload, future = pending.popleft()
                yield payload, split_tokens(*future.result())
        except BrokenProcessPool:
            raise RuntimeError("a tokenizer worker process died (out of memory?); lower data.workers and run again") from None
        finally:
            self.close()

    def close(self) -> None:
        """Stop the worker processes, dropping queued work."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "BatchEncoder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

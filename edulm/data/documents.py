"""One walk over a source's documents: tokenized, split into held-out and training, resumable inside one.

`edulm prepare` (writing shards) and streaming (packing windows on the fly) consume the same walk, so
each rule about documents lives here once:

- **empty records** (empty or whitespace-only text) keep their record number but are not documents;
  they are counted (``empty_before``, :attr:`DocumentWalk.empty_total`);
- **the held-out split** (:mod:`edulm.data.split`): candidates by hash of (seed, record number), held
  out in record order until the quota is met; a held-out document is never training data;
- **resuming inside a document**: a walk that starts at a record with ``skip`` tokens already used
  yields that training document first, with ``start = skip`` and no new split decision;
- **which training documents the consumer wants** (``wants_training``): `edulm prepare` stops taking
  them once ``data.max_tokens`` is reached, a streaming rank takes every ``world_size``-th one.
  Records that no rule needs are read but never tokenized.

A consumer iterates the walk (documents come in record order) and may stop at any point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from edulm.data.encode import encode_texts, split_tokens
from edulm.data.records import BatchInfo, Source, document_batches
from edulm.data.split import SplitAssigner, is_val_candidate

Tokenize = Callable[[Iterable[tuple[BatchInfo, Sequence[str]]]], Iterator[tuple[BatchInfo, list[np.ndarray]]]]
"""Turns batches of texts into batches of per-document token arrays, in order (e.g. ``BatchEncoder.imap``)."""


@dataclass(frozen=True)
class WalkStart:
    """Where a walk begins (all zero: the source's first record)."""

    doc: int = 0
    """Record number of the first document to use."""
    skip: int = 0
    """Tokens of record ``doc`` used already (a training document cut by a shard or a batch boundary)."""
    source_start: int = 0
    """Record number at which to reopen the source (at or before ``doc``)..."""
    source_token: Any = None
    """...with this resume token of the source stream."""
    held_out: int = 0
    """Held-out tokens of the records before ``doc``."""


class Document(NamedTuple):
    """One non-empty document of the walk."""

    index: int
    """Record number."""
    tokens: np.ndarray
    """All its tokens, the end-of-document separator included."""
    start: int
    """Tokens at the front used before this walk (non-zero only for a resumed document)."""
    is_val: bool
    """Held out for validation (never trained on)."""
    held_before: int
    """Held-out tokens of the records before this one."""
    empty_before: int
    """Empty records between the walk's first record and this one."""
    batch: BatchInfo
    """The batch it was read in: ``batch.first`` and ``batch.token`` reopen the source before it."""

    @property
    def resumed(self) -> bool:
        """True for the training document a resumed walk continues inside."""
        return self.start > 0


def tokenize_here(tokenizer: Any, eos_id: int) -> Tokenize:
    """A :data:`Tokenize` that encodes in this process with a raw ``tokenizers.Tokenizer``."""

    def tokenize(batches: Iterable[tuple[BatchInfo, Sequence[str]]]) -> Iterator[tuple[BatchInfo, list[np.ndarray]]]:
        for info, texts in batches:
            yield info, split_tokens(*encode_texts(tokenizer, texts, eos_id))

    return tokenize


class DocumentWalk:
    """The documents of ``source`` from ``start`` on, each tokenized and assigned to a split.

    ``wants_training(index)`` says whether the consumer takes training document ``index``; the others
    are skipped (held-out candidates are always read while the quota is open). It is asked again for
    each document as it is yielded, so it may depend on what the consumer has taken so far.
    After the source runs out, :attr:`exhausted` is True and :attr:`records_read` and
    :attr:`empty_total` cover every record read.
    """

    def __init__(self, source: Source, tokenize: Tokenize, start: WalkStart, *, seed: int, val_tokens: int,
                 wants_training: Callable[[int], bool]):
        self.source, self.tokenize, self.start = source, tokenize, start
        self.seed, self.val_tokens, self.wants_training = seed, val_tokens, wants_training
        self.assigner = SplitAssigner(seed, val_tokens, held_out=start.held_out)
        self.exhausted = False
        self.records_read = start.source_start
        """Records read when the source ran out (the stream's position)."""
        self.empty_total = 0
        """Empty records from ``start.doc`` to where reading stopped."""

    @property
    def held_out(self) -> int:
        """Held-out tokens so far (including those before the walk's start)."""
        return self.assigner.held_out

    def _resumes(self, index: int) -> bool:
        return index == self.start.doc and self.start.skip > 0

    def _keep(self, index: int) -> bool:
        """Whether record ``index`` is worth tokenizing (asked while batches are built, ahead of use)."""
        if self._resumes(index):
            return True
        if self.assigner.held_out < self.val_tokens and is_val_candidate(self.seed, index):
            return True
        return self.wants_training(index)

    def __iter__(self) -> Iterator[Document]:
        stream = self.source.open(self.start.source_start, self.start.source_token)
        try:
            for info, docs in self.tokenize(document_batches(stream, self.start.doc, self._keep)):
                for index, empty_before, tokens in zip(info.indices, info.empty_before, docs):
                    held_before = self.assigner.held_out
                    if self._resumes(index):
                        yield Document(index, tokens, self.start.skip, False, held_before, empty_before, info)
                        continue
                    is_val = self.assigner.is_val(index, len(tokens))
                    if is_val or self.wants_training(index):
                        yield Document(index, tokens, 0, is_val, held_before, empty_before, info)
                self.empty_total = info.empty_total
            self.records_read, self.exhausted = stream.index, True
        finally:
            stream.close()

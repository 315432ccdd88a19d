"""``edulm tokenizer train``: a small byte-level BPE trained on a text source, saved as a tokenizer folder.

It lives apart from :mod:`edulm.tokenizer.loading` because it reads text through the data package, which
itself needs the tokenizer: keeping it here keeps the import graph one-way.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Iterator

from edulm.base.errors import UsageError
from edulm.base.layout import FOLDER_KINDS, folder_kind


def train_tokenizer(source: str, out: str | Path, vocab_size: int = 4096, text_field: str = "text", max_docs: int = 0):
    """Train a BPE of ``vocab_size`` tokens on the documents of ``source`` (as ``data.source`` names them)
    and save it into the folder ``out``; returns the tokenizer.

    ``max_docs`` > 0 reads only the first that many documents. A source without any non-empty document,
    a vocabulary larger than uint16 shards can hold, a negative ``max_docs``, or an ``out`` that holds a
    model, a run or shards (whose own tokenizer files it would replace) is a :class:`UsageError`.
    """
    from edulm.data.shards import MAX_VOCAB
    from edulm.data.sources import iter_texts
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    if vocab_size > MAX_VOCAB:
        raise UsageError(f"--vocab-size {vocab_size}: edulm shards store uint16 ids, so at most {MAX_VOCAB:,}")
    if max_docs < 0:
        raise UsageError(f"--max-docs must be 0 (all) or more, got {max_docs}")
    kind = folder_kind(out)
    if kind is not None:  # an export's tokenizer.json replaced by a 4,096-token one would no longer fit its model
        raise UsageError(f"--out {out}: holds {FOLDER_KINDS[kind]}, whose tokenizer files this would replace; "
                         "choose a new or empty folder for the tokenizer")
    texts: Iterable[str] = iter_texts(source, text_field)
    if max_docs:
        texts = itertools.islice(texts, max_docs)
    seen = 0

    def counted(docs: Iterable[str]) -> Iterator[str]:
        nonlocal seen
        for doc in docs:
            seen += 1
            yield doc

    tok = train_bpe(counted(texts), vocab_size)
    if not seen:  # the byte alphabet alone would still make a 257-token "tokenizer"
        raise UsageError(f"{source}: no non-empty documents to train on; check the source and --text-field")
    save_tokenizer(tok, out)
    return tok

"""Bits per byte: a model's loss on a scale that does not depend on its tokenizer.

A loss in nats per token cannot be compared between tokenizers (a tokenizer with longer tokens has
fewer, harder tokens). Bits per byte divides the summed negative log-likelihood, in bits, by the
number of UTF-8 bytes the scored tokens stand for::

    bits_per_byte = sum(NLL in nats) / ln(2) / bytes

The bytes of a token come from :func:`token_byte_lengths`: exact for byte-level BPE tokenizers
(SmolLM2, GPT-2, Pythia, OPT: every symbol of a token stands for one byte); for SentencePiece-style
vocabularies ``▁`` counts as the space it stands for and ``<0xNN>`` as one byte. Special tokens (the
end-of-document separator, chat markers) stand for no text and count 0 bytes, while their NLL stays
in the sum: predicting where a document ends is part of predicting the text stream.

The trainer adds ``val_bpb`` to its eval rows with two calls::

    table = token_byte_lengths(tokenizer)                 # once
    n_bytes = scored_bytes(table, val_batches)            # once: the held-out batches are fixed
    val_bpb = bits_per_byte(val_loss * n_tokens, n_bytes) # each evaluation (n_tokens: scored targets)
"""

from __future__ import annotations

import math
import re
from typing import Iterable

import numpy as np
import torch

from edulm.model.loss import IGNORE_INDEX

_BYTE_FALLBACK = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
_METASPACE = "\u2581"


def is_byte_level(tokenizer) -> bool:
    """True when ``tokenizer`` is a byte-level BPE (its decoder maps each symbol back to one byte)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(token, "special", False):
            ids.add(int(token_id))
    return ids


def token_byte_lengths(tokenizer) -> np.ndarray:
    """The UTF-8 byte length of every token id (``len(tokenizer)`` entries, int64); special tokens count 0."""
    size = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(size)))
    added = {int(i): t.content for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()}
    special = _special_ids(tokenizer)
    byte_level = is_byte_level(tokenizer)
    table = np.zeros(size, dtype=np.int64)
    for token_id, token in enumerate(tokens):
        if token_id in special or token is None:
            continue
        if token_id in added:  # added tokens are stored as plain text, not in the byte alphabet
            table[token_id] = len(added[token_id].encode("utf-8"))
        elif byte_level:
            table[token_id] = len(token)
        elif _BYTE_FALLBACK.match(token):
            table[token_id] = 1
        else:
            table[token_id] = len(token.replace(_METASPACE, " ").encode("utf-8"))
    return table


def scored_bytes(table: np.ndarray, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes of the scored targets of ``(inputs, targets)`` batches (targets equal to IGNORE_INDEX do not count)."""
    lookup = torch.from_numpy(table)
    total = 0
    for _, targets in batches:
        kept = targets[targets != IGNORE_INDEX].cpu()
        total += int(lookup[kept].sum())
    return total


def bits_per_byte(nll_sum_nats: float, n_bytes: int) -> float | None:
    """Summed negative log-likelihood (nats) over ``n_bytes`` bytes, in bits per byte; None when there are no bytes."""
    if n_bytes <= 0:
        return None
    return nll_sum_nats / math.log(2) / n_bytes

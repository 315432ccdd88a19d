"""Bits per byte: every UTF-8 byte of the scored text counted once, special tokens none; the trainer's recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edulm.evaluate.bits_per_byte import bits_per_byte, is_byte_level, scored_bytes, token_byte_lengths

MIXED = "Crème brûlée, naïve façade — 東京 🌧️ and plain ASCII.\n\tTabs, too. "
PROSE = "The tide comes in twice a day because the Moon pulls on the oceans, and the water bulges toward it. " * 4


@pytest.fixture(scope="module", params=["bpe", "smollm2"])
def tokenizer(request):
    """A small byte-level BPE trained here, and the real SmolLM2 tokenizer (offline copy)."""
    from edulm.tokenizer.loading import load_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    if request.param == "bpe":
        return train_bpe([PROSE, MIXED * 3], vocab_size=300)
    return load_tokenizer("smollm2-offline")


def test_byte_table_counts_every_utf8_byte_once(tokenizer):
    assert is_byte_level(tokenizer)
    table = token_byte_lengths(tokenizer)
    assert len(table) == len(tokenizer)
    for text in (MIXED, PROSE, MIXED * 3 + PROSE):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert int(table[ids].sum()) == len(text.encode("utf-8"))
    assert table[tokenizer.eos_token_id] == 0  # the document separator stands for no text


def test_scored_bytes_of_validation_windows_is_the_bytes_of_their_targets(tokenizer):
    """The trainer's recipe: the bytes of the held-out batches' targets, as the windows the trainer scores."""
    from edulm.data.loader import windows_to_batches

    ids = np.array(tokenizer(PROSE * 3, add_special_tokens=False)["input_ids"], dtype=np.uint16)
    batches = windows_to_batches(ids, seq_len=16, batch_size=3)
    table = token_byte_lengths(tokenizer)
    expected = sum(len(tokenizer.decode(targets[row].tolist()).encode("utf-8"))
                   for _, targets in batches for row in range(targets.shape[0]))
    assert scored_bytes(table, batches) == expected
    n_tokens = sum(t.numel() for _, t in batches)
    assert bits_per_byte(2.5 * n_tokens, expected) == pytest.approx(2.5 * n_tokens / math.log(2) / expected)


def test_bits_per_byte_is_nats_to_bits_over_bytes():
    assert bits_per_byte(math.log(2) * 12, 4) == pytest.approx(3.0)
    assert bits_per_byte(1.0, 0) is None

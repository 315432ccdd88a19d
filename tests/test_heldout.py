"""The held-out loop: token-weighted, bytes of the scored targets, padding that changes no score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edulm.evaluate.bits_per_byte import scored_bytes
from edulm.evaluate.heldout import padded_to_one_shape, score_heldout
from edulm.model.llama import LlamaLM
from edulm.model.loss import IGNORE_INDEX

CPU = torch.device("cpu")


def windows(n_batches: int, rows: int, seq: int, vocab: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(0, vocab, (rows, seq + 1), generator=g)
        out.append((ids[:, :-1].clone(), ids[:, 1:].clone()))
    return out


@pytest.fixture
def model(tiny_model_config):
    torch.manual_seed(0)
    return LlamaLM(tiny_model_config).train()


def test_loss_is_weighted_by_scored_tokens_and_the_mode_is_restored(model, tiny_model_config):
    (x1, y1), (x2, y2) = windows(2, 1, 16, tiny_model_config.vocab_size)
    y2 = y2.clone()
    y2[:, 4:] = IGNORE_INDEX  # the second batch scores 4 tokens only
    with torch.no_grad():
        l1, l2 = model(x1, y1).item(), model(x2, y2).item()
    score = score_heldout(model, [(x1, y1), (x2, y2)], CPU)
    assert (score.tokens, score.windows) == (20, 2)
    assert score.loss == pytest.approx((16 * l1 + 4 * l2) / 20, rel=1e-6)
    assert score.nll_sum == pytest.approx(16 * l1 + 4 * l2, rel=1e-6)
    assert score.perplexity == pytest.approx(math.exp(score.loss))
    assert score.bits_per_byte is None  # no byte table, no bytes
    assert model.training


def test_bytes_are_those_of_the_scored_targets(model, tiny_model_config):
    batches = windows(3, 2, 8, tiny_model_config.vocab_size, seed=1)
    batches[2][1][1, 3:] = IGNORE_INDEX
    table = np.arange(tiny_model_config.vocab_size, dtype=np.int64) % 5  # some tokens count 0 bytes, like specials
    score = score_heldout(model, batches, CPU, byte_table=table)
    assert score.bytes == scored_bytes(table, batches) > 0
    assert score.bits_per_byte == pytest.approx(score.nll_sum / math.log(2) / score.bytes)


def test_padding_to_one_shape_changes_no_score(model, tiny_model_config):
    full = windows(2, 3, 16, tiny_model_config.vocab_size)
    short_x, short_y = windows(1, 2, 12, tiny_model_config.vocab_size, seed=2)[0]  # fewer rows and a narrower window
    batches = [*full, (short_x, short_y)]
    padded = padded_to_one_shape(batches)
    assert {tuple(x.shape) for x, _ in padded} == {tuple(y.shape) for _, y in padded} == {(3, 16)}
    assert padded[0][0] is full[0][0]  # full batches are kept as they are
    assert torch.equal(padded[2][0][:2, :12], short_x) and (padded[2][1][2:] == IGNORE_INDEX).all()
    table = np.ones(tiny_model_config.vocab_size, dtype=np.int64)
    plain, even = (score_heldout(model, b, CPU, byte_table=table) for b in (batches, padded))
    assert (even.tokens, even.windows, even.bytes) == (plain.tokens, plain.windows, plain.bytes) == (2 * 3 * 16 + 2 * 12, 8, 120)
    assert even.nll_sum == pytest.approx(plain.nll_sum, rel=1e-6)
    assert padded_to_one_shape([]) == []


def test_nothing_scored_is_nan_not_an_error(model):
    x = torch.zeros(1, 4, dtype=torch.long)
    score = score_heldout(model, [(x, torch.full_like(x, IGNORE_INDEX))], CPU)
    assert score.tokens == 0 and math.isnan(score.loss)

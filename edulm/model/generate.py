"""Autoregressive text generation with a KV cache: greedy, temperature, top-k and nucleus (top-p) sampling.

The prompt is run once through the model to fill the per-layer key/value caches (prefill); each
new token then costs one single-position forward pass that reads the cache. Only the last
position's hidden state is projected onto the vocabulary.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from edulm.base.errors import UsageError


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` largest, then outside the nucleus of mass ``top_p``.

    logits: (B, V). ``top_k`` 0 and ``top_p`` 1 turn the filters off. The most likely token always
    survives, so a row is never empty.
    """
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(dim=-1)
        # Mass of the tokens ranked strictly before each one: drop a token once that already exceeds top_p.
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before > top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def next_token(
    logits: torch.Tensor,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row from (B, V) logits: argmax when ``temperature`` is 0, else a filtered sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """Reject sampling settings outside their ranges, NaN and infinities included (a :class:`UsageError`,
    one line at the CLI)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise UsageError(f"--temperature must be a finite number, 0 (greedy) or more, got {temperature}")
    if not (math.isfinite(top_p) and 0 < top_p <= 1):
        raise UsageError(f"--top-p must be in (0, 1], got {top_p} (1 turns nucleus sampling off)")
    if top_k < 0:
        raise UsageError(f"--top-k must be 0 (off) or more, got {top_k}")


@torch.no_grad()  # decoding never needs gradients; without this every step would extend one autograd graph
def generate(
    model,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_p: float = 0.95,
    top_k: int = 0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Continue ``input_ids`` (B, T) by up to ``max_new_tokens``; returns prompt + continuation (B, T + n).

    ``temperature`` 0 is greedy. Sampling draws from ``generator`` (seed it for reproducible text).
    A row that produced ``eos_id`` is finished and is padded with ``eos_id`` afterwards; generation
    stops once every row is finished, or when the model's context (``max_seq_len``) is full.
    ``on_token`` receives each new column of tokens (B,) as it is produced, for streaming output.
    """
    check_sampling(temperature, top_p, top_k)
    batch, prompt_len = input_ids.shape
    context = model.config.max_seq_len
    if prompt_len == 0:
        raise ValueError("the prompt is empty; give at least one token")
    if prompt_len >= context:
        raise ValueError(f"the prompt has {prompt_len} tokens; the model's context is {context}")
    steps = min(max_new_tokens, context - prompt_len)
    if steps <= 0:
        return input_ids

    was_training = model.training
    model.eval()
    caches = model.new_caches(batch, prompt_len + steps)
    out = [input_ids]
    finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
    # Prefill: the whole prompt at once; then one position at a time, reading the caches.
    hidden = model.hidden_states(input_ids, caches=caches, start=0)[:, -1]  # (B, d)
    position = prompt_len
    try:
        for step in range(steps):
            logits = model.lm_head(hidden)  # (B, V)
            token = next_token(logits, temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                token = torch.where(finished, torch.full_like(token, eos_id), token)
                finished |= token == eos_id
            out.append(token.unsqueeze(1))
            if on_token is not None:
                on_token(token)
            if step == steps - 1 or (eos_id is not None and bool(finished.all())):
                break
            hidden = model.hidden_states(token.unsqueeze(1), caches=caches, start=position)[:, -1]
            position += 1
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)

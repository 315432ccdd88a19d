"""Helpers shared by the evaluation tests: reference computations with transformers alone."""

from __future__ import annotations

import math

import torch


def transformers_loss(folder, text: str, seq_len: int) -> tuple[float, int, float]:
    """Token-weighted loss computed with transformers alone (same windows, HF's own forward), the number of
    scored tokens, and the summed loss in bits over the UTF-8 bytes of the scored tokens (decoded text)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(folder)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    nll, count, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for first in range(0, len(ids), seq_len):
            window = torch.tensor([ids[first : first + seq_len]])
            if window.shape[1] < 2:
                continue
            logits = model(input_ids=window).logits[0, :-1].double()
            nll += float(torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum"))
            count += window.shape[1] - 1
            n_bytes += len(tok.decode(window[0, 1:].tolist()).encode("utf-8"))
    return nll / count, count, nll / math.log(2) / n_bytes

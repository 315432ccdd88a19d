"""The training fast path: fused LM-head + cross-entropy, graph-break-free compile, GQA kernel choice."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import edulm.model.attention as attention
from edulm.base.memory import saved_for_backward_bytes, track_tensor_memory
from edulm.model import LlamaLM
from edulm.model.loss import IGNORE_INDEX, lm_loss, plain_lm_loss


def _head_inputs(n_tokens: int, d: int = 24, vocab: int = 97, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_tokens, d, generator=g, requires_grad=True)
    weight = (torch.randn(vocab, d, generator=g) * 0.5).requires_grad_()
    targets = torch.randint(0, vocab, (n_tokens,), generator=g)
    return hidden, weight, targets


def _loss_and_grads(fn, hidden, weight, targets):
    hidden.grad = weight.grad = None
    loss = fn(hidden, weight, targets)
    loss.backward()
    return loss.detach(), hidden.grad.clone(), weight.grad.clone()


def _reference(hidden, weight, targets):
    """The textbook definition, independent of edulm: F.cross_entropy over full float32 logits."""
    return F.cross_entropy(hidden @ weight.t(), targets, ignore_index=IGNORE_INDEX)


@pytest.mark.parametrize("n_tokens,chunk", [(37, 8), (37, 37), (37, 64), (5, 1)])
def test_fused_loss_and_grads_equal_plain_cross_entropy(n_tokens, chunk):
    hidden, weight, targets = _head_inputs(n_tokens)
    targets[::3] = IGNORE_INDEX  # ignored positions in every chunk
    want = _loss_and_grads(_reference, hidden, weight, targets)
    got = _loss_and_grads(lambda h, w, t: lm_loss(h, w, t, chunk_size=chunk), hidden, weight, targets)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_loss_scales_with_upstream_gradient_and_batched_shapes():
    hidden, weight, targets = _head_inputs(24)
    h3, t2 = hidden.detach().view(2, 12, -1).requires_grad_(), targets.view(2, 12)
    (3.0 * lm_loss(h3, weight, t2, chunk_size=5)).backward()
    ref_h = hidden.detach().clone().requires_grad_()
    ref_w = weight.detach().clone().requires_grad_()
    (3.0 * _reference(ref_h, ref_w, targets)).backward()
    torch.testing.assert_close(h3.grad.view(24, -1), ref_h.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad, ref_w.grad, rtol=1e-5, atol=1e-6)


def test_all_ignored_targets_give_zero_loss_and_zero_grads():
    hidden, weight, targets = _head_inputs(9)
    targets[:] = IGNORE_INDEX
    loss, d_hidden, d_weight = _loss_and_grads(lambda h, w, t: lm_loss(h, w, t, chunk_size=4), hidden, weight, targets)
    assert loss.item() == 0.0
    assert torch.count_nonzero(d_hidden) == 0 and torch.count_nonzero(d_weight) == 0


def test_fused_loss_without_grad_matches_plain():
    hidden, weight, targets = _head_inputs(30)
    with torch.no_grad():
        torch.testing.assert_close(lm_loss(hidden, weight, targets, chunk_size=7), _reference(hidden, weight, targets))


def test_fused_loss_under_bf16_autocast_matches_plain_within_bf16_tolerance():
    hidden, weight, targets = _head_inputs(40, d=32, vocab=200)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _loss_and_grads(lambda h, w, t: lm_loss(h, w, t, chunk_size=16), hidden, weight, targets)
        want = _loss_and_grads(plain_lm_loss, hidden, weight, targets)
    fp32 = _loss_and_grads(_reference, hidden, weight, targets)
    assert got[1].dtype == hidden.dtype and got[2].dtype == weight.dtype
    for a, b, exact in zip(got, want, fp32):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-3)
        torch.testing.assert_close(a, exact, rtol=3e-2, atol=3e-3)


def test_model_fused_and_plain_paths_agree_with_tied_weights(tiny_model_config):
    torch.manual_seed(0)
    model = LlamaLM(tiny_model_config)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, tiny_model_config.vocab_size, (3, 17))  # 51 tokens: not a multiple of anything
    targets = torch.roll(ids, -1, dims=1)
    targets[:, -1] = IGNORE_INDEX
    results = []
    for fused in (False, True):
        model.zero_grad(set_to_none=True)
        model.fused_loss = fused
        loss = model(ids, targets)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain_loss, plain_grads), (fused_loss, fused_grads) = results
    torch.testing.assert_close(fused_loss, plain_loss, rtol=1e-6, atol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_fused_loss_never_builds_full_logits_and_peaks_lower():
    n_tokens, vocab, chunk = 256, 4000, 32
    hidden, weight, targets = _head_inputs(n_tokens, d=16, vocab=vocab)
    full_logits_bytes = n_tokens * vocab * 4

    def peak(fn):
        hidden.grad = weight.grad = None
        with track_tensor_memory() as mem:
            fn(hidden, weight, targets).backward()
        return mem

    plain = peak(plain_lm_loss)
    fused = peak(lambda h, w, t: lm_loss(h, w, t, chunk_size=chunk))
    assert plain.largest_bytes >= full_logits_bytes
    # The biggest thing the fused path makes is one chunk's float32 logits (or the weight's gradient).
    assert fused.largest_bytes <= max(chunk * vocab * 4, weight.numel() * 4)
    assert fused.peak_bytes < plain.peak_bytes / 3


def test_fused_loss_keeps_nothing_vocab_sized_per_token_for_backward():
    n_tokens, vocab = 128, 3000
    hidden, weight, targets = _head_inputs(n_tokens, d=16, vocab=vocab)
    _, plain_saved = saved_for_backward_bytes(lambda: plain_lm_loss(hidden, weight, targets), exclude=[hidden, weight])
    _, fused_saved = saved_for_backward_bytes(
        lambda: lm_loss(hidden, weight, targets, chunk_size=16), exclude=[hidden, weight]
    )
    assert plain_saved >= n_tokens * vocab * 4
    # d hidden and d weight only: the size of the inputs, not tokens x vocab.
    assert fused_saved <= (hidden.numel() + weight.numel()) * 4 + 64


def test_fused_loss_does_three_matmuls_per_token_and_no_recompute():
    n_tokens, d, vocab = 40, 16, 300
    hidden, weight, targets = _head_inputs(n_tokens, d=d, vocab=vocab)
    with FlopCounterMode(display=False) as flops:
        lm_loss(hidden, weight, targets, chunk_size=16).backward()
    # logits, d hidden and d weight: 3 products of 2 * N * V * d FLOPs; recomputing logits would be 4.
    assert flops.get_total_flops() == 3 * 2 * n_tokens * vocab * d


def test_compiled_fused_loss_matches_reference_with_ignored_targets():
    hidden, weight, targets = _head_inputs(45)
    targets[1::4] = IGNORE_INDEX
    want = _loss_and_grads(_reference, hidden, weight, targets)
    torch._dynamo.reset()
    compiled = torch.compile(lambda h, w, t: lm_loss(h, w, t, chunk_size=16), backend="aot_eager", fullgraph=True)
    got = _loss_and_grads(compiled, hidden, weight, targets)
    torch._dynamo.reset()
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grad_checkpointing,bf16", [(False, False), (True, False), (False, True)])
def test_training_forward_has_no_graph_breaks(tiny_model_config, grad_checkpointing, bf16):
    model = LlamaLM(tiny_model_config)
    model.grad_checkpointing = grad_checkpointing
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 16))
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        explanation = torch._dynamo.explain(model)(ids, torch.roll(ids, -1, dims=1))
    torch._dynamo.reset()
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_full_graph_compiled_training_step_matches_eager(tiny_model_config):
    """fullgraph=True fails on any break; aot_eager traces forward and backward without a C++ build."""
    torch.manual_seed(0)
    model = LlamaLM(tiny_model_config)
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 16))
    targets = torch.roll(ids, -1, dims=1)

    def step(fn):
        model.zero_grad(set_to_none=True)
        loss = fn(ids, targets)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager = step(model)
    torch._dynamo.reset()
    compiled = step(torch.compile(model, backend="aot_eager", fullgraph=True))
    torch._dynamo.reset()
    torch.testing.assert_close(compiled[0], eager[0])
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_native_gqa_choice_by_device_dtype_and_mask():
    assert attention.native_gqa("cpu", torch.float32, has_mask=False)
    assert attention.native_gqa("cuda", torch.bfloat16, has_mask=False)
    assert attention.native_gqa("cuda", torch.float16, has_mask=False)
    assert not attention.native_gqa("cuda", torch.float32, has_mask=False)
    assert not attention.native_gqa("cuda", torch.bfloat16, has_mask=True)


def test_repeated_kv_heads_give_the_same_attention(tiny_model_config, monkeypatch):
    torch.manual_seed(0)
    attn = attention.Attention(tiny_model_config.d_model, tiny_model_config.n_heads, tiny_model_config.n_kv_heads)
    model = LlamaLM(tiny_model_config)
    cos, sin = model.rope(0, 12)
    x = torch.randn(2, 12, tiny_model_config.d_model)
    native = attn(x, cos, sin)
    monkeypatch.setattr(attention, "native_gqa", lambda *args: False)
    repeated = attn(x, cos, sin)
    torch.testing.assert_close(repeated, native, rtol=1e-5, atol=1e-6)


def test_norm_casts_once_under_autocast_with_the_values_autocast_would_give(tiny_model_config):
    from edulm.model.norm import RMSNorm

    norm = RMSNorm(tiny_model_config.d_model)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, tiny_model_config.d_model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, norm(x).to(torch.bfloat16))
    # q, k and v read one bf16 copy of the norm's output: the block saves it once, not three times.
    block = LlamaLM(tiny_model_config).model.layers[0]
    cos, sin = LlamaLM(tiny_model_config).rope(0, 5)
    expected = block.input_layernorm(x).to(torch.bfloat16)
    copies = set()

    def pack(t):
        if t.dtype == torch.bfloat16 and t.numel() == x.numel() and torch.equal(t.reshape(x.shape), expected):
            copies.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        block(x.requires_grad_(), cos, sin)
    assert len(copies) == 1

"""Generation: greedy equals transformers' generate, seeded sampling, top-k/top-p filters, eos, context."""

from __future__ import annotations

import pytest
import torch

from edulm.cli import main
from edulm.config import ModelConfig
from edulm.hf import load_model
from edulm.model.generate import filter_logits, generate


@pytest.fixture
def pair(tiny_model_config, hf_model, tmp_path):
    """(edulm model, transformers model) with the same random weights; a large init std gives varied text."""
    theirs = hf_model(tiny_model_config, seed=5, std=0.3)
    theirs.save_pretrained(str(tmp_path / "hf"))
    ours, _ = load_model(tmp_path / "hf")
    return ours, theirs


def prompt(batch: int = 1, length: int = 5, vocab: int = 320) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, length), generator=torch.Generator().manual_seed(7))


def hf_greedy(model, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    from transformers import GenerationConfig

    config = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        return model.generate(ids, generation_config=config, attention_mask=torch.ones_like(ids))


@pytest.mark.compat
def test_greedy_equals_transformers_generate(pair):
    ours, theirs = pair
    ids = prompt(batch=2)
    got = generate(ours, ids, 24, temperature=0)
    assert got.shape == (2, 5 + 24)
    assert torch.equal(got, hf_greedy(theirs, ids, 24))
    assert len(set(got[0, 5:].tolist())) > 3  # a real continuation, not one token repeated


def test_seeded_sampling_is_reproducible(pair):
    ours, _ = pair
    ids = prompt()

    def sample(seed: int) -> torch.Tensor:
        return generate(ours, ids, 20, temperature=1.5, top_p=1.0, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_top_k_1_is_greedy(pair):
    ours, _ = pair
    ids = prompt(batch=2)
    sampled = generate(ours, ids, 16, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sampled, generate(ours, ids, 16, temperature=0))


def test_filters_match_transformers_warpers():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    for top_p in (0.3, 0.9):
        want = TopPLogitsWarper(top_p)(None, logits.clone())
        assert torch.equal(filter_logits(logits, top_p=top_p).isinf(), want.isinf())
    want = TopKLogitsWarper(7)(None, logits.clone())
    assert torch.equal(filter_logits(logits, top_k=7).isinf(), want.isinf())
    kept = filter_logits(logits, top_k=7, top_p=0.5)
    assert (~kept.isinf()).sum(-1).min() >= 1 and (~kept.isinf()).sum(-1).max() <= 7


def test_eos_stops_a_row_and_pads_it(pair):
    ours, _ = pair
    ids = prompt(batch=2)
    greedy = generate(ours, ids, 10, temperature=0)
    eos = int(greedy[0, 5 + 2])  # row 0 meets it after three new tokens
    out = generate(ours, ids, 10, temperature=0, eos_id=eos)
    assert torch.equal(out[0, : 5 + 3], greedy[0, : 5 + 3])
    assert (out[0, 5 + 3 :] == eos).all()
    if eos not in greedy[1, 5:].tolist():  # row 1 never meets it: runs the full length, untouched
        assert torch.equal(out[1], greedy[1])
    single = generate(ours, ids[:1], 10, temperature=0, eos_id=eos)
    assert single.shape[1] == 5 + 3  # one row: stops as soon as it is finished


def test_generation_stops_at_the_context_length(pair, tiny_model_config):
    ours, _ = pair
    ids = prompt(length=tiny_model_config.max_seq_len - 3)
    assert generate(ours, ids, 50, temperature=0).shape[1] == tiny_model_config.max_seq_len
    with pytest.raises(ValueError, match="context"):
        generate(ours, prompt(length=tiny_model_config.max_seq_len), 1, temperature=0)


def test_generate_command_prints_prompt_and_greedy_continuation(
    edulm_model, checkpoint_dir, tiny_tokenizer_dir, tiny_model_config, capsys
):
    from edulm.tokenizer.loading import load_tokenizer

    cfg = ModelConfig(**{**tiny_model_config.__dict__, "init_std": 0.3})
    model = edulm_model(cfg, seed=6)
    ckpt = checkpoint_dir(model, tokenizer=str(tiny_tokenizer_dir))
    tokenizer = load_tokenizer(str(tiny_tokenizer_dir))
    text = "The quick brown"
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    want = generate(model, ids, 8, temperature=0, eos_id=0)
    args = [str(ckpt), text, "--temperature", "0", "--max-new-tokens", "8", "--device", "cpu"]
    assert main(["generate", *args]) == 0
    out = capsys.readouterr().out
    assert out == text + tokenizer.decode(want[0, ids.shape[1] :], skip_special_tokens=True) + "\n"
    assert main(["generate", *args]) == 0
    assert capsys.readouterr().out == out


def test_generate_command_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing"), "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file or folder" in err and len(err.splitlines()) == 1
    assert main(["generate", str(tmp_path), "hi", "--top-p", "0"]) == 2
    assert "--top-p" in capsys.readouterr().err


@pytest.mark.slow
def test_real_smollm2_greedy_equals_transformers(smollm2):
    theirs, folder, tokenizer = smollm2
    ours, _ = load_model(folder)
    ids = torch.tensor([tokenizer("The three states of matter are", add_special_tokens=False)["input_ids"]])
    want = hf_greedy(theirs, ids, 20)
    assert torch.equal(generate(ours, ids, 20, temperature=0), want)


def test_generate_builds_no_autograd_graph(pair):
    ours, _ = pair
    ours.train()  # gradients on, as inside a training loop: generate must still record nothing
    recorded: list[bool] = []
    # Every module output made during decoding (hidden states, the KV projections, logits) is a tensor
    # that would hold the graph of the whole decode so far if autograd were recording.
    hooks = [m.register_forward_hook(lambda _m, _i, out: recorded.append(out.requires_grad))
             for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    try:
        out = generate(ours, prompt(), 6, temperature=1.0, generator=torch.Generator().manual_seed(0))
    finally:
        for hook in hooks:
            hook.remove()
    assert recorded and not any(recorded)
    assert not out.requires_grad
    assert ours.training and torch.is_grad_enabled()  # the mode and autograd are as they were


@pytest.mark.parametrize(
    "option, value", [("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "-1"), ("--top-p", "nan"),
                      ("--top-p", "inf"), ("--top-k", "-2")]
)
def test_impossible_sampling_settings_exit_2_before_loading(tmp_path, capsys, option, value):
    assert main(["generate", str(tmp_path / "not-loaded"), "hi", option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "no such file" not in err[0]

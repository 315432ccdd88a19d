"""``edulm chat`` driven through stdin on a tiny exported chat model, and ``edulm generate --chat``: the replies
are the model's greedy continuations of the whole conversation in its template, ``/reset`` starts over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hf_helpers import TEXTS, add_checkpoint

from edulm.config import Config, ModelConfig, RunConfig, TokenizerConfig, TrainConfig, save_config
from edulm.hf import export
from edulm.model import LlamaLM
from edulm.model.generate import generate
from edulm.tokenizer.bpe import train_bpe
from edulm.tokenizer.chat_template import prompt_ids
from edulm.tokenizer.loading import DOCUMENT_SEPARATOR, save_tokenizer

REPO = Path(__file__).resolve().parents[2]
MODEL = ModelConfig(vocab_size=320, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=128,
                    init_std=0.3)
NEW_TOKENS = 6


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A random tiny model exported from a fine-tuning run's checkpoint: ChatML template, <|im_end|> as eos."""
    root = tmp_path_factory.mktemp("chat-model")
    tok_dir = root / "tokenizer"
    save_tokenizer(train_bpe(TEXTS, 320, special_tokens=(DOCUMENT_SEPARATOR, "<|im_start|>", "<|im_end|>")), tok_dir)
    run = root / "run"
    cfg = Config(run=RunConfig(out_dir=str(run)), model=MODEL, tokenizer=TokenizerConfig(name=str(tok_dir)),
                 train=TrainConfig(objective="sft", seq_len=128))
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    return export(add_checkpoint(run, LlamaLM(MODEL).eval(), 1), root / "export")


def edulm(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "edulm", *args], input=stdin, env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def expected_replies(folder, turns: list[str], system: str = "") -> list[str]:
    """What the conversation must produce: each reply greedy from the whole conversation so far, ending at <|im_end|>."""
    from edulm.hf.source import load_model, load_model_tokenizer

    model, resolved = load_model(folder)
    tok = load_model_tokenizer(resolved)
    messages = [{"role": "system", "content": system}] if system else []
    replies = []
    for turn in turns:
        if turn == "/reset":
            messages = messages[:1] if system else []
            continue
        messages.append({"role": "user", "content": turn})
        ids = prompt_ids(tok, messages)
        out = generate(model, torch.tensor([ids]), NEW_TOKENS, temperature=0, eos_id=2)[0, len(ids):].tolist()
        reply = tok.decode([t for t in out if t != 2], skip_special_tokens=True)
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
    return replies


@pytest.mark.slow
@pytest.mark.parametrize("system", ["", "Answer in one word."])
def test_chat_through_stdin_is_multi_turn_and_resets(chat_model, system):
    turns = ["Water boils at?", "And the moon?", "/reset", "Water boils at?"]
    options = ["--temperature", "0", "--max-new-tokens", str(NEW_TOKENS)] + (["--system", system] if system else [])
    done = edulm("chat", str(chat_model), *options, stdin="\n".join(turns + ["", "/quit", "never read"]) + "\n")
    assert done.returncode == 0, done.stderr
    replies = expected_replies(chat_model, turns, system)
    assert done.stdout == "".join(r + "\n" for r in replies)
    assert replies[0] == replies[2]  # after /reset the conversation starts over
    assert "(new conversation)" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_generate_chat_prints_the_reply_to_one_message(chat_model):
    done = edulm("generate", str(chat_model), "Water boils at?", "--chat", "--temperature", "0", "--max-new-tokens",
                 str(NEW_TOKENS))
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected_replies(chat_model, ["Water boils at?"])[0] + "\n"


def test_a_conversation_too_long_for_the_context_drops_its_oldest_turns(chat_model, capsys, caplog):
    import io

    from edulm.hf.chat_command import chat_command

    long = " ".join(["Water boils at one hundred degrees."] * 4)
    lines = io.StringIO("\n".join([long, long, long, "x " * 200]) + "\n")
    replies = chat_command(str(chat_model), temperature=0, max_new_tokens=2, lines=lines, out=io.StringIO())
    assert len(replies) == 3  # the fourth message alone is longer than the context: said, and skipped
    assert "dropped the 2 oldest message(s)" in caplog.text
    assert "longer than the model's context of 128 tokens" in caplog.text


def test_a_model_without_chat_tokens_is_one_line(tmp_path, tokenizer_dir, tiny_model_config):
    run = tmp_path / "run"
    cfg = Config(run=RunConfig(out_dir=str(run)), model=tiny_model_config, tokenizer=TokenizerConfig(name=str(tokenizer_dir)),
                 train=TrainConfig(seq_len=tiny_model_config.max_seq_len))
    save_config(cfg, run / "config.yaml")
    ckpt = add_checkpoint(run, LlamaLM(tiny_model_config).eval(), 1)
    done = edulm("chat", str(ckpt), stdin="hello\n")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "edulm: error: the tokenizer has no <|im_start|> or <|im_end|> token, which the ChatML chat template needs; use a "
        "tokenizer with them (SmolLM2's has both: tokenizer.name smollm2-offline)"]

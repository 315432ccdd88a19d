"""Exports of fine-tuned models carry their chat template: transformers 5 and 4 load it and render conversations
with it, and a reply ends at <|im_end|>."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hf_helpers import TEXTS, add_checkpoint
from test_transformers4 import TRANSFORMERS4

from edulm.base.errors import UsageError
from edulm.config import Config, RunConfig, TokenizerConfig, TrainConfig, save_config
from edulm.hf import export
from edulm.model import LlamaLM
from edulm.tokenizer.bpe import train_bpe
from edulm.tokenizer.chat_template import CHATML_TEMPLATE, TURN_END, prompt_ids
from edulm.tokenizer.loading import DOCUMENT_SEPARATOR, save_tokenizer

CHAT_SPECIALS = (DOCUMENT_SEPARATOR, "<|im_start|>", "<|im_end|>")
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Water boils at?"},
    {"role": "assistant", "content": "One hundred degrees."},
    {"role": "user", "content": "And the moon?"},
]


@pytest.fixture(scope="module")
def chat_tokenizer_dir(tmp_path_factory):
    """A 320-token BPE whose ids 0, 1, 2 are <|endoftext|>, <|im_start|>, <|im_end|> (as in SmolLM2)."""
    out = tmp_path_factory.mktemp("chat-tokenizer")
    save_tokenizer(train_bpe(TEXTS, 320, special_tokens=CHAT_SPECIALS), out)
    return out


def _checkpoint(tmp_path, tokenizer_dir, tiny_model_config, objective):
    run = tmp_path / f"run-{objective}"
    cfg = Config(run=RunConfig(out_dir=str(run)), model=tiny_model_config, tokenizer=TokenizerConfig(name=str(tokenizer_dir)),
                 train=TrainConfig(objective=objective, seq_len=tiny_model_config.max_seq_len))
    save_config(cfg, run / "config.yaml")
    torch.manual_seed(0)
    return add_checkpoint(run, LlamaLM(tiny_model_config).eval(), 1)


def _files(folder):
    return (json.loads((folder / "tokenizer_config.json").read_text()), json.loads((folder / "config.json").read_text()),
            json.loads((folder / "generation_config.json").read_text()))


def test_a_fine_tuning_run_exports_its_chat_template(tmp_path, chat_tokenizer_dir, tiny_model_config):
    from transformers import AutoTokenizer, GenerationConfig

    out = export(_checkpoint(tmp_path, chat_tokenizer_dir, tiny_model_config, "sft"), tmp_path / "export")
    tok_config, config, generation = _files(out)
    assert tok_config["chat_template"] == CHATML_TEMPLATE and tok_config["eos_token"] == TURN_END
    assert not (out / "chat_template.jinja").exists()  # one copy, in tokenizer_config.json
    assert config["eos_token_id"] == generation["eos_token_id"] == 2  # <|im_end|>
    assert GenerationConfig.from_pretrained(str(out)).eos_token_id == 2
    loaded = AutoTokenizer.from_pretrained(str(out))
    rendered = loaded.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    rendered = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
    assert rendered == prompt_ids(loaded, MESSAGES)
    assert loaded.decode(rendered).endswith("<|im_start|>assistant\n")


def test_a_pretraining_run_exports_no_template_unless_asked(tmp_path, chat_tokenizer_dir, tiny_model_config):
    ckpt = _checkpoint(tmp_path, chat_tokenizer_dir, tiny_model_config, "pretrain")
    tok_config, config, generation = _files(export(ckpt, tmp_path / "plain"))
    assert "chat_template" not in tok_config and config["eos_token_id"] == generation["eos_token_id"] == 0
    tok_config, config, generation = _files(export(ckpt, tmp_path / "asked", chat_template="chatml"))
    assert tok_config["chat_template"] == CHATML_TEMPLATE and config["eos_token_id"] == generation["eos_token_id"] == 2
    # Re-exporting a chat export keeps its template and end of turn.
    tok_config, config, generation = _files(export(tmp_path / "asked", tmp_path / "again"))
    assert tok_config["chat_template"] == CHATML_TEMPLATE and config["eos_token_id"] == generation["eos_token_id"] == 2


def test_a_template_needs_the_chat_tokens(tmp_path, tokenizer_dir, tiny_model_config):
    ckpt = _checkpoint(tmp_path, tokenizer_dir, tiny_model_config, "pretrain")
    with pytest.raises(UsageError, match=r"no <\|im_start\|> or <\|im_end\|> token"):
        export(ckpt, tmp_path / "out", chat_template="chatml")
    with pytest.raises(UsageError, match="unknown chat template 'llama3'"):
        export(ckpt, tmp_path / "out", chat_template="llama3")
    assert not (tmp_path / "out").exists()


RENDER_WITH_4X = textwrap.dedent(
    """
    import json, sys, transformers
    from transformers import AutoTokenizer
    folder, messages = sys.argv[1], json.loads(sys.argv[2])
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    print(json.dumps({"version": transformers.__version__, "ids": list(ids), "eos": tok.eos_token}))
    """
)


@pytest.mark.compat
def test_transformers_4_renders_the_exported_template_alike(tmp_path, chat_tokenizer_dir, tiny_model_config):
    if not (TRANSFORMERS4 / "transformers").is_dir():
        pytest.skip(f"no transformers 4.x at {TRANSFORMERS4}: run 'make setup' (CI does) to compare 4.x and 5.x")
    from transformers import AutoTokenizer

    out = export(_checkpoint(tmp_path, chat_tokenizer_dir, tiny_model_config, "sft"), tmp_path / "export")
    env = {**os.environ, "PYTHONPATH": str(TRANSFORMERS4), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", RENDER_WITH_4X, str(out), json.dumps(MESSAGES)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    four = json.loads(done.stdout.strip().splitlines()[-1])
    assert four["version"].startswith("4.")
    assert four["ids"] == prompt_ids(AutoTokenizer.from_pretrained(str(out)), MESSAGES)
    assert four["eos"] == TURN_END

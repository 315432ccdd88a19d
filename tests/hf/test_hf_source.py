"""Model sources: HF folders, run dirs and checkpoint dirs resolved and loaded alike."""

from __future__ import annotations

import os

import pytest
import torch
from hf_helpers import IDS, add_checkpoint, logits, tiny_model

from edulm.config import ModelConfig
from edulm.base.errors import UsageError
from edulm.hf import export, load_model, load_model_tokenizer, resolve_model, to_hf_config
from edulm.base.layout import MODEL_FILE


@pytest.mark.compat
def test_resolves_checkpoint_and_run_dirs(run_dir, tiny_model_config, tokenizer_dir, tmp_path):
    first = add_checkpoint(run_dir, tiny_model(tiny_model_config, 1), 1)
    second = add_checkpoint(run_dir, tiny_model(tiny_model_config, 2), 2)
    r = resolve_model(first)
    assert (r.kind, r.weights, r.tokenizer_name) == ("checkpoint", first / MODEL_FILE, str(tokenizer_dir))
    assert r.model_config == tiny_model_config
    r = resolve_model(run_dir)
    assert (r.kind, r.weights) == ("run", second / MODEL_FILE)  # the latest checkpoint

    export(run_dir, run_dir / "final")  # final/ written after the last checkpoint wins
    r = resolve_model(run_dir)
    assert (r.kind, r.weights, r.tokenizer_name) == ("run", run_dir / "final" / MODEL_FILE, str(run_dir / "final"))
    third = add_checkpoint(run_dir, tiny_model(tiny_model_config, 3), 3)
    os.utime(third / MODEL_FILE, (1e10, 1e10))  # training went on after final/
    assert resolve_model(run_dir).weights == third / MODEL_FILE
    model, _ = load_model(run_dir)
    assert torch.equal(logits(model, IDS), logits(tiny_model(tiny_model_config, 3), IDS))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_dir, tiny_model_config):
    good = add_checkpoint(run_dir, tiny_model(tiny_model_config, 1), 1)
    bad = add_checkpoint(run_dir, tiny_model(tiny_model_config, 2), 2)
    with open(bad / MODEL_FILE, "r+b") as f:
        f.truncate(100)
    assert resolve_model(run_dir).weights == good / MODEL_FILE
    export(run_dir, run_dir / "final")
    (bad / MODEL_FILE).unlink()  # the newest checkpoint lost its weights altogether: final/ still wins
    assert resolve_model(run_dir).weights == run_dir / "final" / MODEL_FILE


def test_run_dir_without_weights_is_a_usage_error(run_dir):
    (run_dir / "checkpoints").mkdir()
    with pytest.raises(UsageError, match="no complete final/ folder and no intact checkpoint"):
        resolve_model(run_dir)


def test_hf_folder_tokenizer_is_its_own_files(tiny_model_config, tmp_path, tokenizer_dir):
    from transformers import LlamaForCausalLM

    LlamaForCausalLM(to_hf_config(tiny_model_config)).save_pretrained(str(tmp_path / "bare"))
    assert resolve_model(tmp_path / "bare").tokenizer_name is None
    with pytest.raises(UsageError, match="no tokenizer files"):
        load_model_tokenizer(tmp_path / "bare")
    for f in tokenizer_dir.iterdir():
        (tmp_path / "bare" / f.name).write_bytes(f.read_bytes())
    assert resolve_model(tmp_path / "bare").tokenizer_name == str(tmp_path / "bare")
    assert load_model_tokenizer(tmp_path / "bare")("Cells divide")["input_ids"]


def test_sharded_hf_folder_loads(tiny_model_config, tmp_path):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    theirs = LlamaForCausalLM(to_hf_config(tiny_model_config)).eval()
    theirs.save_pretrained(str(tmp_path), max_shard_size="60KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / MODEL_FILE).exists()
    ours, resolved = load_model(tmp_path)
    assert resolved.weights.name == "model.safetensors.index.json"
    assert (logits(ours, IDS) - logits(theirs, IDS)).abs().max() < 1e-4


def test_weights_that_do_not_fit_the_config_are_a_usage_error(run_dir, tiny_model_config):
    ckpt = add_checkpoint(run_dir, tiny_model(ModelConfig(**{**tiny_model_config.__dict__, "d_ff": 96})), 1)
    with pytest.raises(UsageError, match="weights and their config disagree"):
        load_model(ckpt)
    (ckpt / MODEL_FILE).write_bytes(b"not safetensors")
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        load_model(ckpt)


def test_load_model_dtype_keeps_rope_tables_in_float32(run_dir, tiny_model_config):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    model, _ = load_model(ckpt, dtype="bfloat16")
    assert model.lm_head.weight.dtype == torch.bfloat16 and model.rope.cos.dtype == torch.float32
    assert not model.training


@pytest.mark.parametrize("cut", [200, 5])
def test_a_truncated_weights_file_is_named_by_every_command_that_reads_it(run_dir, tiny_model_config, tmp_path, capsys,
                                                                         cut):
    from edulm.cli import main

    final = export(add_checkpoint(run_dir, tiny_model(tiny_model_config), 1), run_dir / "final")
    weights = final / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - cut if cut > 8 else cut)
    (tmp_path / "text.txt").write_text("Some text to score.\n")
    for argv in (["generate", str(run_dir), "hi"], ["eval", str(run_dir), "--out", str(tmp_path / "r.json")],
                 ["perplexity", str(final), "--text", str(tmp_path / "text.txt")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"edulm: error: {weights}: damaged safetensors file (") and len(err.splitlines()) == 1
        assert "export it again from its source" in err and "download" not in err

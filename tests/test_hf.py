"""Hugging Face interop: config mapping (transformers 4.x and 5.x), model sources, export, export cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from edulm import checkpoint
from edulm.cli import main
from edulm.config import Config, ModelConfig, RunConfig, TokenizerConfig, save_config
from edulm.errors import UsageError
from edulm.hf import (
    EXPORT_MARKER,
    ensure_hf_folder,
    export,
    load_model,
    load_model_tokenizer,
    model_config_from_hf,
    resolve_model,
    to_hf_config,
)
from edulm.model import LlamaLM
from edulm.weights import MODEL_FILE, save_weights

TEXTS = ["Water boils at one hundred degrees.", "Cells divide by mitosis.", "The moon orbits the earth."] * 3


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from edulm.tokenizer import save_tokenizer, train_bpe

    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_bpe(TEXTS, 320), out)
    return out


@pytest.fixture
def run_dir(tmp_path, tiny_model_config, tokenizer_dir):
    """A run dir with its config.yaml and no checkpoints yet; ``.model`` holds a random tiny model."""
    run = tmp_path / "run"
    cfg = Config(run=RunConfig(out_dir=str(run)), model=tiny_model_config, tokenizer=TokenizerConfig(name=str(tokenizer_dir)))
    cfg.train.seq_len = tiny_model_config.max_seq_len
    save_config(cfg, run / "config.yaml")
    return run


def add_checkpoint(run: Path, model: LlamaLM, step: int) -> Path:
    """A checkpoint written the trainer's way (edulm.checkpoint: temporary folder, manifest, rename)."""
    tmp = checkpoint.begin(run, step)
    save_weights(model, tmp / MODEL_FILE)
    (tmp / "config.yaml").write_bytes((run / "config.yaml").read_bytes())
    return checkpoint.commit(tmp, step)


def tiny_model(cfg: ModelConfig, seed: int = 0) -> LlamaLM:
    torch.manual_seed(seed)
    return LlamaLM(cfg).eval()


def logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


IDS = torch.arange(1, 17).unsqueeze(0) * 7 % 320


# ---------------------------------------------------------------------------------------------
# Config mapping
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_config_round_trip(tiny_model_config, tied):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "tie_embeddings": tied, "rope_theta": 5e5, "norm_eps": 1e-6})
    hf = to_hf_config(cfg, bos_token_id=0, eos_token_id=0, dtype="bfloat16")
    assert hf.architectures == ["LlamaForCausalLM"] and hf.head_dim == 16 and hf.tie_word_embeddings == tied
    assert hf.bos_token_id == hf.eos_token_id == 0
    assert model_config_from_hf(hf.to_dict()) == cfg


def transformers_4x_config(cfg: ModelConfig) -> dict:
    """config.json as transformers 4.x writes it: top-level rope_theta, rope_scaling null, torch_dtype."""
    d = to_hf_config(cfg).to_dict()
    d.pop("rope_parameters")
    d.pop("dtype", None)
    d.update(rope_theta=cfg.rope_theta, rope_scaling=None, torch_dtype="float32", transformers_version="4.46.3")
    return d


def test_reads_transformers_4x_and_5x_configs(tiny_model_config):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 123456.0})
    five = to_hf_config(cfg).to_dict()
    assert five["rope_parameters"]["rope_theta"] == 123456.0 and "rope_theta" not in five
    assert model_config_from_hf(five) == cfg
    assert model_config_from_hf(transformers_4x_config(cfg)) == cfg


def test_folder_with_a_4x_config_loads_in_edulm_and_transformers_alike(tiny_model_config, tmp_path):
    from transformers import LlamaForCausalLM

    cfg = ModelConfig(**{**tiny_model_config.__dict__, "rope_theta": 500.0})  # a theta that matters
    torch.manual_seed(0)
    LlamaForCausalLM(to_hf_config(cfg)).save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(transformers_4x_config(cfg)))
    theirs = LlamaForCausalLM.from_pretrained(str(tmp_path), dtype=torch.float32).eval()
    ours, resolved = load_model(tmp_path)
    assert resolved.model_config.rope_theta == 500.0
    assert (logits(ours, IDS) - logits(theirs, IDS)).abs().max() < 1e-4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "mistral"}, "model_type"),
        ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "RoPE scaling"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}}, "RoPE scaling"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
        ({"head_dim": 32}, "head_dim"),
        ({"hidden_act": "gelu"}, "hidden_act"),
        ({"num_key_value_heads": 3}, "n_kv_heads"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantized"),
    ],
)
def test_refuses_what_edulm_cannot_represent(tiny_model_config, change, message):
    d = {**to_hf_config(tiny_model_config).to_dict(), **change}
    with pytest.raises(UsageError, match=message):
        model_config_from_hf(d)


# ---------------------------------------------------------------------------------------------
# Model sources
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def test_export_loads_in_transformers_with_no_missing_or_unexpected_keys(run_dir, tiny_model_config, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", MODEL_FILE, "generation_config.json", "tokenizer.json", EXPORT_MARKER} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert (out / MODEL_FILE).stat().st_mode == (out / "config.json").stat().st_mode  # readable like the rest
    model, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.bos_token_id == model.config.eos_token_id == 0  # <|endoftext|>, the document separator
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert tokenizer.convert_ids_to_tokens(0) == "<|endoftext|>"
    generation = GenerationConfig.from_pretrained(str(out))
    assert (generation.do_sample, generation.temperature, generation.top_p, generation.eos_token_id) == (True, 0.8, 0.95, 0)


def test_export_of_an_hf_folder_keeps_its_token_ids_and_generation_config(tiny_model_config, tmp_path, tokenizer_dir):
    from transformers import GenerationConfig, LlamaForCausalLM

    src = tmp_path / "src"
    LlamaForCausalLM(to_hf_config(tiny_model_config, bos_token_id=1, eos_token_id=2)).save_pretrained(str(src))
    GenerationConfig(bos_token_id=1, eos_token_id=2, max_new_tokens=7).save_pretrained(str(src))
    for f in tokenizer_dir.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    out = export(src, tmp_path / "out", dtype="bfloat16")
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["dtype"]) == (1, 2, "bfloat16")
    assert GenerationConfig.from_pretrained(str(out)).max_new_tokens == 7


def test_export_replaces_only_its_own_folders_and_keeps_the_model_card(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "hf")
    (out / "README.md").write_text("# card\n")
    export(ckpt, out, dtype="bfloat16")
    assert (out / "README.md").read_text() == "# card\n"
    assert json.loads((out / EXPORT_MARKER).read_text())["dtype"] == "bfloat16"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not written by edulm export"):
        export(ckpt, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_failed_export_leaves_the_previous_export_and_no_temporaries(run_dir, tiny_model_config, tmp_path, monkeypatch):
    import edulm.hf.exporter as hf_export

    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "out" / "hf")
    before = (out / MODEL_FILE).read_bytes()

    def refuse(folder, check_tokenizer=True):
        raise RuntimeError("transformers does not load the export cleanly")

    monkeypatch.setattr(hf_export, "validate_hf_folder", refuse)  # a failure after every file is written
    with pytest.raises(RuntimeError, match="cleanly"):
        export(ckpt, out, dtype="float16")
    assert (out / MODEL_FILE).read_bytes() == before
    assert json.loads((out / EXPORT_MARKER).read_text())["dtype"] == "float32"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["hf"]


def test_missing_tokenizer_fails_before_anything_is_written(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    config = ckpt / "config.yaml"
    config.write_text(config.read_text().replace(resolve_model(ckpt).tokenizer_name, str(tmp_path / "gone")))
    with pytest.raises(UsageError, match="gone"):
        export(ckpt, tmp_path / "out" / "hf")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ensure_hf_folder_exports_a_checkpoint_once(run_dir, tiny_model_config, tmp_path, monkeypatch):
    monkeypatch.setenv("EDULM_CACHE", str(tmp_path / "cache"))
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    folder = ensure_hf_folder(run_dir)
    assert folder.parent == tmp_path / "cache" / "hf" and (folder / "config.json").is_file()
    written = (folder / MODEL_FILE).stat().st_mtime_ns
    assert ensure_hf_folder(ckpt) == folder  # same weights file: the cached export is reused
    assert (folder / MODEL_FILE).stat().st_mtime_ns == written
    assert ensure_hf_folder(folder) == folder  # an HF folder is returned as is


# ---------------------------------------------------------------------------------------------
# Command line: bad input is one line and exit code 2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["missing", "neither", "file"])
def test_bad_model_paths_exit_2_with_one_line(tmp_path, capsys, what):
    src = tmp_path / what
    if what == "neither":
        src.mkdir()
        (src / "notes.txt").write_text("hello")
    elif what == "file":
        src.write_text("hello")
    assert main(["export", str(src), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edulm: error:") and str(src) in lines[0]
    assert "Hugging Face" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_export_into_a_foreign_folder_exits_2(run_dir, tiny_model_config, tmp_path, capsys):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "busy")]) == 2
    assert "not written by edulm export" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "ok")]) == 0
    assert "exported Hugging Face folder" in capsys.readouterr().out

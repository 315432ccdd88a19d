"""Export: a Hugging Face folder that validates itself, re-exports, the export cache, the command line."""

from __future__ import annotations

import json

import pytest
from hf_helpers import add_checkpoint, tiny_model

from edulm.cli import main
from edulm.base.errors import UsageError
from edulm.hf import EXPORT_MARKER, ensure_hf_folder, export, resolve_model, to_hf_config
from edulm.base.layout import MODEL_FILE


@pytest.mark.compat
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
    assert tokenizer.model_max_length == tiny_model_config.max_seq_len  # the model's context, not "no limit"
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


@pytest.mark.compat
def test_ensure_hf_folder_exports_a_checkpoint_once(run_dir, tiny_model_config, tmp_path, monkeypatch):
    monkeypatch.setenv("EDULM_CACHE", str(tmp_path / "cache"))
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    folder = ensure_hf_folder(run_dir)
    assert folder.parent == tmp_path / "cache" / "hf" and (folder / "config.json").is_file()
    written = (folder / MODEL_FILE).stat().st_mtime_ns
    assert ensure_hf_folder(ckpt) == folder  # same weights file: the cached export is reused
    assert (folder / MODEL_FILE).stat().st_mtime_ns == written
    assert ensure_hf_folder(folder) == folder  # an HF folder is returned as is



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


def test_a_checkpoints_folder_or_shards_dir_as_model_says_what_to_pass(run_dir, tiny_model_config, tmp_path, capsys):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    assert main(["export", str(ckpt.parent), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"(it holds checkpoints: pass one of them, such as {ckpt}, or the run dir {run_dir})" in err
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    assert main(["export", str(shards), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "(it holds prepared token shards (manifest.json), not a model)" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_export_into_a_foreign_folder_exits_2(run_dir, tiny_model_config, tmp_path, capsys):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["export", str(ckpt), "--out", str(tmp_path / "busy")]) == 2
    assert "not written by edulm export" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--out", str(tmp_path / "ok")]) == 0
    assert "exported Hugging Face folder" in capsys.readouterr().out


def test_a_model_with_non_finite_weights_is_never_exported(run_dir, tiny_model_config, tmp_path, capsys):
    import torch

    model = tiny_model(tiny_model_config)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 0] = float("nan")
    ckpt = add_checkpoint(run_dir, model, 1)
    assert main(["export", str(ckpt), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip()
    assert "1 of" in err and "weight tensors hold NaN or infinite values (model.layers.1.mlp.down_proj.weight" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "hf").exists()


def test_exporting_a_live_run_reads_the_newer_checkpoint_when_retention_removes_the_one_being_read(
        run_dir, tiny_model_config, tmp_path, monkeypatch):
    import shutil

    import edulm.hf.source as source

    add_checkpoint(run_dir, tiny_model(tiny_model_config, seed=1), 1)
    newer = tiny_model(tiny_model_config, seed=2)
    read = source.load_weights
    calls = []

    def retention_strikes(model, path):
        # What a run with train.keep_last=1 does while the export reads: step 2 is written, step 1 removed.
        if not calls:
            add_checkpoint(run_dir, newer, 2)
            shutil.rmtree(run_dir / "checkpoints" / "step-0000001")
        calls.append(path)
        return read(model, path)

    monkeypatch.setattr(source, "load_weights", retention_strikes)
    out = export(run_dir, tmp_path / "hf")
    marker = json.loads((out / EXPORT_MARKER).read_text())
    assert marker["weights"].endswith("step-0000002/model.safetensors") and len(calls) == 2

"""Continued pretraining with model.init_from, on tiny models: every MODEL form, the shape rules, the
vocabulary check, what is recorded, and resumes that never read MODEL again (real SmolLM2: test_init_from_smollm2.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from edulm.release.card import write_card
from edulm.config import config_from_dict, load_config
from edulm.data.loader import make_train_loader
from edulm.base.errors import UsageError
from edulm.base.files import sha256_file
from edulm.hf import load_model
from edulm.base.metrics import read_metrics
from edulm.train.core_callbacks import default_callbacks
from edulm.train.trainer import train

from train_helpers import SigtermAfter, tiny_config, write_config

STEPS = 4


@pytest.fixture(scope="module")
def base(corpus, tmp_path_factory):
    """A trained tiny run: its run dir, final/ (a Hugging Face folder) and last checkpoint are three MODEL forms."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    train(config_from_dict(tiny_config(corpus, run_dir, max_steps=4, lr=1e-2, eval_interval=0, ckpt_interval=4)))
    return run_dir


def continued(corpus, run_dir, model: str, shape: dict | None = None, **train_keys) -> dict:
    """A tiny config whose model section is ``init_from`` (plus ``shape``), one micro-batch per step."""
    settings = dict(max_steps=STEPS, grad_accum_steps=1, eval_interval=0, ckpt_interval=2, warmup_steps=2, lr=1e-3)
    raw = tiny_config(corpus, run_dir, **{**settings, **train_keys})
    raw["model"] = {"init_from": model, **(shape or {})}
    return raw


def first_batch_loss(model_dir, cfg) -> float:
    """The loss of the run's first batch under the weights of ``model_dir`` (what step 1 must log)."""
    model, _ = load_model(model_dir)
    loader = make_train_loader(cfg)
    inputs, targets = next(iter(loader))
    if hasattr(loader, "close"):
        loader.close()
    with torch.no_grad():
        return model(inputs, targets).item()


def rows(run_dir):
    return {int(r["step"]): r for r in read_metrics(run_dir / "training" / "training_metrics.csv")}


def summary(run_dir):
    return json.loads((run_dir / "training" / "training_summary.json").read_text())


@pytest.mark.parametrize("form", ["final", "run", "checkpoint"])
@pytest.mark.compat
def test_continues_each_model_form_with_its_shape_weights_and_a_fresh_start(corpus, base, tmp_path, form, capsys):
    model = {"final": base / "final", "run": base, "checkpoint": base / "checkpoints" / "step-0000004"}[form]
    run_dir = tmp_path / "continued"
    raw = continued(corpus, run_dir, str(model))  # no shape keys: 320 x 64 x 2 layers comes from MODEL
    cfg = config_from_dict(raw)
    assert cfg.model.d_model == 576  # the default, until training reads MODEL
    train(cfg)
    assert f"continued from {model}" in capsys.readouterr().out

    saved = load_config(run_dir / "config.yaml").model
    assert (saved.init_from, saved.vocab_size, saved.d_model, saved.n_layers, saved.max_seq_len) == (str(model), 320, 64, 2, 64)
    got = rows(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))  # a fresh schedule: step 1 is the first warmup step
    assert got[1]["lr"] == pytest.approx(0.5e-3)
    resolved = load_config(run_dir / "config.yaml")
    assert got[1]["loss"] == pytest.approx(first_batch_loss(model, resolved), abs=1e-5)  # MODEL's weights, not random ones
    record = summary(run_dir)["init_from"]
    weights = base / "final" / "model.safetensors" if form != "checkpoint" else model / "model.safetensors"
    assert record == {"model": str(model), "kind": "hf" if form == "final" else form, "path": str(model.resolve()),
                      "weights": str(weights.resolve()), "weights_sha256": sha256_file(weights), "revision": None}

    card = tmp_path / "README.md"
    write_card(run_dir, card)
    text = card.read_text()
    assert f"| Started from | continued from `{model}` ({record['kind']}, weights sha256 {record['weights_sha256']}) |" in text
    assert f"continued from `{model}` and trained on" in text


def test_model_keys_the_config_sets_must_agree_with_the_model(corpus, base, tmp_path):
    model = str(base / "final")
    agreeing = continued(corpus, tmp_path / "agree", model, {"vocab_size": 320, "n_layers": 2}, max_steps=1, ckpt_interval=0)
    train(config_from_dict(agreeing))
    assert load_config(tmp_path / "agree" / "config.yaml").model.d_model == 64

    raw = continued(corpus, tmp_path / "disagree", model, {"n_layers": 3, "d_model": 64, "n_heads": 8})
    with pytest.raises(UsageError) as refused:
        train(config_from_dict(raw))
    message = str(refused.value)
    assert "the config sets model n_layers 3, n_heads 8, but" in message and "has n_layers 2, n_heads 4" in message
    assert "\n" not in message
    assert not (tmp_path / "disagree").exists()  # refused before anything was written

    # From YAML and overrides alike: a key named there counts, even at its default value.
    path = write_config(tmp_path / "c.yaml", continued(corpus, tmp_path / "yaml", model))
    with pytest.raises(UsageError, match="model max_seq_len 2048, but"):
        train(load_config(path, ["model.max_seq_len=2048"]))


def test_a_model_with_another_tokenizer_is_continued_with_a_warning(corpus, base, tmp_path, capsys):
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    model = tmp_path / "model"
    shutil.copytree(base / "final", model)
    save_tokenizer(train_bpe(["other words, other merges"] * 8, vocab_size=280), model)  # not the corpus tokenizer
    train(config_from_dict(continued(corpus, tmp_path / "run", str(model), max_steps=1, ckpt_interval=0)))
    assert f"model.init_from {model} comes with another tokenizer" in capsys.readouterr().err

    train(config_from_dict(continued(corpus, tmp_path / "same", str(base / "final"), max_steps=1, ckpt_interval=0)))
    assert "another tokenizer" not in capsys.readouterr().err


def test_a_tokenizer_larger_than_the_model_is_refused_before_training(corpus, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    small = tmp_path / "small"  # 256 token ids; the corpus tokenizer has 300
    LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                 tie_word_embeddings=True)).save_pretrained(small)
    with pytest.raises(UsageError, match=r"the shards' tokenizer .* has 300 token ids, but the model has 256 \(model.init_from"):
        train(config_from_dict(continued(corpus, tmp_path / "a", str(small))))
    assert not (tmp_path / "a").exists()
    fresh = tiny_config(corpus, tmp_path / "b")
    fresh["model"]["vocab_size"] = 256  # the same holds for a fresh model
    with pytest.raises(UsageError, match=r"has 300 token ids, but the model has 256 \(model.vocab_size\)"):
        train(config_from_dict(fresh))
    assert not (tmp_path / "b").exists()


def test_a_resume_never_reads_the_model_again(corpus, base, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(base / "final", model)
    planned = tmp_path / "planned"
    train(config_from_dict(continued(corpus, planned, str(model))))

    run_dir = tmp_path / "interrupted"
    raw = continued(corpus, run_dir, str(model))
    with pytest.raises(SystemExit):
        train(config_from_dict(raw), callbacks=default_callbacks(False, False, True) + [SigtermAfter(1)])
    model.rename(tmp_path / "moved")  # MODEL is gone
    train(config_from_dict(raw), resume="auto")
    want, got = rows(planned), rows(run_dir)
    assert [got[s]["loss"] for s in sorted(got)] == [want[s]["loss"] for s in sorted(want)]
    assert summary(run_dir)["init_from"]["model"] == str(model)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_from"] == str(model)

    other = continued(corpus, run_dir, str(tmp_path / "moved"), max_steps=STEPS + 2)
    with pytest.raises(UsageError, match="the run started from model.init_from"):
        train(config_from_dict(other), resume="auto")


def test_a_resume_with_another_model_section_names_what_differs(corpus, base, tmp_path):
    # The message said only "its model section differs", leaving the user to diff two YAML files.
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    raw = tiny_config(corpus, run_dir, max_steps=4, lr=1e-2, eval_interval=0, ckpt_interval=4)
    raw["model"]["n_layers"] = 3
    with pytest.raises(UsageError, match=r"model section differs from the checkpoint's \(n_layers 2 -> 3\)"):
        train(config_from_dict(raw), resume="auto")

    continued_dir = tmp_path / "continued"
    train(config_from_dict(continued(corpus, continued_dir, str(base / "final"))))
    plain = tiny_config(corpus, continued_dir, max_steps=STEPS)  # the same shape, without model.init_from
    with pytest.raises(UsageError, match=rf"\(init_from '{base / 'final'}' -> ''\)"):
        train(config_from_dict(plain), resume="auto")
    # And the other way: a fresh run resumed with a config that names a MODEL ("started from model.init_from ''").
    with pytest.raises(UsageError, match=r"the run trained a fresh model \(no model.init_from\), the config names"):
        train(config_from_dict(continued(corpus, run_dir, str(base / "final"))), resume="auto")


def test_a_hub_id_is_read_from_the_hugging_face_cache(corpus, base, tmp_path, monkeypatch):
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--edulm-test--tiny"
    shutil.copytree(base / "final", repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    run_dir = tmp_path / "from-hub"
    train(config_from_dict(continued(corpus, run_dir, "edulm-test/tiny", max_steps=1, ckpt_interval=0)))
    record = summary(run_dir)["init_from"]
    assert (record["model"], record["kind"], record["revision"]) == ("edulm-test/tiny", "hub", revision)
    assert record["weights_sha256"] == sha256_file(base / "final" / "model.safetensors")

    with pytest.raises(UsageError, match="edulm-test/absent: no such folder, and no cached copy of a hub model"):
        train(config_from_dict(continued(corpus, tmp_path / "absent", "edulm-test/absent")))

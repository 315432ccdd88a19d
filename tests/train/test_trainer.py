"""In-process training runs: artifacts, learning, final/ in transformers, refusals, divergence."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
import torch

from edulm.config import config_from_dict
from edulm.errors import UsageError
from edulm.metrics import CSV_COLUMNS, read_metrics
from edulm.train.trainer import TrainingDiverged, train

from train_helpers import tiny_config


def test_tiny_run_learns_and_writes_the_run_dir(corpus, tmp_path):
    run_dir = tmp_path / "run"
    cfg = config_from_dict(tiny_config(corpus, run_dir, max_steps=30, lr=1e-2, warmup_steps=3))
    assert train(cfg, gpu_hourly_rate=2.0) == run_dir

    assert (run_dir / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000020", "step-0000030"]  # keep_last=2
    ckpt = run_dir / "checkpoints" / "step-0000030"
    for name in ("model.safetensors", "config.yaml", "optimizer.pt", "trainer_state.json", "rank-00000.pt", "manifest.json"):
        assert (ckpt / name).is_file(), name

    with (run_dir / "training" / "training_metrics.csv").open() as f:
        assert next(csv.reader(f)) == CSV_COLUMNS
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 31))
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [10, 20, 30]
    assert all(r["mfu"] is None for r in rows)  # CPU: unknown, never a made-up peak
    assert rows[-1]["tokens"] == 30 * 2 * 2 * 32
    assert rows[0]["lr"] == pytest.approx(1e-2 / 3)
    assert rows[-1]["lr"] == pytest.approx(1e-3)  # min_lr_ratio 0.1 at the last step
    late = sum(r["loss"] for r in rows[-5:]) / 5
    assert late < rows[0]["loss"] - 1.2, "the loss should fall well below its start"

    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30
    assert summary["parameters"] == sum(p.numel() for p in _hf_model(run_dir).parameters())
    assert summary["final_val_loss"] == rows[-1]["val_loss"]
    assert summary["gpu_hours"] == 0 and summary["cost"] == 0
    assert summary["versions"]["torch"] == torch.__version__
    for key in ("mean_tokens_per_s", "mean_tokens_per_s_after_warmup", "peak_memory_gb", "device", "wall_time_s",
                "final_val_ppl", "code_revision", "formula"):
        assert key in summary, key
    for png in ("training_curves.png", "loss_curve_zoom.png"):
        assert (run_dir / "training" / png).read_bytes()[:4] == b"\x89PNG"

    # final/ is a Hugging Face folder whose logits are the trained model's.
    from edulm.hf import load_model

    ours, _ = load_model(ckpt)
    ids = torch.tensor([[1, 5, 9, 30, 2]])
    with torch.no_grad():
        torch.testing.assert_close(_hf_model(run_dir)(ids).logits, ours(ids), rtol=1e-4, atol=1e-4)


def _hf_model(run_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run_dir / "final")


def test_an_existing_run_is_never_overwritten(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2, eval_interval=0, ckpt_interval=1)))
    # Export of final/ is not what this test is about; the checkpoint is.
    with pytest.raises(UsageError, match="--resume auto"):
        train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2)))


def test_diverging_run_skips_then_stops(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    raw = tiny_config(corpus, run_dir, lr=1e30, warmup_steps=0, max_nonfinite_steps=3, eval_interval=0, ckpt_interval=0)
    with pytest.raises(TrainingDiverged, match="3 steps in a row"):
        train(config_from_dict(raw))
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    assert [r["skipped"] for r in rows][-3:] == [1, 2, 3]
    assert rows[0]["skipped"] == 0  # the first update was finite (and blew the weights up)
    assert "update skipped" in capsys.readouterr().err


def test_missing_optional_logger_is_a_usage_error(corpus, tmp_path):
    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here")
    with pytest.raises(UsageError, match="pip install tensorboard"):
        train(config_from_dict(tiny_config(corpus, tmp_path / "run", tensorboard=True)))
    assert not (tmp_path / "run" / "training" / "training_metrics.csv").exists()

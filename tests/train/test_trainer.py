"""In-process training runs: artifacts, learning, final/ in transformers, refusals, divergence."""

from __future__ import annotations

import csv
import importlib.util
import json
import math

import pytest
import torch

from edulm.checkpoint import folders as checkpoint
from edulm.config import config_from_dict, load_config
from edulm.base.errors import UsageError
from edulm.base.layout import CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE
from edulm.base.metrics import CSV_COLUMNS, read_metrics
from edulm.train.trainer import TrainingDiverged, train

from train_helpers import synthetic_documents, tiny_config


@pytest.mark.compat
def test_tiny_run_learns_and_writes_the_run_dir(corpus, tmp_path):
    run_dir = tmp_path / "run"
    cfg = config_from_dict(tiny_config(corpus, run_dir, max_steps=30, lr=1e-2, warmup_steps=3))
    assert train(cfg, gpu_hourly_rate=2.0) == run_dir

    assert (run_dir / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-0000020", "step-0000030"]  # keep_last=2
    ckpt = run_dir / "checkpoints" / "step-0000030"
    assert checkpoint.verify(ckpt) is None  # complete: every file its manifest lists is intact
    assert (ckpt / MODEL_FILE).is_file() and (ckpt / CONFIG_FILE).is_file()  # what export and MODEL readers use

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
    assert summary["final_val_bpb"] == rows[-1]["val_bpb"]
    _assert_val_bpb_is_the_loss_over_the_scored_bytes(cfg, rows)
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


def _assert_val_bpb_is_the_loss_over_the_scored_bytes(cfg, rows):
    """val_bpb = val_loss x scored tokens / (ln 2 x scored bytes), the tokens and bytes counted here from the held-out batches."""
    from edulm.evaluate.bits_per_byte import scored_bytes, token_byte_lengths
    from edulm.data.loader import make_val_batches
    from edulm.model.loss import IGNORE_INDEX
    from edulm.tokenizer.loading import load_tokenizer

    batches = make_val_batches(cfg, cfg.train.micro_batch_size, cfg.train.eval_tokens)
    n_tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in batches)
    n_bytes = scored_bytes(token_byte_lengths(load_tokenizer(cfg.tokenizer.name)), batches)
    assert n_tokens == cfg.train.eval_tokens and n_bytes > n_tokens  # the synthetic words are several bytes a token
    evaluated = [r for r in rows if r["val_loss"] is not None]
    assert evaluated and all(r["val_bpb"] is not None for r in evaluated)
    assert all(r["val_bpb"] is None for r in rows if r["val_loss"] is None)
    for r in evaluated:
        assert r["val_bpb"] == pytest.approx(r["val_loss"] * n_tokens / (math.log(2) * n_bytes), rel=1e-12)


def _hf_model(run_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(run_dir / "final")


def test_an_existing_run_is_never_overwritten(corpus, tmp_path):
    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2, eval_interval=0, ckpt_interval=1)))
    # Export of final/ is not what this test is about; the checkpoint is.
    with pytest.raises(UsageError, match="--resume auto"):
        train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2)))


def test_a_source_too_small_to_hold_any_out_says_so_not_val_tokens_0(corpus, tmp_path, capsys):
    from edulm.data.prepare import prepare

    one_doc = tmp_path / "one.jsonl"  # one record: the 1-in-20 held-out draw takes none, though val_tokens is 4000
    one_doc.write_text(json.dumps({"text": " ".join(synthetic_documents(30))}) + "\n")
    raw = tiny_config(corpus, tmp_path / "run", max_steps=1, eval_interval=1, ckpt_interval=0)
    raw["data"].update(source=str(one_doc), shards_dir=str(tmp_path / "shards"))
    cfg = config_from_dict(raw)
    prepare(cfg)
    capsys.readouterr()
    train(cfg)
    err = capsys.readouterr().err
    assert "no held-out window of 33 tokens to evaluate on (data.val_tokens is 0, or the source had too few documents" in err


@pytest.mark.parametrize("rate", [-1.0, float("nan"), float("inf")])
def test_a_gpu_hourly_rate_that_is_no_price_is_refused_before_any_work(corpus, tmp_path, rate):
    with pytest.raises(UsageError, match="--gpu-hourly-rate must be a finite price of 0 or more"):
        train(config_from_dict(tiny_config(corpus, tmp_path / "run", max_steps=1)), gpu_hourly_rate=rate)
    assert not (tmp_path / "run").exists()


def test_a_warmup_as_long_as_the_run_is_warned_about(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(config_from_dict(tiny_config(corpus, run_dir, max_steps=2, warmup_steps=3, eval_interval=0, ckpt_interval=0)))
    err = capsys.readouterr().err
    assert "train.warmup_steps (3) is not below the run's 2 steps: the learning rate warms up for the whole run" in err
    rows = read_metrics(run_dir / "training" / "training_metrics.csv")
    assert rows[-1]["lr"] == pytest.approx(3e-3 * 2 / 3)  # what the warning is about: the peak is never reached


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


def test_config_yaml_keeps_what_was_asked_and_the_state_what_was_resolved(corpus, tmp_path):
    run_dir = tmp_path / "run"
    raw = tiny_config(corpus, run_dir, max_steps=2, micro_batch_size="auto", global_batch_size=8, eval_interval=0)
    train(config_from_dict(raw))
    asked = load_config(run_dir / "config.yaml").train
    assert (asked.micro_batch_size, asked.global_batch_size) == ("auto", 8)
    state = json.loads((run_dir / "checkpoints" / "step-0000002" / TRAINER_STATE_FILE).read_text())
    assert (state["micro_batch_size"], state["grad_accum_steps"], state["world_size"]) == (4, 2, 1)  # CPU: at most 4
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["batch"]["global_batch_size"] == 8 and summary["tokens_per_step"] == 8 * 32


def test_a_checkpoint_from_before_the_learning_rate_multipliers_resumes_exactly(corpus, tmp_path):
    ref = tmp_path / "ref"
    train(config_from_dict(tiny_config(corpus, ref, max_steps=6, ckpt_interval=3, keep_last=5, eval_interval=0)))
    old = ref / "checkpoints" / "step-0000003"
    # Make it what older versions wrote: optimizer groups without lr_scale (every other file is unchanged).
    tmp = checkpoint.begin(tmp_path / "old", 3)
    for f in old.iterdir():
        if f.name != "manifest.json":
            tmp.joinpath(f.name).write_bytes(f.read_bytes())
    state = torch.load(tmp / OPTIMIZER_FILE, weights_only=True)
    for group in state["param_groups"]:
        del group["lr_scale"]
    torch.save(state, tmp / OPTIMIZER_FILE)
    old = checkpoint.commit(tmp, 3)

    resumed = tmp_path / "resumed"
    train(config_from_dict(tiny_config(corpus, resumed, max_steps=6, ckpt_interval=3, eval_interval=0)), resume=str(old))
    want = {r["step"]: r["loss"] for r in read_metrics(ref / "training" / "training_metrics.csv")}
    got = {r["step"]: r["loss"] for r in read_metrics(resumed / "training" / "training_metrics.csv")}
    assert sorted(got) == [4, 5, 6] and all(got[s] == want[s] for s in got)


def test_a_finished_checkpoint_resumed_into_a_new_run_dir_exports_its_weights(corpus, tmp_path):
    """No step is left to train, so nothing is saved in the new run dir: final/ comes from the checkpoint resumed."""
    first = tmp_path / "first"
    train(config_from_dict(tiny_config(corpus, first)))
    last = checkpoint.find_latest_good(first)
    second = tmp_path / "second"
    train(config_from_dict(tiny_config(corpus, second)), resume=str(last))
    exported = json.loads((second / "final" / "edulm_export.json").read_text())
    assert exported["source"] == str(last)


def test_auto_micro_batch_without_a_global_batch_says_what_the_step_became(corpus, tmp_path, capsys):
    # On a CPU nothing is probed: 4 sequences per pass, and without train.global_batch_size the accumulation is
    # kept, so the batch per step follows; the run says so instead of silently training another batch.
    train(config_from_dict(tiny_config(corpus, tmp_path / "run", max_steps=1, micro_batch_size="auto",
                                       grad_accum_steps=3, eval_interval=0)))
    err = capsys.readouterr().err
    assert "train.micro_batch_size=auto found 4 on cpu and train.grad_accum_steps stays 3: 12 sequences per step" in err


def test_a_hand_written_config_is_told_which_reference_defaults_it_runs_with(corpus, tmp_path, capsys):
    raw = tiny_config(corpus, tmp_path / "run", max_steps=1, eval_interval=0)
    for key in ("micro_batch_size", "grad_accum_steps", "warmup_steps"):
        del raw["train"][key]
    train(config_from_dict(raw))
    err = capsys.readouterr().err
    assert ("the config does not set train.micro_batch_size=6, train.grad_accum_steps=43, train.warmup_steps=1000: "
            "the 135M reference run's defaults apply") in err

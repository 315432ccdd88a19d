"""Smoke runs of the benchmark scripts on CPU with a tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from edulm.errors import UsageError

BENCH = Path(__file__).resolve().parents[1] / "bench"
TINY = ["model.n_layers=1", "model.vocab_size=512", "model.d_model=64", "model.d_ff=128", "model.n_heads=2",
        "model.n_kv_heads=1"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_throughput_bench_compares_both_implementations_on_cpu(tmp_path, capsys):
    bench = _load("train_throughput")
    out = tmp_path / "results.json"
    argv = ["--config", "tiny", *TINY, "--micro-batches", "2", "--seq-len", "32", "--steps", "2", "--warmup", "1",
            "--no-compile", "--grad-ckpt", "both", "--device", "cpu", "--out", str(out)]
    assert bench.main(argv) == 0
    table = capsys.readouterr().out
    result = json.loads(out.read_text())
    cases = result["cases"]
    assert [(c["impl"], c["grad_ckpt"]) for c in cases] == [
        ("edulm", False), ("transformers", False), ("edulm", True), ("transformers", True)]
    for c in cases:
        assert c["error"] is None and c["tokens_per_s"] > 0 and len(c["step_times_s"]) == 2
        assert c["mfu"] is None  # a CPU is not in the peak table: reported as unknown, never guessed
        assert c["peak_mem_gib"] > 0
    # Same weights, same batch: the two implementations start from the same loss.
    assert cases[0]["first_loss"] == pytest.approx(cases[1]["first_loss"], rel=1e-5)
    assert "| edulm | 2 | off |" in table and "unknown" in table and "x |" in table
    assert result["header"]["peak bf16 TFLOPS"] == "unknown"


def test_throughput_bench_variants_and_bad_input(tmp_path):
    bench = _load("train_throughput")
    out = tmp_path / "results.md"
    argv = ["--config", "tiny", *TINY, "--micro-batches", "1", "--seq-len", "16", "--steps", "1", "--warmup", "0",
            "--no-compile", "--grad-ckpt", "off", "--device", "cpu", "--impl", "edulm",
            "--impl", "edulm train.fused_loss=false", "--out", str(out)]
    assert bench.main(argv) == 0
    text = out.read_text()
    assert "| edulm train.fused_loss=false | 1 | off |" in text
    with pytest.raises(UsageError, match="no such config file"):
        bench.main(["--config", str(tmp_path / "missing.yaml"), "--device", "cpu"])
    with pytest.raises(SystemExit):
        bench.main(["--impl", "pytorch"])


def test_memory_estimate_fits_and_extrapolates(tmp_path, capsys):
    estimate = _load("memory_estimate")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"vocab_size": 256, "n_layers": 4, "d_model": 32, "d_ff": 64,
                                                "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 512},
                                      "train": {"seq_len": 512}}))
    assert estimate.main(["--config", str(config), "--micro-batch", "16", "--precision", "fp32"]) == 0
    text = capsys.readouterr().out
    assert "estimated peak allocated" in text
    fit = next(line for line in text.splitlines() if line.startswith("- fit check"))
    predicted, measured = (float(part.split()[-2]) for part in fit.split(":")[1].split(","))
    assert predicted == pytest.approx(measured, rel=0.02)


def test_lm_head_bench_reports_all_three_paths(capsys):
    head = _load("lm_head_loss")
    assert head.main(["--tokens", "256", "--d-model", "16", "--vocab", "1024", "--chunk", "32", "--steps", "1",
                      "--device", "cpu"]) == 0
    lines = {line.split(":")[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(lines) == {"plain", "recompute", "fused"}
    largest = {name: float(line.split("largest tensor ")[1].split()[0]) for name, line in lines.items()}
    assert largest["fused"] < largest["plain"]  # one chunk of logits against all of them

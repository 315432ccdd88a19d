"""The model card: parses with huggingface_hub, every number comes from the run's files, gaps are stated."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edulm.cli import main
from edulm.config import Config, ModelConfig, save_config
from edulm.model.llama import count_parameters

SCORES = {  # invented scores for a fixture results file
    "arc_challenge": ("acc_norm", 0.29351, 0.01330),
    "arc_easy": ("acc_norm", 0.52146, 0.01025),
    "hellaswag": ("acc_norm", 0.36412, 0.00480),
    "lambada_openai": ("acc", 0.31729, 0.00648),
    "piqa": ("acc_norm", 0.64853, 0.01114),
    "winogrande": ("acc", 0.51302, 0.01405),
}

SUMMARY = {
    "run": "edu-tiny", "status": "completed", "flops_per_token": 123456, "steps": 1000, "total_steps": 1000,
    "tokens": 2_048_000_000, "tokens_per_step": 2_048_000,
    "batch": {"micro_batch_size": 8, "grad_accum_steps": 125, "world_size": 1, "seq_len": 2048},
    "skipped_steps": 0, "final_train_loss": 3.3012, "final_val_loss": 3.2468, "final_val_ppl": math.exp(3.2468),
    "mean_tokens_per_s": 45678.4, "mean_tokens_per_s_after_warmup": 47001.2, "mfu_after_warmup": 0.3712,
    "peak_memory_gb": 21.375, "device": {"type": "cuda", "name": "NVIDIA L20", "total_memory_gb": 44.53},
    "precision": "bf16 autocast", "wall_time_s": 43560.0, "wall_time_h": 12.1, "gpu_hours": 12.1,
    "gpu_hourly_rate": 0.9, "cost": 10.89, "formula": "cost = wall_time_s / 3600 x n_gpus x gpu_hourly_rate = 43560.0 / 3600 x 1 x 0.9 = 10.89",
}


def make_run(root: Path, with_summary: bool = True) -> tuple[Path, Config]:
    """A run directory with a real config and (optionally) a summary, a metrics CSV and plots."""
    cfg = Config()
    cfg.run.name = "edu-tiny"
    cfg.model = ModelConfig(vocab_size=320, n_layers=2, d_model=64, d_ff=160, n_heads=4, n_kv_heads=2, max_seq_len=64)
    cfg.train.seq_len = 64
    cfg.data.source = "hf://HuggingFaceFW/fineweb-edu/sample-10BT"
    run = root / "run"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    if with_summary:
        from edulm.metrics import MetricsCSV
        from edulm.plots import plot_training

        (run / "training").mkdir()
        (run / "training" / "training_summary.json").write_text(json.dumps({**SUMMARY, "parameters": count_parameters(cfg.model)}))
        csv = MetricsCSV(run / "training" / "training_metrics.csv")
        for step in range(10, 101, 10):
            csv.write({"step": step, "loss": 6.0 - step / 50, "lr": 1e-3, "tokens_per_s": 1000.0,
                       "val_loss": 4.5 if step == 100 else None})
        csv.close()
        plot_training(run / "training" / "training_metrics.csv", run / "training")
    return run, cfg


def results_file(path: Path) -> Path:
    """An ``edulm eval`` results file (the format the harness module writes) with the scores above."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "format": "edulm-eval-results",
        "model": {"name": "edu-tiny", "parameters": 119104},
        "harness": {"name": "lm-evaluation-harness", "version": "0.4.13"},
        "protocol": {"tasks": list(SCORES), "num_fewshot": 0, "seeds": {"random_seed": 0, "numpy_random_seed": 1234,
                     "torch_random_seed": 1234, "fewshot_random_seed": 1234}, "limit": None},
        "runtime": {"device": "cuda", "device_name": "NVIDIA L20", "dtype": "bfloat16", "batch_size": "auto", "batch_size_resolved": [64]},
        "scores": {t: {"metric": m, "value": v, "stderr": e} for t, (m, v, e) in SCORES.items()},
    }))
    return path


def comparison_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    scores = {"edu-tiny": {t: v for t, (_, v, _) in SCORES.items()},
              "gpt2": {t: v - 0.01 if t != "piqa" else v + 0.02 for t, (_, v, _) in SCORES.items()}}
    (path / "comparison.json").write_text(json.dumps({
        "candidate": {"name": "edu-tiny", "training_tokens": SUMMARY["tokens"]},
        "tasks": list(SCORES), "metrics": {t: m for t, (m, _, _) in SCORES.items()}, "scores": scores,
        "baselines": [{"name": "gpt2", "wins": 5, "ties": 0, "losses": 1, "tasks": 6, "win_rate": 5 / 6}],
        "overall": {"wins": 5, "ties": 0, "losses": 1, "comparisons": 6, "win_rate": 5 / 6},
        "budgets": [{"model": "edu-tiny", "tokens": SUMMARY["tokens"], "note": "", "source": "training summary"},
                    {"model": "facebook/opt-125m", "tokens": 300_000_000_000, "note": "", "source": "OPT paper"},
                    {"model": "gpt2", "tokens": None, "note": "WebText, 40 GB of text", "source": "GPT-2 paper"}],
    }))
    return path


def contamination_report(root: Path) -> Path:
    """A real report from edulm contamination on tiny files."""
    from edulm.contamination import audit

    from edulm.sample_text import write_sample

    train = write_sample(root / "sample.jsonl", [{"text": "the quick brown fox jumps over the lazy dog again and again all day long"}],
                         {"from": "source", "total_documents": 4})
    bench = root / "bench.jsonl"
    bench.write_text("".join(json.dumps({"text": t}) + "\n" for t in [
        "we saw the quick brown fox jumps over the lazy dog again and again all day long today",
        "a completely different sentence that shares nothing with the training text at all here",
    ]))
    audit(str(train), root / "contamination", benchmark_files=[f"tiny_bench={bench}"])
    return root / "contamination" / "contamination.json"


def load_card(path: Path):
    from huggingface_hub import ModelCard

    return ModelCard.load(path)


def test_full_card_numbers_come_from_the_run(tmp_path, capsys):
    run, cfg = make_run(tmp_path)
    results = results_file(tmp_path / "eval.json")
    comparison = comparison_dir(tmp_path / "comparison")
    contamination = contamination_report(tmp_path)
    out = run / "final" / "README.md"
    code = main(["card", str(run), "--out", str(out), "--eval", str(results), "--comparison", str(comparison),
                 "--contamination", str(contamination)])
    assert code == 0, capsys.readouterr().err

    card = load_card(out)
    data = card.data
    assert data.license == "apache-2.0" and data.library_name == "transformers"
    assert data.pipeline_tag == "text-generation" and data.datasets == ["HuggingFaceFW/fineweb-edu"]
    assert data.model_name == "edu-tiny"
    by_task = {r.metric_name.split(" ")[0]: r for r in data.eval_results}
    assert set(by_task) == set(SCORES)
    for task, (metric, value, _) in SCORES.items():
        assert by_task[task].metric_type == metric and by_task[task].metric_value == value
    assert by_task["arc_challenge"].dataset_type == "allenai/ai2_arc" and by_task["arc_challenge"].dataset_config == "ARC-Challenge"

    text = card.text
    params = count_parameters(cfg.model)
    assert f"{params:,}-parameter" in text and f"| Parameters | {params:,} |" in text
    assert "2,048,000,000 (2.0B)" in text
    assert "45,678 tokens/s" in text and "47,001 tokens/s" in text and "37.1%" in text
    assert "21.38 GiB" in text and "1 × NVIDIA L20 (44.5 GiB each)" in text
    assert "| GPU-hours | 12.10 |" in text and "10.89 at 0.9 per GPU-hour" in text and SUMMARY["formula"] in text
    assert f"Final validation loss **3.2468** (perplexity **{math.exp(3.2468):.2f}**)" in text
    assert "| arc_challenge | acc_norm | 0.2935 ± 0.0133 |" in text
    assert "lm-evaluation-harness 0.4.13, 0-shot" in text and "bfloat16 on NVIDIA L20, batch size 64" in text
    assert "| gpt2 | 5/6 | 0 | 83% |" in text
    assert "| facebook/opt-125m | 300,000,000,000 (300.0B) |  | OPT paper |" in text
    assert "| gpt2 | unknown | WebText, 40 GB of text | GPT-2 paper |" in text
    assert "Overall: 5 wins and 0 ties in 6 task comparisons, a win rate of 83%." in text
    assert "| tiny_bench | 1 / 2 | 50.00% | 0 |" in text
    assert "A sample of 1 training document (15 words) out of 4 (25.00%) was checked" in text
    assert "![training curves](training_curves.png)" in text
    assert (out.parent / "training_curves.png").is_file() and (out.parent / "loss_curve_zoom.png").is_file()
    assert "not recorded" not in text.lower() and "not run" not in text.lower()


def test_missing_artifacts_are_stated_not_invented(tmp_path, capsys):
    run, cfg = make_run(tmp_path, with_summary=False)
    out = tmp_path / "README.md"
    assert main(["card", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "evaluation        not available" in printed
    card = load_card(out)
    assert card.data.eval_results is None and card.data.license == "apache-2.0"
    text = card.text
    assert "Not run: no lm-evaluation-harness results" in text
    assert "Not run: no n-gram overlap audit" in text
    assert "Not run: no comparison was given" in text
    assert "Not recorded: the run has no `training/training_summary.json`" in text
    assert "Not recorded: the run logged no validation loss." in text
    assert f"{count_parameters(cfg.model):,}-parameter" in text  # computed from the run's config


def test_default_artifact_locations_and_csv_validation(tmp_path, capsys):
    run, _ = make_run(tmp_path)
    summary = json.loads((run / "training" / "training_summary.json").read_text())
    summary.pop("final_val_loss"), summary.pop("final_val_ppl")
    (run / "training" / "training_summary.json").write_text(json.dumps(summary))
    results_file(run / "eval" / "results.json")
    out = tmp_path / "card" / "README.md"
    assert main(["card", str(run), "--out", str(out), "--model-name", "my-model"]) == 0
    card = load_card(out)
    assert card.data.model_name == "my-model" and len(card.data.eval_results) == len(SCORES)
    assert f"Final validation loss **4.5000** (perplexity **{math.exp(4.5):.2f}**) on the held-out split (metrics CSV, step 100)" in card.text


@pytest.mark.parametrize("argv, message", [
    (["card", "MISSING", "--out", "README.md"], "no such run directory"),
    (["card", "RUN", "--out", "README.md", "--eval", "MISSING"], "no such eval results file"),
    (["card", "EMPTY", "--out", "README.md"], "has no config.yaml"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    run, _ = make_run(tmp_path, with_summary=False)
    (tmp_path / "empty").mkdir()
    values = {"MISSING": str(tmp_path / "missing"), "RUN": str(run), "EMPTY": str(tmp_path / "empty"), "README.md": str(tmp_path / "README.md")}
    code = main([values.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "README.md").exists()

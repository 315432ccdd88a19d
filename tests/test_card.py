"""The model card: parses with huggingface_hub, every number comes from the run's files, gaps are stated."""

from __future__ import annotations

import json
import math
import random
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
    "batch": {"micro_batch_size": 8, "grad_accum_steps": 125, "world_size": 1, "seq_len": 2048, "global_batch_size": 1000},
    "optimizer": "adamw", "optimizer_description": "AdamW, weight decay 0.1 on 210 matrices",
    "schedule": "cosine", "schedule_description": "cosine decay to 0.1 × peak",
    "data": {"shards_dir": "data/shards", "held_out": {"requested_tokens": 1_000_000, "tokens": 1_000_417, "documents": 893,
                                                       "short": False}, "mixture": None},
    "skipped_steps": 0, "final_train_loss": 3.3012, "final_val_loss": 3.2468, "final_val_ppl": math.exp(3.2468),
    "final_val_bpb": 1.0934,
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
        from edulm.base.metrics import MetricsCSV
        from edulm.train.plots import plot_training

        (run / "training").mkdir()
        (run / "training" / "training_summary.json").write_text(json.dumps({**SUMMARY, "parameters": count_parameters(cfg.model)}))
        csv = MetricsCSV(run / "training" / "training_metrics.csv")
        for step in range(10, 101, 10):
            csv.write({"step": step, "loss": 6.0 - step / 50, "lr": 1e-3, "tokens_per_s": 1000.0,
                       "val_loss": 4.5 if step == 100 else None, "val_ppl": math.exp(4.5) if step == 100 else None})
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
        "stderr": {"edu-tiny": {t: e for t, (_, _, e) in SCORES.items()}, "gpt2": {t: 0.01 for t in SCORES}},
        "baselines": [{"name": "gpt2", "wins": 5, "clear_wins": 1, "ties": 0, "losses": 1, "tasks": 6, "win_rate": 5 / 6,
                       "won_tasks": [t for t in SCORES if t != "piqa"], "clear_won_tasks": ["hellaswag"]}],
        "overall": {"wins": 5, "clear_wins": 1, "ties": 0, "losses": 1, "comparisons": 6, "win_rate": 5 / 6},
        "bits_per_byte": {"text": "held_out.txt", "bytes": 5000, "seq_len": 1024,
                          "models": {"edu-tiny": {"bits_per_byte": 1.2345, "tokens": 1200, "loss": 3.0, "seq_len": 64},
                                     "gpt2": {"error": "could not load gpt2"}}},
        "budgets": [{"model": "edu-tiny", "tokens": SUMMARY["tokens"], "note": "", "source": "training summary"},
                    {"model": "facebook/opt-125m", "tokens": 300_000_000_000, "note": "", "source": "OPT paper"},
                    {"model": "gpt2", "tokens": None, "note": "WebText, 40 GB of text", "source": "GPT-2 paper"}],
    }))
    return path


def contamination_report(root: Path) -> Path:
    """A real report from edulm contamination on tiny files."""
    from edulm.release.contamination import audit

    from edulm.release.sample_text import write_sample

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


@pytest.mark.compat
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
    assert "2,048,000,000 (2.05B)" in text
    assert "held out for validation: 1,000,417 tokens in 893 documents)" in text  # as prepared, not as asked
    assert "| Batch | 8 sequences × 125 accumulation steps × 1 process(es) = 1,000 sequences, 2,048,000 tokens per step |" in text
    assert ("| Optimizer | AdamW, weight decay 0.1 on 210 matrices (AdamW β1 0.9, β2 0.95, ε 1e-08), gradient clipping 1.0 |"
            in text)  # the optimizer's own words, as the run recorded them
    assert "cosine decay to 0.1 × peak" in text
    assert "45,678 tokens/s" in text and "47,001 tokens/s" in text and "37.1%" in text
    assert "21.38 GiB" in text and "1 × NVIDIA L20 (44.5 GiB each)" in text
    assert "| GPU-hours | 12.10 |" in text and "10.89 at 0.9 per GPU-hour" in text and SUMMARY["formula"] in text
    assert f"Final validation loss **3.2468** (perplexity **{math.exp(3.2468):.2f}**, **1.0934** bits per byte)" in text
    assert "| arc_challenge | **acc_norm** | 0.2935 ± 0.0133 | – | not audited |" in text  # audited: tiny_bench only
    assert "lm-evaluation-harness 0.4.13, 0-shot" in text and "bfloat16 on NVIDIA L20, batch size 64" in text
    assert "| gpt2 | 5/6 | 1 | 0 | 83% | arc_challenge, arc_easy, hellaswag*, lambada_openai, winogrande |" in text
    assert "| arc_easy | acc_norm | 0.5215 ± 0.0103 | 0.5115 ± 0.0100 |" in text  # every score with its error
    assert "| edu-tiny | 1.2345 | 1,200 |" in text and "| gpt2 | not scored |" in text  # bits per byte
    assert "| facebook/opt-125m | 300,000,000,000 (300B) |  | OPT paper |" in text
    assert "| gpt2 | unknown | WebText, 40 GB of text | GPT-2 paper |" in text
    assert "Overall: 5 wins (1 clear) and 0 ties in 6 task comparisons, a win rate of 83%." in text
    assert "| tiny_bench | 1 / 2 | 50.00% | 0 | 0 |" in text
    assert "A sample of 1 training document (15 words) out of 4 (25.00%) was checked" in text
    assert "![training curves](training_curves.png)" in text
    assert (out.parent / "training_curves.png").is_file() and (out.parent / "loss_curve_zoom.png").is_file()
    assert "not recorded" not in text.lower() and "not run" not in text.lower()


def test_cost_without_a_price_is_one_code_span_then_the_advice(tmp_path, capsys):
    run, _ = make_run(tmp_path)
    summary_path = run / "training" / "training_summary.json"
    summary = json.loads(summary_path.read_text())
    summary.update(cost=None, gpu_hourly_rate=None, formula=None)
    summary_path.write_text(json.dumps(summary))
    out = tmp_path / "README.md"
    assert main(["card", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    line = next(x for x in load_card(out).text.splitlines() if x.startswith("Cost formula:"))
    assert line == ("Cost formula: `cost = wall_time_s / 3600 × n_gpus × price per GPU-hour` "
                    "(pass `--gpu-hourly-rate` to `edulm train`).")  # code spans do not nest


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
    results_file(run / "release" / "eval" / "results.json")  # where `edulm release` writes it
    out = tmp_path / "card" / "README.md"
    assert main(["card", str(run), "--out", str(out), "--model-name", "my-model"]) == 0
    card = load_card(out)
    assert card.data.model_name == "my-model" and len(card.data.eval_results) == len(SCORES)
    assert f"Final validation loss **4.5000** (perplexity **{math.exp(4.5):.2f}**) on the held-out split (metrics CSV, step 100)" in card.text


@pytest.mark.parametrize("argv, message", [
    (["card", "MISSING", "--out", "README.md"], "no such run directory"),
    (["card", "RUN", "--out", "README.md", "--eval", "MISSING"], "no such eval results file"),
    (["card", "EMPTY", "--out", "README.md"], "has no config.yaml"),
    (["card", "RUN", "--out", "CONFIG_JSON"], "the file must end in .md"),  # never overwrites what it names
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    run, _ = make_run(tmp_path, with_summary=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "config.json").write_text("{}")
    values = {"MISSING": str(tmp_path / "missing"), "RUN": str(run), "EMPTY": str(tmp_path / "empty"), "README.md": str(tmp_path / "README.md"),
              "CONFIG_JSON": str(tmp_path / "config.json")}
    code = main([values.get(a, a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "README.md").exists()
    assert (tmp_path / "config.json").read_text() == "{}"


_WORDS = ("river kettle lamp orchard violin harbour meadow ladder comet pepper glacier lantern pebble falcon tunnel "
          "saddle walnut cobalt thistle beacon").split()
QUIZ = [" ".join(random.Random(seed).sample(_WORDS, 14)) + f" {seed}?" for seed in range(13)]
"""Invented benchmark documents of 15 words (shuffles of 14 words, so no two share a 13-gram)."""


def audited_results(root: Path) -> tuple[Path, Path]:
    """An eval results file for two tasks with per-example samples (as lm-eval logs them), and a real audit that
    flags quiz_a documents 0-3 (the ones the model got right) and every quiz_b document."""
    from lm_eval.api.metrics import mean_stderr

    from edulm.release.contamination import audit
    from edulm.release.sample_text import write_sample

    correct = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]  # quiz_a: 6 of 10 right; the 4 flagged are all right
    right_b = [1, 0, 1]
    (root / "eval").mkdir(parents=True)
    results = root / "eval" / "results.json"
    samples = {"quiz_a": [{"doc_id": d, "filter": "none", "acc": float(c), "acc_norm": float(c)} for d, c in enumerate(correct)],
               "quiz_b": [{"doc_id": d, "filter": "none", "acc": float(c)} for d, c in enumerate(right_b)]}
    for task, rows in samples.items():
        (root / "eval" / f"results_samples_{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = [float(c) for c in correct], [float(c) for c in right_b]
    results.write_text(json.dumps({
        "format": "edulm-eval-results",
        "model": {"name": "edu-tiny"},
        "protocol": {"num_fewshot": 0, "limit": None},
        "scores": {"quiz_a": {"metric": "acc_norm", "value": 0.6, "stderr": mean_stderr(a)},
                   "quiz_b": {"metric": "acc", "value": 2 / 3, "stderr": mean_stderr(b)}},
        "results": {"quiz_a": {"acc,none": 0.6, "acc_stderr,none": mean_stderr(a), "acc_norm,none": 0.6,
                               "acc_norm_stderr,none": mean_stderr(a)},
                    "quiz_b": {"acc,none": 2 / 3, "acc_stderr,none": mean_stderr(b)}},
        "samples_files": {task: f"results_samples_{task}.jsonl" for task in samples},
    }))
    bench_a, bench_b = root / "quiz_a.jsonl", root / "quiz_b.jsonl"
    bench_a.write_text("".join(json.dumps({"text": t}) + "\n" for t in QUIZ[:10]))
    bench_b.write_text("".join(json.dumps({"text": t}) + "\n" for t in QUIZ[10:]))
    sample = write_sample(root / "sample.jsonl", [{"text": t} for t in QUIZ[:4] + QUIZ[10:]],
                          {"from": "source", "total_documents": 7})
    audit(str(sample), root / "contamination", benchmark_files=[f"quiz_a={bench_a}", f"quiz_b={bench_b}"])
    return results, root / "contamination" / "contamination.json"


def test_contaminated_tasks_are_marked_and_clean_scores_shown(tmp_path, capsys):
    from lm_eval.api.metrics import mean_stderr

    run, _ = make_run(tmp_path)
    results, report = audited_results(tmp_path / "artifacts")
    out = run / "final" / "README.md"
    code = main(["card", str(run), "--out", str(out), "--eval", str(results), "--contamination", str(report)])
    assert code == 0, capsys.readouterr().err
    card = load_card(out)
    names = {r.metric_name for r in card.data.eval_results}
    assert "quiz_a (acc_norm, 0-shot; contaminated: 4 of 10 documents found in the training text)" in names
    assert "quiz_b (acc, 0-shot; contaminated: 3 of 3 documents found in the training text)" in names
    text = card.text
    full_se = mean_stderr([1.0] * 6 + [0.0] * 4)
    clean_se = mean_stderr([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    assert f"| quiz_a ⚠ | **acc_norm** | 0.6000 ± {full_se:.4f} | 0.3333 ± {clean_se:.4f} | 4 of 10 |" in text
    assert f"|  | acc | 0.6000 ± {full_se:.4f} | 0.3333 ± {clean_se:.4f} |  |" in text  # acc beside acc_norm
    assert "| quiz_b ⚠ | **acc** |" in text and "| no clean documents | 3 of 3 |" in text
    assert (f"differs from the full score by more than its standard error on quiz_a (acc_norm 0.6000 on all 10 "
            f"documents, 0.3333 on the 6 clean ones; standard error {full_se:.4f})") in text
    assert "Every scored document of quiz_b was found in the training text" in text


def test_the_recipe_is_what_the_run_used_mixture_optimizer_schedule_held_out(tmp_path, capsys):
    """A mixture run with another optimizer and schedule whose held-out split came out short: the card
    says what the summary recorded, never a hard-coded AdamW / cosine or the configured val_tokens."""
    import yaml

    run, _ = make_run(tmp_path)
    config = yaml.safe_load((run / "config.yaml").read_text())
    sources = [{"source": "hf://HuggingFaceFW/fineweb-edu/sample-10BT", "weight": 0.7, "text_field": "", "pattern": ""},
               {"source": "hf://mlfoundations/dclm-baseline-1.0", "weight": 0.3, "text_field": "", "pattern": ""}]
    config["data"].update(source=sources, val_tokens=10_000)
    config["train"].update(optimizer="muon", schedule="wsd", decay_fraction=0.2)  # values of later optimizers and schedules
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    summary = json.loads((run / "training" / "training_summary.json").read_text())
    summary.update(
        optimizer="muon", optimizer_description="Muon on 14 matrices (lr 0.02); Adam on 6 tensors", schedule="wsd",
        schedule_description="constant, then decay to 0.1 × peak over the last 0.2 of the steps (warmup-stable-decay)",
        batch={"micro_batch_size": 8, "grad_accum_steps": 6, "world_size": 2, "seq_len": 2048, "global_batch_size": 96},
        tokens_per_step=96 * 2048, tokens=1000 * 96 * 2048,
        data={"shards_dir": "data/shards", "held_out": {"requested_tokens": 10_000, "tokens": 6_391, "documents": 3, "short": True},
              "mixture": [{"folder": "00-fineweb-edu-sample-10BT", "source": sources[0]["source"], "weight": 0.7, "target_share": 0.7,
                           "prepared_tokens": 500_000_000, "windows": 66_912, "tokens": 137_035_776, "share": 0.697, "epochs": 0.274},
                          {"folder": "01-mlfoundations-dclm-baseline-1.0", "source": sources[1]["source"], "weight": 0.3,
                           "target_share": 0.3, "prepared_tokens": 20_000_000, "windows": 29_088, "tokens": 59_572_224,
                           "share": 0.303, "epochs": 2.98}]},
    )
    (run / "training" / "training_summary.json").write_text(json.dumps(summary))
    out = tmp_path / "README.md"
    assert main(["card", str(run), "--out", str(out)]) == 0, capsys.readouterr().err
    card = load_card(out)
    text = card.text
    assert card.data.datasets == ["HuggingFaceFW/fineweb-edu", "mlfoundations/dclm-baseline-1.0"]
    assert "tokens of a mixture of 2 sources with edulm" in text
    assert "held out for validation: 6,391 tokens in 3 documents, fewer than the 10,000 asked" in text
    assert "| Optimizer | Muon on 14 matrices (lr 0.02); Adam on 6 tensors (AdamW β1 0.9, β2 0.95, ε 1e-08), gradient clipping 1.0 |" in text
    assert "cosine" not in text  # nothing of the reference defaults
    assert "decay to 0.1 × peak over the last 0.2 of the steps (warmup-stable-decay)" in text
    assert "| Batch | 8 sequences × 6 accumulation steps × 2 process(es) = 96 sequences, 196,608 tokens per step |" in text
    assert "| `hf://HuggingFaceFW/fineweb-edu/sample-10BT` | 0.7 (70.0%) | 137,035,776 (137M) | 69.7% | 0.27 |" in text
    assert "| `hf://mlfoundations/dclm-baseline-1.0` | 0.3 (30.0%) | 59,572,224 (59.6M) | 30.3% | 2.98 |" in text


@pytest.mark.parametrize("damage", [
    {"baselines": "gpt2"}, {"overall": [1]}, {"scores": {"gpt2": [0.5]}}, {"scores": {"gpt2": {"piqa": "high"}}},
    {"baselines": [{"name": "gpt2", "won_tasks": "piqa"}]}, {"bits_per_byte": {"models": {"gpt2": {"bits_per_byte": "1"}}}},
])
def test_a_comparison_of_the_wrong_shape_is_one_line(tmp_path, capsys, damage):
    """A comparison.json whose parts are of the wrong shape: one line naming it and what to run, nothing written."""
    run, _ = make_run(tmp_path)
    results = results_file(tmp_path / "eval.json")
    comparison = comparison_dir(tmp_path / "comparison")
    doc = json.loads((comparison / "comparison.json").read_text())
    (comparison / "comparison.json").write_text(json.dumps({**doc, **damage}))
    out = tmp_path / "card" / "README.md"
    code = main(["card", str(run), "--out", str(out), "--eval", str(results), "--comparison", str(comparison)])
    err = capsys.readouterr().err
    assert code == 2 and "damaged comparison file" in err and "run 'edulm compare' again" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_the_card_says_what_was_scored_and_what_the_model_was_trained_on():
    from edulm.release.card_evaluation import protocol_sentence
    from edulm.release.card_inputs import CardInputs
    from edulm.release.card_sections import intended_use_and_limitations

    results = {"protocol": {"limit": 20, "num_fewshot": 0},
               "scores": {"tiny_quiz": {"n_samples": 8}, "tiny_cloze": {"n_samples": 8}}}
    assert "Only 8 examples per task were scored (--limit 20)" in protocol_sentence(results)
    results["scores"]["tiny_cloze"]["n_samples"] = 20
    assert "Only 8 to 20 examples per task were scored (--limit 20)" in protocol_sentence(results)
    inputs = CardInputs.__new__(CardInputs)
    inputs.parameters, inputs.config = 1000, {"data": {"source": "builtin:sample"}}
    text = "\n".join(intended_use_and_limitations(inputs))
    assert "It reflects its training data (`builtin:sample`)" in text and "web" not in text

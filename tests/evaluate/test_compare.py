"""`edulm compare`: win rates (strict wins, clear wins, ties shown), error bars, averages, budgets, bits per byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edulm.cli import main
from edulm.base.errors import UsageError
from edulm.evaluate.budgets import TRAINING_TOKENS, format_tokens, load_budgets, lookup, parse_tokens

METRICS = {"arc_easy": "acc_norm", "piqa": "acc_norm", "lambada_openai": "acc", "winogrande": "acc"}


def results_file(path: Path, name: str, scores: dict[str, float], parameters: int, tokens: int | None = None,
                 limit=None, stderr: float = 0.01, model_path: str | None = None) -> Path:
    """A results file in the format `edulm eval` writes, with the given protocol-metric scores; tasks scored by
    acc_norm also report acc (0.05 lower) in lm-eval's results block."""
    results = {}
    for t, v in scores.items():
        row = {f"{METRICS[t]},none": v, f"{METRICS[t]}_stderr,none": stderr}
        if METRICS[t] == "acc_norm":
            row.update({"acc,none": v - 0.05, "acc_stderr,none": stderr * 2})
        results[t] = row
    doc = {
        "format": "edulm-eval-results",
        "format_version": 1,
        "model": {"name": name, "parameters": parameters, "training_tokens": tokens, "path": model_path},
        "protocol": {"tasks": list(scores), "num_fewshot": 0, "limit": limit,
                     "reference_metrics": {t: METRICS[t] for t in scores}},
        "scores": {t: {"metric": METRICS[t], "value": v, "stderr": stderr, "higher_is_better": True} for t, v in scores.items()},
        "results": results,
    }
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def fixture_results(tmp_path):
    base = tmp_path / "baselines"
    base.mkdir()
    cand = results_file(tmp_path / "candidate.json", "l20-edu-135m",
                        {"arc_easy": 0.60, "piqa": 0.65, "lambada_openai": 0.40, "winogrande": 0.52}, 134_515_008)
    # gpt2: the candidate wins 3 tasks and ties winogrande.
    results_file(base / "gpt2.json", "gpt2",
                 {"arc_easy": 0.44, "piqa": 0.63, "lambada_openai": 0.33, "winogrande": 0.52}, 124_439_808)
    # SmolLM2: the candidate wins only arc_easy.
    results_file(base / "HuggingFaceTB__SmolLM2-135M.json", "HuggingFaceTB/SmolLM2-135M",
                 {"arc_easy": 0.59, "piqa": 0.68, "lambada_openai": 0.43, "winogrande": 0.53}, 134_515_008)
    # Samples files and unrelated JSON in the folder are ignored.
    (base / "gpt2_samples_piqa.jsonl").write_text("{}\n")
    (base / "notes.json").write_text(json.dumps({"hello": 1}))
    return cand, base


def test_win_rates_ties_and_budgets(fixture_results, tmp_path, capsys):
    cand, base = fixture_results
    out = tmp_path / "cmp"
    assert main(["compare", str(cand), str(base), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "overall: 4/8 (50.0%); 3 beyond the combined standard error" in printed.out
    assert "skipping notes.json" in printed.err

    doc = json.loads((out / "comparison.json").read_text())
    rows = {r["name"]: r for r in doc["baselines"]}
    assert rows["gpt2"]["wins"] == 3 and rows["gpt2"]["ties"] == 1 and rows["gpt2"]["losses"] == 0
    assert rows["gpt2"]["tied_tasks"] == ["winogrande"] and rows["gpt2"]["win_rate"] == pytest.approx(0.75)
    # Every gpt2 margin (0.16, 0.02, 0.07) exceeds the combined standard error sqrt(0.01² + 0.01²) = 0.0141.
    assert rows["gpt2"]["clear_wins"] == 3 and rows["gpt2"]["clear_won_tasks"] == ["arc_easy", "piqa", "lambada_openai"]
    smol = rows["HuggingFaceTB/SmolLM2-135M"]
    assert (smol["wins"], smol["ties"], smol["losses"], smol["tasks"]) == (1, 0, 3, 4)
    assert smol["won_tasks"] == ["arc_easy"] and smol["win_rate"] == pytest.approx(0.25)
    assert smol["clear_wins"] == 0  # 0.60 against 0.59: a win, but within the noise
    assert doc["overall"] == {"wins": 4, "clear_wins": 3, "ties": 1, "losses": 3, "comparisons": 8, "win_rate": 0.5,
                              "baselines_beaten": 1}
    assert doc["stderr"]["gpt2"]["piqa"] == 0.01
    assert doc["metric_table"]["metrics"] == {"arc_easy": ["acc_norm", "acc"], "piqa": ["acc_norm", "acc"],
                                              "lambada_openai": ["acc"], "winogrande": ["acc"]}
    assert doc["metric_table"]["values"]["gpt2"]["arc_easy"]["acc"] == [pytest.approx(0.39), 0.02]
    assert doc["averages"]["l20-edu-135m"] == pytest.approx((0.60 + 0.65 + 0.40 + 0.52) / 4)
    assert doc["metrics"] == METRICS

    budgets = {b["model"]: b for b in doc["budgets"]}
    assert budgets["l20-edu-135m"]["tokens"] == 10_000_000_000
    assert budgets["HuggingFaceTB/SmolLM2-135M"]["tokens"] == 2_000_000_000_000
    assert budgets["gpt2"]["tokens"] is None and budgets["gpt2"]["tokens_text"] == "not reported"

    md = (out / "comparison.md").read_text()
    assert "| gpt2 | 3 / 4 | 75.0% | 3 | 1 | 0 | arc_easy*, piqa*, lambada_openai* | winogrande |" in md
    assert "| HuggingFaceTB/SmolLM2-135M | 1 / 4 | 25.0% | 0 | 0 | 3 | arc_easy | – |" in md
    assert "| **all baselines** | 4 / 8 | 50.0% | 3 | 1 | 3 | | |" in md
    assert "wins 4 of 8 task comparisons against 2 baselines" in md
    # Scores with their errors; acc_norm (the protocol metric, bold) and acc side by side; best protocol score bold.
    assert "| arc_easy | **acc_norm** | **0.6000 ± 0.0100** | 0.5900 ± 0.0100 | 0.4400 ± 0.0100 |" in md
    assert "|  | acc | 0.5500 ± 0.0200 | 0.5400 ± 0.0200 | 0.3900 ± 0.0200 |" in md
    assert "| lambada_openai | **acc** | 0.4000 ± 0.0100 | **0.4300 ± 0.0100** | 0.3300 ± 0.0100 |" in md
    assert "It leads every baseline on arc_easy." in md
    assert "(up to 200x as many)" in md
    assert "| HuggingFaceTB/SmolLM2-135M | 2T" in md


def test_user_budgets_extend_the_table(fixture_results, tmp_path):
    cand, base = fixture_results
    (tmp_path / "budgets.yaml").write_text("l20-edu-135m: 5B\ngpt2: {tokens: 9.5e9, note: estimate, source: my notes}\n")
    out = tmp_path / "cmp"
    assert main(["compare", str(cand), str(base), "--out", str(out), "--budgets", str(tmp_path / "budgets.yaml")]) == 0
    budgets = {b["model"]: b for b in json.loads((out / "comparison.json").read_text())["budgets"]}
    assert budgets["l20-edu-135m"]["tokens"] == 5_000_000_000
    assert budgets["gpt2"]["tokens"] == 9_500_000_000 and budgets["gpt2"]["source"] == "my notes"


def test_limited_runs_are_flagged(tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    cand = results_file(tmp_path / "c.json", "cand", {"piqa": 0.6}, 10, limit=50)
    results_file(base / "gpt2.json", "gpt2", {"piqa": 0.6}, 10)
    assert main(["compare", str(cand), str(base), "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "comparison.json").read_text())
    assert doc["baselines"][0]["ties"] == 1 and doc["baselines"][0]["win_rate"] == 0.0
    assert any("limit" in w for w in doc["warnings"])


def test_plain_lm_eval_results_are_read(tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    cand = results_file(tmp_path / "c.json", "cand", {"piqa": 0.7}, 10)
    (base / "results_2024.json").write_text(json.dumps({
        "results": {"piqa": {"alias": "piqa", "acc,none": 0.6, "acc_norm,none": 0.62, "acc_norm_stderr,none": 0.01}},
        "higher_is_better": {"piqa": {"acc": True, "acc_norm": True}},
        "config": {"model_args": "pretrained=EleutherAI/pythia-160m,dtype=float32", "model_num_parameters": 162322944},
    }))
    assert main(["compare", str(cand), str(base), "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "comparison.json").read_text())
    assert doc["scores"]["EleutherAI/pythia-160m"]["piqa"] == 0.62
    assert doc["baselines"][0]["wins"] == 1
    assert {b["model"]: b["tokens"] for b in doc["budgets"]}["EleutherAI/pythia-160m"] == 299_892_736_000


@pytest.mark.parametrize("which", ["candidate", "dir", "empty-dir", "budgets"])
def test_bad_inputs_are_usage_errors(fixture_results, tmp_path, capsys, which):
    cand, base = fixture_results
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "bad.yaml").write_text("gpt2: lots\n")
    argv = {
        "candidate": [str(tmp_path / "nope.json"), str(base)],
        "dir": [str(cand), str(tmp_path / "nope")],
        "empty-dir": [str(cand), str(empty)],
        "budgets": [str(cand), str(base), "--budgets", str(tmp_path / "bad.yaml")],
    }[which]
    assert main(["compare", *argv, "--out", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_swapped_arguments_say_which_goes_first(fixture_results, tmp_path, capsys):
    cand, base = fixture_results
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err
    assert f"{base}: is a folder, not a results file" in err and "candidate's file first, then the baselines' folder" in err
    assert len(err.strip().splitlines()) == 1


def test_budget_table_helpers():
    assert parse_tokens("300B", "x") == 300_000_000_000 and parse_tokens("2.2e9", "x") == 2_200_000_000
    assert parse_tokens("2T", "x") == 2 * 10**12 and parse_tokens(None, "x") is None
    with pytest.raises(UsageError):
        parse_tokens("-", "x")
    assert format_tokens(2_220_933_120) == "2.22B" and format_tokens(10**10) == "10B"
    table = load_budgets(None)
    assert lookup(table, "facebook/opt-125m").tokens == 300_000_000_000
    assert lookup(table, "facebook__opt-125m").tokens == 300_000_000_000  # a baselines file name
    assert lookup(table, "SmolLM-135M") is TRAINING_TOKENS["HuggingFaceTB/SmolLM-135M"]
    assert lookup(table, "unknown-model") is None


def test_default_out_is_beside_the_eval_folder(tmp_path, capsys):
    base = tmp_path / "b"
    base.mkdir()
    (tmp_path / "release" / "eval").mkdir(parents=True)
    cand = results_file(tmp_path / "release" / "eval" / "results.json", "cand", {"piqa": 0.7}, 10)
    results_file(base / "gpt2.json", "gpt2", {"piqa": 0.6}, 10)
    assert main(["compare", str(cand), str(base)]) == 0
    assert (tmp_path / "release" / "comparison" / "comparison.json").is_file()  # where `edulm card` looks
    elsewhere = results_file(tmp_path / "cand.json", "cand", {"piqa": 0.7}, 10)
    capsys.readouterr()
    assert main(["compare", str(elsewhere), str(base)]) == 2
    assert "pass --out DIR" in capsys.readouterr().err


def test_bits_per_byte_of_every_model_on_one_text(tiny_hf_model, other_tiny_hf_model, tmp_path, capsys, monkeypatch):
    """--bpb-text scores each model as transformers would; a model that cannot be loaded is reported, not fatal."""
    from eval_helpers import transformers_loss

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = "The tide comes in twice a day because the Moon pulls on the oceans; the water bulges toward it. " * 6
    (tmp_path / "held_out.txt").write_text(text)
    base = tmp_path / "b"
    base.mkdir()
    cand = results_file(tmp_path / "c.json", "cand", {"piqa": 0.7}, 10, model_path=str(tiny_hf_model))
    results_file(base / "other.json", "other", {"piqa": 0.6}, 10, model_path=str(other_tiny_hf_model))
    results_file(base / "gone.json", "gone", {"piqa": 0.5}, 10, model_path="no-such-org/no-such-model")
    code = main(["compare", str(cand), str(base), "--out", str(tmp_path / "o"), "--bpb-text", str(tmp_path / "held_out.txt"),
                 "--bpb-seq-len", "64", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "o" / "comparison.json").read_text())
    scored = doc["bits_per_byte"]["models"]
    for name, folder in (("cand", tiny_hf_model), ("other", other_tiny_hf_model)):
        loss, tokens, bpb = transformers_loss(folder, text, seq_len=64)
        assert scored[name]["bits_per_byte"] == pytest.approx(bpb, rel=1e-5)
        assert scored[name]["loss"] == pytest.approx(loss, rel=1e-5) and scored[name]["tokens"] == tokens
    assert "error" in scored["gone"] and doc["bits_per_byte"]["bytes"] == len(text.encode())
    md = (tmp_path / "o" / "comparison.md").read_text()
    assert "## Bits per byte" in md and f"| cand | {scored['cand']['bits_per_byte']:.4f} |" in md


DAMAGE = {
    "scores-a-list": lambda doc: {**doc, "scores": [0.5]},
    "score-without-metric": lambda doc: {**doc, "scores": {"piqa": {"value": 0.5}}},
    "protocol-a-list": lambda doc: {**doc, "protocol": ["piqa"]},
    "model-a-string": lambda doc: {**doc, "model": "gpt2"},
    "samples-files-a-list": lambda doc: {**doc, "samples_files": ["x.jsonl"]},
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_results_of_the_wrong_shape_are_one_line_not_a_traceback(fixture_results, tmp_path, capsys, damage):
    """A candidate of the wrong shape stops compare with one line; a baseline of the wrong shape is skipped, as one cut short."""
    cand, base = fixture_results
    good = json.loads(cand.read_text())
    cand.write_text(json.dumps(DAMAGE[damage](good)))
    assert main(["compare", str(cand), str(base), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "damaged results file" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1

    cand.write_text(json.dumps(good))
    gpt2 = base / "gpt2.json"
    gpt2.write_text(json.dumps(DAMAGE[damage](json.loads(gpt2.read_text()))))
    assert main(["compare", str(cand), str(base), "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipping gpt2.json") == 1 and "damaged results file" in err and "Traceback" not in err
    assert [b["name"] for b in json.loads((tmp_path / "o" / "comparison.json").read_text())["baselines"]] == [
        "HuggingFaceTB/SmolLM2-135M"]

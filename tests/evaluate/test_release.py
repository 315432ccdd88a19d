"""`edulm release`: a tiny trained run to a complete model card offline, in one command that resumes."""

from __future__ import annotations

import json
import shutil

import pytest

from edulm.cli import main

STEPS = ("eval", "baselines", "sample-text", "contamination", "compare", "card")


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A copy of the session's tiny run, so the release writes into a run of its own."""
    return shutil.copytree(tiny_run, tmp_path / "tiny-edu")


def release_argv(run, tiny_hf_model, other_tiny_hf_model, local_tasks, *extra):
    return ["release", str(run), "--models", f"base-a={tiny_hf_model},base-b={other_tiny_hf_model}",
            "--tasks", "tiny_quiz,tiny_cloze", "--include-path", str(local_tasks), "--device", "cpu", "--docs", "20", *extra]


@pytest.mark.slow
def test_release_writes_a_complete_card_and_a_rerun_skips_finished_steps(
        run_copy, tiny_hf_model, other_tiny_hf_model, local_tasks, capsys):
    from huggingface_hub import ModelCard

    held_out = run_copy.parent / "held_out.txt"
    held_out.write_text("A lever lets a small force lift a heavy load when the pivot sits close to the load. " * 5)
    argv = release_argv(run_copy, tiny_hf_model, other_tiny_hf_model, local_tasks, "--bpb-text", str(held_out))
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    for i, step in enumerate(STEPS, 1):
        assert f"[{i}/6] {step}: running" in printed
    release = run_copy / "release"
    for line in ("eval results", "baselines", "training sample", "contamination", "comparison", "model card"):
        assert any(row.strip().startswith(line) and str(run_copy) in row for row in printed.splitlines()), line
    assert (release / "eval" / "results.json").is_file() and (release / "baselines" / "base-a.json").is_file()
    assert json.loads((release / "contamination" / "training_sample.jsonl.meta.json").read_text())["documents"] == 20

    card = ModelCard.load(run_copy / "final" / "README.md")
    assert {r.metric_name.split(" ")[0] for r in card.data.eval_results} == {"tiny_quiz", "tiny_cloze"}
    assert card.data.model_name == "tiny-edu"
    text = card.text
    assert "Not run" not in text  # evaluation, comparison and contamination are all there
    assert "float32 on cpu, batch size 8" in text  # the fixed CPU batch size, not lm-eval's search
    assert "Bits per byte on the same text" in text and "| base-b |" in text
    assert "| base-a |" in text and "| base-b |" in text and "Clean subset" in text
    assert "## Benchmark contamination" in text and "| tiny_quiz | 0 / 8 |" in text
    comparison = json.loads((release / "comparison" / "comparison.json").read_text())
    assert comparison["candidate"]["name"] == "tiny-edu" and len(comparison["baselines"]) == 2
    assert set(comparison["contamination"]["clean"]) == {"tiny-edu", "base-a", "base-b"}
    assert all(r["bits_per_byte"] > 0 for r in comparison["bits_per_byte"]["models"].values())

    # A rerun with nothing changed redoes nothing.
    stamps = {p: p.stat().st_mtime_ns for p in (release / "eval" / "results.json", run_copy / "final" / "README.md")}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for i, step in enumerate(STEPS, 1):
        if step != "baselines":
            assert f"[{i}/6] {step}: up to date, skipped" in printed
    assert printed.count("already done") == 2  # baselines skip each finished model themselves
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # A different sample size redoes the sample and what depends on it, not the evaluation.
    assert main(argv + ["--docs", "10"]) == 0  # the last --docs wins
    printed = capsys.readouterr().out
    assert "[1/6] eval: up to date, skipped" in printed
    for i, step in ((3, "sample-text"), (4, "contamination"), (5, "compare"), (6, "card")):
        assert f"[{i}/6] {step}: running" in printed
    assert json.loads((release / "contamination" / "training_sample.jsonl.meta.json").read_text())["documents"] == 10


def test_release_refuses_a_second_writer_and_bad_runs(run_copy, tmp_path, local_tasks, capsys):
    from edulm.base.lock import folder_lock

    base = ["--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--device", "cpu", "--models", "x=" + str(tmp_path)]
    with folder_lock(run_copy / "release", "edulm release"):
        code = main(["release", str(run_copy), *base])
    err = capsys.readouterr().err
    assert code == 2 and "is in use by edulm release" in err and len(err.strip().splitlines()) == 1
    # A run in training: its records and its weights are moving, so no card may pair them yet.
    with folder_lock(run_copy, "edulm train"):
        code = main(["release", str(run_copy), *base])
    err = capsys.readouterr().err
    assert code == 2 and f"{run_copy} is in use by edulm train" in err and len(err.strip().splitlines()) == 1

    (tmp_path / "not-a-run").mkdir()
    assert main(["release", str(tmp_path / "not-a-run"), *base]) == 2
    assert "not a run directory" in capsys.readouterr().err
    shutil.rmtree(run_copy / "final")
    assert main(["release", str(run_copy), *base]) == 2
    assert "has no final/ model folder" in capsys.readouterr().err
    assert not (run_copy / "release").exists()


def test_a_failing_step_is_reported_the_rest_still_run(run_copy, tiny_hf_model, local_tasks, capsys, monkeypatch):
    """A baseline that cannot be loaded: the card is still written, the command exits 2 with one line, and a rerun
    retries only what failed (and what depends on it)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["release", str(run_copy), "--models", f"ok={tiny_hf_model},no-such-org/no-such-model", "--tasks", "tiny_quiz",
            "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2", "--docs", "5"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("edulm")]  # the rest is progress bars
    assert len(errors) == 1 and errors[0].startswith("edulm: error: release incomplete: baselines failed")
    assert "[2/6] baselines: failed: 1 of 2 baselines failed (no-such-org/no-such-model)" in captured.out
    assert (run_copy / "final" / "README.md").is_file() and "[6/6] card: running" in captured.out
    comparison = json.loads((run_copy / "release" / "comparison" / "comparison.json").read_text())
    assert [b["name"] for b in comparison["baselines"]] == ["ok"]  # compared with what there is

    assert main(argv) == 2
    printed = capsys.readouterr().out
    assert "[1/6] eval: up to date, skipped" in printed and f"ok={tiny_hf_model}: already done" in printed
    assert "[2/6] baselines: failed" in printed


def test_damaged_outputs_and_a_damaged_state_file_are_redone(run_copy, tiny_hf_model, local_tasks, capsys):
    """release owns what it writes: an output cut short since (a bad copy) or a damaged release.json is written
    again by the next release, with no error and no traceback; then the release is up to date again."""
    argv = ["release", str(run_copy), "--models", f"ok={tiny_hf_model}", "--tasks", "tiny_quiz",
            "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2", "--docs", "5"]
    assert main(argv) == 0
    capsys.readouterr()
    release = run_copy / "release"
    results = release / "eval" / "results.json"
    results.write_bytes(results.read_bytes()[:200])  # cut short
    assert main(argv) == 0, capsys.readouterr().err
    captured = capsys.readouterr()
    assert "[1/6] eval: running" in captured.out and "Traceback" not in captured.err
    assert json.loads(results.read_text())["scores"]["tiny_quiz"]["metric"] == "acc_norm"

    for damaged in ('{"steps": ', '[1]', '{"steps": {"eval": "done"}}', '{}'):
        (release / "release.json").write_text(damaged)
        assert main(argv) == 0
        captured = capsys.readouterr()
        warnings = [line for line in captured.err.splitlines() if line.startswith("edulm")]
        assert len(warnings) == 1 and "release.json" in warnings[0] and "every step runs again" in warnings[0], captured.err
        assert all(f"{step}: running" in captured.out for step in STEPS)
    assert main(argv) == 0
    assert "[1/6] eval: up to date, skipped" in capsys.readouterr().out


def test_a_failed_eval_makes_compare_say_so_not_what_to_pass(run_copy, tiny_hf_model, local_tasks, capsys, monkeypatch):
    import edulm.evaluate.harness
    from edulm.base.errors import UsageError

    def eval_fails(*args, **kwargs):
        raise UsageError("the eval broke")

    monkeypatch.setattr(edulm.evaluate.harness, "evaluate_model", eval_fails)
    argv = ["release", str(run_copy), "--models", f"ok={tiny_hf_model}", "--tasks", "tiny_quiz",
            "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2", "--docs", "5"]
    assert main(argv) == 2
    printed = capsys.readouterr().out
    assert "[1/6] eval: failed: the eval broke" in printed
    compare = next(line for line in printed.splitlines() if "compare: failed" in line)
    assert "fix the eval step's error above" in compare and "edulm eval --out" not in compare


def test_release_with_gguf_writes_the_file_and_the_cards_run_it_locally_section(
        run_copy, tiny_hf_model, other_tiny_hf_model, local_tasks, capsys):
    from edulm.base.files import sha256_file

    argv = release_argv(run_copy, tiny_hf_model, other_tiny_hf_model, local_tasks, "--limit", "2")
    assert main([*argv, "--gguf", "q4_k"]) == 2  # refused before any work
    assert "--gguf 'q4_k' is not a GGUF type" in capsys.readouterr().err and not (run_copy / "release").exists()
    assert main([*argv, "--gguf", "q8_0"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    gguf = run_copy / "tiny-edu-q8_0.gguf"
    assert "[6/7] gguf: running" in printed and gguf.is_file()
    card = (run_copy / "final" / "README.md").read_text()
    assert "## Run it locally" in card and f"`{gguf.name}` | q8_0 | {gguf.stat().st_size:,} bytes" in card
    assert sha256_file(gguf) in card and f"llama-cli -m {gguf.name}" in card and "ollama create" in card
    assert main([*argv, "--gguf", "q8_0"]) == 0
    assert "[6/7] gguf: up to date, skipped" in capsys.readouterr().out

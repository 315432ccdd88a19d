"""`edulm baselines`: one results file per model, same protocol, finished models skipped."""

from __future__ import annotations

import json

import pytest

from edulm.cli import main
from edulm.base.errors import UsageError
from edulm.evaluate.baselines import DEFAULT_BASELINES, parse_models
from edulm.evaluate.protocol import safe_name


def test_two_local_baselines_then_skip_on_rerun(tiny_hf_model, other_tiny_hf_model, local_tasks, tmp_path, capsys):
    out = tmp_path / "baselines"
    argv = ["baselines", "--out", str(out), "--models", f"{tiny_hf_model},{other_tiny_hf_model}",
            "--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--device", "cpu", "--limit", "4"]
    assert main(argv) == 0
    files = {p.name for p in out.glob("*.json")}
    assert files == {f"{tiny_hf_model.name}.json", f"{other_tiny_hf_model.name}.json"}
    docs = [json.loads((out / f).read_text()) for f in sorted(files)]
    for doc in docs:
        assert doc["protocol"]["num_fewshot"] == 0 and doc["protocol"]["limit"] == 4
        assert doc["scores"]["tiny_quiz"]["metric"] == "acc_norm"
        assert doc["model"]["kind"] == "hf"
    assert {d["model"]["name"] for d in docs} == {tiny_hf_model.name, other_tiny_hf_model.name}
    capsys.readouterr()

    before = {f: (out / f).stat().st_mtime_ns for f in files}
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("already done") == 2
    assert {f: (out / f).stat().st_mtime_ns for f in files} == before

    # A different protocol setting (here the limit) makes the old files incomplete: they are redone.
    assert main([*argv[:-1], "3"]) == 0
    assert json.loads((out / f"{tiny_hf_model.name}.json").read_text())["protocol"]["limit"] == 3


def test_a_failing_baseline_does_not_stop_the_others(tiny_hf_model, local_tasks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "baselines"
    code = main(["baselines", "--out", str(out), "--models", f"no-such-org/no-such-model,{tiny_hf_model}",
                 "--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2"])
    captured = capsys.readouterr()
    assert code == 2
    assert (out / f"{tiny_hf_model.name}.json").is_file()
    assert not (out / "no-such-org__no-such-model.json").exists()
    assert "1 of 2 baselines failed (no-such-org/no-such-model)" in captured.err


def test_when_every_baseline_fails_no_empty_folder_is_left(local_tasks, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "new" / "baselines"
    code = main(["baselines", "--out", str(out), "--models", "no-such-org/no-such-model",
                 "--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2"])
    assert code == 2 and "1 of 1 baselines failed" in capsys.readouterr().err
    assert not out.exists()


def test_model_list_and_file_names(tmp_path):
    assert [b.model for b in parse_models(None)] == DEFAULT_BASELINES and len(DEFAULT_BASELINES) == 7
    assert [str(b) for b in parse_models(" gpt2, EleutherAI/pythia-160m ")] == ["gpt2", "EleutherAI/pythia-160m"]
    assert safe_name("facebook/opt-125m") == "facebook__opt-125m"
    with pytest.raises(UsageError, match="empty"):
        parse_models(" , ")
    with pytest.raises(UsageError, match="listed twice"):
        parse_models("gpt2,gpt2")
    # Two local folders with the same base name would share a results file: refused, with the way out.
    for parent in ("a", "b"):
        (tmp_path / parent / "model").mkdir(parents=True)
    same = f"{tmp_path / 'a' / 'model'},{tmp_path / 'b' / 'model'}"
    with pytest.raises(UsageError, match=r"would share the results file model\.json; name them"):
        parse_models(same)
    named = parse_models(f"first={tmp_path / 'a' / 'model'},second={tmp_path / 'b' / 'model'}")
    assert [(b.name, b.file_name) for b in named] == [("first", "first.json"), ("second", "second.json")]
    assert named[0].model == str(tmp_path / "a" / "model")
    with pytest.raises(UsageError, match="NAME=PATH"):
        parse_models("=gpt2")


@pytest.mark.compat
def test_named_baselines_and_a_checkpoint_with_its_tokens(tiny_hf_model, tiny_run, local_tasks, tmp_path, capsys):
    """NAME=PATH names a baseline; a checkpoint used as a baseline reports the tokens it had trained on."""
    checkpoint = sorted((tiny_run / "checkpoints").iterdir())[0]
    out = tmp_path / "baselines"
    assert main(["baselines", "--out", str(out), "--models", f"mine={tiny_hf_model},early={checkpoint}",
                 "--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2"]) == 0
    mine, early = (json.loads((out / f).read_text())["model"] for f in ("mine.json", "early.json"))
    assert mine["name"] == "mine" and mine["source"] == str(tiny_hf_model)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert early["name"] == "early" and early["kind"] == "checkpoint" and early["training_tokens"] == state["tokens"] > 0
    assert "2 of 2 baselines have results" in capsys.readouterr().out


@pytest.mark.parametrize("text", ['{"format": "edulm-eval-results", "scores": [1]', 
                                  '{"format": "edulm-eval-results", "scores": {}, "protocol": [1]}',
                                  '{"format": "edulm-eval-results", "scores": {}, "runtime": "cpu"}',
                                  '{"format": "edulm-eval-results", "scores": {"tiny_quiz": [0.5]}}'])
def test_a_damaged_results_file_counts_as_not_done(tmp_path, text):
    """A baseline's file cut short or of the wrong shape is redone by the next run, never a traceback."""
    from edulm.evaluate.baselines import is_complete
    from edulm.evaluate.harness import EvalSettings

    path = tmp_path / "gpt2.json"
    path.write_text(text)
    assert is_complete(path, EvalSettings(tasks=["tiny_quiz"]), "gpt2") is False

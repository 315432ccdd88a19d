"""`edulm eval` runs lm-eval with the protocol and reports exactly lm-eval's numbers."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from edulm.cli import main
from edulm.evaluate.protocol import SEEDS


@pytest.mark.compat
def test_eval_equals_direct_lm_eval(tiny_hf_model, local_tasks, tmp_path, capsys):
    import lm_eval
    from lm_eval.tasks import TaskManager

    out = tmp_path / "eval" / "results.json"
    code = main([
        "eval", str(tiny_hf_model), "--out", str(out), "--tasks", "tiny_quiz,tiny_cloze",
        "--include-path", str(local_tasks), "--device", "cpu", "--batch-size", "auto",
    ])
    assert code == 0
    captured = capsys.readouterr()
    assert "tiny_quiz" in captured.out and f"results: {out}" in captured.out
    assert "\r" not in captured.err and "%|" not in captured.err  # stderr is not a terminal: no lm-eval bars either

    direct = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_hf_model), "dtype": "float32"},
        tasks=["tiny_quiz", "tiny_cloze"],
        num_fewshot=0,
        batch_size="auto",
        device="cpu",
        task_manager=TaskManager(include_path=str(local_tasks), include_defaults=False),
        **SEEDS,
    )
    doc = json.loads(out.read_text())
    for task in ("tiny_quiz", "tiny_cloze"):
        for key, value in direct["results"][task].items():
            if isinstance(value, float) and not math.isnan(value):
                assert doc["results"][task][key] == value, (task, key)
    # Reference metrics: acc_norm for the multiple-choice task, acc for the cloze task.
    assert doc["scores"]["tiny_quiz"]["metric"] == "acc_norm"
    assert doc["scores"]["tiny_quiz"]["value"] == direct["results"]["tiny_quiz"]["acc_norm,none"]
    assert doc["scores"]["tiny_cloze"]["metric"] == "acc"
    assert doc["scores"]["tiny_cloze"]["value"] == direct["results"]["tiny_cloze"]["acc,none"]

    # What the results file records about the run.
    assert doc["harness"]["version"] == lm_eval.__version__
    assert doc["runtime"]["device"] == "cpu" and doc["runtime"]["dtype"] == "float32"
    assert doc["runtime"]["batch_size"] == "auto" and doc["runtime"]["batch_size_resolved"] == direct["config"]["batch_sizes"]
    assert doc["model"]["parameters"] == direct["config"]["model_num_parameters"] > 0
    assert doc["model"]["path"] == str(tiny_hf_model.resolve())
    assert doc["protocol"]["num_fewshot"] == 0 and doc["protocol"]["seeds"] == SEEDS
    # A folder's own Python code is never run: lm-eval is told so explicitly, and records it.
    assert doc["lm_eval"]["config"]["model_args"]["trust_remote_code"] is False

    # Samples beside the results file, one JSONL per task with one line per example.
    for task in ("tiny_quiz", "tiny_cloze"):
        samples = out.parent / doc["samples_files"][task]
        lines = samples.read_text().splitlines()
        assert len(lines) == 8
        assert json.loads(lines[0])["doc_id"] in range(8)


def test_eval_with_limit_scores_fewer_examples(tiny_hf_model, local_tasks, tmp_path):
    out = tmp_path / "limited.json"
    assert main([
        "eval", str(tiny_hf_model), "--out", str(out), "--tasks", "tiny_quiz",
        "--include-path", str(local_tasks), "--device", "cpu", "--limit", "3", "--batch-size", "4",
    ]) == 0
    doc = json.loads(out.read_text())
    assert doc["scores"]["tiny_quiz"]["n_samples"] == 3
    assert doc["runtime"]["batch_size_resolved"] == 4
    assert doc["protocol"]["limit"] == 3


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "tiny_quizz"], "did you mean 'tiny_quiz'"),
        (["--tasks", "tiny_quiz", "--batch-size", "zero"], "--batch-size"),
        (["--tasks", "tiny_quiz", "--limit", "1.5"], "--limit"),
        (["--tasks", "tiny_quiz", "--limit", "nan"], "--limit must be a positive number"),
        (["--tasks", "tiny_quiz", "--limit", "0"], "--limit must be a positive number"),
        (["--tasks", "tiny_quiz", "--dtype", "int8"], "--dtype"),
    ],
)
def test_eval_bad_options_are_usage_errors(tiny_hf_model, local_tasks, tmp_path, capsys, extra, message):
    code = main(["eval", str(tiny_hf_model), "--out", str(tmp_path / "new" / "r.json"), "--include-path", str(local_tasks),
                 "--device", "cpu", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()  # nothing written, not even the results file's folder


def test_eval_never_replaces_a_file_it_did_not_write(tiny_hf_model, local_tasks, tmp_path, capsys):
    model = shutil.copytree(tiny_hf_model, tmp_path / "model")  # a copy: the session's model stays intact should this fail
    config = model / "config.json"
    before = config.read_bytes()
    code = main(["eval", str(model), "--out", str(config), "--include-path", str(local_tasks),
                 "--device", "cpu", "--tasks", "tiny_quiz", "--limit", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "exists and is not an edulm eval results file" in err and len(err.strip().splitlines()) == 1
    assert config.read_bytes() == before


def test_default_tasks_without_hub_fail_with_one_clear_line(tiny_hf_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    code = main(["eval", str(tiny_hf_model), "--out", str(tmp_path / "r.json"), "--device", "cpu", "--tasks", "arc_easy"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "--include-path" in err and "unreachable" in err
    assert not (tmp_path / "r.json").exists()


def test_a_local_task_whose_data_file_is_missing_says_so_not_the_hub(tiny_hf_model, local_tasks, tmp_path, capsys):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    yaml_text = (local_tasks / "tiny_quiz.yaml").read_text().replace(str(local_tasks), str(tmp_path / "nowhere"))
    (tasks / "tiny_quiz.yaml").write_text(yaml_text)
    code = main(["eval", str(tiny_hf_model), "--out", str(tmp_path / "r.json"), "--include-path", str(tasks),
                 "--device", "cpu", "--tasks", "tiny_quiz"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"the data file {tmp_path / 'nowhere' / 'tiny_quiz.jsonl'} does not exist" in err and "unreachable" not in err


def test_unreachable_hub_fails_before_any_download(tiny_hf_model, tmp_path, capsys, monkeypatch):
    """Not in offline mode and the hub does not answer: one line at once, instead of half a minute of retries."""
    import edulm.evaluate.tasks as tasks

    monkeypatch.setattr(tasks, "hub_offline", lambda: False)
    monkeypatch.setattr(tasks, "hub_reachable", lambda timeout=0: False)
    code = main(["eval", str(tiny_hf_model), "--out", str(tmp_path / "r.json"), "--device", "cpu", "--tasks", "arc_easy"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "unreachable" in err and "arc_easy" in err and "HF_HUB_OFFLINE=1" in err


def test_a_run_dir_is_named_after_its_run_and_knows_its_tokens(tiny_hf_model, tmp_path):
    import shutil

    from edulm.evaluate.harness import describe_model

    run = tmp_path / "run"
    shutil.copytree(tiny_hf_model, run / "final")
    (run / "config.yaml").write_text("run:\n  name: tiny-run\n")
    (run / "training").mkdir()
    (run / "training" / "training_summary.json").write_text(json.dumps({"tokens": 123_456}))
    info = describe_model(str(run))
    assert info["name"] == "tiny-run" and info["kind"] == "run"
    assert info["training_tokens"] == 123_456
    assert info["path"] == str((run / "final").resolve())
    assert describe_model(str(run / "final"))["name"] == "tiny-run"  # the exported folder of a run


def test_a_missing_model_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = main(["eval", "no-such-org/no-such-model", "--out", str(tmp_path / "r.json"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no such folder" in err and len(err.strip().splitlines()) == 1



def test_cpu_default_batch_size_is_fixed():
    """No --batch-size on a CPU: a fixed size, not lm-eval's slow trial-and-error search for one."""
    from edulm.evaluate.harness import CPU_BATCH_SIZE, eval_settings

    assert eval_settings(device="cpu").batch_size == CPU_BATCH_SIZE == 8
    assert eval_settings(device="cpu", batch_size="auto").batch_size == "auto"
    assert eval_settings(tasks="a, b", device="cpu", batch_size="16").tasks == ["a", "b"]


def test_a_second_eval_into_the_same_results_file_is_refused(tiny_hf_model, local_tasks, tmp_path, capsys):
    """One writer per results file: the samples of one evaluation must never sit beside the results of another."""
    from edulm.base.lock import folder_lock

    out = tmp_path / "eval" / "results.json"
    with folder_lock(out, "edulm eval"):
        code = main(["eval", str(tiny_hf_model), "--out", str(out), "--tasks", "tiny_quiz",
                     "--include-path", str(local_tasks), "--device", "cpu", "--limit", "2"])
    err = capsys.readouterr().err
    assert code == 2 and f"{out} is in use by edulm eval" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_an_eval_killed_while_writing_leaves_no_results_that_disagree_with_the_samples(
        tiny_hf_model, other_tiny_hf_model, local_tasks, tmp_path, capsys):
    """SIGKILL after the new samples are written but before the new results: no results file is left (the old
    one would describe another model than its samples); the next eval writes both and leaves nothing behind."""
    import signal
    import subprocess
    import sys
    import time

    from processes import freeze_when

    out = tmp_path / "eval" / "results.json"
    tasks = ["--tasks", "tiny_quiz,tiny_cloze", "--include-path", str(local_tasks), "--device", "cpu", "--limit", "4"]
    assert main(["eval", str(other_tiny_hf_model), "--out", str(out), *tasks]) == 0  # the old results
    capsys.readouterr()
    started = time.time_ns()

    def new_samples_written() -> bool:
        return any(p.stat().st_mtime_ns > started for p in out.parent.glob("results_samples_*.jsonl"))

    proc = subprocess.Popen([sys.executable, "-m", "edulm", "eval", str(tiny_hf_model), "--out", str(out), *tasks],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        freeze_when(proc, new_samples_written)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    if out.exists():  # the process may have run on to the end before the stop landed: then both are new
        assert json.loads(out.read_text())["model"]["path"] == str(tiny_hf_model.resolve())

    assert main(["eval", str(tiny_hf_model), "--out", str(out), *tasks]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"]["path"] == str(tiny_hf_model.resolve())
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(["results.json", *doc["samples_files"].values()])


def test_apply_chat_template_wraps_the_prompts_and_is_recorded(tiny_hf_model, local_tasks, tmp_path, capsys):
    """`--apply-chat-template` hands lm-eval the model's template (a model without one is one line, exit 2)."""
    import shutil

    from edulm.tokenizer.chat_template import CHATML_TEMPLATE

    out = tmp_path / "plain" / "results.json"
    args = ["--tasks", "tiny_quiz", "--include-path", str(local_tasks), "--limit", "3", "--apply-chat-template"]
    assert main(["eval", str(tiny_hf_model), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--apply-chat-template, but its tokenizer has no chat template" in err[0], err
    assert not out.exists()

    chat = tmp_path / "chat-model"
    shutil.copytree(tiny_hf_model, chat)
    config = json.loads((chat / "tokenizer_config.json").read_text())
    (chat / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML_TEMPLATE}))
    out = tmp_path / "chat" / "results.json"
    assert main(["eval", str(chat), "--out", str(out), *args]) == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert doc["protocol"]["apply_chat_template"] is True
    samples = (out.parent / "results_samples_tiny_quiz.jsonl").read_text()
    assert "<|im_start|>user" in samples  # the prompt the model scored was the chat-wrapped one

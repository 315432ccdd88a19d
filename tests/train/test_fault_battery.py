"""The fault battery: every way a user can lose a run, tried, each judged the same way.

Each row below is one fault and the command that meets it (see ``fault_battery.py`` for how rows
are judged: exit code, one error line and no traceback, expected warnings, nothing left
half-written). Most rows run ``edulm`` in this process against one shared tiny corpus and copies of
one reference run; the few that need a real process to kill or to race start ``python -m edulm``.
``docs/reliability.md`` lists the guarantees and the counts this battery reports
(``python tests/train/fault_battery.py --report``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from processes import alive, descendants, freeze_when, stale_temp

from fault_battery import (
    ROWS,
    Outcome,
    assert_checkpoints_intact,
    assert_resumed_exactly,
    error_lines,
    fill,
    finished,
    judge,
    leftovers,
    losses,
    row,
    run_in_process,
    snapshot,
    tmpfs,
)
from train_helpers import cli_env, start_cli, tiny_config, write_config

from edulm.checkpoint import folders as checkpoint
from edulm.base.files import sha256_file, temp_target
from edulm.base.layout import MANIFEST_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE, rank_file
from edulm.base.lock import folder_lock, read_holder
from edulm.train.callbacks import Callback

REFERENCE = dict(max_steps=6, ckpt_interval=2, keep_last=5, eval_interval=3, eval_tokens=256)
"""The reference run: checkpoints at steps 2, 4 and 6, evaluations at 3 and 6."""
NEWEST = checkpoint.checkpoint_name(6)
RESUME_LINE = "free space and run again with --resume auto"


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """One uninterrupted run (in this process, one thread) that every interrupted run must reproduce bit for bit."""
    from edulm.config import config_from_dict
    from edulm.train.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_dir = tmp_path_factory.mktemp("reference") / "run"
        train(config_from_dict(tiny_config(corpus, run_dir, **REFERENCE)))
    finally:
        torch.set_num_threads(threads)
    return run_dir


class SendSignal(Callback):
    """Sends ``signum`` to this process at the end of ``step`` (a real signal, to the real handler)."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_step_end(self, run, event) -> None:
        if event.step == self.step:
            os.kill(os.getpid(), self.signum)


@dataclass
class Bench:
    """What a row works with: the corpus, the reference run, its own folder."""

    corpus: dict[str, str]
    reference: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def config(self, out_dir: Path, name: str = "run", data: dict | None = None, model: dict | None = None, **train) -> str:
        """A config file (in the row's folder) of the reference run's settings, writing to ``out_dir``."""
        raw = tiny_config(self.corpus, out_dir, **{**REFERENCE, **train})
        raw["data"].update(data or {})
        raw["model"].update(model or {})
        return str(write_config(self.tmp / f"{name}.yaml", raw))

    def copy_reference(self, name: str = "run") -> tuple[Path, str]:
        """A copy of the finished reference run dir and a config writing to it."""
        run_dir = self.tmp / name
        shutil.copytree(self.reference, run_dir)
        return run_dir, self.config(run_dir, name)

    def signal_after_step(self, step: int, signum: int) -> None:
        """The next in-process run receives ``signum`` after ``step`` (until :meth:`no_more_faults`)."""
        from edulm.train import trainer
        from edulm.train.core_callbacks import default_callbacks

        self.monkeypatch.setattr(trainer, "default_callbacks",
                                 lambda *a, **k: [*default_callbacks(*a, **k), SendSignal(step, signum)])

    def no_more_faults(self) -> None:
        """Undo :meth:`signal_after_step`."""
        self.monkeypatch.undo()


@pytest.fixture
def bench(corpus, reference, tmp_path, monkeypatch) -> Bench:
    return Bench(corpus, reference, tmp_path, monkeypatch)


def resume_cleanly(cfg: str, *extra: str) -> Outcome:
    """``edulm train CFG --resume auto`` in this process; it must succeed without an error line."""
    done = run_in_process("train", cfg, "--resume", "auto", *extra)
    assert done.code == 0 and error_lines(done.stderr) == [] and "Traceback" not in done.stderr, done.stderr
    return done


# =============================================================================================
# Signals and kills during training, prepare and export
# =============================================================================================


@row("train-sigterm", "SIGTERM during training (a scheduler's pre-emption)",
     "signals: checkpoint at the next step, exit 143, exact resume", 143)
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    cfg = b.config(run_dir)
    b.signal_after_step(2, signal.SIGTERM)
    stopped = run_in_process("train", cfg)
    b.no_more_faults()
    assert checkpoint.step_of(checkpoint.find_latest_good(run_dir)) == 3  # the step in flight finished, then saved
    assert max(losses(run_dir)) == 3 and not (run_dir / "final").exists()
    assert json.loads((run_dir / "training" / "training_summary.json").read_text())["status"] == "stopped (SIGTERM)"
    resume_cleanly(cfg)
    assert_resumed_exactly(run_dir, b.reference)
    return stopped


@row("train-sigint", "Ctrl-C (SIGINT) during training", "signals: checkpoint, exit 130, exact resume", 130)
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    cfg = b.config(run_dir)
    b.signal_after_step(4, signal.SIGINT)
    stopped = run_in_process("train", cfg)
    b.no_more_faults()
    assert checkpoint.step_of(checkpoint.find_latest_good(run_dir)) == 5
    resume_cleanly(cfg)
    assert_resumed_exactly(run_dir, b.reference)
    return stopped


@row("train-sigkill-mid-checkpoint", "SIGKILL while a checkpoint is being written",
     "SIGKILL: no half checkpoint counts; the lock is taken over; exact resume", -signal.SIGKILL)
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    cfg = b.config(run_dir, ckpt_interval=1)  # a checkpoint after every step: many moments to kill it in
    folder = run_dir / "checkpoints"
    proc = start_cli("train", cfg)
    freeze_when(proc, lambda: folder.is_dir() and any(temp_target(p) for p in folder.iterdir()))
    proc.kill()
    killed = finished(proc)
    assert [p for p in folder.iterdir() if temp_target(p)], "the kill did not land inside a checkpoint"
    assert read_holder(run_dir)["pid"] == proc.pid  # its lock is left behind; the resume below takes it over
    assert not (run_dir / "final").exists()
    resume_cleanly(cfg)
    assert_resumed_exactly(run_dir, b.reference)
    return killed


@row("train-sigkill-final-export", "SIGKILL during the final export of a run (final/ being written)",
     "SIGKILL: the half export is removed by --resume auto, which writes final/", -signal.SIGKILL)
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    cfg = b.config(run_dir)
    proc = start_cli("train", cfg)
    freeze_when(proc, lambda: run_dir.is_dir() and any(temp_target(p) == "final" for p in run_dir.iterdir()))
    proc.kill()
    killed = finished(proc)
    assert [p for p in run_dir.iterdir() if temp_target(p) == "final"] and not (run_dir / "final").exists()
    resume_cleanly(cfg)
    assert_resumed_exactly(run_dir, b.reference)
    return killed


def _prepare_config(b: Bench, shards: Path, name: str, workers: int) -> str:
    return b.config(b.tmp / "unused", name, data={"shards_dir": str(shards), "shard_tokens": 1000, "workers": workers})


def _killed_prepare(b: Bench, signum: int) -> Outcome:
    from edulm.data.prepare_state import STATE

    reference = b.tmp / "reference-shards"
    assert run_in_process("prepare", _prepare_config(b, reference, "reference", workers=0)).code == 0
    shards = b.tmp / "shards"
    cfg = _prepare_config(b, shards, "prepare", workers=2)
    err_file = b.tmp / "stderr.txt"
    with open(err_file, "w") as err:  # a file, not a pipe: helpers that outlived it would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "edulm", "prepare", cfg], env=cli_env(), stdout=subprocess.DEVNULL,
                                stderr=err, text=True)
    freeze_when(proc, lambda: (shards / STATE).exists())
    helpers = descendants(proc.pid)
    os.kill(proc.pid, signum)
    proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=120)
    assert helpers, "no worker processes to check"
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in helpers if alive(pid)], "worker processes outlived the prepare"
    # multiprocessing's resource tracker removes a killed prepare's semaphores; it must not print about them (the
    # line surfaced at the user's next command, as if that one had leaked something).
    assert "leaked semaphore" not in err_file.read_text(), err_file.read_text()
    again = run_in_process("prepare", cfg)
    assert again.code == 0, again.stderr

    def shard_files(folder: Path) -> dict[str, str]:
        return {k: v for k, v in snapshot(folder).items() if k.endswith(".bin")}

    assert shard_files(shards) == shard_files(reference) != {}
    return Outcome(proc.returncode, "", err_file.read_text())


@row("prepare-sigterm", "SIGTERM during `edulm prepare` with 2 workers",
     "signals: workers end, one line, exit 143, the rerun resumes to identical shards", 143,
     message="prepare stopped by SIGTERM")
def _(b: Bench) -> Outcome:
    return _killed_prepare(b, signal.SIGTERM)


@row("prepare-sigkill", "SIGKILL of `edulm prepare` with 2 workers",
     "SIGKILL: no orphan workers; the rerun resumes to identical shards", -signal.SIGKILL)
def _(b: Bench) -> Outcome:
    return _killed_prepare(b, signal.SIGKILL)


@row("export-sigkill", "SIGKILL during `edulm export`",
     "SIGKILL: the half export is removed by the next export into the folder", -signal.SIGKILL)
def _(b: Bench) -> Outcome:
    source = b.reference / "checkpoints" / NEWEST
    out = b.tmp / "hf"
    proc = start_cli("export", str(source), "--out", str(out))
    freeze_when(proc, lambda: any(temp_target(p) == "hf" for p in b.tmp.iterdir()))
    proc.kill()
    killed = finished(proc)
    assert not (out / "edulm_export.json").exists()
    again = run_in_process("export", str(source), "--out", str(out))
    assert again.code == 0 and (out / "edulm_export.json").is_file(), again.stderr
    return killed


# =============================================================================================
# Two writers
# =============================================================================================


@dataclass
class Race:
    """Runs started against one run dir: who held it, and what each of them did."""

    outcomes: dict[str, Outcome]
    pids: dict[str, int]
    winners: dict[Path, str]
    lr: dict[str, float]


@pytest.fixture(scope="module")
def race(corpus, tmp_path_factory) -> Race:
    """Two `edulm train` started at the same moment on one run dir, and two started 1 s apart on another;
    each dir's lock holder is frozen the moment it holds the lock (so it is surely alive when the others
    try), then a `--resume auto` on the first dir is started; then the holders go on to the end."""
    root = tmp_path_factory.mktemp("race")
    same, apart = root / "same", root / "apart"
    lr = {"A": 3e-3, "B": 2e-3, "C": 1e-3, "D": 4e-3, "E": 5e-3}
    dirs = {"A": same, "B": same, "D": same, "C": apart, "E": apart}

    def config(name: str) -> str:
        raw = tiny_config(corpus, dirs[name], lr=lr[name], max_steps=4, ckpt_interval=2, keep_last=5, eval_interval=0)
        return str(write_config(root / f"{name}.yaml", raw))

    procs = {"A": start_cli("train", config("A")), "B": start_cli("train", config("B")),
             "C": start_cli("train", config("C"))}
    try:
        time.sleep(1.0)
        procs["E"] = start_cli("train", config("E"))  # one second after C, on C's run dir
        winners: dict[Path, str] = {}
        deadline = time.monotonic() + 240
        while len(winners) < 2:
            for folder in (same, apart):
                holder = read_holder(folder) if folder not in winners else None
                name = next((n for n, p in procs.items() if holder and p.pid == holder.get("pid")), None)
                if name is not None:
                    procs[name].send_signal(signal.SIGSTOP)
                    winners[folder] = name
            assert time.monotonic() < deadline, "no run took the lock"
            time.sleep(0.002)
        outcomes = {n: finished(p) for n, p in procs.items() if n not in winners.values()}
        procs["D"] = start_cli("train", config("D"), "--resume", "auto")  # while A or B holds the dir, frozen
        outcomes["D"] = finished(procs["D"])
        for name in winners.values():
            procs[name].send_signal(signal.SIGCONT)
        outcomes.update({n: finished(procs[n]) for n in winners.values()})
    finally:  # a failed check above must not leave frozen processes behind
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.communicate()
    return Race(outcomes, {n: p.pid for n, p in procs.items()}, winners, lr)


def _refused_by_the_holder(race: Race, name: str, folder: Path) -> Outcome:
    holder = race.winners[folder]
    assert f"(PID {race.pids[holder]} on " in race.outcomes[name].stderr  # the holder, named
    assert not leftovers(folder.parent)
    return race.outcomes[name]


@row("two-trains-same-moment", "two `edulm train` on one run.out_dir, started at the same moment",
     "two writers: one runs, the other is refused naming the holder's PID", 2, message="is in use by edulm train (PID")
def _(b: Bench, race: Race) -> Outcome:
    folder = next(f for f in race.winners if f.name == "same")
    loser = ({"A", "B"} - {race.winners[folder]}).pop()
    return _refused_by_the_holder(race, loser, folder)


@row("two-trains-1s-apart", "two `edulm train` on one run.out_dir, started 1 s apart",
     "two writers: one runs, the other is refused naming the holder's PID", 2, message="is in use by edulm train (PID")
def _(b: Bench, race: Race) -> Outcome:
    folder = next(f for f in race.winners if f.name == "apart")
    loser = ({"C", "E"} - {race.winners[folder]}).pop()
    return _refused_by_the_holder(race, loser, folder)


@row("resume-while-live", "`edulm train --resume auto` while a run is live in the run dir",
     "two writers: refused naming the holder's PID", 2, message="is in use by edulm train (PID")
def _(b: Bench, race: Race) -> Outcome:
    return _refused_by_the_holder(race, "D", next(f for f in race.winners if f.name == "same"))


@row("live-run-untouched", "the run that held the run dir, after the others were refused",
     "two writers: the holder's config, checkpoints, metrics and final/ are all its own", 0)
def _(b: Bench, race: Race) -> Outcome:
    from edulm.config import load_config

    for folder, name in race.winners.items():
        assert race.outcomes[name].code == 0, race.outcomes[name].stderr
        want = race.lr[name]
        assert load_config(folder / "config.yaml").train.lr == want
        steps = checkpoint.list_checkpoints(folder)
        assert [checkpoint.step_of(p) for p in steps] == [2, 4]
        assert all(load_config(p / "config.yaml").train.lr == want for p in steps)
        from edulm.base.metrics import read_metrics

        rows = read_metrics(folder / "training" / "training_metrics.csv")
        assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[1]["lr"] == pytest.approx(want)  # warmup ends at 2
        assert json.loads((folder / "final" / "edulm_export.json").read_text())["source"].endswith(checkpoint.checkpoint_name(4))
        assert_checkpoints_intact(folder)
    return race.outcomes[race.winners[next(f for f in race.winners if f.name == "same")]]


@row("prepare-while-locked", "`edulm prepare` into a shards dir another prepare holds",
     "two writers: refused naming the holder, nothing written", 2, message="is in use by edulm prepare (PID")
def _(b: Bench) -> Outcome:
    shards = b.tmp / "shards"
    cfg = _prepare_config(b, shards, "prepare", workers=0)
    with folder_lock(shards, "edulm prepare"):
        refused = run_in_process("prepare", cfg)
    assert f"PID {os.getpid()} on" in refused.stderr and not shards.exists()
    return refused


@row("export-while-locked", "`edulm export` into a folder another export holds",
     "two writers: refused naming the holder, the folder unchanged", 2, message="is in use by edulm export (PID")
def _(b: Bench) -> Outcome:
    source = b.reference / "checkpoints" / NEWEST
    out = b.tmp / "hf"
    assert run_in_process("export", str(source), "--out", str(out)).code == 0
    before = snapshot(out)
    with folder_lock(out, "edulm export"):
        refused = run_in_process("export", str(source), "--out", str(out), "--dtype", "bfloat16")
    assert snapshot(out) == before
    return refused


@row("train-over-finished-run", "`edulm train` (no --resume) into the run dir of a finished run",
     "nothing overwritten: exit 2, every file unchanged", 2, message="already holds a previous run")
def _(b: Bench) -> Outcome:
    run_dir, cfg = b.copy_reference()
    before = snapshot(run_dir)
    refused = run_in_process("train", cfg)
    assert snapshot(run_dir) == before
    return refused


# =============================================================================================
# A full disk (a real, small tmpfs)
# =============================================================================================


def _checkpoint_bytes(b: Bench) -> int:
    return sum(p.stat().st_size for p in (b.reference / "checkpoints" / NEWEST).iterdir())


@row("disk-full-during-checkpoint", "the disk fills up while a checkpoint is written",
     "full disk: one line, no temporary left, free space and --resume auto finishes exactly", 1,
     message=f"while writing checkpoint step 4; {RESUME_LINE}")
def _(b: Bench) -> Outcome:
    size = _checkpoint_bytes(b)
    with tmpfs(b.tmp / "disk", (5 * size) // 1024 + 2048) as disk:
        run_dir = disk / "run"
        cfg = b.config(run_dir)
        filler = fill(disk, leave_bytes=size * 3 // 2)  # room for one checkpoint, not two
        failed = run_in_process("train", cfg)
        assert f"no space left on {run_dir / 'checkpoints'} while writing" in failed.stderr
        assert [checkpoint.step_of(p) for p in checkpoint.list_checkpoints(run_dir)] == [2]
        assert not leftovers(run_dir)
        assert_checkpoints_intact(run_dir)
        filler.unlink()
        resume_cleanly(cfg)
        assert_resumed_exactly(run_dir, b.reference)
    return failed


@row("disk-full-killed-writer", "--resume auto on a disk filled by the half checkpoint of a killed run",
     "full disk: dead writers' temporaries are removed before anything is written; exact resume", 0)
def _(b: Bench) -> Outcome:
    size = _checkpoint_bytes(b)
    with tmpfs(b.tmp / "disk", (6 * size) // 1024 + 2048) as disk:
        run_dir = disk / "run"
        shutil.copytree(b.reference, run_dir, ignore=shutil.ignore_patterns("final", "step-0000004", NEWEST))
        cfg = b.config(run_dir)
        stale_csv = stale_temp(run_dir / "training" / "training_metrics.csv")  # a killed rewrite of the metrics
        stale_csv.write_bytes(b"")
        stale = stale_temp(run_dir / "checkpoints" / "step-0000004")  # the killed run's half checkpoint ...
        stale.mkdir()
        fill(stale, leave_bytes=0, name=OPTIMIZER_FILE)  # ... took the last byte
        resumed = run_in_process("train", cfg, "--resume", "auto")
        assert not stale.exists() and not stale_csv.exists()
        assert_resumed_exactly(run_dir, b.reference)
    return resumed


@row("disk-full-at-start", "--resume auto on a full disk with nothing to free",
     "full disk: one line, every file unchanged (train.log only appended to)", 1, message=RESUME_LINE)
def _(b: Bench) -> Outcome:
    size = _checkpoint_bytes(b)
    with tmpfs(b.tmp / "disk", (6 * size) // 1024 + 2048) as disk:
        run_dir = disk / "run"
        shutil.copytree(b.reference, run_dir, ignore=shutil.ignore_patterns("final", NEWEST))
        cfg = b.config(run_dir)
        fill(disk, leave_bytes=0)
        log = run_dir / "training" / "train.log"
        before, log_before = snapshot(run_dir), log.read_bytes()
        failed = run_in_process("train", cfg, "--resume", "auto")
        after = snapshot(run_dir)
        # train.log is append-only: the lines of this attempt may still fit its last page.
        assert {k: v for k, v in after.items() if k != "training/train.log"} == {
            k: v for k, v in before.items() if k != "training/train.log"}
        assert log.read_bytes().startswith(log_before) and not leftovers(run_dir)
    return failed


# =============================================================================================
# Damaged checkpoints
# =============================================================================================


def reseal(path: Path) -> None:
    """Rewrite a checkpoint's manifest to match its files (so damage inside them passes the checksums)."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"] = {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))


def _falls_back(b: Bench, damage) -> Outcome:
    """Damage the newest checkpoint of a copy of the reference run; --resume auto must take step 4 and
    finish exactly like the reference."""
    run_dir, cfg = b.copy_reference()
    damage(run_dir / "checkpoints" / NEWEST)
    resumed = resume_cleanly(cfg)
    assert f"resumed from {run_dir / 'checkpoints' / checkpoint.checkpoint_name(4)}" in resumed.stdout
    assert_resumed_exactly(run_dir, b.reference)
    return resumed


def _truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


@row("checkpoint-truncated", "the newest checkpoint's weights cut short (a bad copy, a full disk)",
     "damaged checkpoint: warned, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: model.safetensors has",))
def _(b: Bench) -> Outcome:
    return _falls_back(b, lambda ck: _truncate(ck / "model.safetensors"))


@row("checkpoint-bit-flip", "one flipped byte in the newest checkpoint's optimizer state",
     "damaged checkpoint: warned, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: optimizer.pt does not match its checksum",))
def _(b: Bench) -> Outcome:
    return _falls_back(b, lambda ck: _flip_byte(ck / OPTIMIZER_FILE, 1000))


@row("checkpoint-unfinished", "the newest checkpoint has no manifest (its writer died before sealing it)",
     "damaged checkpoint: warned, the previous one resumed exactly", 0, warnings=(f"{NEWEST}: no manifest.json",))
def _(b: Bench) -> Outcome:
    return _falls_back(b, lambda ck: (ck / MANIFEST_FILE).unlink())


@row("checkpoint-manifest-files-list", "valid JSON of the wrong shape: the manifest's `files` is a list",
     "damaged checkpoint: warned, the previous one resumed exactly; retention does not crash", 0,
     warnings=(f"{NEWEST}: manifest.json is damaged (files is a list",))
def _(b: Bench) -> Outcome:
    return _falls_back(b, lambda ck: _rewrite_json(ck / MANIFEST_FILE, lambda m: {**m, "files": list(m["files"])}))


@row("checkpoint-manifest-no-bytes", "valid JSON of the wrong shape: a manifest entry without `bytes`",
     "damaged checkpoint: warned, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: manifest.json is damaged (files['model.safetensors'] has no 'bytes')",))
def _(b: Bench) -> Outcome:
    def damage(ck: Path) -> None:
        _rewrite_json(ck / MANIFEST_FILE, lambda m: {**m, "files": {**m["files"], "model.safetensors": {"sha256": "0"}}})
    return _falls_back(b, damage)


@row("retention-beside-damage", "an older checkpoint's manifest of the wrong shape while the run goes on",
     "retention never crashes on damage and never deletes the only good checkpoint", 0,
     warnings=(f"{NEWEST}: model.safetensors has",))
def _(b: Bench) -> Outcome:
    def damage(ck: Path) -> None:
        _truncate(ck / "model.safetensors")  # resume from step 4 ...
        oldest = ck.parent / checkpoint.checkpoint_name(2)  # ... beside a step 2 whose manifest is a list
        _rewrite_json(oldest / MANIFEST_FILE, lambda m: {**m, "files": list(m["files"])})
    return _falls_back(b, damage)


@row("checkpoint-trainer-state-shape", "valid JSON of the wrong shape in trainer_state.json (checksums match)",
     "damaged checkpoint: warned, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: trainer_state.json",))
def _(b: Bench) -> Outcome:
    def damage(ck: Path) -> None:
        _rewrite_json(ck / TRAINER_STATE_FILE, lambda s: {**s, "tally": [1, 2, 3]})
        reseal(ck)
    return _falls_back(b, damage)


@row("checkpoint-rank-file-shape", "a rank file of the wrong shape (a list, checksums match)",
     "damaged checkpoint: warned, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: {rank_file(0)} is a list, not a mapping",))
def _(b: Bench) -> Outcome:
    def damage(ck: Path) -> None:
        with open(ck / rank_file(0), "wb") as f:
            torch.save([1, 2, 3], f)
        reseal(ck)
    return _falls_back(b, damage)


class Payload:
    """A pickle that would create a file if it were ever unpickled with code allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@row("checkpoint-malicious-pickle", "a checkpoint whose optimizer.pt carries a pickle that runs code (checksums match)",
     "unsafe checkpoint: not loaded, one warning line, the previous one resumed exactly", 0,
     warnings=(f"{NEWEST}: holds objects edulm does not load (in optimizer.pt); treated as damaged",))
def _(b: Bench) -> Outcome:
    marker = b.tmp / "code-ran"

    def damage(ck: Path) -> None:
        with open(ck / OPTIMIZER_FILE, "wb") as f:
            torch.save({"state": {}, "param_groups": [], "payload": Payload(marker)}, f)
        reseal(ck)
    resumed = _falls_back(b, damage)
    assert not marker.exists()
    return resumed


@row("every-checkpoint-damaged", "--resume auto when every checkpoint is damaged",
     "damaged checkpoints: exit 2 saying what to do (not --resume auto), every file unchanged", 2,
     message="all 3 checkpoints are damaged",
     warnings=tuple(f"{checkpoint.checkpoint_name(s)}: model.safetensors has" for s in (2, 4, 6)))
def _(b: Bench) -> Outcome:
    run_dir, cfg = b.copy_reference()
    for ck in checkpoint.list_checkpoints(run_dir):
        _truncate(ck / "model.safetensors")
    before = snapshot(run_dir)
    refused = run_in_process("train", cfg, "--resume", "auto")
    assert "--resume auto" not in error_lines(refused.stderr)[0] and snapshot(run_dir) == before
    return refused


@row("resume-named-damaged", "--resume naming a damaged checkpoint",
     "damaged checkpoint: exit 2 naming the damage, every file unchanged", 2, message="checkpoint is damaged")
def _(b: Bench) -> Outcome:
    run_dir, cfg = b.copy_reference()
    _truncate(run_dir / "checkpoints" / NEWEST / "model.safetensors")
    before = snapshot(run_dir)
    refused = run_in_process("train", cfg, "--resume", str(run_dir / "checkpoints" / NEWEST))
    assert snapshot(run_dir) == before
    return refused


# =============================================================================================
# Damaged data and impossible numbers
# =============================================================================================


def _shards_copy(b: Bench) -> Path:
    shards = b.tmp / "shards"
    shutil.copytree(b.corpus["shards"], shards)
    return shards


@row("shard-bit-flip", "one flipped byte in a training shard",
     "damaged shards: exit 2 naming the shard and the remedy, nothing half-written", 2,
     message="corrupt shard (checksum mismatch); delete its shards dir")
def _(b: Bench) -> Outcome:
    shards = _shards_copy(b)
    _flip_byte(next(shards.glob("train-*.bin")), 4096)
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir, data={"shards_dir": str(shards)}))
    assert not (run_dir / "final").exists()
    assert_checkpoints_intact(run_dir)
    return failed


@row("shard-manifest-shape", "a shards manifest.json whose `shards` is a string",
     "damaged manifest: exit 2 before any work, nothing written", 2, message="damaged manifest (splits.train.shards is a string")
def _(b: Bench) -> Outcome:
    shards = _shards_copy(b)
    _rewrite_json(shards / "manifest.json", lambda m: {**m, "splits": {**m["splits"], "train": {
        **m["splits"]["train"], "shards": "train-000000.bin"}}})
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir, data={"shards_dir": str(shards)}))
    assert not run_dir.exists()
    return failed


@row("vocab-smaller-than-data", "model.vocab_size=200 with shards of a 300-token tokenizer",
     "impossible numbers: exit 2 before any work, nothing written", 2, message="token ids, but the model has 200 (model.vocab_size)")
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir, model={"vocab_size": 200}))
    assert not run_dir.exists()
    return failed


@row("lr-nan", "train.lr=.nan", "impossible numbers: exit 2 before any work", 2, message="train.lr: must be a finite number")
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir), "train.lr=.nan")
    assert not run_dir.exists()
    return failed


@row("lr-inf", "train.lr=.inf", "impossible numbers: exit 2 before any work", 2, message="train.lr: must be a finite number")
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir), "train.lr=.inf")
    assert not run_dir.exists()
    return failed


@row("diverged-without-checkpoint", "train.lr=1e30: the loss diverges before the first checkpoint",
     "divergence: exit 1, one line that does not advise --resume auto", 1, message="no checkpoint was written",
     warnings=("update skipped (1 in a row", "update skipped (2 in a row", "update skipped (3 in a row"))
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    failed = run_in_process("train", b.config(run_dir, lr=1e30, warmup_steps=0, max_nonfinite_steps=3, ckpt_interval=0,
                                              eval_interval=0))
    assert "--resume" not in error_lines(failed.stderr)[0]
    assert checkpoint.list_checkpoints(run_dir) == []
    return failed


@row("out-dir-is-a-file", "run.out_dir names an existing file", "bad input: exit 2 before any work, the file unchanged", 2,
     message="is a file, not a folder")
def _(b: Bench) -> Outcome:
    target = b.tmp / "notes.txt"
    target.write_text("mine\n")
    failed = run_in_process("train", b.config(target))
    assert target.read_text() == "mine\n"
    return failed


@row("out-dir-read-only", "run.out_dir on a read-only file system", "bad input: exit 2 before any work", 2,
     message="cannot write in")
def _(b: Bench) -> Outcome:
    with tmpfs(b.tmp / "ro", 1024, read_only=True) as ro:
        return run_in_process("train", b.config(ro / "run"))


@row("outputs-read-only", "prepare, export, card, tokenizer train with their output on a read-only file system",
     "bad input: one rule for every command: exit 2, one line naming the path", 2, message="Read-only file system")
def _(b: Bench) -> Outcome:
    with tmpfs(b.tmp / "ro", 1024, read_only=True) as ro:
        for argv in (["prepare", _prepare_config(b, ro / "shards", "prepare", workers=0)],
                     ["card", str(b.reference), "--out", str(ro / "README.md")],
                     ["tokenizer", "train", "--out", str(ro / "tokenizer"), "--vocab-size", "300"]):
            done = run_in_process(*argv)
            assert done.code == 2 and len(error_lines(done.stderr)) == 1 and "Read-only file system" in done.stderr, (
                argv, done.stderr)
        return run_in_process("export", str(b.reference), "--out", str(ro / "hf"))


@row("prepare-finished-read-only", "`edulm prepare` again of a finished shards dir on a read-only file system",
     "nothing to do: exit 0, 'already prepared', nothing written", 0)
def _(b: Bench) -> Outcome:
    with tmpfs(b.tmp / "ro", 8192) as mount:
        cfg = _prepare_config(b, mount / "shards", "prepare", workers=0)
        assert run_in_process("prepare", cfg).code == 0
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)
        before = snapshot(mount)
        done = run_in_process("prepare", cfg)
        assert "already prepared" in done.stdout and "nothing to do" in done.stdout and snapshot(mount) == before
        return done


@row("out-dir-takes-no-file", "run.out_dir=/proc/edulm-run (a folder that takes no new file)",
     "bad input: exit 2 before any work", 2, message="cannot write in /proc")
def _(b: Bench) -> Outcome:
    return run_in_process("train", b.config(Path("/proc/edulm-run")))


@row("shards-through-a-link", "two prepares of one shards dir, one through a symbolic link to it",
     "two writers: the link is the same folder, the second is refused", 2, message="is in use by edulm prepare (PID")
def _(b: Bench) -> Outcome:
    shards = b.tmp / "shards"
    shards.mkdir()
    (b.tmp / "alias").symlink_to(shards)
    with folder_lock(shards, "edulm prepare"):
        return run_in_process("prepare", _prepare_config(b, b.tmp / "alias", "prepare", workers=0))


@row("weights-overflow", "train.lr=1e308 train.max_steps=3 (shorter than train.max_nonfinite_steps)",
     "impossible numbers: the run stops in one line, no checkpoint or final/ of non-finite weights", 1,
     message="the weights hold NaN or infinite values", warnings=("update skipped",))
def _(b: Bench) -> Outcome:
    run_dir = b.tmp / "run"
    done = run_in_process("train", b.config(run_dir, max_steps=3, lr=1e308, warmup_steps=0))
    assert not list((run_dir / "checkpoints").glob("step-*")) and not (run_dir / "final").exists()
    return done


@row("bad-override-key", "train.lrr=1 (a misspelt key)", "bad overrides: exit 2, did-you-mean", 2, message="did you mean 'lr'")
def _(b: Bench) -> Outcome:
    return run_in_process("train", b.config(b.tmp / "run"), "train.lrr=1")


@row("bad-override-syntax", "an override that is not key=value", "bad overrides: exit 2", 2, message="notakeyvalue")
def _(b: Bench) -> Outcome:
    return run_in_process("train", b.config(b.tmp / "run"), "notakeyvalue")


@row("bad-config-value", "train.max_steps=many (a word for a number)", "bad configs: exit 2", 2, message="train.max_steps")
def _(b: Bench) -> Outcome:
    return run_in_process("train", b.config(b.tmp / "run"), "train.max_steps=many")


@row("bad-config-file", "a config file that is not YAML", "bad configs: exit 2", 2, message="bad.yaml")
def _(b: Bench) -> Outcome:
    bad = b.tmp / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    return run_in_process("train", str(bad))


@row("missing-config", "a config path that does not exist", "bad configs: exit 2", 2, message="no such config file")
def _(b: Bench) -> Outcome:
    return run_in_process("train", str(b.tmp / "missing.yaml"))


@row("bad-source", "`edulm prepare` of a data.source that does not exist", "bad sources: exit 2, nothing written", 2,
     message="no-such-file.jsonl")
def _(b: Bench) -> Outcome:
    shards = b.tmp / "shards"
    cfg = b.config(b.tmp / "unused", data={"source": str(b.tmp / "no-such-file.jsonl"), "shards_dir": str(shards)})
    failed = run_in_process("prepare", cfg)
    assert not shards.exists() or not any(shards.iterdir())
    return failed


@row("no-arguments", "`edulm` with no arguments", "usage: exit 2 with one line on stderr", 2, message="choose a command")
def _(b: Bench) -> Outcome:
    return run_in_process()


@row("temperature-nan", "`edulm generate MODEL hi --temperature nan`", "impossible numbers: exit 2", 2,
     message="--temperature must be a finite number")
def _(b: Bench) -> Outcome:
    return run_in_process("generate", str(b.reference / "final"), "hi", "--temperature", "nan")


# =============================================================================================
# Model folders
# =============================================================================================


@row("remote-code-refused", "generate / export / perplexity of a folder whose configs name their own code (auto_map)",
     "no remote code: exit 2, one line, no prompt, the code never runs", 2, message="names custom code")
def _(b: Bench) -> Outcome:
    folder = b.tmp / "hostile"
    shutil.copytree(b.reference / "final", folder)
    marker = b.tmp / "code-ran"
    (folder / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for name in ("config.json", "tokenizer_config.json"):
        _rewrite_json(folder / name, lambda c: {**c, "auto_map": {"AutoConfig": "custom.Config",
                                                                  "AutoTokenizer": ["custom.Tokenizer", None]}})
    text = b.tmp / "text.txt"
    text.write_text("The river carries fresh water every morning.\n")
    others = [run_in_process("export", str(folder), "--out", str(b.tmp / "hf")),
              run_in_process("perplexity", str(folder), "--text", str(text))]
    for outcome in others:
        assert outcome.code == 2 and len(error_lines(outcome.stderr)) == 1, outcome.stderr
    refused = run_in_process("generate", str(folder), "hi")
    assert not marker.exists() and not (b.tmp / "hf").exists()
    return refused


@row("reexport-keeps-user-files", "`edulm export` again into a folder holding the user's NOTES.md and extra/eval.json",
     "re-export: the user's files stay, byte for byte", 0)
def _(b: Bench) -> Outcome:
    source = b.reference / "checkpoints" / NEWEST
    out = b.tmp / "hf"
    assert run_in_process("export", str(source), "--out", str(out)).code == 0
    (out / "NOTES.md").write_text("my notes\n")
    (out / "extra").mkdir()
    (out / "extra" / "eval.json").write_text('{"acc": 0.5}\n')
    again = run_in_process("export", str(source), "--out", str(out), "--dtype", "bfloat16")
    assert (out / "NOTES.md").read_text() == "my notes\n" and (out / "extra" / "eval.json").read_text() == '{"acc": 0.5}\n'
    assert json.loads((out / "edulm_export.json").read_text())["dtype"] == "bfloat16"
    return again


# =============================================================================================
# The battery
# =============================================================================================

_NEEDS_RACE = {"two-trains-same-moment", "two-trains-1s-apart", "resume-while-live", "live-run-untouched"}


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_fault(r, bench, request):
    if r.id in _NEEDS_RACE:
        outcome = r.run(bench, request.getfixturevalue("race"))
    else:
        outcome = r.run(bench)
    judge(r, outcome)
    assert not leftovers(bench.tmp), f"left behind: {leftovers(bench.tmp)}"

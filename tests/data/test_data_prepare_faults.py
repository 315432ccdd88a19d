"""`edulm prepare` under faults: signals with worker processes, a second writer, damaged state and manifests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_helpers import fineweb_rows, write_parquet
from processes import alive, descendants, freeze_when
from edulm.cli import main
from edulm.data.prepare import prepare
from edulm.data.prepare_state import STATE, VAL_PARTIAL
from edulm.base.files import temp_path
from edulm.base.lock import folder_lock


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("[!.]*.bin"))}


def _write_config(path: Path, cfg, **data) -> Path:
    values = {"source": cfg.data.source, "shards_dir": cfg.data.shards_dir, "val_tokens": cfg.data.val_tokens,
              "shard_tokens": cfg.data.shard_tokens, "workers": cfg.data.workers, "pattern": cfg.data.pattern} | data
    path.write_text(json.dumps({"run": {"seed": cfg.run.seed}, "tokenizer": {"name": cfg.tokenizer.name}, "data": values}))
    return path


@pytest.fixture
def big_source(tmp_path, paragraphs) -> Path:
    folder = tmp_path / "big"
    rows = fineweb_rows(paragraphs, 3000, seed=9)
    for i in range(3):
        write_parquet(folder / f"{i}.parquet", rows[i * 1000 : (i + 1) * 1000], row_group_size=100)
    return folder


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_prepare_leaves_no_workers_and_resumes_identically(big_source, make_cfg, tmp_path, signum):
    reference = make_cfg(big_source, shards_dir=str(tmp_path / "reference"), shard_tokens=20_000)
    prepare(reference)
    cfg = make_cfg(big_source, shards_dir=str(tmp_path / "killed"), shard_tokens=20_000, workers=2)
    config = _write_config(tmp_path / "prepare.json", cfg)
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err:  # a file, not a pipe: surviving helpers would hold a pipe open
        proc = subprocess.Popen([sys.executable, "-m", "edulm", "prepare", str(config)], stdout=subprocess.DEVNULL, stderr=err)
    state = Path(cfg.data.shards_dir) / STATE
    # Frozen the moment its first shard is recorded, so the signal lands mid-prepare however busy the machine:
    # the rest takes about a second, and a poller starved for that long would signal a finished prepare.
    freeze_when(proc, state.exists, timeout=120)
    helpers = descendants(proc.pid)
    os.kill(proc.pid, signum)
    proc.send_signal(signal.SIGCONT)
    proc.wait(timeout=60)
    stderr = err_file.read_text()
    assert state.exists(), f"the child finished or failed before its first shard: {stderr}"
    assert len(helpers) >= 2  # the two tokenizer workers (and multiprocessing's resource tracker)
    deadline = time.time() + 10
    while any(alive(pid) for pid in helpers) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in helpers if alive(pid)], "helper processes outlived the killed prepare"
    if signum == signal.SIGTERM:
        assert proc.returncode == 143
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and "prepare stopped by SIGTERM" in lines[0] and "run the same command again" in lines[0]
    assert main(["prepare", str(config)]) == 0
    assert _shard_bytes(tmp_path / "reference") == _shard_bytes(tmp_path / "killed")


def test_a_second_prepare_of_the_same_folder_is_refused(fineweb_dir, make_cfg, tmp_path, capsys):
    cfg = make_cfg(fineweb_dir)
    config = _write_config(tmp_path / "c.json", cfg)
    with folder_lock(cfg.data.shards_dir, "edulm prepare"):
        capsys.readouterr()
        assert main(["prepare", str(config)]) == 2
        err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"in use by edulm prepare (PID {os.getpid()}" in err
    assert not Path(cfg.data.shards_dir).exists()
    assert main(["prepare", str(config)]) == 0  # released: the next one runs


def test_leftovers_of_a_killed_run_are_cleaned_and_its_held_out_tail_dropped(make_cfg, paragraphs, tmp_path):
    from test_data_prepare import FailingAfter

    from edulm.data.sources import LocalFiles

    rows = fineweb_rows(paragraphs, 1200, seed=2)
    write_parquet(tmp_path / "data" / "a.parquet", rows, row_group_size=64)
    reference = make_cfg(tmp_path / "data", shards_dir=str(tmp_path / "reference"), shard_tokens=7_000, val_tokens=3_000)
    prepare(reference)
    cfg = make_cfg(tmp_path / "data", shards_dir=str(tmp_path / "resumed"), shard_tokens=7_000, val_tokens=3_000)
    with pytest.raises(OSError, match="disk went away"):
        prepare(cfg, source=FailingAfter(LocalFiles(str(tmp_path / "data")), 700))
    out = Path(cfg.data.shards_dir)
    partial = (out / VAL_PARTIAL).read_bytes()
    # As a run killed mid-write leaves them: held-out tokens past the state, a temporary of a dead writer.
    (out / VAL_PARTIAL).write_bytes(partial + b"\x07\x00" * 333)
    stale = out / temp_path(out / "train-000009.bin").name.replace(f"-{os.getpid()}@", "-999999999@")  # no such PID
    stale.write_bytes(b"half")
    prepare(cfg)
    assert not stale.exists()
    assert _shard_bytes(tmp_path / "reference") == _shard_bytes(out)


def test_held_out_tokens_are_appended_not_rewritten(make_cfg, paragraphs, tmp_path, monkeypatch):
    rows = fineweb_rows(paragraphs, 1500, seed=2)
    write_parquet(tmp_path / "data" / "a.parquet", rows, row_group_size=64)
    cfg = make_cfg(tmp_path / "data", shard_tokens=3_000, val_tokens=6_000)
    written: list[int] = []
    import edulm.data.prepare_state as prepare_state

    real_append = prepare_state.append_val

    def counting_append(out, pieces):
        written.append(sum(len(p) for p in pieces))
        real_append(out, pieces)

    monkeypatch.setattr(prepare_state, "append_val", counting_append)
    manifest = prepare(cfg)
    assert len(written) > 5 and sum(written) == manifest["tokens"]["val"]  # each held-out token written once


def test_short_held_out_split_is_warned_about_and_recorded(fineweb_dir, make_cfg, caplog):
    manifest = prepare(make_cfg(fineweb_dir, val_tokens=50_000))
    held = manifest["held_out"]
    assert held == {"requested_tokens": 50_000, "tokens": manifest["tokens"]["val"], "documents": manifest["documents"]["val"],
                    "short": True}
    assert 0 < held["tokens"] < 50_000
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"held out {held['tokens']:,} tokens for validation, fewer than the 50,000 asked" in warnings[0]


def _damage_manifest(manifest: dict) -> list[tuple[str, dict]]:
    m = json.loads(json.dumps(manifest))
    cases = []
    broken = json.loads(json.dumps(m)); broken["splits"]["train"]["shards"] = "train-000000.bin"
    cases.append(("splits.train.shards is a string, not a list", broken))
    broken = json.loads(json.dumps(m)); broken["tokenizer"] = ["smollm2"]
    cases.append(("tokenizer is a list, not a mapping", broken))
    broken = json.loads(json.dumps(m)); del broken["splits"]["val"]["shards"][0]["crc32"]
    cases.append(("splits.val.shards[0] has no 'crc32'", broken))
    broken = json.loads(json.dumps(m)); broken["splits"]["train"]["shards"][1]["file"] = "../elsewhere.bin"
    cases.append(("splits.train.shards[1].file '../elsewhere.bin' is not a path inside the folder", broken))
    broken = json.loads(json.dumps(m)); broken["splits"]["train"]["shards"][0]["tokens"] = True
    cases.append(("splits.train.shards[0].tokens is a boolean, not an integer", broken))
    return cases


def test_manifests_of_the_wrong_shape_are_damage_not_crashes(fineweb_dir, make_cfg, tmp_path, capsys):
    from edulm.data.loader import make_train_loader, make_val_batches

    cfg = make_cfg(fineweb_dir)
    manifest = prepare(cfg)
    config = _write_config(tmp_path / "c.json", cfg)
    path = Path(cfg.data.shards_dir) / "manifest.json"
    for problem, broken in _damage_manifest(manifest) + [("not JSON", "{\"splits\": ")]:
        path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
        for read in (lambda: make_train_loader(cfg), lambda: make_val_batches(cfg, 2)):
            with pytest.raises(Exception) as caught:
                read()
            assert type(caught.value).__name__ == "UsageError" and problem in str(caught.value), caught.value
        capsys.readouterr()
        assert main(["prepare", str(config)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and problem in err and "delete it and run 'edulm prepare' again" in err
    # The advice works: without the damaged manifest, prepare rebuilds the folder to the same shards.
    path.unlink()
    assert main(["prepare", str(config)]) == 0
    assert json.loads(path.read_text())["splits"] == manifest["splits"]


@pytest.mark.parametrize("damage, problem", [
    (lambda s: s.update(shards="train-000000.bin"), "shards is a string, not a list"),
    (lambda s: s["shards"][0].pop("end"), "shards[0] has no 'end'"),
    (lambda s: s["shards"][0]["end"].update(doc="12"), "shards[0].end.doc is a string, not an integer"),
    (lambda s: s.update(settings=[1]), "settings is a list, not a mapping"),
])
def test_a_resume_state_of_the_wrong_shape_is_refused_in_one_line(make_cfg, paragraphs, tmp_path, capsys, damage, problem):
    from test_data_prepare import FailingAfter

    from edulm.data.sources import LocalFiles

    write_parquet(tmp_path / "data" / "a.parquet", fineweb_rows(paragraphs, 1200, seed=2), row_group_size=64)
    cfg = make_cfg(tmp_path / "data", shard_tokens=7_000)
    with pytest.raises(OSError):
        prepare(cfg, source=FailingAfter(LocalFiles(str(tmp_path / "data")), 700))
    state_file = Path(cfg.data.shards_dir) / STATE
    state = json.loads(state_file.read_text())
    damage(state)
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    assert main(["prepare", str(_write_config(tmp_path / "c.json", cfg))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"damaged resume state ({problem})" in err

"""Checkpoint folders: atomic commit, integrity checks, fallback to the previous one, retention."""

import json
import logging
import os

import pytest
from processes import dead_pid

from edulm.checkpoint import folders as checkpoint
from edulm.base import files
from edulm.base.errors import UsageError


def make(run_dir, step, payload=b"weights"):
    tmp = checkpoint.begin(run_dir, step)
    (tmp / "model.safetensors").write_bytes(payload * 100)
    (tmp / "config.yaml").write_text(f"step: {step}\n")
    return checkpoint.commit(tmp, step)


def test_commit_is_a_rename_with_a_manifest(tmp_path):
    tmp = checkpoint.begin(tmp_path, 5)
    assert files.temp_target(tmp) == "step-0000005" and checkpoint.list_checkpoints(tmp_path) == []
    (tmp / "a.bin").write_bytes(b"x" * 10)
    path = checkpoint.commit(tmp, 5)
    assert path == tmp_path / "checkpoints" / "step-0000005"
    assert not tmp.exists()
    assert checkpoint.verify(path) is None
    assert checkpoint.step_of(path) == 5
    assert checkpoint.list_checkpoints(tmp_path) == [path]


def test_damage_is_detected(tmp_path):
    path = make(tmp_path, 1)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:-1] + b"?")  # same size, different bytes
    assert "checksum" in checkpoint.verify(path)
    assert checkpoint.verify(path, checksums=False) is None
    (path / "model.safetensors").write_bytes(data[:10])
    assert "bytes" in checkpoint.verify(path, checksums=False)
    (path / "model.safetensors").unlink()
    assert "missing" in checkpoint.verify(path)
    (path / "manifest.json").unlink()
    assert "manifest" in checkpoint.verify(path)


def test_latest_good_falls_back_with_a_warning(tmp_path, caplog):
    first = make(tmp_path, 10)
    second = make(tmp_path, 20)
    assert checkpoint.find_latest_good(tmp_path) == second
    with (second / "model.safetensors").open("r+b") as f:
        f.truncate(3)
    with caplog.at_level(logging.WARNING, logger="edulm"):
        assert checkpoint.find_latest_good(tmp_path) == first
    assert "step-0000020" in caplog.text
    assert checkpoint.resolve_resume(tmp_path, "auto") == first
    assert checkpoint.resolve_resume(tmp_path, str(first)) == first
    with pytest.raises(UsageError, match="damaged"):
        checkpoint.resolve_resume(tmp_path, str(second))
    with pytest.raises(UsageError, match="no such"):
        checkpoint.resolve_resume(tmp_path, str(tmp_path / "nope"))


def test_a_named_checkpoint_older_than_a_complete_one_of_the_run_is_refused(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    first, second = make(run, 10), make(run, 20)
    with pytest.raises(UsageError, match="already holds later checkpoints .step-0000020."):
        checkpoint.resolve_resume(run, str(first))
    assert checkpoint.resolve_resume(other, str(first)) == first  # into a run dir of its own
    assert checkpoint.resolve_resume(run, str(second)) == second
    make(other, 30)
    with pytest.raises(UsageError, match="later checkpoints .step-0000030."):  # another run's later history
        checkpoint.resolve_resume(other, str(run))
    # A newest checkpoint damaged inside (sizes right, checksum wrong) is what --resume auto skips: naming
    # the run's own dir falls back to the older one like auto does, and is not refused because of it.
    data = bytearray((second / "model.safetensors").read_bytes())
    data[0] ^= 1
    (second / "model.safetensors").write_bytes(bytes(data))
    assert checkpoint.verify(second, checksums=False) is None and checkpoint.verify(second) is not None
    assert checkpoint.resolve_resume(run, str(run)) == checkpoint.resolve_resume(run, "auto") == first


def test_unfinished_temporaries_are_ignored_and_cleaned(tmp_path):
    good = make(tmp_path, 1)
    live = checkpoint.begin(tmp_path, 2)
    (live / "model.safetensors").write_bytes(b"half")
    assert checkpoint.find_latest_good(tmp_path) == good
    # The same folder left by a process that is gone (killed while writing it).
    dead = live.with_name(live.name.replace(f"-{os.getpid()}@", f"-{dead_pid()}@"))
    live.rename(dead)
    live = checkpoint.begin(tmp_path, 3)  # another run's checkpoint being written right now
    legacy = tmp_path / "checkpoints" / ".tmp-step-0000004"  # the naming of older versions
    legacy.mkdir()
    removed = checkpoint.remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, legacy])
    assert not dead.exists() and not legacy.exists() and live.exists() and good.exists()


def test_retention_keeps_the_newest_complete_ones(tmp_path):
    paths = [make(tmp_path, s) for s in (1, 2, 3, 4)]
    deleted = checkpoint.apply_retention(tmp_path, keep_last=2)
    assert deleted == paths[:2]
    assert checkpoint.list_checkpoints(tmp_path) == paths[2:]


def test_retention_never_deletes_the_only_good_one(tmp_path):
    good = make(tmp_path, 1)
    bad = make(tmp_path, 2)
    (bad / "manifest.json").unlink()
    # keep_last=1 would normally drop step 1, but step 2 is not complete: step 1 stays.
    assert checkpoint.apply_retention(tmp_path, keep_last=1) == []
    assert good.exists() and bad.exists()
    newer = make(tmp_path, 3)
    assert checkpoint.apply_retention(tmp_path, keep_last=1) == [good, bad]
    assert checkpoint.list_checkpoints(tmp_path) == [newer]


def test_recommitting_a_step_replaces_it(tmp_path):
    make(tmp_path, 7, b"old")
    path = make(tmp_path, 7, b"new")
    assert (path / "model.safetensors").read_bytes().startswith(b"new")
    assert checkpoint.verify(path) is None
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000007"]


def _rewrite_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, problem", [
    (lambda m: m.update(files=list(m["files"])), "files is a list, not a mapping"),
    (lambda m: m["files"]["model.safetensors"].pop("bytes"), "files['model.safetensors'] has no 'bytes'"),
    (lambda m: m["files"]["config.yaml"].update(bytes="12"), "files['config.yaml'].bytes is a string, not an integer"),
    (lambda m: m.pop("files"), "has no 'files'"),
    (lambda m: m["files"].update({"../../elsewhere": {"bytes": 1, "sha256": "0"}}), "not a file inside the checkpoint"),
])
def test_a_manifest_of_the_wrong_shape_is_damage(tmp_path, caplog, change, problem):
    good = make(tmp_path, 1)
    bad = make(tmp_path, 2)
    _rewrite_manifest(bad, change)
    assert problem in checkpoint.verify(bad) and problem in checkpoint.verify(bad, checksums=False)
    with caplog.at_level(logging.WARNING, logger="edulm"):
        assert checkpoint.find_latest_good(tmp_path) == good
    assert len(caplog.records) == 1 and "step-0000002: manifest.json is damaged" in caplog.text
    # Retention never counts it, never crashes on it, and never deletes the only good checkpoint.
    assert checkpoint.apply_retention(tmp_path, keep_last=1) == []
    assert good.exists() and bad.exists()


def test_a_further_check_makes_an_intact_checkpoint_damaged(tmp_path, caplog):
    first = make(tmp_path, 1)
    second = make(tmp_path, 2)
    check = lambda path: "it holds objects edulm does not load" if path == second else None  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="edulm"):
        assert checkpoint.resolve_resume(tmp_path, "auto", check) == first
    assert "step-0000002: it holds objects edulm does not load; treated as damaged" in caplog.text
    with pytest.raises(UsageError, match="holds objects edulm does not load"):
        checkpoint.resolve_resume(tmp_path, str(second), check)
    assert checkpoint.resolve_resume(tmp_path, "auto") == second  # without the check it counts as intact

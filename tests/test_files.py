"""Atomic writes, the temporary-name scheme, stale temporaries and the full-disk error."""

from __future__ import annotations

import errno
import os

import pytest
from processes import dead_pid

from edulm.base import files
from edulm.base.errors import DiskFullError


def test_write_json_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    files.write_json(target, {"a": 1})
    files.write_json(target, {"a": 2})
    assert target.read_text() == '{\n  "a": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]


def test_full_disk_becomes_one_line_naming_the_folder(tmp_path):
    target = tmp_path / "metrics.csv"
    with pytest.raises(DiskFullError) as caught:
        with files.atomic_path(target, what="the metrics") as tmp:
            tmp.write_text("x")
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(caught.value)
    assert message == f"no space left on {tmp_path} while writing the metrics; free some space and run the command again"
    assert "\n" not in message and list(tmp_path.iterdir()) == []
    assert files.is_disk_full(RuntimeError("wrapped").with_traceback(None)) is False
    assert (caught.value.folder, caught.value.what) == (tmp_path, "the metrics")  # for callers with better advice


def test_full_disk_is_recognised_through_the_libraries_that_hide_the_errno():
    # safetensors (Rust) keeps only the text of the OS error.
    assert files.is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert files.is_disk_full(RuntimeError("I/O error: Disk quota exceeded (os error 122)"))
    assert not files.is_disk_full(RuntimeError("I/O error: Permission denied (os error 13)"))
    # torch.save into a Python file object fails *while handling* the file's OSError.
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    except RuntimeError as err:
        assert files.is_disk_full(err)


def test_temp_names_round_trip_and_are_unique(tmp_path):
    a, b = files.temp_path(tmp_path / "final"), files.temp_path(tmp_path / "final")
    assert a != b and a.name.startswith(".final.tmp-") and files.temp_target(a) == "final"
    assert files.temp_target(tmp_path / "final") is None


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = dead_pid()
    host = files.temp_path(tmp_path / "x").name.split("@", 1)[1].rsplit("-", 1)[0]
    stale_dir = tmp_path / f".final.tmp-{dead}@{host}-0123abcd"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"0" * 10)
    stale_file = tmp_path / f".config.yaml.tmp-{dead}@{host}-89abcdef"
    stale_file.write_text("half")
    mine = files.temp_path(tmp_path / "summary.json")
    mine.write_text("being written")
    other_host = tmp_path / ".final.tmp-1@some-other-node-0123abcd"
    other_host.mkdir()
    unrelated = tmp_path / ".hidden"
    unrelated.write_text("user file")

    removed = files.remove_stale_temps(tmp_path)

    assert sorted(p.name for p in removed) == sorted([stale_dir.name, stale_file.name])
    assert mine.exists() and other_host.exists() and unrelated.exists()
    assert not stale_dir.exists() and not stale_file.exists()


def test_a_reused_pid_does_not_keep_a_temporary_alive(tmp_path):
    # The temporary claims this very test process wrote it, but it is dated before this process began.
    host = files.temp_path(tmp_path / "x").name.split("@", 1)[1].rsplit("-", 1)[0]
    parent = os.getppid()
    old = tmp_path / f".final.tmp-{parent}@{host}-0123abcd"
    old.mkdir()
    os.utime(old, (1_000_000, 1_000_000))  # 1970: long before any running process started
    assert files.owner_alive(old) is False


def test_stale_temporaries_of_one_name_only(tmp_path):
    dead = dead_pid()
    host = files.temp_path(tmp_path / "x").name.split("@", 1)[1].rsplit("-", 1)[0]
    final = tmp_path / f".final.tmp-{dead}@{host}-0123abcd"
    other = tmp_path / f".config.yaml.tmp-{dead}@{host}-89abcdef"
    final.mkdir()
    other.write_text("half")
    assert files.stale_temps(tmp_path, target="final") == [final]
    assert files.remove_stale_temps(tmp_path, target="final") == [final]
    assert not final.exists() and other.exists()


def test_sha256_file(tmp_path):
    import hashlib

    (tmp_path / "f").write_bytes(b"x" * 3_000_000)  # more than one read block
    assert files.sha256_file(tmp_path / "f") == hashlib.sha256(b"x" * 3_000_000).hexdigest()

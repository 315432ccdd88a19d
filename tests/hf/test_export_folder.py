"""Re-exporting into a folder: the user's files stay, the card follows its weights, one writer, no leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hf_helpers import IDS, add_checkpoint, logits, tiny_model
from processes import freeze_when, stale_temp

from edulm.base.errors import UsageError
from edulm.base.files import temp_path, temp_target
from edulm.hf import EXPORT_MARKER, export, load_model
from edulm.hf.export_folder import PREVIOUS_CARD_FILE, settle_stale_exports
from edulm.base.lock import folder_lock
from edulm.base.layout import MODEL_FILE


def temporaries(folder: Path) -> list[str]:
    """Names of the temporaries in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if temp_target(p) is not None)


def test_reexport_keeps_every_file_it_did_not_write(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "hf")
    (out / "NOTES.md").write_text("my notes\n")
    (out / "extra").mkdir()
    (out / "extra" / "eval.json").write_text('{"acc": 0.5}\n')
    (out / "latest-notes").symlink_to("NOTES.md")
    written = json.loads((out / EXPORT_MARKER).read_text())["files"]
    assert {"config.json", MODEL_FILE, "tokenizer.json", "tokenizer_config.json", EXPORT_MARKER} <= set(written)

    export(ckpt, out, dtype="bfloat16")
    assert (out / "NOTES.md").read_text() == "my notes\n"
    assert (out / "extra" / "eval.json").read_text() == '{"acc": 0.5}\n'
    assert os.readlink(out / "latest-notes") == "NOTES.md"
    assert json.loads((out / EXPORT_MARKER).read_text())["dtype"] == "bfloat16"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert temporaries(tmp_path) == [] and not (tmp_path / ".hf.lock").exists()


def test_an_older_marker_without_a_file_list_still_protects_user_files(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "hf")
    marker = json.loads((out / EXPORT_MARKER).read_text())
    (out / EXPORT_MARKER).write_text(json.dumps({k: marker[k] for k in ("source", "source_kind", "weights", "dtype")}))
    (out / "NOTES.md").write_text("mine\n")
    export(ckpt, out)
    assert (out / "NOTES.md").read_text() == "mine\n" and "files" in json.loads((out / EXPORT_MARKER).read_text())


def test_the_card_stays_with_its_weights(run_dir, tiny_model_config, tmp_path, caplog):
    first = add_checkpoint(run_dir, tiny_model(tiny_model_config, 1), 1)
    out = export(first, tmp_path / "hf")
    (out / "README.md").write_text("# card of step 1\n")

    export(first, out, dtype="float16")  # the same weights in another dtype: the card still describes them
    export(out, out)  # re-exporting the export itself: the very same weights
    assert (out / "README.md").read_text() == "# card of step 1\n"
    assert not (out / PREVIOUS_CARD_FILE).exists()
    assert not [r for r in caplog.records if "README" in r.getMessage()]

    second = add_checkpoint(run_dir, tiny_model(tiny_model_config, 2), 2)  # training went on
    export(second, out)
    assert not (out / "README.md").exists()
    assert (out / PREVIOUS_CARD_FILE).read_text() == "# card of step 1\n"
    notes = [r.getMessage() for r in caplog.records if "README" in r.getMessage() and r.levelname == "WARNING"]
    assert len(notes) == 1 and PREVIOUS_CARD_FILE in notes[0] and "edulm card" in notes[0]
    model, _ = load_model(out)
    assert (logits(model, IDS) - logits(tiny_model(tiny_model_config, 2), IDS)).abs().max() < 1e-5


def test_a_second_writer_is_refused(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = tmp_path / "hf"
    with folder_lock(out, "edulm export"):
        with pytest.raises(UsageError, match=rf"in use by edulm export \(PID {os.getpid()}"):
            export(ckpt, out)
    assert not out.exists()
    export(ckpt, out)  # free again


def test_stale_temporaries_of_the_folder_are_removed(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    stale = stale_temp(tmp_path / "hf")
    stale.mkdir()
    (stale / MODEL_FILE).write_bytes(b"half")
    other = stale.with_name(stale.name.replace(".hf.", ".other.", 1))  # another folder's: not ours to judge
    other.mkdir()
    live = temp_path(tmp_path / "hf")  # a temporary of a live writer (this process)
    live.mkdir()
    export(ckpt, tmp_path / "hf")
    assert not stale.exists() and other.exists() and live.exists()


def test_an_export_lost_between_its_two_renames_is_put_back(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = export(ckpt, tmp_path / "hf")
    aside = stale_temp(out)
    os.replace(out, aside)  # what a kill right after moving the old folder aside leaves
    settle_stale_exports(out)
    assert (out / EXPORT_MARKER).is_file() and not aside.exists()


def test_sigkill_during_export_leaves_nothing_after_the_next_export(run_dir, tiny_model_config, tmp_path):
    ckpt = add_checkpoint(run_dir, tiny_model(tiny_model_config), 1)
    out = tmp_path / "hf"
    child = subprocess.Popen([sys.executable, "-m", "edulm", "export", str(ckpt), "--out", str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Frozen while its temporary folder exists, so the kill lands inside the export however busy the machine.
    freeze_when(child, lambda: bool(temporaries(tmp_path)), timeout=120)
    child.send_signal(signal.SIGKILL)
    child.wait()
    left = temporaries(tmp_path)
    assert left, "the export finished before it could be killed"
    assert not (out / EXPORT_MARKER).exists()

    export(ckpt, out)
    assert temporaries(tmp_path) == []
    assert json.loads((out / EXPORT_MARKER).read_text())["source_kind"] == "checkpoint"

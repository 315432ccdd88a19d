"""Resumes that change the schedule: refused jumps, extended WSD runs, decay runs into a new run dir."""

from __future__ import annotations

import json

import pytest
import yaml

from edulm.cli import main
from edulm.config import config_from_dict
from edulm.base.errors import UsageError
from edulm.base.metrics import read_metrics
from edulm.base.files import sha256_file
from edulm.train.core_callbacks import default_callbacks
from edulm.train.trainer import train

from train_helpers import SigtermAfter, tiny_config, write_config


def rows(run_dir):
    return {r["step"]: r for r in read_metrics(run_dir / "training" / "training_metrics.csv")}


def summary(run_dir):
    return json.loads((run_dir / "training" / "training_summary.json").read_text())


def snapshot(run_dir):
    """Every file of a run dir with its bytes (what a refused resume must leave alone)."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def wsd(corpus, run_dir, **train):
    settings = dict(schedule="wsd", lr=3e-3, min_lr_ratio=0.1, warmup_steps=2, decay_fraction=0.2, eval_interval=0,
                    ckpt_interval=4, keep_last=5)
    return tiny_config(corpus, run_dir, **{**settings, **train})


def test_a_longer_cosine_run_is_refused_then_allowed_with_the_flag(corpus, tmp_path, capsys):
    run_dir = tmp_path / "cosine"
    cfg = write_config(tmp_path / "cosine.yaml", tiny_config(corpus, run_dir, max_steps=8, eval_interval=0, ckpt_interval=4))
    assert main(["train", str(cfg)]) == 0
    before = snapshot(run_dir)
    capsys.readouterr()

    assert main(["train", str(cfg), "train.max_steps=16", "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-schedule-change" in err[0] and "total_steps 8 -> 16" in err[0], err
    assert snapshot(run_dir) == before  # nothing written, nothing removed

    assert main(["train", str(cfg), "train.max_steps=16", "--resume", "auto", "--allow-schedule-change"]) == 0
    out = capsys.readouterr().out
    assert "schedule changed from step 9 on (total_steps 8 -> 16)" in out
    lr = {step: row["lr"] for step, row in rows(run_dir).items()}
    assert lr[8] == pytest.approx(3e-4) and lr[9] > 2 * lr[8]  # the jump the flag allowed
    assert lr[16] == pytest.approx(3e-4)
    changes = summary(run_dir)["schedule_changes"]
    assert len(changes) == 1 and changes[0]["step"] == 9 and changes[0]["allowed_by_flag"] is True
    assert (changes[0]["old"]["total_steps"], changes[0]["new"]["total_steps"]) == (8, 16)
    assert changes[0]["old"]["schedule"] == changes[0]["new"]["schedule"] == "cosine"


def test_a_rewind_inside_the_run_dir_and_a_run_shorter_than_its_checkpoint_are_refused(corpus, tmp_path, capsys):
    run_dir = tmp_path / "wsd"
    cfg = write_config(tmp_path / "wsd.yaml", wsd(corpus, run_dir, max_steps=8))
    assert main(["train", str(cfg)]) == 0
    before = snapshot(run_dir)
    capsys.readouterr()

    # Continuing step 4 beside step 8 would leave step 8 of the old history for a later --resume auto.
    older = run_dir / "checkpoints" / "step-0000004"
    assert main(["train", str(cfg), "train.max_steps=12", "--resume", str(older), "--allow-schedule-change"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds later checkpoints (step-0000008)" in err[0] and "run.out_dir=NEW" in err[0], err
    # Fewer steps than the checkpoint has taken: nothing to train, even with the flag.
    assert main(["train", str(cfg), "train.max_steps=6", "--resume", "auto", "--allow-schedule-change"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at step 8, past the 6 steps" in err[0], err
    assert snapshot(run_dir) == before

    # The same rewind into a run dir of its own goes ahead.
    raw = wsd(corpus, tmp_path / "rewound", max_steps=12)
    assert main(["train", str(write_config(tmp_path / "rewound.yaml", raw)), "--resume", str(older)]) == 0
    assert min(rows(tmp_path / "rewound")) == 5 and snapshot(run_dir) == before


def test_wsd_stopped_in_its_stable_phase_extends_with_resume_auto_as_if_planned(corpus, tmp_path, capsys):
    planned = tmp_path / "planned"
    train(config_from_dict(wsd(corpus, planned, max_steps=20)))

    run_dir = tmp_path / "extended"
    short = config_from_dict(wsd(corpus, run_dir, max_steps=10))  # its decay would start after step 8
    with pytest.raises(SystemExit) as stopped:
        train(short, callbacks=default_callbacks(False, False, True) + [SigtermAfter(5)])
    assert stopped.value.code == 143  # stopped at step 6, in the stable phase
    capsys.readouterr()
    train(config_from_dict(wsd(corpus, run_dir, max_steps=20)), resume="auto")
    assert "schedule changed from step 7 on (total_steps 10 -> 20)" in capsys.readouterr().out

    want, got = rows(planned), rows(run_dir)
    assert sorted(got) == list(range(1, 21))
    assert [got[s]["lr"] for s in got] == [want[s]["lr"] for s in got]
    assert [got[s]["loss"] for s in got] == [want[s]["loss"] for s in got]  # bitwise: the same run as one planned at 20 steps
    changes = summary(run_dir)["schedule_changes"]
    assert [(c["step"], c["allowed_by_flag"], c["old"]["total_steps"], c["new"]["total_steps"]) for c in changes] == [
        (7, False, 10, 20)]

    # Finished, it is in its decay: going on would jump back to the peak.
    with pytest.raises(UsageError, match="allow-schedule-change"):
        train(config_from_dict(wsd(corpus, run_dir, max_steps=30)), resume="auto")


def test_a_decay_run_from_a_stable_checkpoint_into_a_new_run_dir(corpus, tmp_path, capsys):
    stable = tmp_path / "stable"
    train(config_from_dict(wsd(corpus, stable, max_steps=16, decay_fraction=0.0)))  # a long stable phase, no decay
    before = snapshot(stable)

    # Decay over 4 steps from the checkpoint of step 8: max_steps = 8 + 4, decay_fraction = 4 / 12.
    decayed = tmp_path / "decay"
    raw = wsd(corpus, decayed, max_steps=12, decay_fraction=4 / 12)
    capsys.readouterr()
    train(config_from_dict(raw), resume=str(stable / "checkpoints" / "step-0000008"))
    assert "schedule changed from step 9 on (total_steps 16 -> 12, decay_fraction 0.0 -> 0.333" in capsys.readouterr().out
    assert snapshot(stable) == before  # the stable run is untouched and can go on

    got = rows(decayed)
    assert sorted(got) == [9, 10, 11, 12]
    assert [got[s]["lr"] for s in got] == pytest.approx([3e-3 - 2.7e-3 * k / 4 for k in (1, 2, 3, 4)])
    assert [c["step"] for c in summary(decayed)["schedule_changes"]] == [9]
    # Steps 1 to 8 are not in this run dir's metrics or log: the summary and the card say where they were trained.
    checkpoint8 = str((stable / "checkpoints" / "step-0000008").resolve())
    assert summary(decayed)["branched_from"] == [{"step": 8, "checkpoint": checkpoint8}]
    card = (decayed / "final" / "README.md").read_text()
    assert f"steps up to 8 trained in another run, resumed from `{checkpoint8}`" in card
    assert summary(stable)["branched_from"] == []
    assert (decayed / "final" / "model.safetensors").is_file()
    assert yaml.safe_load((decayed / "config.yaml").read_text())["train"]["max_steps"] == 12

    # The same as a run planned with that decay from the start.
    planned = tmp_path / "planned"
    train(config_from_dict(wsd(corpus, planned, max_steps=12, decay_fraction=4 / 12)))
    want = rows(planned)
    assert [got[s]["loss"] for s in got] == [want[s]["loss"] for s in got]


@pytest.mark.parametrize("optimizer, override, named", [
    ("adamw", "train.optimizer=muon", "train.optimizer=adamw, the config says muon"),
    ("adamw", "train.weight_decay=0.05", "train.weight_decay 0.1 -> 0.05"),
    ("muon", "train.optimizer_settings.momentum=0.5", "train.optimizer_settings.momentum 0.95 -> 0.5"),
    ("muon", "train.optimizer_settings.adjust_lr=original",
     "train.optimizer_settings.adjust_lr match_rms_adamw -> original"),
])
def test_a_resume_with_other_optimizer_settings_is_refused_before_anything_is_written(
        corpus, tmp_path, capsys, optimizer, override, named):
    # The optimizer's groups come back from the checkpoint with their hyperparameters: another value in
    # the config was silently replaced by the checkpoint's, while the start-up line, config.yaml and the
    # card showed the config's (and another train.optimizer failed only after train.log was appended to).
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", wsd(corpus, run_dir, max_steps=4, optimizer=optimizer))
    assert main(["train", str(cfg)]) == 0
    before = snapshot(run_dir)
    capsys.readouterr()
    extra = ["train.optimizer_settings.lr=0.02"] if override.endswith("original") else []
    assert main(["train", str(cfg), "train.max_steps=8", override, *extra, "--resume", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "model.init_from=" in err[0], err
    assert snapshot(run_dir) == before
    if optimizer == "muon":  # the learning rates follow the config, so another Muon lr is no optimizer change
        assert main(["train", str(cfg), "train.optimizer_settings.lr=0.004", "--resume", "auto"]) == 0


@pytest.mark.parametrize("override, named", [
    ("train.seq_len=16", "trained with train.seq_len=32, the config says 16"),
    ("run.seed=5", "seed: checkpoint 7, now 5"),
])
def test_a_resume_whose_data_position_does_not_fit_is_refused_before_anything_is_written(
        corpus, tmp_path, capsys, override, named):
    # The loader refused the checkpoint's data position, but only after train.log had a new segment,
    # config.yaml had been rewritten with the config's values and the metrics sinks had started.
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", wsd(corpus, run_dir, max_steps=4, schedule="constant"))
    assert main(["train", str(cfg)]) == 0
    before = snapshot(run_dir)
    capsys.readouterr()
    assert main(["train", str(cfg), "train.max_steps=8", override, "--resume", "auto"]) == 2
    assert snapshot(run_dir) == before
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0], err


def test_a_resume_warns_when_it_keeps_another_global_batch_than_the_config_asks(corpus, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cfg = write_config(tmp_path / "run.yaml", wsd(corpus, run_dir, max_steps=4, schedule="constant", global_batch_size=4))
    assert main(["train", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["train", str(cfg), "train.max_steps=6", "train.global_batch_size=8", "--resume", "auto"]) == 0
    captured = capsys.readouterr()
    assert ("the config asks for train.global_batch_size=8; continuing with the checkpoint's 2 x 2 accumulation x "
            "1 processes = 4 sequences per step") in captured.err
    assert summary(run_dir)["batch"]["global_batch_size"] == 4


def test_a_run_of_an_earlier_version_with_every_muon_key_in_its_config_resumes(corpus, tmp_path):
    """Earlier versions wrote all six train.muon_* keys into every run's config.yaml (an AdamW run's too); such a
    checkpoint resumes: the keys move to train.optimizer_settings for a Muon run and count for nothing otherwise."""
    old_keys = {"muon_lr": 0.0, "muon_adjust_lr": "match_rms_adamw", "muon_momentum": 0.95, "muon_nesterov": True,
                "muon_ns_steps": 5, "muon_weight_decay": 0.1}
    for optimizer in ("adamw", "muon"):
        run_dir = tmp_path / optimizer
        cfg = write_config(tmp_path / f"{optimizer}.yaml", wsd(corpus, run_dir, max_steps=4, optimizer=optimizer))
        assert main(["train", str(cfg)]) == 0
        for saved in [run_dir / "config.yaml", *run_dir.glob("checkpoints/step-*/config.yaml")]:
            raw = yaml.safe_load(saved.read_text())
            raw["train"].update(old_keys)  # as an earlier version wrote it
            saved.write_text(yaml.safe_dump(raw, sort_keys=False))
            manifest = saved.parent / "manifest.json"
            if manifest.is_file():  # a checkpoint of that version: its manifest sealed that file
                sealed = json.loads(manifest.read_text())
                sealed["files"]["config.yaml"] = {"bytes": saved.stat().st_size, "sha256": sha256_file(saved)}
                manifest.write_text(json.dumps(sealed))
        assert main(["train", str(run_dir / "config.yaml"), "train.max_steps=6", "--resume", "auto",
                     "--allow-schedule-change"]) == 0
        assert json.loads((run_dir / "training" / "training_summary.json").read_text())["steps"] == 6

"""W&B (offline): its files live in the run dir and a resumed run continues the same W&B run."""

from __future__ import annotations

import json

import pytest

from edulm.config import config_from_dict
from edulm.train.trainer import train

from train_helpers import tiny_config

pytest.importorskip("wandb", reason="wandb is not installed (pip install 'edulm[logging]')")


@pytest.mark.slow
def test_offline_wandb_run_is_in_the_run_dir_and_a_resume_continues_it(corpus, tmp_path, monkeypatch):
    for name, folder in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home" / folder))  # nothing of the user's W&B set-up is touched
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # W&B's default is ./wandb of the working directory
    run_dir = tmp_path / "run"

    def run(max_steps: int, resume: str | None) -> None:
        raw = tiny_config(corpus, run_dir, max_steps=max_steps, eval_interval=0, ckpt_interval=2, wandb=True,
                          wandb_project="edulm-tests")
        train(config_from_dict(raw), resume=resume)

    run(2, None)
    first = json.loads((run_dir / "training" / "wandb_run.json").read_text())
    run(4, "auto")
    second = json.loads((run_dir / "training" / "wandb_run.json").read_text())

    assert first["project"] == second["project"] == "edulm-tests"
    assert first["id"] and second["id"] == first["id"]
    segments = sorted((run_dir / "training" / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(f"-{first['id']}") for s in segments)
    assert all((s / f"run-{first['id']}.wandb").is_file() for s in segments)
    assert not (cwd / "wandb").exists() and not (run_dir / "wandb").exists()

    # A new run in another dir is another W&B run.
    other = tmp_path / "other"
    train(config_from_dict(tiny_config(corpus, other, max_steps=1, eval_interval=0, wandb=True, wandb_project="edulm-tests")))
    assert json.loads((other / "training" / "wandb_run.json").read_text())["id"] != first["id"]

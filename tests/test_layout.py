"""The run directory's names: defined once, importable without torch."""

import subprocess
import sys
from pathlib import Path

from edulm import layout
from edulm.layout import RunLayout, checkpoint_name, rank_file, step_of


def test_paths_of_a_run_dir(tmp_path):
    run = RunLayout.of(tmp_path)
    assert run.config == tmp_path / "config.yaml"
    assert run.checkpoint(1000) == tmp_path / "checkpoints" / "step-0001000"
    assert run.metrics == tmp_path / "training" / "training_metrics.csv"
    assert run.summary == tmp_path / "training" / "training_summary.json"
    assert run.log == tmp_path / "training" / "train.log"
    assert run.plots == (tmp_path / "training" / "training_curves.png", tmp_path / "training" / "loss_curve_zoom.png")
    assert run.final == tmp_path / "final"


def test_checkpoint_names_round_trip():
    assert [step_of(checkpoint_name(s)) for s in (0, 7, 1_000_000)] == [0, 7, 1_000_000]
    assert step_of(Path("runs/x/checkpoints/step-0000042")) == 42
    assert step_of(".step-0000042.tmp-1@host-0123abcd") is None and step_of("final") is None
    assert rank_file(3) == "rank-00003.pt"


def test_readers_of_run_dirs_need_no_torch():
    code = ("import sys, edulm.layout, edulm.metrics, edulm.evaluate.artifacts; "
            "sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(layout.__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "torch was imported"

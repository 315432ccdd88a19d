"""The run directory's names: defined once, importable without torch."""

import subprocess
import sys
from pathlib import Path

from edulm.base import layout
from edulm.base.layout import RunLayout, checkpoint_name, rank_file, step_of


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
    code = ("import sys, edulm.base.layout, edulm.base.metrics, edulm.evaluate.artifacts; "
            "sys.exit('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(layout.__file__).parents[1], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr or "torch was imported"


RUN_DIR_NAMES = {
    layout.CONFIG_FILE, layout.CHECKPOINTS_DIR, layout.FINAL_DIR, layout.METRICS_FILE, layout.SUMMARY_FILE,
    layout.LOG_FILE, layout.CURVES_FILE, layout.ZOOM_FILE, layout.TRAINER_STATE_FILE, layout.OPTIMIZER_FILE,
    layout.WANDB_RUN_FILE,
}
"""Names of the run directory that mean nothing else (``model.safetensors`` is also a Hugging Face file name)."""


def _docstrings(tree) -> set[int]:
    import ast

    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def test_no_module_spells_a_run_dir_name_of_its_own():
    import ast

    package = Path(layout.__file__).parent
    spelled = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "layout.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        spelled += [f"{path.relative_to(package)}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and node.value in RUN_DIR_NAMES and id(node) not in docs]
    assert not spelled, f"use edulm.base.layout's names: {spelled}"

"""The training plots, drawn from a metrics CSV."""

import math

from edulm.base.layout import PLOT_FILES
from edulm.base.metrics import MetricsCSV
from edulm.train.plots import plot_training


def test_plots_are_written(tmp_path):
    csv = MetricsCSV(tmp_path / "m.csv")
    for step in range(1, 21):
        csv.write({"step": step, "loss": 5 - math.log(step), "lr": 1e-3, "tokens_per_s": 100.0,
                   "val_loss": 4.0 if step % 10 == 0 else None})
    csv.close()
    paths = plot_training(tmp_path / "m.csv", tmp_path / "out", warmup_steps=5)
    assert tuple(p.name for p in paths) == PLOT_FILES
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(PLOT_FILES)  # no temporaries left

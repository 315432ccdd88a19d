"""The metrics CSV (full-precision floats, resume truncation) and perplexity from a loss."""

import math

from edulm.base.metrics import CSV_COLUMNS, MetricsCSV, perplexity, read_metrics


def test_csv_rows_round_trip_and_resume_truncates(tmp_path):
    path = tmp_path / "m.csv"
    csv = MetricsCSV(path)
    for step in range(1, 6):
        csv.write({"step": step, "loss": 1 / 3 * step, "val_loss": None if step % 2 else 2.0, "not_a_column": 1})
    csv.close()
    with path.open("a") as f:
        f.write("6,12,0.5")  # a row cut short by a crash
    rows = read_metrics(path)
    assert list(rows[0]) == CSV_COLUMNS
    assert rows[2]["loss"] == 1 / 3 * 3  # full float precision survives
    assert rows[1]["val_loss"] == 2.0 and rows[0]["val_loss"] is None
    csv = MetricsCSV(path, resume_step=3)
    csv.write({"step": 4, "loss": 9.0})
    csv.close()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    assert read_metrics(path)[-1]["loss"] == 9.0
    MetricsCSV(path).close()  # a new run starts an empty file
    assert read_metrics(path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]  # no temporary left behind


def test_perplexity_saturates_instead_of_overflowing():
    assert perplexity(2.0) == math.exp(2.0)
    assert perplexity(1e6) == math.inf


def test_read_metrics_tolerates_a_cut_line_and_can_drop_non_finite_values(tmp_path):
    path = tmp_path / "training_metrics.csv"
    path.write_text("step,loss,val_loss\n1,2.5,\n2,nan,3.0\n3,1.2e")  # the last line was cut by a crash
    rows = read_metrics(path)
    assert rows[0] == {"step": 1.0, "loss": 2.5, "val_loss": None}
    assert rows[1]["loss"] != rows[1]["loss"] and rows[2] == {"step": 3.0, "loss": None, "val_loss": None}
    assert read_metrics(path, finite_only=True)[1] == {"step": 2.0, "loss": None, "val_loss": 3.0}

"""StepFile: the one cut-back of append-only per-step files on resume (a callback's JSON lines, the metrics CSV)."""

from __future__ import annotations

import json

from edulm.base.metrics import CSV_COLUMNS, MetricsCSV, read_metrics
from edulm.base.step_file import StepFile


def test_a_resume_keeps_the_rows_up_to_its_step_and_drops_a_line_cut_short(tmp_path):
    path = tmp_path / "losses.jsonl"
    rows = StepFile(path).open(None)
    for step in range(1, 8):
        rows.write({"step": step, "loss": 1.0 / step})
    rows.close()
    with path.open("a") as f:
        f.write('{"step": 8, "lo')  # a kill in the middle of a write
    again = StepFile(path).open(5)
    again.write({"step": 6, "loss": 0.5})
    again.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    StepFile(path).open(None).close()  # a new run starts an empty file
    assert path.read_text() == ""


def test_the_metrics_csv_is_a_step_file_and_reads_on_from_an_earlier_column_set(tmp_path):
    path = tmp_path / "training_metrics.csv"
    old_columns = [c for c in CSV_COLUMNS if c != "val_bpb"]  # a file written before the column existed
    path.write_text(",".join(old_columns) + "\r\n" + "".join(
        ",".join(str(step) if c == "step" else "1.5" if c == "loss" else "" for c in old_columns) + "\r\n"
        for step in (1, 2, 3)))
    csv = MetricsCSV(path, resume_step=2)
    csv.write({"step": 3, "loss": 2.5, "val_bpb": 1.25})
    csv.close()
    rows = read_metrics(path)
    assert [(r["step"], r["loss"], r["val_bpb"]) for r in rows] == [(1, 1.5, None), (2, 1.5, None), (3, 2.5, 1.25)]
    assert path.read_text().splitlines()[0] == ",".join(CSV_COLUMNS)


def test_a_resume_keeps_the_columns_of_scores_it_no_longer_asks_for(tmp_path):
    path = tmp_path / "training_metrics.csv"
    first = MetricsCSV(path, extra_columns=["downstream/a/acc"])
    first.write({"step": 1, "loss": 2.0, "downstream/a/acc": 0.5})
    first.close()
    again = MetricsCSV(path, resume_step=1, extra_columns=["downstream/b/acc"])  # task a dropped, b added
    again.write({"step": 2, "loss": 1.5, "downstream/b/acc": 0.75})
    again.close()
    rows = read_metrics(path)
    assert [(r["downstream/a/acc"], r["downstream/b/acc"]) for r in rows] == [(0.5, None), (None, 0.75)]

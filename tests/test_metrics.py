"""Peak-FLOPs table, MFU, the metrics CSV (resume truncation) and the plots."""

import math

import pytest

from edulm.metrics import CSV_COLUMNS, MetricsCSV, cost_estimate, mfu, peak_bf16_flops, read_metrics
from edulm.plots import plot_training


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L20", 119.5), ("NVIDIA L40S", 362),
    ],
)
def test_peak_table(name, tflops):
    assert peak_bf16_flops(name) == tflops * 1e12


def test_unknown_device_has_no_mfu():
    assert peak_bf16_flops("NVIDIA GeForce GTX 1080") is None
    assert mfu(1e5, 1e9, None) is None
    assert mfu(100_000, 1e9, 1e15, n_devices=2) == pytest.approx(0.05)


def test_cost_formula():
    c = cost_estimate(7200, 1, 2.5)
    assert c["gpu_hours"] == 2 and c["cost"] == 5.0 and "2.5" in c["formula"]
    assert cost_estimate(7200, 0, None)["cost"] is None


def test_csv_rows_round_trip_and_resume_truncates(tmp_path):
    path = tmp_path / "m.csv"
    csv = MetricsCSV(path)
    for step in range(1, 6):
        csv.write({"step": step, "loss": 1 / 3 * step, "val_loss": None if step % 2 else 2.0})
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


def test_plots_are_written(tmp_path):
    csv = MetricsCSV(tmp_path / "m.csv")
    for step in range(1, 21):
        csv.write({"step": step, "loss": 5 - math.log(step), "lr": 1e-3, "tokens_per_s": 100.0,
                   "val_loss": 4.0 if step % 10 == 0 else None})
    csv.close()
    paths = plot_training(tmp_path / "m.csv", tmp_path / "out", warmup_steps=5)
    assert [p.name for p in paths] == ["training_curves.png", "loss_curve_zoom.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

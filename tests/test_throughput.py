"""Device peak FLOPs and MFU."""

import pytest
import torch

from edulm.train.throughput import device_info, mfu, peak_bf16_flops, take_peak_memory_gb


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


def test_cpu_readings():
    info = device_info(torch.device("cpu"))
    assert info["type"] == "cpu" and info["cores"] >= 1 and info["total_memory_gb"] > 0
    assert take_peak_memory_gb(torch.device("cpu")) > 0

"""Device names: one resolver for the trainer and the inference commands."""

from __future__ import annotations

import pytest
import torch

from edulm.base.devices import resolve_device
from edulm.base.errors import UsageError


def test_auto_and_named_devices():
    expected = torch.device("cuda:1") if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_bad_names_name_the_setting():
    with pytest.raises(UsageError, match=r"^train\.device: 'gpu0' is not a device"):
        resolve_device("gpu0", setting="train.device")
    with pytest.raises(UsageError, match=r"^--device: 'nonsense' is not a device"):
        resolve_device("nonsense")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_a_usage_error():
    with pytest.raises(UsageError, match=r"train\.device is 'cuda' but CUDA is not available here; use train\.device=cpu"):
        resolve_device("cuda", setting="train.device")
    with pytest.raises(UsageError, match="use --device cpu"):
        resolve_device("cuda:0")

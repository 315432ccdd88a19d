"""The loader on a CUDA machine (marker ``gpu``; CI never runs it): pinned batches from the prefetch thread,
copied to the device asynchronously, with exact resume.

    pytest -m gpu tests/data/test_data_gpu.py
"""

from __future__ import annotations

import pytest
import torch

from edulm.data.loader import make_train_loader
from edulm.data.prefetch import PrefetchingLoader
from edulm.data.prepare import prepare

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_prefetched_batches_are_pinned_and_resume_exactly(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir, prefetch=2)
    prepare(cfg)
    loader = make_train_loader(cfg)
    assert isinstance(loader, PrefetchingLoader)
    first = next(loader)
    state = loader.state_dict()
    ahead = [next(loader) for _ in range(3)]
    for x, y in (first, *ahead):
        assert x.is_pinned() and y.is_pinned()  # so .to("cuda", non_blocking=True) does not wait for the copy
    on_device = [(x.to("cuda", non_blocking=True), y.to("cuda", non_blocking=True)) for x, y in ahead]
    torch.cuda.synchronize()
    for (x, y), (xd, yd) in zip(ahead, on_device):
        assert torch.equal(xd.cpu(), x) and torch.equal(yd.cpu(), y)
    loader.close()

    resumed = make_train_loader(cfg)
    resumed.load_state_dict(state)
    for x, _ in ahead:
        assert torch.equal(next(resumed)[0], x)
    resumed.close()

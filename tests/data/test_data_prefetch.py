"""The prefetching loader: batches read ahead by a thread, exact resume from the consumer's position, clean close."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from edulm.data.loader import ShardLoader, make_train_loader
from edulm.data.prefetch import PrefetchingLoader
from edulm.data.prepare import prepare


@pytest.fixture
def prepared(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir, prefetch=3)
    prepare(cfg)
    return cfg


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "edulm-prefetch" and t.is_alive()]


def _equal(a, b) -> bool:
    return torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _wait_until(condition, seconds: float = 5.0) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        time.sleep(0.01)


def test_resume_mid_stream_gives_the_same_batches_as_without_prefetch(prepared):
    import dataclasses

    plain = make_train_loader(dataclasses.replace(prepared, data=dataclasses.replace(prepared.data, prefetch=0)))
    assert isinstance(plain, ShardLoader)
    expected = [next(plain) for _ in range(60)]  # past the end of the first epoch
    loader = make_train_loader(prepared)
    assert isinstance(loader, PrefetchingLoader)
    for want in expected[:9]:
        assert _equal(next(loader), want)
    _wait_until(lambda: loader.inner.state_dict() != loader.state_dict())
    state = loader.state_dict()
    assert state == {**plain.state_dict(), "epoch": 0, "position": 9 * 4}  # the consumer's position...
    assert loader.inner.state_dict()["position"] > state["position"]  # ...not how far the thread has read
    loader.close()

    resumed = make_train_loader(prepared)
    resumed.load_state_dict(state)
    for want in expected[9:]:
        assert _equal(next(resumed), want)
    # Loading a state while the thread runs drops what it read ahead.
    resumed.load_state_dict(state)
    assert _equal(next(resumed), expected[9])
    resumed.close()


def test_the_queue_is_bounded(prepared):
    loader = make_train_loader(prepared)
    next(loader)
    batch = loader.inner.batch_size
    _wait_until(lambda: loader.inner.state_dict()["position"] >= (1 + 3) * batch)
    time.sleep(0.3)  # give an unbounded reader time to run on
    read = loader.inner.state_dict()["position"] // batch
    assert read <= 1 + 3 + 1  # consumed, queued (depth 3), and one waiting to be queued
    loader.close()


def test_close_leaves_no_thread(prepared):
    before = len(_prefetch_threads())
    loaders = [make_train_loader(prepared) for _ in range(3)]
    for loader in loaders[:2]:
        next(loader)
    assert len(_prefetch_threads()) == before + 2  # the thread starts with the first batch
    for loader in loaders:
        loader.close()
        loader.close()  # twice is fine
    assert len(_prefetch_threads()) == before
    assert not loaders[0].inner._checks._thread.is_alive()  # the wrapped loader is closed too


def test_a_loader_dropped_without_close_stops_its_thread(prepared):
    import gc

    before = len(_prefetch_threads())
    loader = make_train_loader(prepared)
    next(loader)
    assert len(_prefetch_threads()) == before + 1
    del loader
    gc.collect()
    _wait_until(lambda: len(_prefetch_threads()) == before)
    assert len(_prefetch_threads()) == before


def test_an_error_of_the_wrapped_loader_reaches_the_consumer_in_order():
    class Failing:
        def __init__(self):
            self.n = 0

        def __next__(self):
            self.n += 1
            if self.n == 3:
                raise RuntimeError("disk went away")
            return torch.full((1, 2), self.n), torch.full((1, 2), self.n)

        def state_dict(self):
            return {"n": self.n}

        def close(self):
            pass

    before = len(_prefetch_threads())
    loader = PrefetchingLoader(Failing(), depth=2)
    assert next(loader)[0][0, 0] == 1 and next(loader)[0][0, 0] == 2
    assert loader.state_dict() == {"n": 2}
    for _ in range(2):
        with pytest.raises(RuntimeError, match="disk went away"):
            next(loader)
    loader.close()
    assert len(_prefetch_threads()) == before

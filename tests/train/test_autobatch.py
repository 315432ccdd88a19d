"""The batch geometry: micro_batch_size auto (the search, with an injected 'fits' predicate) and
global_batch_size counted over all processes."""

from __future__ import annotations

import pytest
import torch

from edulm.config import config_from_dict
from edulm.base.errors import UsageError
from edulm.model import LlamaLM
from edulm.train.autobatch import (
    CPU_MAX_MICRO_BATCH,
    kept_batch_note,
    largest_fitting,
    resolve_batch_shape,
    split_global_batch,
)
from edulm.train.state import BatchShape


def geometry(cfg, model=None, device="cpu", world_size=1, fits=None):
    """(micro, accum) of the resolved shape, checking the rest of it."""
    shape = resolve_batch_shape(cfg, model, device, world_size, fits=fits)
    assert isinstance(shape, BatchShape) and shape.world_size == world_size and shape.seq_len == cfg.train.seq_len
    return shape.micro_batch_size, shape.grad_accum_steps


class CountingFits:
    """fits(m) == m <= capacity, remembering every size asked about."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.asked: list[int] = []

    def __call__(self, micro: int) -> bool:
        self.asked.append(micro)
        return micro <= self.capacity


@pytest.mark.parametrize("capacity", [1, 2, 3, 7, 8, 13, 64, 100])
def test_largest_fitting_finds_the_capacity_in_few_probes(capacity):
    fits = CountingFits(capacity)
    assert largest_fitting(fits, limit=1000) == capacity
    assert len(fits.asked) <= 2 * capacity.bit_length() + 1
    assert len(set(fits.asked)) == len(fits.asked)  # never probes the same size twice


def test_largest_fitting_respects_the_limit_and_reports_nothing_fits():
    assert largest_fitting(CountingFits(50), limit=12) == 12
    assert largest_fitting(CountingFits(0), limit=12) == 0


@pytest.mark.parametrize(
    "target,max_micro,expected",
    [
        (258, 6, (6, 43)),  # exact
        (258, 16, (16, 16)),  # 256 sequences: 0.8% off, for 16-sequence passes
        (258, 7, (7, 37)),  # 259
        (64, 100, (64, 1)),  # never more than the target
        (96, 8, (8, 12)),
        (10, 3, (2, 5)),  # 3 x 3 = 9 is 10% off; 2 x 5 is exact
    ],
)
def test_split_global_batch_keeps_the_global_batch(target, max_micro, expected):
    micro, accum = split_global_batch(target, max_micro)
    assert (micro, accum) == expected
    assert micro <= max_micro


def test_split_global_batch_falls_back_to_the_closest_product():
    micro, accum = split_global_batch(7, 2, tolerance=0.0)  # 7 is prime: 2 x 4 = 8 or 2 x 3 = 6 or 1 x 7
    assert (micro, accum) == (1, 7)


def _cfg(**train):
    return config_from_dict({"model": {"vocab_size": 64, "n_layers": 1, "d_model": 16, "d_ff": 32, "n_heads": 2,
                                       "n_kv_heads": 1, "max_seq_len": 16},
                             "train": {"seq_len": 16, **train}})


def test_auto_keeps_the_configured_global_batch():
    cfg = _cfg(micro_batch_size="auto", global_batch_size=258)
    # 9 x 29 = 261 is 1.2% off the target, beyond the 1% tolerance; 8 x 32 = 256 is 0.8% off.
    assert geometry(cfg, None, "cuda", fits=CountingFits(9)) == (8, 32)


def test_the_probe_peak_is_forgotten_before_training_reports_its_own(monkeypatch):
    # The CUDA probe runs forward + backward at sizes up to ~90% of the device; the run's reported peak memory is
    # read from the same allocator statistics, so they are reset once the last probe has run.
    events: list = []
    probe = CountingFits(6)

    def fits(micro: int) -> bool:
        events.append(("probe", micro))
        return probe(micro)

    monkeypatch.setattr("edulm.train.autobatch.cuda_fits", lambda cfg, model, device: fits)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append(("reset", str(device))))
    cfg = _cfg(micro_batch_size="auto", grad_accum_steps=5)
    assert geometry(cfg, None, "cuda") == (6, 5)
    assert events[-1] == ("reset", "cuda") and [e for e in events if e[0] == "reset"] == [("reset", "cuda")]
    assert len(events) > 2  # several probes, then the one reset


def test_auto_without_global_batch_keeps_accumulation():
    cfg = _cfg(micro_batch_size="auto", grad_accum_steps=5)
    assert geometry(cfg, None, "cuda", fits=CountingFits(12)) == (12, 5)


def test_auto_on_cpu_uses_the_fixed_cap_without_probing(tiny_model_config):
    cfg = _cfg(micro_batch_size="auto", global_batch_size=32)
    model = LlamaLM(tiny_model_config)
    before = [p.detach().clone() for p in model.parameters()]
    assert geometry(cfg, model, torch.device("cpu")) == (CPU_MAX_MICRO_BATCH, 32 // CPU_MAX_MICRO_BATCH)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_numeric_micro_batch_is_used_as_given():
    assert geometry(_cfg(micro_batch_size=3, grad_accum_steps=7)) == (3, 7)
    assert geometry(_cfg(micro_batch_size=3, grad_accum_steps=7), world_size=4) == (3, 7)  # no global batch: kept
    assert geometry(_cfg(micro_batch_size=4, global_batch_size=32)) == (4, 8)
    with pytest.raises(UsageError, match="multiple of train.micro_batch_size"):
        _cfg(micro_batch_size=5, global_batch_size=32)


def test_global_batch_counts_every_process():
    cfg = _cfg(micro_batch_size=4, global_batch_size=32)
    shape = resolve_batch_shape(cfg, None, "cpu", world_size=2)
    assert (shape.micro_batch_size, shape.grad_accum_steps) == (4, 4)
    assert shape.sequences_per_step == 32 and shape.tokens_per_step == 32 * 16
    with pytest.raises(UsageError, match="multiple of train.micro_batch_size x processes"):
        resolve_batch_shape(cfg, None, "cpu", world_size=3)  # 32 does not split over 3 processes
    assert geometry(_cfg(micro_batch_size=4, global_batch_size=36), world_size=3) == (4, 3)  # 12 each
    with pytest.raises(UsageError, match=r"\(5 x 4 = 20\)"):
        resolve_batch_shape(_cfg(micro_batch_size=5, global_batch_size=30), None, "cpu", world_size=4)
    auto = _cfg(micro_batch_size="auto", global_batch_size=258)
    with pytest.raises(UsageError, match="split evenly over 4 processes"):
        resolve_batch_shape(auto, None, "cuda", world_size=4, fits=CountingFits(9))
    # 129 sequences per process: 9 x 14 = 126 is 2.3% off; 8 x 16 = 128 is within 1%.
    assert geometry(auto, None, "cuda", world_size=2, fits=CountingFits(9)) == (8, 16)


def test_nothing_fits_is_a_usage_error():
    with pytest.raises(UsageError, match="grad_checkpointing"):
        geometry(_cfg(micro_batch_size="auto"), None, "cuda", fits=CountingFits(0))


def test_negative_global_batch_is_rejected():
    with pytest.raises(UsageError, match="global_batch_size"):
        _cfg(global_batch_size=-1)


@pytest.mark.parametrize("asked, warned", [
    (dict(micro_batch_size=4, grad_accum_steps=2), False),
    (dict(micro_batch_size=2, grad_accum_steps=2), True),
    (dict(micro_batch_size=4, global_batch_size=8), False),
    # A resume kept the checkpoint's batch without a word when the config asked for another global batch.
    (dict(micro_batch_size=4, global_batch_size=16), True),
    (dict(micro_batch_size="auto", global_batch_size=8), False),
    (dict(micro_batch_size="auto", global_batch_size=4), True),
    (dict(micro_batch_size="auto", grad_accum_steps=2), False),
    (dict(micro_batch_size="auto", grad_accum_steps=3), True),
])
def test_a_resume_says_when_it_keeps_another_batch_than_the_config_asks(asked, warned):
    kept = BatchShape(micro_batch_size=4, grad_accum_steps=2, world_size=1, seq_len=32)
    note = kept_batch_note(_cfg(**asked), kept)
    assert (note is not None) == warned
    if warned:
        assert "continuing with the checkpoint's 4 x 2 accumulation x 1 processes = 8 sequences per step" in note


def test_auto_within_the_tolerance_of_the_global_batch_is_no_change():
    kept = BatchShape(micro_batch_size=8, grad_accum_steps=32, world_size=1, seq_len=32)  # 256 for 258: 0.8% off
    assert kept_batch_note(_cfg(micro_batch_size="auto", global_batch_size=258), kept) is None
    assert kept_batch_note(_cfg(micro_batch_size=8, global_batch_size=256), kept) is None


def test_a_resume_on_another_number_of_processes_keeps_the_sequences_per_step():
    from edulm.train.autobatch import regroup_batch

    kept = BatchShape(micro_batch_size=6, grad_accum_steps=43, world_size=1, seq_len=2048)  # 258 sequences
    on_two = regroup_batch(kept, 2, "ckpt")
    assert (on_two.micro_batch_size, on_two.grad_accum_steps, on_two.sequences_per_step) == (3, 43, 258)
    on_six = regroup_batch(kept, 6, "ckpt")
    assert (on_six.micro_batch_size, on_six.grad_accum_steps, on_six.sequences_per_step) == (1, 43, 258)
    back = regroup_batch(on_two, 1, "ckpt")
    assert (back.micro_batch_size, back.grad_accum_steps) == (3, 86)  # never a larger pass than the checkpoint's
    with pytest.raises(UsageError, match="258 sequences per step .* which 4 processes cannot share evenly"):
        regroup_batch(kept, 4, "ckpt")

"""The learning-rate schedules (registry, cosine) and the step count."""

import math

import pytest

from edulm.config import TrainConfig
from edulm.base.errors import UsageError
from edulm.train.schedule import SCHEDULES, lr_at, total_steps
from edulm.train.schedule.cosine import cosine
from edulm.train.schedule.wsd import decay_start
from edulm.train.state import BatchShape


def tokens_per_step(t: TrainConfig, micro: int, accum: int, world_size: int = 1) -> int:
    return BatchShape(micro, accum, world_size, t.seq_len).tokens_per_step


def test_every_module_of_the_folder_is_a_value_of_train_schedule():
    assert set(SCHEDULES) == {"cosine", "wsd", "constant"}
    assert all(kind.name == name for name, kind in SCHEDULES.items())
    t = TrainConfig(lr=1e-3, warmup_steps=10)
    assert all(lr_at(s, t, 100) == cosine(s, 100, t) for s in range(0, 120, 7))


def test_reference_recipe_step_count():
    t = TrainConfig(seq_len=2048, micro_batch_size=6, grad_accum_steps=43, token_budget=10_001_252_352)
    step_tokens = tokens_per_step(t, 6, 43)
    assert BatchShape(6, 43, 1, 2048).sequences_per_step == 258
    assert step_tokens == 528_384
    assert total_steps(t, step_tokens) == 18_928


def test_step_count_rounds_up_and_counts_processes():
    t = TrainConfig(seq_len=16, token_budget=1000)
    step_tokens = tokens_per_step(t, 2, 3, world_size=2)
    assert step_tokens == 2 * 3 * 16 * 2
    assert total_steps(t, step_tokens) == math.ceil(1000 / 192)
    assert total_steps(TrainConfig(max_steps=7, token_budget=10**9), step_tokens) == 7


def test_step_count_needs_a_budget():
    with pytest.raises(UsageError, match="max_steps"):
        total_steps(TrainConfig(max_steps=0, token_budget=0), 100)


def test_warmup_then_cosine_to_the_floor_at_the_last_step():
    t = TrainConfig(lr=4e-4, min_lr_ratio=0.1, warmup_steps=1000)
    last = 18_928
    assert lr_at(0, t, last) == 0.0
    assert lr_at(1, t, last) == pytest.approx(4e-4 / 1000)
    assert lr_at(500, t, last) == pytest.approx(2e-4)
    assert lr_at(1000, t, last) == pytest.approx(4e-4)
    middle = 1000 + (last - 1000) // 2
    assert lr_at(middle, t, last) == pytest.approx(0.5 * (4e-4 + 4e-5), rel=1e-3)
    assert lr_at(last, t, last) == pytest.approx(4e-5, rel=1e-12)
    assert lr_at(last + 10, t, last) == pytest.approx(4e-5, rel=1e-12)
    values = [lr_at(s, t, last) for s in range(1000, last + 1, 97)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises after the warmup


def test_no_warmup_starts_at_the_peak():
    t = TrainConfig(lr=1e-3, min_lr_ratio=0.0, warmup_steps=0)
    assert lr_at(1, t, 10) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 10)))
    assert lr_at(10, t, 10) == pytest.approx(0.0, abs=1e-15)


def test_shipped_configs():
    from pathlib import Path

    from edulm.config import load_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    ref = load_config(configs / "l20_135m_deepthin.yaml").train
    step_tokens = tokens_per_step(ref, ref.micro_batch_size, ref.grad_accum_steps)
    assert (step_tokens, total_steps(ref, step_tokens)) == (528_384, 18_928)
    smoke = load_config(configs / "smoke.yaml")
    assert smoke.data.source == "builtin:sample" and smoke.model.vocab_size == 49152
    assert smoke.train.max_steps > 0 and smoke.train.eval_interval > 0


# ---------------------------------------------------------------------------------------------
# wsd and constant
# ---------------------------------------------------------------------------------------------


def test_wsd_warms_up_holds_the_peak_then_decays_linearly_to_the_floor():
    t = TrainConfig(schedule="wsd", lr=3e-3, min_lr_ratio=0.1, warmup_steps=10, decay_fraction=0.2)
    last = 100
    assert decay_start(last, t) == 80  # the last 20 steps decay
    assert lr_at(0, t, last) == 0.0
    assert lr_at(5, t, last) == pytest.approx(1.5e-3)
    assert lr_at(10, t, last) == 3e-3
    assert all(lr_at(s, t, last) == 3e-3 for s in range(10, 81))  # exactly the peak: a resume compares rates
    assert lr_at(81, t, last) == pytest.approx(3e-3 - 2.7e-3 / 20)
    assert lr_at(90, t, last) == pytest.approx((3e-3 + 3e-4) / 2)
    assert lr_at(100, t, last) == pytest.approx(3e-4, rel=1e-12)
    assert lr_at(120, t, last) == pytest.approx(3e-4, rel=1e-12)
    values = [lr_at(s, t, last) for s in range(10, 121)]
    assert all(a > b for a, b in zip(values[70:90], values[71:91]))  # strictly down through the decay
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_wsd_extended_keeps_every_stable_step_and_moves_the_decay():
    t = TrainConfig(schedule="wsd", lr=1e-3, warmup_steps=5, decay_fraction=0.2)
    short, longer = [lr_at(s, t, 100) for s in range(1, 81)], [lr_at(s, t, 200) for s in range(1, 81)]
    assert short == longer
    assert decay_start(200, t) == 160


def test_wsd_decay_fraction_bounds_and_rounding():
    assert decay_start(100, TrainConfig(schedule="wsd", warmup_steps=0, decay_fraction=0.0)) == 100
    t = TrainConfig(schedule="wsd", lr=1e-3, min_lr_ratio=0.0, warmup_steps=0, decay_fraction=0.0)
    assert [lr_at(s, t, 10) for s in (1, 10, 11)] == [1e-3, 1e-3, 1e-3]  # no decay steps: the peak throughout
    whole = TrainConfig(schedule="wsd", lr=1e-3, min_lr_ratio=0.0, warmup_steps=4, decay_fraction=1.0)
    assert decay_start(10, whole) == 4  # the decay never reaches into the warmup
    assert lr_at(4, whole, 10) == 1e-3 and lr_at(7, whole, 10) == pytest.approx(0.5e-3)
    # A decay run of D steps from a stable checkpoint at step S: decay_fraction = D / (S + D) starts at S.
    for s, d in ((800, 100), (18_000, 1_800), (7, 3), (1000, 1)):
        assert decay_start(s + d, TrainConfig(schedule="wsd", warmup_steps=0, decay_fraction=d / (s + d))) == s


def test_constant_warms_up_then_holds():
    t = TrainConfig(schedule="constant", lr=2e-3, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, t, 10) for s in (0, 2, 4, 5, 10, 50)] == [0.0, 1e-3, 2e-3, 2e-3, 2e-3, 2e-3]
    assert lr_at(1, TrainConfig(schedule="constant", lr=2e-3, warmup_steps=0), 10) == 2e-3


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_warms_up_alike_and_never_rises_after(name):
    t = TrainConfig(schedule=name, lr=1e-3, min_lr_ratio=0.1, warmup_steps=20, decay_fraction=0.3)
    last = 500
    warm = [lr_at(s, t, last) for s in range(0, 21)]
    assert warm == [1e-3 * s / 20 for s in range(0, 21)]
    after = [lr_at(s, t, last) for s in range(20, last + 20)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    assert min(after) >= 1e-4 * (1 - 1e-12)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_decay_fraction_is_a_share(value):
    from edulm.config import config_from_dict

    with pytest.raises(UsageError, match="train.decay_fraction must be between 0 and 1"):
        config_from_dict({"train": {"schedule": "wsd", "decay_fraction": value}})

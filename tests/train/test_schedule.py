"""The learning-rate schedules (registry, cosine) and the step count."""

import math
import typing

import pytest

from edulm.config import TrainConfig
from edulm.errors import UsageError
from edulm.train.schedule import SCHEDULES, cosine, lr_at, total_steps
from edulm.train.train_state import BatchShape


def tokens_per_step(t: TrainConfig, micro: int, accum: int, world_size: int = 1) -> int:
    return BatchShape(micro, accum, world_size, t.seq_len).tokens_per_step


def test_every_config_value_has_a_schedule_and_back():
    assert set(typing.get_args(typing.get_type_hints(TrainConfig)["schedule"])) == set(SCHEDULES)
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

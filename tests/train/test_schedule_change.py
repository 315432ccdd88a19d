"""Which schedule changes a resume may make on its own, which need --allow-schedule-change, and what is recorded."""

import pytest

from edulm.config import TrainConfig
from edulm.train.schedule import lr_at
from edulm.train.schedule_change import schedule_change, schedule_settings


def change(old: TrainConfig, old_total: int, new: TrainConfig, new_total: int, step: int):
    return schedule_change(schedule_settings(old, old_total), schedule_settings(new, new_total), step,
                           lr_at(step, old, old_total))


COSINE = TrainConfig(schedule="cosine", lr=4e-4, min_lr_ratio=0.1, warmup_steps=100)
WSD = TrainConfig(schedule="wsd", lr=3e-3, min_lr_ratio=0.0, warmup_steps=100, decay_fraction=0.2)


def test_the_same_settings_are_no_change():
    assert change(COSINE, 1000, COSINE, 1000, 500) is None
    assert change(WSD, 1000, TrainConfig(**{**WSD.__dict__}), 1000, 900) is None


def test_a_key_the_schedule_does_not_read_is_no_change():
    assert change(COSINE, 1000, TrainConfig(**{**COSINE.__dict__, "decay_fraction": 0.5}), 1000, 500) is None


def test_a_longer_cosine_run_jumps_and_needs_the_flag():
    found = change(COSINE, 1000, COSINE, 2000, 600)
    assert found is not None and not found.continuous
    assert found.lr_trained < found.next_lr_new  # the rate would climb back up
    assert "total_steps 1000 -> 2000" in found.refusal("ckpt") and "--allow-schedule-change" in found.refusal("ckpt")
    record = found.record(allowed_by_flag=True)
    assert record["step"] == 601 and record["old"]["total_steps"] == 1000 and record["new"]["total_steps"] == 2000
    assert record["allowed_by_flag"] is True and "\n" not in found.refusal("ckpt") + found.describe()


def test_a_longer_cosine_run_still_in_its_warmup_is_continuous():
    found = change(COSINE, 1000, COSINE, 2000, 50)
    assert found is not None and found.continuous  # the warmup does not depend on the length


def test_a_longer_wsd_run_in_its_stable_phase_is_continuous():
    found = change(WSD, 1000, WSD, 5000, 799)  # the old decay would start after step 800
    assert found is not None and found.continuous
    assert found.next_lr_old == found.next_lr_new == 3e-3
    assert "schedule changed from step 800 on (total_steps 1000 -> 5000)" in found.describe()


@pytest.mark.parametrize("step", [801, 1000])
def test_a_longer_wsd_run_already_in_its_decay_jumps(step):
    found = change(WSD, 1000, WSD, 5000, step)
    assert found is not None and not found.continuous and found.next_lr_new == 3e-3 > found.lr_trained
    # The way out is named: a checkpoint from before the decay, continued in a run dir of its own.
    assert "left its stable phase after step 800" in found.refusal("ckpt") and "new run.out_dir" in found.refusal("ckpt")


def test_a_decay_run_from_a_stable_checkpoint_is_continuous():
    decay = TrainConfig(**{**WSD.__dict__, "decay_fraction": 100 / 700})
    found = change(WSD, 1000, decay, 700, 600)
    assert found is not None and found.continuous
    assert found.next_lr_new < found.next_lr_old == 3e-3  # the decay starts with the next step
    assert "decay_fraction 0.2 -> 0.14285" in found.differences() and "total_steps 1000 -> 700" in found.differences()


def test_a_decay_that_would_have_started_before_the_checkpoint_jumps():
    found = change(WSD, 1000, TrainConfig(**{**WSD.__dict__, "decay_fraction": 0.5}), 1000, 600)
    assert found is not None and not found.continuous
    # Step 600 is in the stable phase (it ended after 800): the hint is how to place the decay, not
    # "left its stable phase after step 800", which wrongly told the user to look for an older checkpoint.
    refusal = found.refusal("ckpt")
    assert "left its stable phase" not in refusal
    assert "step 600 is in the stable phase" in refusal and "train.decay_fraction=D / (600 + D)" in refusal


def test_another_lr_on_a_constant_run_names_its_stable_phase():
    constant = TrainConfig(**{**WSD.__dict__, "schedule": "constant"})
    found = change(constant, 1000, TrainConfig(**{**constant.__dict__, "lr": 1e-3}), 1000, 500)
    assert found is not None and not found.continuous
    assert "step 500 is in the stable phase" in found.refusal("ckpt") and "use train.schedule=wsd and" not in found.refusal("ckpt")


@pytest.mark.parametrize("key, value", [("lr", 1e-3), ("schedule", "cosine")])
def test_other_peaks_or_shapes_in_the_stable_phase_jump(key, value):
    found = change(WSD, 1000, TrainConfig(**{**WSD.__dict__, key: value}), 1000, 500)
    assert found is not None and not found.continuous


def test_wsd_to_constant_in_the_stable_phase_is_continuous():
    found = change(WSD, 1000, TrainConfig(**{**WSD.__dict__, "schedule": "constant"}), 1000, 500)
    assert found is not None and found.continuous and "schedule wsd -> constant" in found.describe()


MUON = TrainConfig(**{**WSD.__dict__, "optimizer": "muon"})


def _muon(**settings) -> TrainConfig:
    return TrainConfig(**{**MUON.__dict__, "optimizer_settings": settings})


def test_another_muon_lr_moves_muons_rate_and_needs_the_flag():
    # Muon's own rate was not compared once: a resume with another one changed Muon's rate at every later step
    # without a word. The optimizer says which of its groups train at another rate (its lr_scales).
    faster = _muon(lr=0.02)
    found = change(MUON, 1000, faster, 1000, 500)
    assert found is not None and not found.continuous and "lr_scales {'Muon': 1.0} -> {'Muon': 6.66" in found.differences()
    assert "would move the learning rate of the optimizer's groups against the schedule's (Muon 1 -> 6.66667" in found.refusal("ckpt")
    assert found.record(allowed_by_flag=True)["new"]["lr_scales"]["Muon"] == pytest.approx(0.02 / 3e-3)
    # Muon's lr 0 is train.lr: writing it out is no change.
    assert change(MUON, 1000, _muon(lr=3e-3), 1000, 500) is None
    # With no step left to train, nothing moves.
    assert change(MUON, 1000, faster, 1000, 1000) is None


def test_a_longer_muon_run_with_its_own_muon_lr_in_its_stable_phase_is_continuous():
    own = _muon(lr=0.02, adjust_lr="original")
    found = change(own, 1000, own, 5000, 700)
    assert found is not None and found.continuous


def test_a_schedule_added_to_the_registry_is_extended_by_what_it_says_of_itself(monkeypatch):
    # A new schedule needs no branch elsewhere: the resume rules ask its ScheduleKind where its stable phase ends.
    from edulm.train import schedule
    from edulm.train.schedule_change import schedule_change, schedule_settings

    class Linear(schedule.ScheduleKind):
        name = "linear"

        def rate(self, step, last, train):
            rate = schedule.warmup_rate(step, train)
            floor = train.lr * train.min_lr_ratio
            return rate if rate is not None else max(floor, train.lr - (train.lr - floor) * (step - train.warmup_steps)
                                                      / max(1, last - train.warmup_steps))

    monkeypatch.setitem(schedule.SCHEDULES, "linear", Linear())
    old = TrainConfig(schedule="linear", lr=1e-3, warmup_steps=2, max_steps=10)
    change = schedule_change(schedule_settings(old, 10), schedule_settings(old, 20), step=8,
                             lr_trained=schedule.lr_at(8, old, 10))
    refusal = change.refusal("ckpt")
    assert "every rate of a linear run depends on its length" in refusal and "WSD" not in refusal

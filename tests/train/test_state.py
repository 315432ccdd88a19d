"""Checkpoints save and restore a mapping of stateful components, whatever they are."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from edulm.checkpoint import folders as checkpoint
from edulm.config import Config
from edulm.base.layout import MODEL_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE, rank_file
from edulm.model.llama import LlamaLM
from edulm.train.distributed import DistEnv
from edulm.train.checkpointing import Component, ModelWeights, RNGState, component_file, restore, save_checkpoint
from edulm.train.state import BatchShape, Tally, TrainState

CPU = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))


class Counter:
    """A toy stateful component."""

    def __init__(self, value: int = 0) -> None:
        self.value = value
        self.table = torch.arange(4.0) * value

    def state_dict(self) -> dict:
        return {"value": self.value, "table": self.table}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.table = state["value"], state["table"]


def test_any_mapping_of_components_round_trips(tmp_path, tiny_model_config):
    model = LlamaLM(tiny_model_config)
    state = TrainState(step=5, tokens=640, total_steps=9, batch=BatchShape(2, 2, 1, 32), lr=1e-3, last_loss=2.5,
                       tally=Tally(step_time_s=1.5, wall_time_s=3.0))
    components = {
        "model": Component(ModelWeights(model), format="safetensors"),
        "trainer_state": Component(state, format="json"),
        "counter": Component(Counter(3)),
        "position": Component(Counter(7), per_rank=True),
    }
    path = save_checkpoint(tmp_path, 5, Config(model=tiny_model_config), components, CPU)
    assert path == tmp_path / "checkpoints" / "step-0000005" and checkpoint.verify(path) is None
    assert {MODEL_FILE, TRAINER_STATE_FILE, "counter.pt", rank_file(0), "config.yaml"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / TRAINER_STATE_FILE).read_text())["micro_batch_size"] == 2  # flat, readable

    torch.manual_seed(1)
    other_model, other_state, counter, position = LlamaLM(tiny_model_config), TrainState(), Counter(), Counter()
    restore(path, {
        "model": Component(ModelWeights(other_model), format="safetensors"),
        "trainer_state": Component(other_state, format="json"),
        "counter": Component(counter),
        "position": Component(position, per_rank=True),
    }, rank=0)
    assert other_state == state
    assert (counter.value, position.value) == (3, 7) and torch.equal(position.table, torch.arange(4.0) * 7)
    for (name, a), b in zip(model.state_dict().items(), other_model.state_dict().values()):
        assert torch.equal(a, b), name


def test_the_trainer_components_keep_the_checkpoint_file_names():
    assert component_file("model", "safetensors") == MODEL_FILE
    assert component_file("optimizer", "torch") == OPTIMIZER_FILE
    assert component_file("trainer_state", "json") == TRAINER_STATE_FILE


def test_train_state_reads_an_older_checkpoint_and_ignores_unknown_keys():
    old = {"step": 20, "tokens": 2560, "total_steps": 200, "micro_batch_size": 2, "grad_accum_steps": 2,
           "seq_len": 32, "world_size": 1, "lr": 0.003, "skipped_steps": 0, "consecutive_nonfinite": 0,
           "last_loss": 4.1, "last_val_loss": None, "tally": {"step_time_s": 1.0, "wall_time_s": 2.0}}
    state = TrainState()
    state.load_state_dict(old)
    assert state.batch == BatchShape(2, 2, 1, 32) and state.batch.tokens_per_step == 128
    assert state.tally.wall_time_s == 2.0 and state.tally.peak_memory_gb == 0.0
    # What the old file had comes back as it was; fields it lacked keep their defaults.
    assert state.state_dict() == {**TrainState().state_dict(), **old, "tally": state.tally.state_dict()}
    fresh = TrainState()
    fresh.load_state_dict({"step": 3})
    assert fresh.step == 3 and fresh.batch is None and fresh.tally == Tally()


def test_train_state_counts_steps():
    state = TrainState(batch=BatchShape(2, 3, 2, 16))
    state.record_step(2.0, finite=True)
    state.record_step(float("nan"), finite=False)
    state.record_step(float("inf"), finite=False)
    assert (state.tokens, state.skipped_steps, state.consecutive_nonfinite) == (3 * 192, 2, 2)
    state.record_step(1.5, finite=True)
    assert (state.consecutive_nonfinite, state.last_loss) == (0, 1.5)


def test_rng_round_trip():
    rng = RNGState()
    state = rng.state_dict()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    rng.load_state_dict(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_weights_that_do_not_fit_are_refused(tiny_model_config):
    import dataclasses

    small = ModelWeights(LlamaLM(tiny_model_config)).state_dict()
    bigger = LlamaLM(dataclasses.replace(tiny_model_config, n_layers=3))
    with pytest.raises(ValueError, match="missing"):
        ModelWeights(bigger).load_state_dict(small)

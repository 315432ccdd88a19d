"""A compiled run (train.compile=true) compiles its training graph and its evaluation graph once each.

The graphs are counted by the backend itself: every graph dynamo hands to a backend is one compilation,
and a recompilation (a guard that failed: another shape, another mode) is one more. Which graphs get
compiled is decided by dynamo's guards before any backend runs, so the test uses ``aot_eager`` (the
same tracing and autograd split as inductor, without generating kernels) to stay fast on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.debugging import aot_eager
from train_helpers import tiny_config

from edulm.config import config_from_dict
from edulm.base.metrics import read_metrics
from edulm.train.core_callbacks import default_callbacks
from edulm.train.callbacks import Callback
from edulm.train.trainer import train


class GraphCounter:
    """A ``torch.compile`` backend that runs each graph as ``aot_eager`` does and counts them."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        return aot_eager(graph_module, example_inputs)


@pytest.fixture
def graph_counter(monkeypatch) -> GraphCounter:
    """Every ``Module.compile()`` of the test (the trainer's included) compiles with a fresh counting backend."""
    counter = GraphCounter()
    original = torch.nn.Module.compile

    def compile_counted(self, *args, **kwargs):
        return original(self, *args, **{**kwargs, "backend": counter})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_counted)
    torch._dynamo.reset()  # no cached graphs of other tests
    yield counter
    torch._dynamo.reset()


class GraphsAfterEachStep(Callback):
    """Records the number of graphs compiled so far at the end of every step (after the evaluation)."""

    def __init__(self, counter: GraphCounter) -> None:
        self.counter = counter
        self.graphs: dict[int, int] = {}

    def on_step_end(self, run, event) -> None:
        self.graphs[event.step] = self.counter.graphs


def test_evaluation_compiles_once_and_nothing_recompiles_after_it(corpus, tmp_path, graph_counter):
    # 5 held-out windows in micro-batches of 2: the last evaluation batch holds one window (padded to two).
    raw = tiny_config(corpus, tmp_path / "run", compile=True, max_steps=7, eval_interval=2, eval_tokens=5 * 32,
                      micro_batch_size=2, grad_accum_steps=2, ckpt_interval=0)
    log = GraphsAfterEachStep(graph_counter)
    train(config_from_dict(raw), callbacks=[*default_callbacks(False, False, True), log])

    assert log.graphs[1] == 1  # the training step: forward (and its backward) in one graph, no graph break
    assert log.graphs[2] == 2  # the first evaluation: one more graph (eval mode, no grad) for all its batches
    assert log.graphs[7] == 2, log.graphs  # steps 3-7 and the evaluations at 4, 6 and 7 reuse both
    rows = read_metrics(tmp_path / "run" / "training" / "training_metrics.csv")
    assert [r["step"] for r in rows if r["val_loss"] is not None] == [2, 4, 6, 7]
    assert all(r["val_bpb"] > 0 for r in rows if r["val_loss"] is not None)

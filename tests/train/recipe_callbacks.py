"""A callback written as docs/architecture.md's recipe says (used by test_extension_recipes.py through
``train.callbacks``): one JSON line per step in the run dir, and a count that survives restarts."""

from __future__ import annotations

from edulm.train.callbacks import Callback
from edulm.train.step_file import StepFile


class LossLines(Callback):
    """``training/losses.jsonl``: every step's loss; ``state_dict`` keeps how many steps it has seen in all."""

    def __init__(self) -> None:
        self.seen = 0
        self.file: StepFile | None = None

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]

    def on_start(self, run) -> None:
        if run.env.is_main:
            self.file = StepFile(run.layout.training / "losses.jsonl").open(run.state.step if run.resumed_from else 0)

    def on_step_end(self, run, event) -> None:
        self.seen += 1
        if self.file is not None:
            self.file.write({"step": event.step, "loss": event.result.loss, "seen": self.seen})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

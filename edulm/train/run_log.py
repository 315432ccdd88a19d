"""The run's plain log: ``training/train.log`` and one line of figures per metrics row.

``train.log`` holds every line the run prints (start-up, step lines, evaluations, checkpoints,
warnings; debug lines with ``--verbose``), whatever the console shows, with a timestamp and a level.
It is appended to: each segment of a run (the first start, every ``--resume``) opens with a heading
line, and a segment that fails ends with the error. The step lines are what a cluster job's log
needs, one per metrics row (``train.log_interval``), free of carriage returns::

    step 20/30 | tokens 2,560 | loss 4.8123 | lr 1.000e-03 | grad_norm 0.912 | 18,532 tok/s | eta 0:00:01

Both callbacks run on rank 0 only (:func:`edulm.train.core_callbacks.default_callbacks`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Any

from tqdm import tqdm

from edulm.train.callbacks import Callback, Run, StepEnd

log = logging.getLogger(__name__)


class TrainLog(Callback):
    """Opens ``training/train.log`` for appending when the run starts, under a heading that says
    whether this is a new run or a resume (from which checkpoint, at which step)."""

    def __init__(self) -> None:
        self._run: Run | None = None
        self._status: str | None = None

    def on_start(self, run: Run) -> None:
        self._run = run
        if run.resumed_from is not None:
            what = f"resumed from {run.resumed_from} at step {run.state.step:,} of {run.state.total_steps:,}"
        else:
            what = f"new run of {run.state.total_steps:,} steps"
        run.console.log_to(run.layout.log, f"===== edulm train {run.cfg.run.name}: {what} "
                                           f"(process {os.getpid()} on {socket.gethostname()}) =====")

    def on_end(self, run: Run, status: str) -> None:
        self._status = status

    def close(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        # Called while an error propagates out of the run (also one after the last step, in the final export or
        # its card: the run is then not completed): the command line prints it after the log file is closed, so
        # the file gets it here.
        err = sys.exc_info()[1]
        if isinstance(err, Exception):
            run.console.log_only(logging.ERROR, f"===== failed at step {run.state.step:,}: {type(err).__name__}: {err} =====")
        elif self._status is not None:
            run.console.log_only(logging.INFO, f"===== {self._status} at step {run.state.step:,} =====")


def step_line(row: dict[str, Any], total_steps: int, eta_s: float | None) -> str:
    """The plain line of one metrics row (see the module docstring)."""

    def num(key: str, spec: str) -> str:
        value = row.get(key)
        return format(value, spec) if isinstance(value, (int, float)) else "-"

    eta = tqdm.format_interval(eta_s) if eta_s is not None else "-"
    return (f"step {row['step']:,}/{total_steps:,} | tokens {num('tokens', ',')} | loss {num('loss', '.4f')} | "
            f"lr {num('lr', '.3e')} | grad_norm {num('grad_norm', '.3f')} | {num('tokens_per_s', ',.0f')} tok/s | eta {eta}")


class StepLines(Callback):
    """One :func:`step_line` per metrics row (after :class:`~edulm.train.reporting.MetricsLogger`):
    into the log file always, on the console when ``console`` (no progress bar shows the figures there).
    Steps without a row get a debug line (``--verbose``).

    The ETA is the wall time per step of this segment so far (evaluations and checkpoints included)
    times the steps left.
    """

    def __init__(self, console: bool) -> None:
        self.console = console
        self._started = 0.0
        self._first_step = 0

    def on_start(self, run: Run) -> None:
        self._started, self._first_step = time.perf_counter(), run.state.step

    def on_step_end(self, run: Run, event: StepEnd) -> None:
        if event.row is None:
            log.debug("step %d: loss %.4f, lr %.3e, %.3f s", event.step, event.result.loss, event.lr, event.seconds)
            return
        done = event.step - self._first_step
        per_step = (time.perf_counter() - self._started) / done if done > 0 else None
        eta = per_step * (run.state.total_steps - event.step) if per_step is not None else None
        log.info(step_line(event.row, run.state.total_steps, eta), extra={"console": self.console})

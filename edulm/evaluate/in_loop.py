"""Benchmark scores of the model in memory while it trains, computed by lm-eval itself.

The weights are handed to the harness's own ``hf`` model class (``HFLM``) as a transformers
``LlamaForCausalLM`` whose parameters *are* the training model's tensors (no copy, no export, on the training
device). The harness then builds the prompts, tokenizes, batches and scores exactly as it does for
``edulm eval`` on an exported checkpoint, so the score at step S equals ``edulm eval`` of the checkpoint of step S
with the same tasks and ``--limit`` (``tests/train/test_downstream.py``), to the floating-point differences of
batching. A bf16 run scores under its autocast (float32 weights, bf16 matmuls): compare it with ``edulm eval
--dtype bfloat16``, to bf16's precision. The subset is the first ``limit`` examples of each task (lm-eval's ``--limit``): the same ones at
every evaluation, so the curve follows the model, not the sample.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch

from edulm.base.errors import UsageError
from edulm.config import ModelConfig
from edulm.evaluate.protocol import NUM_FEWSHOT, SEEDS, metric_values
from edulm.evaluate.tasks import load_tasks, task_manager

BOOTSTRAP_ITERS = 2
"""Resamples of lm-eval's bootstrap, which it runs for a metric without a closed-form standard error (a cloze task's
perplexity, which is not recorded here): 2 is the fewest it accepts, where its default 100,000 would cost seconds at
every scoring. ``acc`` and ``acc_norm`` have closed-form errors, the same whatever this is."""

DOWNSTREAM_METRICS = ("acc", "acc_norm")
"""The metrics recorded per task (with their standard errors); a task that reports neither is refused."""

COLUMN_PREFIX = "downstream/"
"""Every in-loop score's name starts with this: ``downstream/TASK/METRIC`` and ``.../METRIC_stderr``."""


def tokens_above_chance(points, chance: float | None) -> float | None:
    """The tokens of the first ``(tokens, score, stderr)`` point whose score stands above ``chance`` by two standard
    errors; None when none does or the task has no chance level (a cloze task)."""
    if chance is None:
        return None
    return next((tokens for tokens, value, stderr in points if value - 2 * (stderr or 0.0) > chance), None)


def score_names(tasks: list[str]) -> list[str]:
    """The names of the scores of ``tasks``, in order: ``downstream/TASK/acc``, ``..._stderr``, then acc_norm's."""
    return [f"{COLUMN_PREFIX}{task}/{metric}{suffix}" for task in tasks for metric in DOWNSTREAM_METRICS
            for suffix in ("", "_stderr")]


@dataclass
class TaskSubset:
    """What a downstream task scores at each evaluation."""

    task: str
    examples: int
    """Examples scored (the first ones of its evaluation split, at most the limit)."""
    chance: float | None
    """The score of a uniform guess on these examples (mean of 1 / choices), None for a task without choices."""


def transformers_view(state: dict[str, torch.Tensor], cfg: ModelConfig, device: torch.device):
    """A ``LlamaForCausalLM`` whose parameters are the tensors of ``state`` (an edulm model's state dict, whose names
    are transformers'): built on the meta device, then given the tensors themselves (``assign``), so nothing is
    copied. The rotary embedding's buffers, which no state dict holds, are computed on ``device``."""
    from transformers import LlamaForCausalLM

    from edulm.hf.mapping import to_hf_config

    config = to_hf_config(cfg)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(state, strict=not cfg.tie_embeddings, assign=True)
    with torch.device(device):
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    if cfg.tie_embeddings:
        model.tie_weights()
    return model.eval()


class DownstreamScorer:
    """lm-eval tasks loaded once (a task that cannot be loaded is a :class:`UsageError` here, before training), then
    scored on a model's weights whenever asked."""

    def __init__(self, tasks: list[str], include_path: str | None, limit: int, tokenizer, batch_size: int) -> None:
        self.names = list(tasks)
        self.limit = limit
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        with _kept_random_state(torch.device("cpu")):  # building the tasks draws random numbers too
            self.manager = task_manager(self.names, include_path or None)
            self.tasks = load_tasks(self.manager, self.names)
        self.subsets = [_subset(task, limit) for task in self.tasks if not isinstance(task, str)]
        groups = [task for task in self.tasks if isinstance(task, str)]
        if groups:
            raise UsageError(f"train.downstream: {', '.join(groups)} is a group of tasks; name its tasks one by one")
        generating = [s.task for s, task in zip(self.subsets, self.tasks) if task.OUTPUT_TYPE == "generate_until"]
        if generating:
            raise UsageError(f"train.downstream: {', '.join(generating)} generates text; in-loop scoring takes tasks "
                             "scored by log-likelihood (multiple choice or a target continuation)")

    def score(self, state: dict[str, torch.Tensor], cfg: ModelConfig, device: torch.device,
              autocast: torch.dtype | None = None) -> dict[str, float | None]:
        """``{downstream/TASK/METRIC: value}`` (acc, acc_norm and their standard errors; None where a task reports
        none) of the weights ``state`` (which stay where they are)."""
        import lm_eval
        from lm_eval.models.huggingface import HFLM

        model = transformers_view(state, cfg, device)
        amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        # lm-eval prints progress notes to stdout and logs a warning per call about the model given as an object
        # (neither says anything a training log needs); it seeds Python's, numpy's and torch's generators, which belong
        # to the training run (_kept_random_state).
        with _kept_random_state(device), _no_worker_processes(), amp, open(os.devnull, "w") as sink, \
                contextlib.redirect_stdout(sink), _quiet("lm-eval", "lm_eval"):
            lm = HFLM(pretrained=model, tokenizer=self.tokenizer, batch_size=self.batch_size, max_length=cfg.max_seq_len)
            results = lm_eval.simple_evaluate(model=lm, tasks=self.tasks, num_fewshot=NUM_FEWSHOT, limit=self.limit,
                                              task_manager=self.manager, log_samples=False,
                                              bootstrap_iters=BOOTSTRAP_ITERS, **SEEDS)
        out: dict[str, float | None] = {}
        for task in self.names:
            values = metric_values(results["results"].get(task, {}))
            for metric in DOWNSTREAM_METRICS:
                found = values.get(metric)
                out[f"{COLUMN_PREFIX}{task}/{metric}"] = found.value if found else None
                out[f"{COLUMN_PREFIX}{task}/{metric}_stderr"] = found.stderr if found else None
        return out

    def describe(self) -> list[dict[str, Any]]:
        """Each task's subset, for the summary: name, examples scored, chance level."""
        return [{"task": s.task, "examples": s.examples, "chance": s.chance} for s in self.subsets]


def _subset(task, limit: int) -> TaskSubset:
    """The first ``limit`` documents of ``task``'s evaluation split and their chance level."""
    docs = list(task.eval_docs)[:limit]
    chances = []
    for doc in docs:
        choices = task.doc_to_choice(doc) if task.OUTPUT_TYPE == "multiple_choice" else None
        if choices:
            chances.append(1.0 / len(choices))
    name = task.config.task
    return TaskSubset(name, len(docs), sum(chances) / len(chances) if chances and len(chances) == len(docs) else None)


@contextlib.contextmanager
def _kept_random_state(device: torch.device):
    """Every random generator of the process as it was before the block: the harness seeds them for its own
    sampling, and the training run must draw the same numbers whether or not it scores downstream tasks."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


@contextlib.contextmanager
def _no_worker_processes():
    """lm-eval's bootstrap of a standard error (perplexity's, say) forks a process pool unless ``DISABLE_MULTIPROC`` is
    set; a fork of a training process whose threads (the prefetching loader's, torch's) may hold locks can leave the
    pool waiting forever. The bootstrap then runs in this process (acc and acc_norm have closed-form errors)."""
    before = os.environ.get("DISABLE_MULTIPROC")
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = before


@contextlib.contextmanager
def _quiet(*loggers: str):
    """Raise the named loggers to ERROR for the block (their per-call notes would fill a long run's log)."""
    found = [logging.getLogger(name) for name in loggers]
    levels = [log.level for log in found]
    for log in found:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(found, levels):
            log.setLevel(level)

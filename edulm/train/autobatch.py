"""The batch geometry of a run (:class:`~edulm.train.state.BatchShape`), and
``train.micro_batch_size: auto``: the largest micro-batch that fits, with the global batch kept.

``train.global_batch_size`` counts sequences per optimizer step over all processes (as torchtitan's
and litgpt's global batch does): each process takes ``global_batch_size / processes`` of them.

Two separate steps for 'auto', so the arithmetic can be tested without a GPU:

1. :func:`largest_fitting` finds the largest micro-batch ``m`` for which ``fits(m)`` holds, by
   doubling and then bisecting (``fits`` is assumed monotone: if ``m`` fits, every smaller one does).
   On CUDA, :func:`cuda_fits` runs one real forward and backward at ``(m, seq_len)`` and reports
   whether it ran without running out of memory and left room for the optimizer state (its size
   comes from the optimizer's registry entry, :func:`edulm.train.optim.optimizer_state_bytes`).
   On CPU nothing is probed (running out of host memory swaps or kills the process rather than
   raising): the largest micro-batch considered is :data:`CPU_MAX_MICRO_BATCH`.
2. :func:`split_global_batch` picks the micro-batch and accumulation steps whose product stays
   within :data:`GLOBAL_BATCH_TOLERANCE` of the target global batch, preferring the largest
   micro-batch (fewer, fuller passes are faster).
"""

from __future__ import annotations

import dataclasses

from typing import Callable

import torch

from edulm.config import Config, TrainConfig
from edulm.base.errors import UsageError
from edulm.train.optim import optimizer_state_bytes
from edulm.train.state import BatchShape

CPU_MAX_MICRO_BATCH = 4
"""On CPU, 'auto' means at most 4 sequences per pass: CPU throughput barely grows past a few, and host memory is not probed."""

GLOBAL_BATCH_TOLERANCE = 0.01
"""Largest relative change of the global batch accepted in exchange for a bigger micro-batch."""

MEMORY_HEADROOM = 0.9
"""Fraction of the device's memory a probe may peak at (the rest covers fragmentation and other buffers)."""

MAX_PROBE = 1024
"""Largest micro-batch ever probed when no global batch bounds the search."""


def largest_fitting(fits: Callable[[int], bool], limit: int) -> int:
    """Largest ``m`` in ``1..limit`` with ``fits(m)``, or 0 when not even 1 fits.

    Doubles from 1 until a size fails (or ``limit`` is reached), then bisects between the last size
    that fitted and the first that did not: about ``2 * log2(answer)`` probes.
    """
    if limit < 1 or not fits(1):
        return 0
    good = 1
    bad = None
    while bad is None:
        trial = min(good * 2, limit)
        if trial == good:
            return good  # reached the limit and it fits
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def split_global_batch(target: int, max_micro: int, tolerance: float = GLOBAL_BATCH_TOLERANCE) -> tuple[int, int]:
    """``(micro_batch, accum_steps)`` with ``micro_batch <= max_micro`` and ``micro * accum`` close to ``target``.

    The largest micro-batch whose global batch is within ``tolerance`` (relative) of ``target`` wins;
    when none is that close, the closest global batch wins (ties to the larger micro-batch).
    """
    if target < 1 or max_micro < 1:
        raise ValueError(f"target ({target}) and max_micro ({max_micro}) must be positive")
    best: tuple[float, int, int] | None = None  # (relative error, -micro, accum)
    for micro in range(min(max_micro, target), 0, -1):
        accum = max(1, round(target / micro))
        error = abs(micro * accum - target) / target
        if error <= tolerance:
            return micro, accum
        if best is None or (error, -micro) < best[:2]:
            best = (error, -micro, accum)
    assert best is not None
    return -best[1], best[2]


def per_process_batch(cfg: Config, world_size: int = 1) -> int | None:
    """Sequences per optimizer step that each process must contribute, or None when 'auto' keeps grad_accum_steps.

    From ``train.global_batch_size`` (all processes; it must divide evenly among them) when set,
    else ``micro_batch_size x grad_accum_steps`` of a numeric micro-batch.
    """
    t = cfg.train
    if t.global_batch_size > 0:
        if t.global_batch_size % world_size:
            raise UsageError(
                f"train.global_batch_size ({t.global_batch_size}) does not split evenly over {world_size} processes; "
                f"make it a multiple of {world_size}"
            )
        return t.global_batch_size // world_size
    if t.micro_batch_size == "auto":
        return None
    return t.micro_batch_size * t.grad_accum_steps


def _uses_bf16(cfg: Config, device: torch.device) -> bool:
    return device.type == "cuda" and cfg.train.precision in ("auto", "bf16")


def step_memory_budget(cfg: Config, model: torch.nn.Module, total_memory: int) -> float:
    """Bytes one forward + backward may peak at on a device of ``total_memory`` bytes:
    :data:`MEMORY_HEADROOM` of it, less the state of the optimizer ``train.optimizer`` names
    (AdamW: two copies of the parameters; Muon: one of its matrices, two of the rest), which
    does not exist yet while the probe runs."""
    return MEMORY_HEADROOM * total_memory - optimizer_state_bytes(model, cfg.train)


def cuda_fits(cfg: Config, model: torch.nn.Module, device: torch.device) -> Callable[[int], bool]:
    """A predicate: does one forward + backward of ``model`` at micro-batch ``m`` fit on ``device``?

    It fits when it runs without running out of memory and its peak stays within
    :func:`step_memory_budget` (room is left for the optimizer's state). Gradients are cleared
    after each probe.
    """
    budget = step_memory_budget(cfg, model, torch.cuda.get_device_properties(device).total_memory)
    seq_len, vocab = cfg.train.seq_len, cfg.model.vocab_size
    was_training = model.training

    def fits(micro: int) -> bool:
        model.train()
        ids = torch.randint(0, vocab, (micro, seq_len), device=device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=_uses_bf16(cfg, device)):
                loss = model(ids, ids)
            loss.backward()
            torch.cuda.synchronize(device)
            ok = torch.cuda.max_memory_allocated(device) <= budget
        except torch.OutOfMemoryError:
            ok = False
        finally:
            loss = ids = None
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            torch.cuda.empty_cache()
        return ok

    return fits


def resolve_batch_shape(
    cfg: Config,
    model: torch.nn.Module | None,
    device: torch.device | str,
    world_size: int = 1,
    fits: Callable[[int], bool] | None = None,
) -> BatchShape:
    """The batch geometry to train with on ``world_size`` processes.

    A numeric ``train.micro_batch_size`` is used as given; accumulation comes from
    ``train.global_batch_size`` when set (which must then be a multiple of micro-batch x processes),
    else from ``train.grad_accum_steps``. For 'auto', the largest micro-batch that fits (``fits`` if
    given, else a real probe of ``model`` on CUDA, else :data:`CPU_MAX_MICRO_BATCH`) is split against
    each process's share of the global batch (:func:`split_global_batch`), or paired with
    ``train.grad_accum_steps`` when no global batch is set.
    """
    t = cfg.train

    def shape(micro: int, accum: int) -> BatchShape:
        return BatchShape(micro_batch_size=micro, grad_accum_steps=accum, world_size=world_size, seq_len=t.seq_len)

    if t.micro_batch_size != "auto":
        micro = t.micro_batch_size
        if t.global_batch_size <= 0:
            return shape(micro, t.grad_accum_steps)
        if t.global_batch_size % (micro * world_size):
            raise UsageError(
                f"train.global_batch_size ({t.global_batch_size}) is not a multiple of train.micro_batch_size x processes "
                f"({micro} x {world_size} = {micro * world_size}); change one of them or set train.micro_batch_size=auto"
            )
        return shape(micro, t.global_batch_size // (micro * world_size))
    target = per_process_batch(cfg, world_size)
    device = torch.device(device)
    limit = target if target is not None else MAX_PROBE
    probing = fits is None and device.type == "cuda"
    if fits is None:
        fits = cuda_fits(cfg, model, device) if probing else (lambda m: m <= CPU_MAX_MICRO_BATCH)
    largest = largest_fitting(fits, limit)
    if probing:
        # The probe pushed the allocator's peak to about the whole budget: the peak memory a run reports must be
        # its training's, not the probe's.
        torch.cuda.reset_peak_memory_stats(device)
    if largest == 0:
        raise UsageError(
            f"not even one sequence of train.seq_len={t.seq_len} fits on {device}; lower train.seq_len "
            "or set train.grad_checkpointing=true"
        )
    if target is None:
        return shape(largest, t.grad_accum_steps)
    return shape(*split_global_batch(target, largest))


REFERENCE_SIZED = ("micro_batch_size", "grad_accum_steps", "warmup_steps")
"""``train`` keys whose defaults are the 135M reference run's (micro-batch 6 x 43 accumulation = 258 sequences of
2048 tokens, 1000 warmup steps): a small run that leaves them out takes 43x the tokens per step its author meant."""


def reference_defaults_in_effect(train: TrainConfig) -> list[str]:
    """``train.KEY=VALUE`` of the :data:`REFERENCE_SIZED` keys a config file left at their defaults (the batch
    keys count as set when ``train.global_batch_size`` is); [] for a config built in code."""
    given = train.given_keys
    if given is None:
        return []
    left = [key for key in REFERENCE_SIZED if key not in given
            and not (key != "warmup_steps" and "global_batch_size" in given)]
    return [f"train.{key}={getattr(train, key)}" for key in left]


def fresh_batch_notes(train: TrainConfig, batch: BatchShape, device_type: str) -> list[str]:
    """The warnings a new run's batch deserves: an ``auto`` micro-batch whose sequences per step followed what was
    found (no global batch was asked for), and the 135M reference defaults a hand-written config runs with."""
    notes = []
    if train.micro_batch_size == "auto" and train.global_batch_size <= 0:
        notes.append(f"train.micro_batch_size=auto found {batch.micro_batch_size} on {device_type} and "
                     f"train.grad_accum_steps stays {train.grad_accum_steps}: {batch.sequences_per_step} sequences per "
                     "step; set train.global_batch_size to keep a batch of your choosing")
    if inherited := reference_defaults_in_effect(train):
        notes.append(f"the config does not set {', '.join(inherited)}: the 135M reference run's defaults apply; set "
                     "them for a run of another size")
    return notes


def regroup_batch(kept: BatchShape, world_size: int, where: str) -> BatchShape:
    """The checkpoint's ``kept`` batch on ``world_size`` processes: the same sequences per step (so the same data
    per step, the same step count and schedule), split evenly; each process's share as accumulation of the largest
    micro-batch no larger than the checkpoint's that divides it (no more memory per pass than it had)."""
    share, rest = divmod(kept.sequences_per_step, world_size)
    if rest or share == 0:
        raise UsageError(f"{where} trains {kept.sequences_per_step} sequences per step ({kept.describe()}), which "
                         f"{world_size} processes cannot share evenly; resume on a number of processes that divides "
                         f"{kept.sequences_per_step}")
    micro = next(m for m in range(min(kept.micro_batch_size, share), 0, -1) if share % m == 0)
    return dataclasses.replace(kept, micro_batch_size=micro, grad_accum_steps=share // micro, world_size=world_size)


def kept_batch_note(cfg: Config, kept: BatchShape) -> str | None:
    """The warning for a resume whose config asks for another batch than the checkpoint's ``kept`` one
    (which the run goes on with: the data position and the step count depend on it); None when they agree.

    What the config asks for: ``train.global_batch_size`` sequences per step when set (exactly for a
    numeric micro-batch, within :data:`GLOBAL_BATCH_TOLERANCE` for 'auto'), else micro-batch x
    ``grad_accum_steps`` (only the accumulation for 'auto', whose micro-batch is found at the start).
    """
    t = cfg.train
    kept_text = (f"continuing with the checkpoint's {kept.micro_batch_size} x {kept.grad_accum_steps} accumulation x "
                 f"{kept.world_size} processes = {kept.sequences_per_step} sequences per step")
    if t.global_batch_size > 0:
        tolerance = GLOBAL_BATCH_TOLERANCE if t.micro_batch_size == "auto" else 0.0
        if abs(kept.sequences_per_step - t.global_batch_size) <= tolerance * t.global_batch_size:
            return None
        return f"the config asks for train.global_batch_size={t.global_batch_size}; {kept_text}"
    if t.micro_batch_size == "auto":
        if t.grad_accum_steps == kept.grad_accum_steps:
            return None
        return f"the config asks for micro-batch auto x accumulation {t.grad_accum_steps}; {kept_text}"
    if (t.micro_batch_size, t.grad_accum_steps) == (kept.micro_batch_size, kept.grad_accum_steps):
        return None
    return f"the config asks for micro-batch {t.micro_batch_size} x accumulation {t.grad_accum_steps}; {kept_text}"

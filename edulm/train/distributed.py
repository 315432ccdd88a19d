"""Process-group set-up and teardown under ``torchrun``, model wrapping (DDP or FSDP2) and compiling, full state dicts.

One process per device. ``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them the
run is a single process and nothing here touches ``torch.distributed``. The backend is NCCL on CUDA
and gloo on CPU. Every rank-0-only decision in the trainer asks :attr:`DistEnv.is_main`.
"""

from __future__ import annotations

import datetime
import inspect
import os
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

from edulm.base.devices import resolve_device
from edulm.base.errors import DiskFullError, UsageError

T = TypeVar("T")


@dataclass
class DistEnv:
    """Where this process stands: its rank, how many there are, and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the one process that logs, writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every process (no-op in a single process)."""
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average a tensor over processes (gloo has no AVG, so sum and divide)."""
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on at least one process (so all of them decide alike)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def decide_on_main(self, decide: Callable[[], T]) -> T:
        """``decide()`` run on rank 0 alone; its value (picklable), or its error, on every process.

        An exception on rank 0 is raised there as it is, and on the other ranks as the same kind of
        one-line error (:class:`UsageError`, :class:`DiskFullError`; anything else ``RuntimeError``)
        with its message, so no rank waits for an answer that never comes.
        """
        value, failure = None, None
        if self.is_main:
            try:
                value = decide()
            except Exception as err:  # noqa: BLE001 - told to every rank, then raised as it is here
                failure = err
        told = self.broadcast((value, None if failure is None else (type(failure).__name__, str(failure))))
        if failure is not None:
            raise failure
        value, error = told
        if error is not None:
            kind, message = error
            raise {"UsageError": UsageError, "DiskFullError": DiskFullError}.get(kind, RuntimeError)(message)
        return value


def init_distributed(device_name: str) -> DistEnv:
    """Join the process group that ``torchrun`` describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, setting="train.device")
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device, timeout=datetime.timedelta(minutes=30))
        else:
            dist.init_process_group("gloo", timeout=datetime.timedelta(minutes=30))
    elif device.type == "cuda":
        torch.cuda.set_device(device)
    return DistEnv(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def teardown(env: DistEnv, clean: bool = True) -> None:
    """Leave the process group (so NCCL/gloo threads stop before the interpreter exits).

    After a clean run every process waits for the others first; after a failure it leaves at once
    (a barrier could wait forever for a process that is gone).
    """
    if env.distributed and dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv, strategy: str, compile: bool = False) -> nn.Module:
    """The module the training loop calls: the model itself, DDP around it, or the model after FSDP2 sharding,
    compiled with ``torch.compile`` when ``compile`` is set.

    Compilation is always in place (``Module.compile``), so parameter names never gain an
    ``_orig_mod.`` prefix, and ``model`` itself is never renamed: checkpoints and exports read its
    state under Hugging Face names. The order follows the PyTorch notes on each strategy:

    - one process: the model is compiled;
    - DDP: wrapped first, then the wrapper is compiled (the PyTorch DDP notes' order), so dynamo
      traces the model inside DDP's forward and its DDPOptimizer splits the graph at DDP's gradient
      buckets: each bucket's all-reduce can start while the backward pass of earlier layers still
      runs. Buffers are not broadcast at each forward: the only ones are the RoPE tables, which
      every process derives from the config;
    - FSDP2 (``fully_shard``): each decoder block is compiled on its own, then sharded, then the
      root (the sharding hooks sit between blocks; embeddings, final norm and the tied head stay
      together in the root's group); it changes ``model`` in place.
    """
    if not env.distributed:
        if compile:
            model.compile()
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [env.device.index] if env.device.type == "cuda" else None
        # torch 2.13 renamed broadcast_buffers (and warns on every rank when it is passed); the RoPE tables
        # are the same on every rank, so the one sync at start-up the new flag still makes changes nothing.
        no_buffer_sync = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})
        wrapped = DistributedDataParallel(model, device_ids=ids, **no_buffer_sync)
        if compile:
            wrapped.compile()
        return wrapped
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.model.layers:
            if compile:
                block.compile()
            fully_shard(block)
        fully_shard(model)
        return model
    raise UsageError(f"train.distributed: {strategy!r} is not 'ddp' or 'fsdp'")


def set_gradient_sync(wrapped: nn.Module, enabled: bool) -> None:
    """Turn gradient synchronisation on (last micro-batch) or off (the others) under DDP or FSDP2."""
    if hasattr(wrapped, "require_backward_grad_sync"):  # DDP: what no_sync() toggles
        wrapped.require_backward_grad_sync = enabled
    elif hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(enabled)


_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded model state on CPU under Hugging Face names (with FSDP, complete on rank 0 only)."""
    return get_model_state_dict(model, options=_FULL)


def full_optimizer_state(model: nn.Module, optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer]) -> dict:
    """Unsharded state of one or several optimizers of ``model``, merged and keyed by parameter name
    (with FSDP, complete on rank 0 only)."""
    return get_optimizer_state_dict(model, optimizers, options=_FULL)


def load_optimizer_state(
    model: nn.Module, optimizers: torch.optim.Optimizer | Sequence[torch.optim.Optimizer], state: dict
) -> None:
    """Load a state from :func:`full_optimizer_state` into this process's (possibly sharded) optimizers."""
    set_optimizer_state_dict(model, optimizers, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))

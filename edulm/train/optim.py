"""Optimizers keyed by ``train.optimizer``, behind one object the loop and the checkpoints use.

:class:`Optimizers` holds one or more torch optimizers (an optimizer that treats matrices and the
other parameters differently is two of them) and offers what the loop needs: ``step``,
``zero_grad``, ``param_groups``, ``params``, ``set_lr``, and an unsharded ``state_dict`` /
``load_state_dict`` keyed by parameter name (so a run can resume on another strategy, DDP or FSDP2).

Every parameter group carries ``lr_scale``, its learning rate as a multiple of the schedule's:
``set_lr(lr)`` sets ``group["lr"] = lr * group["lr_scale"]``, where ``lr`` is the schedule's value
for the base groups (``train.lr`` at the peak). AdamW's groups all have ``lr_scale`` 1.

Adding an optimizer: write ``build_NAME(model, train) -> Optimizers`` and ``NAME_state_bytes(model,
train) -> int`` below, add ``"NAME": OptimizerKind(build_NAME, NAME_state_bytes)`` to
:data:`OPTIMIZERS`, and add ``"NAME"`` to the ``Literal`` of ``TrainConfig.optimizer`` (its docstring
says what it does).

AdamW's groups: weight decay on the linear weight matrices only. Decayed: every 2-D weight of an
``nn.Linear`` (attention and MLP projections, and an untied LM head). Not decayed: RMSNorm weights
(1-D) and embedding matrices. With tied embeddings the one matrix that is both the input embedding
and the LM head counts as an embedding and is *not* decayed: decaying it would pull the token
representations themselves toward zero.

Muon's groups (``train.optimizer: muon``): Muon (:mod:`edulm.train.muon`) on the weight matrices
inside the decoder blocks (attention q/k/v/o, MLP gate/up/down), with ``train.muon_*``
hyperparameters and ``lr_scale = muon_lr / lr``; AdamW, exactly as above, on everything else (the
embedding and tied head, the norms, an untied head), at ``train.lr``. Muon is for the hidden
layers' matrices only: the embedding is a lookup table, not a linear map of its input, and the
head is tied to it or better served by Adam (Keller Jordan's Muon write-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable, Sequence

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from edulm.config import TrainConfig
from edulm.base.errors import UsageError
from edulm.train.distributed import full_optimizer_state, load_optimizer_state
from edulm.train.muon import ShardedMuon


class Optimizers:
    """One or more torch optimizers over the parameters of ``model``, used as one.

    ``model`` is the module whose parameter names key the saved state (the unwrapped model; FSDP2
    shards it in place, which is fine). Every group must carry ``lr_scale``; each is tagged with
    ``optimizer``, the name of the torch optimizer class it belongs to (``ShardedMuon`` counts as
    ``Muon``), so that a checkpoint written by another optimizer is recognised.
    """

    def __init__(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], description: str) -> None:
        self.model = model
        self.optimizers = list(optimizers)
        self.description = description  # one line for the run's announcement: what it is, how parameters are grouped
        missing = [i for i, g in enumerate(self.param_groups) if "lr_scale" not in g]
        if missing:
            raise ValueError(f"parameter groups {missing} have no 'lr_scale'; every group needs one")
        # The multipliers come from the config, not from a checkpoint: kept to put back after a load.
        self._lr_scales = [g["lr_scale"] for g in self.param_groups]
        self._kinds = [_torch_optimizer_name(opt) for opt in self.optimizers for _ in opt.param_groups]
        for group, kind in zip(self.param_groups, self._kinds):
            group["optimizer"] = kind

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The live parameter groups of every optimizer, in order."""
        return [g for opt in self.optimizers for g in opt.param_groups]

    @property
    def params(self) -> list[nn.Parameter]:
        """Every parameter trained, in group order (what gradient clipping measures)."""
        return [p for g in self.param_groups for p in g["params"]]

    def set_lr(self, lr: float) -> None:
        """Set each group's learning rate to ``lr * lr_scale`` (``lr``: the schedule's value)."""
        for group in self.param_groups:
            group["lr"] = lr * group["lr_scale"]

    def step(self) -> None:
        """One update of every optimizer."""
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter."""
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The full, unsharded state keyed by parameter name (a collective under FSDP2: every process calls it)."""
        return full_optimizer_state(self.model, self.optimizers)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` into this process's (possibly sharded) optimizers.

        The saved hyperparameters of each group come back with it, except ``lr_scale``, which the
        config decides (and which checkpoints written before it existed do not hold). A state whose
        groups hold other parameters (another ``train.optimizer`` wrote it) is refused with a
        :class:`~edulm.base.errors.UsageError`.
        """
        self._check_fits(state)
        load_optimizer_state(self.model, self.optimizers, state)
        for group, scale, kind in zip(self.param_groups, self._lr_scales, self._kinds):
            group["lr_scale"] = scale
            group["optimizer"] = kind  # a state saved before groups were tagged does not hold it

    def _check_fits(self, state: dict[str, Any]) -> None:
        """Refuse a saved state whose groups hold other parameters or belong to other torch optimizers
        (states saved before groups were tagged are checked by their parameters only)."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        live = [(sorted(names[id(p)] for p in g["params"]), g["optimizer"]) for g in self.param_groups]
        saved = [(sorted(g["params"]), g.get("optimizer")) for g in state.get("param_groups", [])]
        fits = len(live) == len(saved) and all(
            live_names == saved_names and saved_kind in (None, live_kind)
            for (live_names, live_kind), (saved_names, saved_kind) in zip(live, saved)
        )
        if not fits:
            wrote = " + ".join(dict.fromkeys(kind for _, kind in saved if kind)) or "another optimizer"
            raise UsageError(
                f"the checkpoint's optimizer state was written by {wrote} over other parameter groups than this run's "
                f"{' + '.join(dict.fromkeys(kind for _, kind in live))}; resume with the train.optimizer in the "
                "checkpoint's config.yaml, or start a new run"
            )


def _torch_optimizer_name(optimizer: torch.optim.Optimizer) -> str:
    """The name of the ``torch.optim`` class ``optimizer`` is or derives from (``ShardedMuon`` -> ``Muon``)."""
    for cls in type(optimizer).__mro__:
        if cls.__module__.startswith("torch.optim") and cls is not torch.optim.Optimizer:
            return cls.__name__
    return type(optimizer).__name__


def param_groups(model: nn.Module, weight_decay: float, leave_out: Collection[nn.Parameter] = ()) -> list[dict]:
    """``[{decayed params}, {not decayed params}]``, each with a ``names`` list (tied weights appear once).

    Parameters in ``leave_out`` (another optimizer's) are in neither group.
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    skip = {id(p) for p in leave_out}
    decay, no_decay = {"params": [], "names": [], "weight_decay": weight_decay}, {"params": [], "names": [], "weight_decay": 0.0}
    for name, p in model.named_parameters():  # named_parameters yields a shared (tied) tensor once
        if not p.requires_grad or id(p) in skip:
            continue
        group = decay if p.ndim == 2 and id(p) not in embedding_ids else no_decay
        group["params"].append(p)
        group["names"].append(name)
    return [decay, no_decay]


def block_matrices(model: nn.Module) -> dict[str, nn.Parameter]:
    """The 2-D weights of the linear layers inside the decoder blocks, by name: attention q/k/v/o and
    MLP gate/up/down (Muon's share). The embedding, the LM head and the norms are not among them."""
    inside = {id(m.weight) for m in model.model.layers.modules() if isinstance(m, nn.Linear)}
    return {name: p for name, p in model.named_parameters() if id(p) in inside and p.requires_grad and p.ndim == 2}


def describe_groups(groups: list[dict], tied: bool) -> str:
    """One line saying how many tensors and parameters each group holds and what is not decayed."""
    decay, no_decay = groups
    n_decay = sum(p.numel() for p in decay["params"])
    n_plain = sum(p.numel() for p in no_decay["params"])
    embeds = [n for n in no_decay["names"] if "embed" in n]
    decayed = (f"weight decay {decay['weight_decay']} on {len(decay['params'])} matrices ({n_decay:,} params)"
               if decay["params"] else "no matrix left to decay")  # Muon's AdamW share, with a tied head
    return (
        f"{decayed}; "
        f"none on {len(no_decay['params'])} tensors ({n_plain:,} params: norms and embeddings {', '.join(embeds) or '-'}"
        f"{' (tied with lm_head)' if tied else ''})"
    )


def _is_tied(model: nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), "tie_embeddings", False))


def adamw_over(groups: list[dict], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``groups`` (empty ones dropped), ``lr_scale`` 1; the fused CUDA kernel when every
    parameter is on CUDA, else foreach."""
    on_cuda = all(p.device.type == "cuda" for g in groups for p in g["params"])
    kind = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"], "lr_scale": 1.0} for g in groups if g["params"]],
        lr=train.lr,
        betas=(train.beta1, train.beta2),
        eps=train.eps,
        **kind,
    )


def build_adamw(model: nn.Module, train: TrainConfig) -> Optimizers:
    """AdamW over :func:`param_groups`; the fused CUDA kernel when every parameter is on CUDA, else foreach."""
    groups = param_groups(model, train.weight_decay)
    return Optimizers(model, [adamw_over(groups, train)], f"AdamW, {describe_groups(groups, _is_tied(model))}")


def muon_lr_scale(train: TrainConfig) -> float:
    """The Muon group's learning rate as a multiple of the schedule's: ``muon_lr / lr``, or 1 when
    ``train.muon_lr`` is 0 (Muon shares ``train.lr``)."""
    return train.muon_lr / train.lr if train.muon_lr > 0 else 1.0


def build_muon(model: nn.Module, train: TrainConfig) -> Optimizers:
    """Muon on :func:`block_matrices`, AdamW (as :func:`build_adamw`) on everything else.

    ``torch.optim.Muon`` on plain tensors (one process, DDP); :class:`~edulm.train.muon.ShardedMuon`
    when FSDP2 has made the matrices DTensors. Both have the same state, so checkpoints move between them.
    """
    matrices = block_matrices(model)
    if not matrices:
        raise UsageError("train.optimizer=muon: the model has no weight matrices inside its blocks; use adamw")
    sharded = any(isinstance(p, DTensor) for p in matrices.values())
    muon_class = ShardedMuon if sharded else torch.optim.Muon
    scale = muon_lr_scale(train)
    muon = muon_class(
        [{"params": list(matrices.values()), "lr_scale": scale}],
        lr=train.lr * scale,
        weight_decay=train.muon_weight_decay,
        momentum=train.muon_momentum,
        nesterov=train.muon_nesterov,
        ns_steps=train.muon_ns_steps,
        adjust_lr_fn=train.muon_adjust_lr,
    )
    groups = param_groups(model, train.weight_decay, leave_out=matrices.values())
    n_matrices = sum(p.numel() for p in matrices.values())
    description = (
        f"Muon on {len(matrices)} block matrices ({n_matrices:,} params; lr {scale:g} x the schedule's, "
        f"momentum {train.muon_momentum}{' Nesterov' if train.muon_nesterov else ''}, {train.muon_ns_steps} Newton-Schulz "
        f"steps, {train.muon_adjust_lr} update scale, weight decay {train.muon_weight_decay}; "
        f"{'edulm ShardedMuon' if sharded else 'torch.optim.Muon'}); "
        f"AdamW on the rest: {describe_groups(groups, _is_tied(model))}"
    )
    return Optimizers(model, [muon, adamw_over(groups, train)], description)


def _state_size(params: Iterable[nn.Parameter], copies: int) -> int:
    return copies * sum(p.numel() * p.element_size() for p in params)


def adamw_state_bytes(model: nn.Module, train: TrainConfig) -> int:
    """AdamW's state: two moments (``exp_avg``, ``exp_avg_sq``) per trained parameter, in its dtype."""
    return _state_size((p for p in model.parameters() if p.requires_grad), 2)


def muon_state_bytes(model: nn.Module, train: TrainConfig) -> int:
    """Muon's state: one momentum buffer per block matrix, plus AdamW's two moments for every other
    parameter. (The Newton-Schulz iteration's bf16 work matrices live one matrix at a time: a few
    MiB, left to the headroom.)"""
    matrices = block_matrices(model).values()
    muon_ids = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in muon_ids]
    return _state_size(matrices, 1) + _state_size(rest, 2)


OptimizerBuilder = Callable[[nn.Module, TrainConfig], Optimizers]
"""``(model, train config) -> Optimizers``; called after the model is on its device and wrapped."""


@dataclass(frozen=True)
class OptimizerKind:
    """What the trainer needs to know of one value of ``train.optimizer``."""

    build: OptimizerBuilder
    """Builds the optimizer over the model's parameters."""
    state_bytes: Callable[[nn.Module, TrainConfig], int]
    """Bytes of state the optimizer will keep for the (unsharded) model: what ``micro_batch_size: auto``
    and ``bench/memory_estimate.py`` leave room for."""
    settings: tuple[str, ...]
    """The ``train`` keys held in its parameter groups, which a resume takes from the checkpoint (every
    hyperparameter but the learning rates, which follow the config through ``set_lr``)."""


ADAMW_SETTINGS = ("beta1", "beta2", "eps", "weight_decay")
MUON_SETTINGS = ADAMW_SETTINGS + ("muon_adjust_lr", "muon_momentum", "muon_nesterov", "muon_ns_steps", "muon_weight_decay")

OPTIMIZERS: dict[str, OptimizerKind] = {
    "adamw": OptimizerKind(build_adamw, adamw_state_bytes, ADAMW_SETTINGS),
    "muon": OptimizerKind(build_muon, muon_state_bytes, MUON_SETTINGS),
}
"""``train.optimizer`` value -> its builder, state size and the settings a checkpoint keeps."""


def check_resumed_optimizer(saved: TrainConfig, train: TrainConfig, checkpoint: str) -> None:
    """Refuse, before anything is written, a resume whose optimizer is not the checkpoint's (``saved``).

    A resume loads the optimizer's parameter groups with their hyperparameters, so another
    ``train.optimizer`` cannot load at all, and other values of its settings (betas, weight decay,
    the ``muon_*`` keys but ``muon_lr``) would be silently replaced by the checkpoint's while the
    start-up line, the run's config.yaml and the card showed the config's. One line names them.
    """
    fresh_start = f"or start a new run from its weights with model.init_from={checkpoint} (a fresh optimizer)"
    if saved.optimizer != train.optimizer:
        raise UsageError(f"{checkpoint}: the checkpoint was trained with train.optimizer={saved.optimizer}, the config "
                         f"says {train.optimizer}; resume with train.optimizer={saved.optimizer}, {fresh_start}")
    changed = [k for k in OPTIMIZERS[train.optimizer].settings if getattr(saved, k) != getattr(train, k)]
    if changed:
        moves = ", ".join(f"train.{k} {getattr(saved, k)} -> {getattr(train, k)}" for k in changed)
        raise UsageError(f"{checkpoint}: the config changes the optimizer's settings ({moves}), but a resume keeps "
                         "the checkpoint's (only train.lr and train.muon_lr follow the config); resume with the "
                         f"checkpoint's values, {fresh_start}")


def build_optimizer(model: nn.Module, train: TrainConfig) -> Optimizers:
    """The optimizer ``train.optimizer`` names, over the parameters of ``model``."""
    return OPTIMIZERS[train.optimizer].build(model, train)


def optimizer_state_bytes(model: nn.Module, train: TrainConfig) -> int:
    """Bytes of state the optimizer ``train.optimizer`` names keeps for ``model``."""
    return OPTIMIZERS[train.optimizer].state_bytes(model, train)

"""What every optimizer shares: the :class:`Optimizers` object the loop and the checkpoints use, the
:class:`OptimizerKind` each value of ``train.optimizer`` is, and the parameter groups.

:class:`Optimizers` holds one or more torch optimizers (an optimizer that treats matrices and the
other parameters differently is two of them) and offers what the loop needs: ``step``,
``zero_grad``, ``param_groups``, ``params``, ``set_lr``, and an unsharded ``state_dict`` /
``load_state_dict`` keyed by parameter name (so a run can resume on another strategy, DDP or FSDP2).

Every parameter group carries ``lr_scale``, its learning rate as a multiple of the schedule's:
``set_lr(lr)`` sets ``group["lr"] = lr * group["lr_scale"]``, where ``lr`` is the schedule's value
for the base groups (``train.lr`` at the peak).

AdamW's groups (:func:`param_groups`): weight decay on the linear weight matrices only. Decayed: every
2-D weight of an ``nn.Linear`` (attention and MLP projections, and an untied LM head). Not decayed:
RMSNorm weights (1-D) and embedding matrices. With tied embeddings the one matrix that is both the input
embedding and the LM head counts as an embedding and is *not* decayed: decaying it would pull the token
representations themselves toward zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Collection, Iterable, Sequence

import torch
from torch import nn

from edulm.config import TrainConfig, own_settings
from edulm.base.errors import UsageError
from edulm.train.distributed import full_optimizer_state, load_optimizer_state


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


def is_tied(model: nn.Module) -> bool:
    """True when the model's LM head is its input embedding (one matrix)."""
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


def state_size(params: Iterable[nn.Parameter], copies: int) -> int:
    """Bytes of ``copies`` buffers shaped like each of ``params``, in its dtype."""
    return copies * sum(p.numel() * p.element_size() for p in params)


RESUME_KEPT_TRAIN_KEYS = ("beta1", "beta2", "eps", "weight_decay")
"""The shared ``train`` keys the AdamW groups of every built-in optimizer hold (a resume keeps the checkpoint's)."""


class OptimizerKind:
    """One value of ``train.optimizer``: everything edulm knows of an optimizer, in one object.

    A subclass sets :attr:`name` and :attr:`Settings` and writes :meth:`build` and :meth:`state_bytes`;
    the rest has defaults that fit an optimizer whose groups all follow the schedule. No module outside
    the optimizer's own branches on its name: the trainer, ``micro_batch_size: auto``, the resume checks,
    the schedule-change rules and the summary ask this object.
    """

    name: ClassVar[str] = ""
    """The value of ``train.optimizer`` that selects it."""
    Settings: ClassVar[type | None] = None
    """A dataclass of its own keys, read from ``train.optimizer_settings`` (a docstring under each field, a
    ``check(self, train)`` method for its ranges); None when it has none."""
    kept_train_keys: ClassVar[tuple[str, ...]] = RESUME_KEPT_TRAIN_KEYS
    """The ``train`` keys its parameter groups hold: a resume takes them from the checkpoint, so changing one
    on resume is refused."""
    settings_following_config: ClassVar[tuple[str, ...]] = ()
    """Its settings that a resume takes from the config (rates, through ``lr_scale``), not the checkpoint."""

    def settings(self, train: TrainConfig) -> Any:
        """``train.optimizer_settings`` as :attr:`Settings` (defaults filled in); an unknown key, a wrong type or
        a value out of range is one :class:`~edulm.base.errors.UsageError`."""
        return own_settings(self.Settings, train.optimizer_settings, "train.optimizer_settings", f"train.optimizer={train.optimizer}",
                            train)

    def validate(self, train: TrainConfig) -> None:
        """Refuse settings this optimizer cannot run with (by default: what :meth:`settings` refuses)."""
        self.settings(train)

    def build(self, model: nn.Module, train: TrainConfig) -> Optimizers:
        """The optimizer over the parameters of ``model`` (on its device, wrapped for DDP/FSDP2)."""
        raise NotImplementedError

    def state_bytes(self, model: nn.Module, train: TrainConfig) -> int:
        """Bytes of state it will keep for the (unsharded) model: what ``micro_batch_size: auto`` and
        ``bench/memory_estimate.py`` leave room for."""
        raise NotImplementedError

    def lr_scales(self, train: TrainConfig) -> dict[str, float]:
        """``{group tag: lr_scale}`` of the groups that do not train at the schedule's rate (none by default).
        A resume that changes one moves that group's rate at every step to come (see ``schedule_change``)."""
        return {}

    def kept_on_resume(self, train: TrainConfig) -> dict[str, Any]:
        """``{key: value}`` of what a resume takes from the checkpoint: :attr:`kept_train_keys` and its settings
        but those in :attr:`settings_following_config`."""
        kept = {f"train.{key}": getattr(train, key) for key in self.kept_train_keys}
        settings = self.settings(train)
        if settings is not None:
            kept.update({f"train.optimizer_settings.{f.name}": getattr(settings, f.name)
                         for f in dataclasses.fields(settings) if f.name not in self.settings_following_config})
        return kept

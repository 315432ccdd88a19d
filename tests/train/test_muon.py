"""Muon: the Newton-Schulz maths against independent references, the parameter split, the state a
checkpoint keeps, the state size autobatch leaves room for, the config keys, and one optimizer
step with accumulation, clipping, bf16 and a compiled model."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from edulm.config import Config, TrainConfig, config_from_dict
from edulm.base.errors import UsageError
from edulm.model.llama import LlamaLM
from edulm.train.autobatch import MEMORY_HEADROOM, step_memory_budget
from edulm.train.distributed import DistEnv
from edulm.train.optim.muon_update import NS_COEFFICIENTS, ShardedMuon, newton_schulz, update_scale
from edulm.train.optim import Optimizers, adamw_over, block_matrices, build_optimizer, optimizer_state_bytes, param_groups
from edulm.train.step import train_step

from train_helpers import random_batches

CPU = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
MATRICES_PER_BLOCK = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def muon_config(settings: dict | None = None, **overrides) -> TrainConfig:
    return TrainConfig(optimizer="muon", lr=3e-3, optimizer_settings=settings or {}, **overrides)


def spectral_reference(matrix: torch.Tensor, steps: int) -> torch.Tensor:
    """The quintic Newton-Schulz written on the singular values, in float64: normalise by the
    Frobenius norm, apply ``p(s) = a s + b s^3 + c s^5`` ``steps`` times, recompose ``U p(S) V^T``."""
    a, b, c = NS_COEFFICIENTS
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    s = s / matrix.double().norm()
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize("shape", [(32, 80), (80, 32), (48, 48)])
def test_newton_schulz_matches_the_polynomial_on_singular_values(shape):
    matrix = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    got = newton_schulz(matrix, 5).double()
    want = spectral_reference(matrix, 5)
    assert got.shape == matrix.shape and newton_schulz(matrix, 5).dtype == torch.bfloat16
    assert (got - want).norm() / want.norm() < 0.02  # bf16 matmuls against float64
    # Orthogonalised: a non-square Gaussian matrix's singular values all land near 1.
    if shape[0] != shape[1]:
        singular = torch.linalg.svdvals(got)
        assert singular.min() > 0.6 and singular.max() < 1.25


def test_zero_update_stays_zero():
    assert torch.count_nonzero(newton_schulz(torch.zeros(8, 4), 5)) == 0


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("adjust", ["original", "match_rms_adamw"])
def test_sharded_muon_equals_torch_muon_on_plain_tensors(nesterov, adjust):
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(7, 5, generator=gen), torch.randn(4, 9, generator=gen), torch.randn(16, 16, generator=gen)]
    ours = [w.clone().requires_grad_() for w in weights]
    theirs = [w.clone().requires_grad_() for w in weights]
    settings = dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=nesterov, ns_steps=5, adjust_lr_fn=adjust)
    opt_ours, opt_theirs = ShardedMuon(ours, **settings), torch.optim.Muon(theirs, **settings)
    for _ in range(3):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], weights[0])  # it did move
    # The same state layout, so checkpoints move between the two.
    assert opt_ours.state_dict().keys() == opt_theirs.state_dict().keys()
    assert opt_ours.state_dict()["param_groups"] == opt_theirs.state_dict()["param_groups"]
    for sa, sb in zip(opt_ours.state_dict()["state"].values(), opt_theirs.state_dict()["state"].values()):
        assert sa.keys() == sb.keys() == {"momentum_buffer"} and torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_update_scale_follows_the_two_published_rules():
    assert update_scale((160, 64), "original") == pytest.approx(math.sqrt(160 / 64))
    assert update_scale((64, 160), "original") == 1.0  # wide matrices are not scaled down
    assert update_scale((64, 160), "match_rms_adamw") == pytest.approx(0.2 * math.sqrt(160))
    assert update_scale((160, 64), "match_rms_adamw") == pytest.approx(0.2 * math.sqrt(160))


def test_muon_takes_the_block_matrices_and_adamw_the_rest(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    opt = build_optimizer(model, muon_config({"lr": 0.012}))
    muon, adamw = opt.optimizers
    assert isinstance(muon, torch.optim.Muon) and type(muon) is torch.optim.Muon  # torch's own on plain tensors
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    assert muon_names == {f"model.layers.{i}.{part}.{m}.weight" for i in range(tiny_model_config.n_layers)
                          for part, ms in (("self_attn", MATRICES_PER_BLOCK[:4]), ("mlp", MATRICES_PER_BLOCK[4:]))
                          for m in ms}
    adamw_names = {names[id(p)] for g in adamw.param_groups for p in g["params"]}
    assert "model.embed_tokens.weight" in adamw_names and "model.norm.weight" in adamw_names
    assert not muon_names & adamw_names and len(opt.params) == len(list(model.parameters()))
    # Muon's rate is muon_lr at the peak; the schedule moves both.
    assert muon.param_groups[0]["lr_scale"] == pytest.approx(4.0)
    opt.set_lr(1.5e-3)
    assert muon.param_groups[0]["lr"] == pytest.approx(6e-3) and all(g["lr"] == 1.5e-3 for g in adamw.param_groups)
    g = muon.param_groups[0]
    assert (g["momentum"], g["nesterov"], g["ns_steps"], g["weight_decay"], g["adjust_lr_fn"]) == (
        0.95, True, 5, 0.1, "match_rms_adamw")
    assert opt.description.startswith("Muon on 14 block matrices") and "torch.optim.Muon" in opt.description
    assert "AdamW on the rest: no matrix left to decay; none on" in opt.description and "tied with lm_head" in opt.description


def test_untied_head_goes_to_adamw_with_decay(tiny_model_config):
    model = LlamaLM(dataclasses.replace(tiny_model_config, tie_embeddings=False))
    assert "lm_head.weight" not in block_matrices(model)
    adamw = build_optimizer(model, muon_config(weight_decay=0.05)).optimizers[1]
    head = model.lm_head.weight
    assert [g["weight_decay"] for g in adamw.param_groups if any(p is head for p in g["params"])] == [0.05]


def _step(model, opt, ids):
    model(ids[:, :-1], ids[:, 1:]).backward()
    opt.step()
    opt.zero_grad()


def test_state_is_keyed_by_name_and_restores_the_next_update(tiny_model_config):
    torch.manual_seed(0)
    model = LlamaLM(tiny_model_config)
    opt = build_optimizer(model, muon_config())
    ids = torch.randint(0, tiny_model_config.vocab_size, (2, 17), generator=torch.Generator().manual_seed(3))
    _step(model, opt, ids)
    state = opt.state_dict()
    assert set(state["state"]["model.layers.1.mlp.down_proj.weight"]) == {"momentum_buffer"}
    assert {"exp_avg", "exp_avg_sq"} <= set(state["state"]["model.embed_tokens.weight"])

    # Into torch's Muon and, as under FSDP2, into ShardedMuon: the next update is the same, bitwise.
    twins = []
    for muon_class in (torch.optim.Muon, ShardedMuon):
        twin = LlamaLM(tiny_model_config)
        twin.load_state_dict(model.state_dict())
        matrices = list(block_matrices(twin).values())
        groups = param_groups(twin, 0.1, leave_out=matrices)
        train = muon_config()
        twin_opt = Optimizers(twin, [muon_class([{"params": matrices, "lr_scale": 1.0}], lr=train.lr,
                                                weight_decay=0.1, adjust_lr_fn="match_rms_adamw"),
                                     adamw_over(groups, train)], "twin")
        twin_opt.load_state_dict(copy.deepcopy(state))
        _step(twin, twin_opt, ids)
        twins.append(twin)
    _step(model, opt, ids)
    for twin in twins:
        for (name, a), b in zip(model.named_parameters(), twin.parameters()):
            assert torch.equal(a, b), name


def test_a_state_of_another_optimizer_is_refused_in_one_line(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    adamw = build_optimizer(model, TrainConfig())
    _step(model, adamw, torch.randint(0, tiny_model_config.vocab_size, (2, 9)))
    muon = build_optimizer(model, muon_config())
    # With tied embeddings AdamW's decayed group holds exactly Muon's matrices: the tags tell them apart.
    with pytest.raises(UsageError, match="written by AdamW over other parameter groups than this run's Muon [+] AdamW"):
        muon.load_state_dict(copy.deepcopy(adamw.state_dict()))
    with pytest.raises(UsageError, match="written by Muon [+] AdamW .* this run's AdamW; resume with the train.optimizer"):
        build_optimizer(model, TrainConfig()).load_state_dict(copy.deepcopy(muon.state_dict()))
    untagged = copy.deepcopy(muon.state_dict())  # as written before groups were tagged: parameters decide
    for group in untagged["param_groups"]:
        del group["optimizer"]
    restored = build_optimizer(model, muon_config())
    restored.load_state_dict(untagged)
    assert [g["optimizer"] for g in restored.param_groups] == ["Muon", "AdamW"]


def _tensor_state_bytes(opt: Optimizers) -> int:
    """Bytes of the per-parameter tensors the optimizers really hold (0-d step counters left out)."""
    return sum(t.numel() * t.element_size() for o in opt.optimizers for s in o.state.values()
               for t in s.values() if isinstance(t, torch.Tensor) and t.ndim > 0)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_state_size_is_what_the_optimizer_really_keeps(tiny_model_config, name):
    model = LlamaLM(tiny_model_config)
    train = TrainConfig(optimizer=name)
    opt = build_optimizer(model, train)
    _step(model, opt, torch.randint(0, tiny_model_config.vocab_size, (2, 9)))
    assert optimizer_state_bytes(model, train) == _tensor_state_bytes(opt)
    n_params = sum(p.numel() for p in model.parameters())
    n_matrices = sum(p.numel() for p in block_matrices(model).values())
    assert optimizer_state_bytes(model, train) == (8 * n_params if name == "adamw" else 4 * n_matrices + 8 * (n_params - n_matrices))


def test_autobatch_leaves_room_for_the_configured_optimizer(tiny_model_config):
    model = LlamaLM(tiny_model_config)
    adamw, muon = (Config(model=tiny_model_config, train=TrainConfig(optimizer=o)) for o in ("adamw", "muon"))
    total = 2**30
    n_matrices = sum(p.numel() for p in block_matrices(model).values())
    assert step_memory_budget(adamw, model, total) == MEMORY_HEADROOM * total - 8 * sum(p.numel() for p in model.parameters())
    assert step_memory_budget(muon, model, total) - step_memory_budget(adamw, model, total) == 4 * n_matrices


@pytest.mark.parametrize(("key", "value", "message"), [
    ("momentum", 1.0, "train.optimizer_settings.momentum must be in [0, 1)"),
    ("ns_steps", 0, "train.optimizer_settings.ns_steps must be between 1 and 99"),
    ("lr", -0.01, "train.optimizer_settings.lr must not be negative"),
    ("weight_decay", -0.1, "train.optimizer_settings.weight_decay must not be negative"),
    ("adjust_lr", "original", "needs its own train.optimizer_settings.lr"),
    ("adjust_lr", "spectral", "train.optimizer_settings.adjust_lr: 'spectral' is not one of"),
    ("momentun", 0.9, "train.optimizer_settings: unknown key 'momentun'.*momentum"),
])
def test_bad_muon_settings_are_one_clear_error_from_the_optimizer_itself(key, value, message):
    """Muon validates its own settings: the config layer knows nothing of them."""
    from edulm.train.trainer import check_recipe

    cfg = config_from_dict({"train": {"optimizer": "muon", "optimizer_settings": {key: value}}})
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace(")", r"\)")):
        check_recipe(cfg.train)
    check_recipe(config_from_dict({"train": {"optimizer": "muon", "optimizer_settings": {"adjust_lr": "original",
                                                                                         "lr": 0.02}}}).train)  # fine


def test_the_keys_of_earlier_versions_still_load_where_they_live_now():
    """A run's config.yaml from before optimizer_settings (train.muon_*) resumes; an override of the old name too."""
    from edulm.config import apply_overrides

    old = {"train": {"optimizer": "muon", "muon_lr": 0.02, "muon_adjust_lr": "original"}}
    assert config_from_dict(old).train.optimizer_settings == {"lr": 0.02, "adjust_lr": "original"}
    assert apply_overrides(old, ["train.muon_momentum=0.9"])["train"]["optimizer_settings"]["momentum"] == 0.9
    assert apply_overrides({}, ["train.optimizer_settings.lr=0.01"])["train"]["optimizer_settings"] == {"lr": 0.01}
    with pytest.raises(UsageError, match="train.muon_lr and train.optimizer_settings.lr are the same setting"):
        config_from_dict({"train": {"optimizer": "muon", "muon_lr": 0.02, "optimizer_settings": {"lr": 0.01}}})
    # The override wins over the file's old spelling of the same key.
    both = apply_overrides(old, ["train.optimizer_settings.lr=0.03"])
    assert config_from_dict(both).train.optimizer_settings == {"lr": 0.03, "adjust_lr": "original"}
    # Earlier versions wrote every muon_* key into every run's config.yaml and ignored them for AdamW: they still do
    # nothing there, so an AdamW run of an earlier version resumes.
    from edulm.train.trainer import check_recipe

    adamw = {"train": {"optimizer": "adamw", "muon_lr": 0.0, "muon_momentum": 0.95, "muon_nesterov": True}}
    assert config_from_dict(adamw).train.optimizer_settings == {}
    check_recipe(config_from_dict(adamw).train)
    assert config_from_dict({"train": {"muon_lr": 0.0}}).train.optimizer_settings == {}  # adamw by default
    with pytest.raises(UsageError, match="train.optimizer: unknown optimizer 'mun'.*muon"):
        from edulm.train.trainer import check_recipe
        check_recipe(config_from_dict({"train": {"optimizer": "mun"}}).train)


def _fresh(cfg, **train):
    torch.manual_seed(0)
    model = LlamaLM(cfg)
    return model, build_optimizer(model, muon_config({"momentum": 0.95}, **train))


def test_accumulation_matches_one_big_batch(tiny_model_config):
    data = random_batches(2, 2, 16, tiny_model_config.vocab_size)
    model_a, opt_a = _fresh(tiny_model_config)
    res_a = train_step(model_a, opt_a, iter(data), 2, 0.0, CPU, None)
    model_b, opt_b = _fresh(tiny_model_config)
    big = (torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data]))
    res_b = train_step(model_b, opt_b, iter([big]), 1, 0.0, CPU, None)
    assert res_a.finite and math.isclose(res_a.loss, res_b.loss, rel_tol=1e-6)
    assert math.isclose(res_a.grad_norm, res_b.grad_norm, rel_tol=1e-5)
    # The gradients agree to float rounding, but Newton-Schulz runs in bf16: a gradient one rounding
    # apart can give an update a few percent apart (the test above bounds that noise at 2%).
    start, _ = _fresh(tiny_model_config)
    for p0, pa, pb in zip(start.parameters(), model_a.parameters(), model_b.parameters()):
        moved_a, moved_b = pa - p0, pb - p0
        assert moved_a.norm() > 0 and (moved_a - moved_b).norm() / moved_a.norm() < 0.03


def test_clipped_gradient_is_what_muon_and_adamw_see(tiny_model_config):
    model, opt = _fresh(tiny_model_config, beta1=0.9)
    clip = 0.05
    result = train_step(model, opt, iter(random_batches(1, 2, 16, tiny_model_config.vocab_size)), 1, clip, CPU, None)
    assert result.grad_norm > clip
    muon, adamw = opt.optimizers
    # After one step each first moment is (1 - beta) x the gradient the optimizer received.
    seen = [muon.state[p]["momentum_buffer"] / (1 - 0.95) for p in muon.param_groups[0]["params"]]
    seen += [adamw.state[p]["exp_avg"] / (1 - 0.9) for g in adamw.param_groups for p in g["params"]]
    assert torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in seen])).item() == pytest.approx(clip, rel=1e-4)


def test_bf16_autocast_trains(tiny_model_config):
    model, opt = _fresh(tiny_model_config)
    data = random_batches(1, 2, 8, tiny_model_config.vocab_size, seed=5) * 4
    losses = [train_step(model, opt, iter([batch]), 1, 1.0, CPU, torch.bfloat16).loss for batch in data]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_compiled_model_trains_like_eager(tiny_model_config):
    data = random_batches(2, 2, 16, tiny_model_config.vocab_size, seed=2)
    results = []
    for compiled in (False, True):
        model, opt = _fresh(tiny_model_config)
        if compiled:
            model.compile(backend="aot_eager")  # in place, as the trainer does; no C++ build on CPU
        results.append([train_step(model, opt, iter([batch]), 1, 1.0, CPU, None).loss for batch in data])
    eager, compiled = results
    assert compiled[1] < compiled[0]
    assert compiled == pytest.approx(eager, abs=1e-4)

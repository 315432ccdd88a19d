"""Config loading, overrides and validation: every bad input is one clear UsageError."""

from __future__ import annotations

import dataclasses

import pytest

from edulm.config import (
    SECTIONS,
    Config,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    explicit_model_keys,
    field_docs,
    load_config,
    save_config,
    validate_model,
    validate_train,
)
from edulm.base.errors import UsageError


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid_and_the_135m_shape():
    cfg = config_from_dict({})
    assert (cfg.model.n_layers, cfg.model.d_model, cfg.model.n_heads, cfg.model.n_kv_heads) == (30, 576, 9, 3)


def test_every_field_has_a_docstring():
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert docs.get(f.name), f"{name}.{f.name} has no docstring"
    assert set(field_docs(Config)) == set(SECTIONS)


def test_yaml_and_typed_overrides(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1.0e-3\n  max_steps: 10\n")
    cfg = load_config(path, ["train.lr=3e-4", "train.compile=true", "train.micro_batch_size=auto", "run.name=x"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.compile is True
    assert cfg.train.micro_batch_size == "auto"
    assert cfg.train.max_steps == 10
    assert cfg.run.name == "x"


def test_integral_float_is_an_int():
    assert load_config_from({"train": {"max_steps": 1e3}}).train.max_steps == 1000


def load_config_from(raw):
    return config_from_dict(raw)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "did you mean 'lr'"),
        ("trian.lr=1", "did you mean 'train'"),
        ("train.max_steps=abc", "expected an integer"),
        ("train.compile=maybe", "expected true or false"),
        ("train.precision=fp8", "is not one of"),
        ("train.lr", "section.key=value"),
        ("lr=1", "must be section.key"),
        ("model.n_heads=5", "must divide model.d_model"),
        ("model.n_kv_heads=2", "must divide model.n_heads"),
        ("model.n_layers=0", "must be positive"),
        ("train.seq_len=-1", "must be positive"),
        ("train.seq_len=4096", "longer than model.max_seq_len"),
        ("train.beta2=1.5", "must be in [0, 1)"),
        ("train.micro_batch_size=big", "expected int | 'auto', got 'big'"),
        ("train.micro_batch_size=0", "must be positive"),
        ("run.out_dir=", "run.out_dir is empty"),
        ("tokenizer.name= ", "tokenizer.name is empty"),
        ("train.lr=.nan", "train.lr: must be a finite number"),
        ("train.lr=nan", "train.lr: must be a finite number"),
        ("train.lr=.inf", "train.lr: must be a finite number"),
        ("train.grad_clip=-.inf", "train.grad_clip: must be a finite number"),
        ("model.rope_theta=inf", "model.rope_theta: must be a finite number"),
        ("train.optimizer_settings=5", "train.optimizer_settings: expected a mapping"),
        ("train.lr.peak=1", "train.lr is not a mapping"),
        ("train.global_batch_size=10", "not a multiple of train.micro_batch_size"),
    ],
)
def test_bad_overrides_are_rejected(override, message):
    with pytest.raises(UsageError, match=None) as err:
        config_from_dict(apply_overrides({"train": {"micro_batch_size": 4}}, [override]))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bad_override_value_is_blamed_on_the_override_not_the_file(tmp_path):
    with pytest.raises(UsageError) as err:
        load_config(write(tmp_path, "train:\n  max_steps: 10\n"), ["train.max_steps=abc"])
    assert str(err.value) == "override 'train.max_steps=abc': train.max_steps: expected an integer, got 'abc'"


def test_sections_validate_on_their_own():
    model = ModelConfig(n_layers=2, max_seq_len=64)
    validate_model(model)
    with pytest.raises(UsageError, match="where.json: model.norm_eps must be a finite number"):
        validate_model(dataclasses.replace(model, norm_eps=float("nan")), "where.json")  # built in code, not YAML
    validate_train(TrainConfig(seq_len=64), model)
    with pytest.raises(UsageError, match="longer than model.max_seq_len"):
        validate_train(TrainConfig(seq_len=65), model)  # train depends on the model it trains
    with pytest.raises(UsageError, match="train.eps must be a finite number"):
        validate_train(TrainConfig(seq_len=64, eps=float("inf")), model)


def test_non_finite_number_in_a_file(tmp_path):
    with pytest.raises(UsageError, match=r"cfg.yaml: train.min_lr_ratio: must be a finite number, got nan"):
        load_config(write(tmp_path, "train:\n  min_lr_ratio: .nan\n"))


def test_unknown_key_and_section_in_file(tmp_path):
    with pytest.raises(UsageError, match="unknown key 'model.d_modle'.*did you mean 'd_model'"):
        load_config(write(tmp_path, "model:\n  d_modle: 64\n"))
    with pytest.raises(UsageError, match="unknown section 'optim'"):
        load_config(write(tmp_path, "optim:\n  lr: 1.0e-3\n"))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UsageError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "run").mkdir()
    with pytest.raises(UsageError, match="run: is a folder, not a config file; pass a YAML config such as configs/smoke.yaml$"):
        load_config(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text("run: {name: x}\n")
    with pytest.raises(UsageError, match=r"is a folder, not a config file; .* \(.*run/config.yaml is the config of the run there\)"):
        load_config(tmp_path / "run")  # `edulm train RUN_DIR`
    with pytest.raises(UsageError, match="not valid YAML at line"):
        load_config(write(tmp_path, "train:\n  lr: [1,\n"))
    with pytest.raises(UsageError, match="expected a mapping"):
        load_config(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(UsageError, match="section 'train' must be a mapping"):
        load_config(write(tmp_path, "train: 3\n"))


def test_a_key_given_twice_in_a_file_is_refused(tmp_path):
    # YAML itself keeps the last one silently: the first section's max_steps would be lost.
    with pytest.raises(UsageError, match=r"cfg.yaml: 'train' is given twice \(lines 1 and 3\); keep one of them"):
        load_config(write(tmp_path, "train:\n  max_steps: 10\ntrain:\n  lr: 1.0e-3\n"))
    with pytest.raises(UsageError, match=r"'seq_len' is given twice \(lines 2 and 3\)"):
        load_config(write(tmp_path, "train:\n  seq_len: 128\n  seq_len: 64\n"))
    cfg = load_config(write(tmp_path, "run: {name: a}\ntokenizer: {name: b}\n"))  # one key name in two sections is fine
    assert (cfg.run.name, cfg.tokenizer.name) == ("a", "b")


def test_save_and_load_round_trip(tmp_path):
    cfg = config_from_dict(apply_overrides({}, ["train.lr=1e-3", "model.n_layers=2", "train.micro_batch_size=auto"]))
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(tmp_path / "out" / "config.yaml") == cfg
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.yaml"]  # no temporary left behind


def test_reference_config_is_the_recipe():
    cfg = load_config("configs/l20_135m_deepthin.yaml")
    t = cfg.train
    assert (t.seq_len, t.micro_batch_size, t.grad_accum_steps, t.token_budget) == (2048, 6, 43, 10_001_252_352)
    assert (t.lr, t.min_lr_ratio, t.warmup_steps, t.weight_decay, t.beta1, t.beta2, t.grad_clip) == (
        4e-4, 0.1, 1000, 0.1, 0.9, 0.95, 1.0)
    assert (t.precision, t.grad_checkpointing, t.compile) == ("bf16", True, True)
    assert (t.eval_interval, t.ckpt_interval, t.keep_last) == (500, 1000, 2)


def test_fast_config_is_the_reference_model_and_data_with_the_winning_recipe():
    from edulm.model import count_parameters
    from edulm.train.autobatch import resolve_batch_shape
    from edulm.train.schedule import total_steps

    fast, ref = load_config("configs/edu_135m_fast.yaml"), load_config("configs/l20_135m_deepthin.yaml")
    assert fast.model == ref.model and count_parameters(fast.model) == 134_515_008
    assert (fast.tokenizer, fast.data) == (ref.tokenizer, ref.data)  # the same shards and held-out split
    t = fast.train
    assert (t.optimizer, t.schedule, t.decay_fraction, t.optimizer_settings["adjust_lr"], t.lr) == (
        "muon", "wsd", 0.2, "match_rms_adamw", 3e-3)
    assert (t.grad_checkpointing, t.micro_batch_size, t.global_batch_size) == (False, "auto", 258)
    assert t.token_budget == 7_000_000_000 == round(0.7 * ref.train.token_budget, -9)
    assert (t.seq_len, t.warmup_steps, t.precision, t.compile) == (ref.train.seq_len, 1000, "bf16", True)
    # What 'auto' picks when 37 sequences fit (an 80 GB GPU, per bench/memory_estimate.py): 259 per step.
    shape = resolve_batch_shape(fast, None, "cuda", fits=lambda m: m <= 37)
    assert (shape.micro_batch_size, shape.grad_accum_steps) == (37, 7)
    # Retention keeps a checkpoint of the stable phase, so a longer run can start from it.
    for sequences in (256, 258, 259):
        steps = total_steps(t, sequences * t.seq_len)
        decay_start = steps - round(t.decay_fraction * steps)
        kept = sorted({steps, *range(t.ckpt_interval, steps, t.ckpt_interval)})[-t.keep_last:]
        assert min(kept) <= decay_start


def test_explicit_model_keys_are_those_the_file_and_overrides_name(tmp_path):
    path = write(tmp_path, "model:\n  init_from: some/model\n  n_layers: 30\n")
    assert explicit_model_keys(load_config(path).model) == {"init_from", "n_layers"}  # 30 is the default, still named
    assert explicit_model_keys(load_config(path, ["model.vocab_size=49152"]).model) == {"init_from", "n_layers", "vocab_size"}
    assert explicit_model_keys(config_from_dict({}).model) == frozenset()
    # Built in code there is no file: the keys that differ from their defaults count.
    assert explicit_model_keys(ModelConfig(n_layers=3, d_model=576)) == {"n_layers"}


def test_init_from_leaves_the_shape_checks_to_the_model(tmp_path):
    # The defaults (context 2048, 9 heads) are not the shape yet: only keys the config names are held to them.
    cfg = config_from_dict({"model": {"init_from": "some/model", "n_kv_heads": 4}, "train": {"seq_len": 4096}})
    assert cfg.model.init_from == "some/model"
    with pytest.raises(UsageError, match="model.n_kv_heads .4. must divide model.n_heads .9."):
        config_from_dict({"model": {"n_kv_heads": 4}})
    with pytest.raises(UsageError, match="train.seq_len .4096. is longer than model.max_seq_len .2048."):
        config_from_dict({"model": {"init_from": "some/model", "max_seq_len": 2048}, "train": {"seq_len": 4096}})
    with pytest.raises(UsageError, match="model.init_from ' some/model' has spaces around it"):
        config_from_dict({"model": {"init_from": " some/model"}})


def test_a_class_attribute_is_not_a_config_key():
    with pytest.raises(UsageError, match="unknown key 'model.given_keys'"):
        config_from_dict({"model": {"given_keys": ["vocab_size"]}})


@pytest.mark.parametrize("seed", [-1, 2**63, 99999999999999999999999])
def test_a_seed_the_generators_cannot_take_is_refused_naming_the_key(seed):
    with pytest.raises(UsageError, match=r"run.seed must be a whole number from 0 to"):
        config_from_dict({"run": {"seed": seed}})
    assert config_from_dict({"run": {"seed": 2**63 - 1}}).run.seed == 2**63 - 1


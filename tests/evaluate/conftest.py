"""Fixtures for the evaluation tests: tiny Hugging Face Llama folders and local lm-eval tasks.

The models are random 2-layer Llamas with a 512-token byte-level BPE tokenizer, so lm-eval runs
them in a second or two on a CPU. The tasks (``tasks/``) are two invented benchmarks in the shape
of ARC (multiple choice) and LAMBADA (loglikelihood) whose YAMLs point at JSONL files; the
fixture copies them with absolute data paths, since lm-eval reads ``data_files`` relative to the
working directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

TASKS_DIR = Path(__file__).parent / "tasks"
TASK_NAMES = ("tiny_quiz", "tiny_cloze")


def task_texts() -> list[str]:
    """Every text in the local tasks (questions, choices, passages)."""
    texts = []
    for name in TASK_NAMES:
        for line in (TASKS_DIR / f"{name}.jsonl").read_text().splitlines():
            doc = json.loads(line)
            texts.extend(str(v) for v in doc.values() if isinstance(v, str))
            texts.extend(doc.get("choices", []))
    return texts


def train_tiny_tokenizer(texts: list[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer with ``<|endoftext|>`` as id 0, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def save_tiny_llama(folder: Path, tokenizer, seed: int, max_positions: int = 256) -> Path:
    """Save a random tiny ``LlamaForCausalLM`` and its tokenizer to ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=0,
        eos_token_id=0,
        initializer_range=0.2,  # wide weights, so different seeds give clearly different scores
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The 512-token BPE tokenizer shared by the tiny models."""
    filler = [
        "Clouds form when warm air rises and cools, and the water vapour in it condenses into droplets.",
        "A lever lets a small force lift a heavy load when the pivot sits close to the load.",
        "Bees carry pollen from flower to flower, and the plants make seeds and fruit.",
    ]
    return train_tiny_tokenizer(task_texts() + filler * 4)


@pytest.fixture(scope="session")
def tiny_hf_model(tmp_path_factory, tiny_tokenizer) -> Path:
    """A random tiny Llama saved as a Hugging Face folder (with tokenizer)."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-a"), tiny_tokenizer, seed=0)


@pytest.fixture(scope="session")
def other_tiny_hf_model(tmp_path_factory, tiny_tokenizer) -> Path:
    """A second tiny Llama, with different weights (a 'baseline')."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-b"), tiny_tokenizer, seed=1)


@pytest.fixture(scope="session")
def local_tasks(tmp_path_factory) -> Path:
    """A folder of task YAMLs (tiny_quiz: multiple choice, tiny_cloze: loglikelihood) with absolute data paths."""
    out = tmp_path_factory.mktemp("tasks")
    for name in TASK_NAMES:
        shutil.copy(TASKS_DIR / f"{name}.jsonl", out / f"{name}.jsonl")
        yaml_text = (TASKS_DIR / f"{name}.yaml").read_text().replace("__TASK_DIR__", str(out))
        (out / f"{name}.yaml").write_text(yaml_text)
    return out


TRAINING_DOCS = [
    "Clouds form when warm air rises and cools, and the water vapour in it condenses into droplets.",
    "A lever lets a small force lift a heavy load when the pivot sits close to the load.",
    "Bees carry pollen from flower to flower, and the plants make seeds and fruit.",
    "Sound travels as a wave of pressure through air, water and solid walls.",
    "A magnet pulls on iron and steel but not on copper, glass or plastic.",
    "Rivers carry sand and mud to the sea, where it settles and builds wide deltas.",
]


@pytest.fixture(scope="session")
def training_jsonl(tmp_path_factory) -> Path:
    """A small JSONL training source of invented documents (40 of them, in a fixed order)."""
    path = tmp_path_factory.mktemp("source") / "docs.jsonl"
    docs = [f"{TRAINING_DOCS[i % len(TRAINING_DOCS)]} Note {i}." for i in range(40)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def prepared_shards(tmp_path_factory, tiny_hf_model, training_jsonl) -> Path:
    """``edulm prepare`` output for ``training_jsonl`` with the tiny model's tokenizer (with a held-out split)."""
    from edulm.config import Config
    from edulm.data.prepare import prepare

    cfg = Config()
    cfg.tokenizer.name = str(tiny_hf_model)
    cfg.data.source = str(training_jsonl)
    cfg.data.shards_dir = str(tmp_path_factory.mktemp("shards") / "shards")
    cfg.data.val_tokens = 200
    cfg.data.workers = 1
    prepare(cfg)
    return Path(cfg.data.shards_dir)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_tokenizer, tiny_hf_model, training_jsonl, prepared_shards) -> Path:
    """A smoke-like edulm run trained for a few CPU steps on ``prepared_shards``: config, metrics with
    validation rows, summary, plots, checkpoints and ``final/``."""
    from edulm.config import Config
    from edulm.train.trainer import train

    cfg = Config()
    cfg.run.name = "tiny-edu"
    cfg.run.out_dir = str(tmp_path_factory.mktemp("runs") / "tiny-edu")
    cfg.run.seed = 3
    cfg.model.vocab_size = len(tiny_tokenizer)
    cfg.model.n_layers, cfg.model.d_model, cfg.model.d_ff = 2, 64, 160
    cfg.model.n_heads, cfg.model.n_kv_heads, cfg.model.max_seq_len = 4, 2, 64
    cfg.tokenizer.name = str(tiny_hf_model)  # the tokenizer the shards were prepared with
    cfg.data.source = str(training_jsonl)
    cfg.data.shards_dir = str(prepared_shards)
    cfg.data.val_tokens = 200
    t = cfg.train
    t.seq_len, t.micro_batch_size, t.grad_accum_steps, t.max_steps = 32, 2, 1, 6
    t.lr, t.warmup_steps, t.eval_interval, t.eval_tokens = 3e-3, 1, 3, 96
    t.ckpt_interval, t.keep_last, t.log_interval, t.device = 3, 2, 1, "cpu"
    return train(cfg)

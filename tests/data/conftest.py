"""Fixtures for the data pipeline: a small real BPE tokenizer, FineWeb-Edu-shaped parquet, configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_helpers import fineweb_rows, paragraphs_from_stdlib, write_parquet
from edulm.config import Config, DataConfig, RunConfig, TokenizerConfig, TrainConfig


@pytest.fixture(scope="session")
def paragraphs() -> list[str]:
    return paragraphs_from_stdlib()


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory, paragraphs) -> Path:
    """A 400-token byte-level BPE tokenizer.json with ``<|endoftext|>`` as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(paragraphs, trainer)
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.fixture
def fineweb_dir(tmp_path, paragraphs) -> Path:
    """Two FineWeb-Edu-shaped parquet files (120 records, several row groups each)."""
    rows = fineweb_rows(paragraphs, 120)
    folder = tmp_path / "fineweb"
    write_parquet(folder / "000_00000.parquet", rows[:70])
    write_parquet(folder / "001_00000.parquet", rows[70:])
    return folder


@pytest.fixture
def make_cfg(tmp_path, tokenizer_file):
    """``make_cfg(source, **data_overrides)``: a small config for the data pipeline (``source`` may be a mixture list)."""

    def make(source: str | Path | list, **data: object) -> Config:
        values = {"source": source if isinstance(source, list) else str(source), "shards_dir": str(tmp_path / "shards"), "val_tokens": 300,
                  "shard_tokens": 2_000, "workers": 1}
        values.update(data)
        return Config(
            run=RunConfig(seed=7),
            tokenizer=TokenizerConfig(name=str(tokenizer_file)),
            data=DataConfig(**values),
            train=TrainConfig(seq_len=32, micro_batch_size=4),
        )

    return make

"""Fixed digests of prepared shards and streamed windows: refactoring the document walk must not change a byte.

The corpus and the word-level tokenizer are built from fixed lists (no training, no installed text), so
the digests are the same in every environment. They were taken from the code before the walk was shared
between ``edulm prepare`` and streaming; a change here means shards or resumed runs would differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from data_helpers import synthetic_corpus, wordlevel_tokenizer
from edulm.config import Config, DataConfig, RunConfig, TokenizerConfig
from edulm.data.prepare import prepare
from edulm.data.shards import HEADER_BYTES
from edulm.data.sources import open_source
from edulm.data.stream_worker import INITIAL_STATE, stream_batches

PREPARED = {
    "plain": (dict(val_tokens=500, shard_tokens=3000), "e8fdad447548bf09"),
    "budget": (dict(val_tokens=900, shard_tokens=2500, max_tokens=7000), "42cc8fc278206df9"),
    "no_val": (dict(val_tokens=0, shard_tokens=4000), "1900ec7f52f2d91d"),
    "budget_val_first": (dict(val_tokens=4000, shard_tokens=1000, max_tokens=1500), "4f75739429e154de"),
}
STREAMED = {(0, 1): "e5d752c0eed7e5c2", (1, 2): "67b2e88cb506459b"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("golden")
    return synthetic_corpus(root / "corpus"), wordlevel_tokenizer(root / "tok" / "tokenizer.json")


def _digest(folder: Path) -> str:
    """Token count and token bytes of every shard, and the manifest's counts (not the tokenizer's serialisation)."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("[!.]*.bin")):
        data = path.read_bytes()
        h.update(path.name.encode())
        h.update(data[16:24])
        h.update(data[HEADER_BYTES:])
    manifest = json.loads((folder / "manifest.json").read_text())
    h.update(json.dumps([manifest["documents"], manifest["tokens"], manifest["stopped_at_max_tokens"]], sort_keys=True).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case, workers", [(case, 1) for case in sorted(PREPARED)] + [("plain", 2)])
def test_prepared_shards_match_the_recorded_digest(corpus, tmp_path, case, workers):
    folder, tokenizer = corpus
    data, digest = PREPARED[case]
    cfg = Config(run=RunConfig(seed=3), tokenizer=TokenizerConfig(name=str(tokenizer)),
                 data=DataConfig(source=str(folder / "*"), shards_dir=str(tmp_path / case), workers=workers, **data))
    prepare(cfg)
    assert _digest(tmp_path / case) == digest


@pytest.mark.parametrize("rank, world_size", sorted(STREAMED))
def test_streamed_windows_match_the_recorded_digest(corpus, rank, world_size):
    folder, tokenizer = corpus
    batches = stream_batches(open_source(str(folder / "*")), Tokenizer.from_file(str(tokenizer)), 0, dict(INITIAL_STATE),
                             seq_len=48, batch_size=5, seed=3, val_tokens=700, rank=rank, world_size=world_size)
    h = hashlib.sha256()
    for _ in range(330 // world_size):  # past the end of the source: the second epoch is covered too
        windows, state = next(batches)
        h.update(windows.tobytes())
        h.update(json.dumps(state, sort_keys=True).encode())
    batches.close()
    assert state["epoch"] == 1
    assert h.hexdigest()[:16] == STREAMED[(rank, world_size)]

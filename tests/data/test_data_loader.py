"""Loader: packed windows from shards, seeded order, disjoint and complete rank shards, exact resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from edulm.data.loader import ShardLoader, make_train_loader, make_val_batches
from edulm.data.prepare import prepare
from edulm.data.shards import HEADER_BYTES, open_split, shard_name, write_shard
from edulm.base.errors import UsageError


@pytest.fixture
def prepared(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir)
    prepare(cfg)
    return cfg


def _stream(cfg) -> np.ndarray:
    return np.concatenate(open_split(cfg.data.shards_dir, "train")).astype(np.int64)


def test_batches_are_shifted_windows_of_the_token_stream(prepared):
    cfg = prepared
    stream = _stream(cfg)
    loader = make_train_loader(cfg)
    x, y = next(loader)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    windows = loader.inner.window_ids(0)[:4]  # the prefetching wrapper's loader
    for row, w in enumerate(windows):
        assert np.array_equal(x[row].numpy(), stream[w * 32 : w * 32 + 32])
        assert np.array_equal(y[row].numpy(), stream[w * 32 + 1 : w * 32 + 33])


def test_order_comes_from_the_seed_and_changes_each_epoch(prepared):
    a, b = make_train_loader(prepared).inner, make_train_loader(prepared).inner
    assert np.array_equal(a.window_ids(0), b.window_ids(0))
    assert not np.array_equal(a.window_ids(0), a.window_ids(1))
    other = make_train_loader(dataclasses.replace(prepared, run=dataclasses.replace(prepared.run, seed=8))).inner
    assert not np.array_equal(a.window_ids(0), other.window_ids(0))
    assert sorted(a.window_ids(0)) == list(range(a.n_windows))  # one rank: every window, once


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_are_disjoint_and_complete(prepared, world_size):
    wrapped = [make_train_loader(prepared, rank=r, world_size=world_size) for r in range(world_size)]
    loaders = [w.inner for w in wrapped]
    n = loaders[0].n_windows
    for epoch in (0, 1):
        parts = [set(loader.window_ids(epoch).tolist()) for loader in loaders]
        assert all(len(p) == n // world_size for p in parts)
        assert sum(len(p) for p in parts) == len(set().union(*parts))  # disjoint
        assert len(set().union(*parts)) == n - n % world_size  # complete but for < world_size windows
    # the rank batches really are those windows
    x, _ = next(wrapped[1])
    stream = _stream(prepared)
    w = int(loaders[1].window_ids(0)[0])
    assert np.array_equal(x[0].numpy(), stream[w * 32 : w * 32 + 32])


def test_resume_continues_at_the_exact_next_token_across_epochs(prepared):
    reference = make_train_loader(prepared)
    steps = reference.inner.per_rank // 4 + 5  # runs past the end of the first epoch
    expected = [next(reference) for _ in range(steps)]
    loader = make_train_loader(prepared)
    for _ in range(7):
        next(loader)
    state = loader.state_dict()
    assert all(isinstance(v, (int, str)) for v in state.values())  # safe for torch.load(weights_only=True)
    resumed = make_train_loader(prepared)
    resumed.load_state_dict(state)
    for want in expected[7:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert resumed.state_dict()["epoch"] == 1


def test_resume_with_another_world_size_keeps_the_global_position(prepared):
    two = [make_train_loader(prepared, rank=r, world_size=2) for r in range(2)]
    for loader in two:
        for _ in range(3):
            next(loader)
    one = make_train_loader(prepared)
    one.load_state_dict(two[0].state_dict())
    seen = {int(w) for loader in two for w in loader.inner.window_ids(0)[:12]}
    assert one.state_dict()["position"] == 24 and set(one.inner.window_ids(0)[:24].tolist()) == seen


def test_the_run_passes_its_resolved_micro_batch(prepared):
    """micro_batch_size: auto is resolved by the run, which hands the number to the loader (no config copy)."""
    auto = dataclasses.replace(prepared, train=dataclasses.replace(prepared.train, micro_batch_size="auto"))
    loader = make_train_loader(auto, micro_batch_size=3)
    x, y = next(loader)
    loader.close()
    assert x.shape == y.shape == (3, 32)
    with pytest.raises(ValueError, match="resolved"):
        make_train_loader(auto)


def test_validation_batches_are_fixed_and_from_the_held_out_split(prepared):
    val = np.concatenate(open_split(prepared.data.shards_dir, "val")).astype(np.int64)
    batches = make_val_batches(prepared, batch_size=3, max_tokens=0)
    flat_x = torch.cat([x for x, _ in batches]).numpy()
    assert flat_x.shape == ((len(val) - 1) // 32, 32)
    assert np.array_equal(flat_x.reshape(-1), val[: flat_x.size])
    again = make_val_batches(prepared, batch_size=3, max_tokens=64)
    assert sum(x.numel() for x, _ in again) == 64 and torch.equal(again[0][0], batches[0][0][:2])


def test_fingerprint_mismatch_is_refused(prepared, tmp_path, paragraphs):
    with pytest.raises(UsageError, match="not the run's tokenizer"):
        make_train_loader(prepared, fingerprint="0123456789abcdef")
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    other = tmp_path / "other-tokenizer"
    save_tokenizer(train_bpe(paragraphs[:50], vocab_size=300), other)
    cfg = dataclasses.replace(prepared, tokenizer=dataclasses.replace(prepared.tokenizer, name=str(other)))
    with pytest.raises(UsageError, match="not the run's tokenizer"):
        make_train_loader(cfg)


def test_truncated_or_corrupt_shards_are_named(prepared):
    folder = Path(prepared.data.shards_dir)
    victim = folder / shard_name("train", 1)
    data = victim.read_bytes()
    victim.write_bytes(data[:-7])
    with pytest.raises(UsageError, match=rf"{victim}: truncated or corrupt shard"):
        make_train_loader(prepared)
    victim.write_bytes(b"GARBAGE!" + data[8:])
    with pytest.raises(UsageError, match=rf"{victim}: not an edulm token shard"):
        make_train_loader(prepared)
    victim.write_bytes(data[:16] + bytes(8) + data[24:])  # token count zeroed
    with pytest.raises(UsageError, match=rf"{victim}: truncated or corrupt shard"):
        make_train_loader(prepared)
    victim.write_bytes(data[:HEADER_BYTES] + bytes(len(data) - HEADER_BYTES))  # tokens zeroed: checksum
    loader = make_train_loader(prepared)
    with pytest.raises(UsageError, match=rf"{victim}: corrupt shard \(checksum mismatch\)") as caught:
        loader.inner.verified()
    # The advice is one that repairs: prepare alone trusts a folder whose manifest says it is finished.
    assert "delete its shards dir (data.shards_dir, the whole folder) and run 'edulm prepare' again" in str(caught.value)
    with pytest.raises(UsageError, match=rf"{victim}: corrupt shard"):
        next(loader)
    loader.close()
    victim.unlink()
    with pytest.raises(UsageError, match=rf"{victim}: shard file is missing"):
        make_train_loader(prepared)


def test_a_corrupt_held_out_shard_is_named_before_it_is_scored(prepared):
    # Held-out loss on wrong tokens would be a wrong figure in the summary and the card.
    victim = Path(prepared.data.shards_dir) / shard_name("val", 0)
    data = bytearray(victim.read_bytes())
    data[HEADER_BYTES + 10] ^= 0xFF  # one flipped byte in the tokens: the header still reads fine
    victim.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=rf"{victim}: corrupt shard \(checksum mismatch\)"):
        make_val_batches(prepared, batch_size=3)


def test_manifest_totals_must_be_the_sum_of_their_shards(prepared):
    import json

    path = Path(prepared.data.shards_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["splits"]["train"]["tokens"] += 5000
    path.write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=r"damaged manifest \(splits.train.tokens is .* but its shards hold"):
        make_train_loader(prepared)


def test_missing_manifest_says_to_prepare(make_cfg, tmp_path):
    with pytest.raises(UsageError, match="run 'edulm prepare CONFIG'"):
        make_train_loader(make_cfg("unused", shards_dir=str(tmp_path / "nothing")))


def test_windows_cross_shard_boundaries(tmp_path):
    tokens = np.arange(1, 301, dtype=np.uint16)
    arrays = []
    for i, (a, b) in enumerate([(0, 7), (7, 150), (150, 151), (151, 300)]):
        write_shard(tmp_path / shard_name("train", i), tokens[a:b], "f" * 16)
        arrays.append(np.memmap(tmp_path / shard_name("train", i), dtype="<u2", mode="r", offset=HEADER_BYTES))
    loader = ShardLoader(arrays, seq_len=10, batch_size=29, seed=0)
    x, y = next(loader)
    rows = {tuple(r) for r in x.tolist()}
    assert rows == {tuple(range(1 + 10 * w, 11 + 10 * w)) for w in range(29)}
    assert torch.equal(y, x + 1)


def test_too_little_data_for_one_window(tmp_path):
    write_shard(tmp_path / "t.bin", np.arange(5, dtype=np.uint16), "f" * 16)
    array = np.memmap(tmp_path / "t.bin", dtype="<u2", mode="r", offset=HEADER_BYTES)
    with pytest.raises(UsageError, match="too few for one window"):
        ShardLoader([array], seq_len=8, batch_size=1, seed=0)


def test_shards_of_another_source_are_refused(prepared, tmp_path):
    """The summary and the card name data.source: shards made from other data must not train under its name."""
    other = dataclasses.replace(prepared, data=dataclasses.replace(prepared.data, source=str(tmp_path / "other.jsonl")))
    with pytest.raises(UsageError, match="prepared from data.source '.*', but the config's data.source is '.*other.jsonl'"):
        make_train_loader(other)
    make_train_loader(prepared).close()  # the source it was prepared from is fine

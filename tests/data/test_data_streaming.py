"""Streaming: the same tokens as prepared shards, tokenized on the fly, resumable to the token, clean exit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from edulm.data.loader import make_train_loader, make_val_batches
from edulm.data.prepare import prepare
from edulm.data.shards import open_split
from edulm.data.sources import open_source
from edulm.data.stream_worker import INITIAL_STATE, stream_batches
from edulm.data.streaming import held_out_segments
from edulm.base.errors import UsageError


def held_out_tokens(cfg) -> np.ndarray:
    """Every source's held-out documents as streaming reads them, concatenated."""
    segments = held_out_segments(cfg)
    return np.concatenate(segments) if segments else np.zeros(0, dtype=np.uint16)


def _batches(cfg, tokenizer_file, state=None, rank=0, world_size=1, batch_size=3):
    return stream_batches(
        open_source(cfg.data.source), Tokenizer.from_file(str(tokenizer_file)), 0, state or dict(INITIAL_STATE),
        seq_len=cfg.train.seq_len, batch_size=batch_size, seed=cfg.run.seed, val_tokens=cfg.data.val_tokens,
        rank=rank, world_size=world_size,
    )


def test_stream_is_the_prepared_training_split_in_order(fineweb_dir, make_cfg, tokenizer_file):
    cfg = make_cfg(fineweb_dir)
    prepare(cfg)
    train = np.concatenate(open_split(cfg.data.shards_dir, "train"))
    val = np.concatenate(open_split(cfg.data.shards_dir, "val"))
    n = (len(train) - 1) // 32
    got, batches = [], _batches(cfg, tokenizer_file)
    while len(got) < n + 40:  # past the end of the source: the next epoch starts over
        windows, _ = next(batches)
        got.extend(windows)
    batches.close()
    for w in range(n):
        assert np.array_equal(got[w], train[w * 32 : w * 32 + 33])
    wrapped = np.concatenate([train, train])
    assert np.array_equal(got[n + 20], wrapped[(n + 20) * 32 : (n + 20) * 32 + 33])
    assert np.array_equal(held_out_tokens(cfg), val)  # same held-out documents as prepare


def test_resume_from_any_state_gives_the_same_next_batches(fineweb_dir, make_cfg, tokenizer_file):
    cfg = make_cfg(fineweb_dir)
    reference = _batches(cfg, tokenizer_file)
    items = [next(reference) for _ in range(95)]  # beyond one epoch (about 85 batches)
    reference.close()
    for k in (0, 1, 17, 60, 86, 90):
        state = items[k][1]
        resumed = _batches(cfg, tokenizer_file, state=state)
        for want, _ in items[k + 1 : k + 4]:
            got, _ = next(resumed)
            assert np.array_equal(got, want)
        resumed.close()


def test_ranks_split_by_document(fineweb_dir, make_cfg, tokenizer_file):
    cfg = make_cfg(fineweb_dir)
    prepare(cfg)
    train = np.concatenate(open_split(cfg.data.shards_dir, "train"))
    streams = [_batches(cfg, tokenizer_file, rank=r, world_size=2, batch_size=1) for r in range(2)]
    tokens = []
    for stream in streams:
        seen = []
        for _ in range(30):
            windows, state = next(stream)
            seen.append(windows[0][:-1])
            assert state["doc"] % 2 == streams.index(stream)
        tokens.append(np.concatenate(seen))
        stream.close()
    assert not np.array_equal(tokens[0][:200], tokens[1][:200])
    # together the ranks hold the same number of documents' separators as the training split
    assert sum(int((t == 0).sum()) for t in tokens) <= int((train == 0).sum())


def test_streaming_loader_process_resume_and_close(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir, streaming=True)
    loader = make_train_loader(cfg)
    first = [next(loader) for _ in range(5)]
    state = loader.state_dict()
    more = [next(loader) for _ in range(3)]
    loader.close()
    assert first[0][0].shape == (4, 32) and torch.equal(first[0][0][:, 1:], first[0][1][:, :-1])

    resumed = make_train_loader(cfg)
    resumed.load_state_dict(state)
    for want in more:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    resumed.close()
    resumed.close()  # idempotent

    val = make_val_batches(cfg, batch_size=2, max_tokens=0)
    assert val and torch.equal(torch.cat([x for x, _ in val]).flatten()[:64],
                               torch.from_numpy(held_out_tokens(cfg)[:64].astype(np.int64)))


def test_errors_in_the_background_process_reach_the_caller(tmp_path, make_cfg):
    (tmp_path / "empty.txt").write_text("   \n")
    loader = make_train_loader(make_cfg(tmp_path / "empty.txt", streaming=True))
    with pytest.raises(UsageError, match="no training documents"):
        next(loader)
    with pytest.raises(UsageError, match="no such file or folder"):
        make_train_loader(make_cfg(tmp_path / "missing.jsonl", streaming=True))


def test_state_from_shards_is_refused(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir, streaming=True)
    loader = make_train_loader(cfg)
    with pytest.raises(UsageError, match="from prepared shards"):
        loader.load_state_dict({"kind": "shards", "epoch": 0, "position": 3})
    other = dict(loader.state_dict(), seq_len=64)
    with pytest.raises(UsageError, match="seq_len"):
        loader.load_state_dict(other)
    loader.close()


def test_abandoned_loader_exits_without_noise(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir, streaming=True)
    script = textwrap.dedent(f"""
        import dataclasses
        from edulm.config import config_from_dict
        from edulm.data.loader import make_train_loader
        cfg = config_from_dict({dataclasses.asdict(cfg)!r})
        loader = make_train_loader(cfg)
        for _ in range(3):
            next(loader)
        print("ok")  # exits without close(): the process must still end quietly
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok" and result.stderr == ""


def test_a_streamed_mixture_follows_the_draw_sequence_and_resumes_exactly(fineweb_dir, tmp_path, make_cfg, tokenizer_file):
    from data_helpers import synthetic_corpus

    from edulm.config import SourceEntry
    from edulm.data.mixture import DrawSequence
    from edulm.data.stream_worker import initial_state, stream_mixture_batches

    corpus = synthetic_corpus(tmp_path / "corpus", n=200)
    entries = [SourceEntry(str(fineweb_dir), 1.0), SourceEntry(str(corpus), 3.0, pattern="*.parquet")]
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    opened = [open_source(e.source, "text", e.pattern) for e in entries]

    def mixture(state, rank=0, world_size=1):
        return stream_mixture_batches(opened, tokenizer, 0, state, seq_len=32, batch_size=3, seed=7, weights=[1.0, 3.0],
                                      val_tokens=[75, 225], rank=rank, world_size=world_size)

    reference = mixture(initial_state(2))
    items = [next(reference) for _ in range(40)]
    reference.close()
    # Each window is the next one of the source its draw names, from that source's own stream.
    alone = [stream_batches(o, tokenizer, 0, dict(INITIAL_STATE), seq_len=32, batch_size=1, seed=7, val_tokens=v)
             for o, v in zip(opened, (75, 225))]
    for source, row in zip(DrawSequence(7, [1.0, 3.0]).sources(0, 120).tolist(), np.concatenate([w for w, _ in items])):
        assert np.array_equal(row, next(alone[source])[0][0])
    for stream in alone:
        stream.close()
    for k in (0, 13, 30):
        resumed = mixture(items[k][1])
        for want, _ in items[k + 1 : k + 4]:
            assert np.array_equal(next(resumed)[0], want)
        resumed.close()

    # The loader process, and the held-out split that prepare makes of the same mixture.
    cfg = make_cfg(entries, streaming=True, val_tokens=300)
    loader = make_train_loader(cfg)
    first = [next(loader) for _ in range(4)]
    state = loader.state_dict()
    more = [next(loader) for _ in range(2)]
    loader.close()
    assert state["draw"] == 4 * 4 and state["source"][1]["weight"] == 3.0
    resumed = make_train_loader(cfg)
    resumed.load_state_dict(state)
    for want in more:
        assert torch.equal(next(resumed)[0], want[0])
    resumed.close()
    assert first[0][0].shape == (4, 32)
    prepared = prepare(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, streaming=False)))
    assert np.array_equal(held_out_tokens(cfg), np.concatenate(open_split(cfg.data.shards_dir, "val")))
    assert prepared["held_out"]["tokens"] == len(held_out_tokens(cfg))

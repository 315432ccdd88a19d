"""Mixtures: each source prepared as on its own, windows drawn by weight, exact resume, the realised mixture."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import synthetic_corpus, write_jsonl
from edulm.cli import main
from edulm.config import SourceEntry
from edulm.data.loader import make_train_loader, make_val_batches
from edulm.data.mixture import DrawSequence, draws_per_source, realised_mixture, split_by_weight, window_permutation
from edulm.data.prepare import prepare
from edulm.data.shards import open_split
from edulm.base.errors import UsageError

SEQ = 32


@pytest.fixture
def sources(tmp_path, fineweb_dir) -> list[SourceEntry]:
    corpus = synthetic_corpus(tmp_path / "corpus", n=300)
    return [SourceEntry(str(fineweb_dir), 3.0), SourceEntry(str(corpus), 1.0, pattern="*.parquet")]


@pytest.fixture
def mixed(make_cfg, sources):
    cfg = make_cfg(sources, val_tokens=900, prefetch=0)
    return cfg, prepare(cfg)


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("[!.]*.bin"))}


def test_each_source_is_prepared_as_it_would_be_alone(mixed, make_cfg, sources, tmp_path):
    cfg, manifest = mixed
    out = Path(cfg.data.shards_dir)
    val_shares = split_by_weight(900, [3.0, 1.0])
    assert val_shares == [675, 225]
    for i, (entry, share) in enumerate(zip(sources, val_shares)):
        alone = make_cfg(entry.source, pattern=entry.pattern, val_tokens=share, shards_dir=str(tmp_path / f"alone{i}"))
        single = prepare(alone)
        folder = out / manifest["mixture"][i]["folder"]
        assert _shard_bytes(folder) == _shard_bytes(tmp_path / f"alone{i}")
        assert manifest["mixture"][i]["tokens"] == single["tokens"]
        assert manifest["mixture"][i]["held_out"]["requested_tokens"] == share
    parent = Path(sources[0].source).parent.name
    assert [m["folder"] for m in manifest["mixture"]] == [f"00-{parent}-fineweb", f"01-{parent}-corpus"]
    assert manifest["mixture"][0]["target_share"] == 0.75
    train = manifest["tokens"]["train"]
    assert train == sum(m["tokens"]["train"] for m in manifest["mixture"])
    assert manifest["mixture"][0]["train_share"] == pytest.approx(manifest["mixture"][0]["tokens"]["train"] / train)
    # One split across the sources, in order: what perplexity, sample-text and contamination read.
    assert sum(len(a) for a in open_split(out, "train")) == train
    assert {e["source"] for e in manifest["splits"]["val"]["shards"]} == {0, 1}
    assert not (out / ".prepare-state.json").exists()
    # A rerun does nothing; other weights are refused before anything is touched.
    assert prepare(cfg)["splits"] == manifest["splits"]
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=[sources[0], dataclasses.replace(sources[1], weight=2.0)]))
    with pytest.raises(UsageError, match="other settings"):
        prepare(other)


def _expected_rows(cfg, manifest, first_draw: int, count: int) -> list[np.ndarray]:
    """The windows of draws first .. first+count-1, computed from the rule in edulm.data.mixture."""
    out = Path(cfg.data.shards_dir)
    weights = [m["weight"] for m in manifest["mixture"]]
    streams = []
    for i in range(len(weights)):
        files = [e["file"] for e in manifest["splits"]["train"]["shards"] if e["source"] == i]
        streams.append(np.concatenate([np.fromfile(out / f, dtype="<u2", offset=128) for f in files]).astype(np.int64))
    sources = DrawSequence(cfg.run.seed, weights).sources(0, first_draw + count)
    rows = []
    for k in range(first_draw, first_draw + count):
        s = int(sources[k])
        j = int((sources[:k] == s).sum())
        n = (len(streams[s]) - 1) // SEQ
        w = int(window_permutation(cfg.run.seed, s, j // n, n)[j % n])
        rows.append(streams[s][w * SEQ : w * SEQ + SEQ + 1])
    return rows


def test_windows_are_drawn_by_weight_and_ranks_interleave(mixed):
    cfg, manifest = mixed
    loader = make_train_loader(cfg)
    batches = [next(loader) for _ in range(40)]
    rows = _expected_rows(cfg, manifest, 0, 40 * 4)
    got = torch.cat([x for x, _ in batches])
    targets = torch.cat([y for _, y in batches])
    for row, want in enumerate(rows):
        assert np.array_equal(got[row].numpy(), want[:-1]) and np.array_equal(targets[row].numpy(), want[1:])
    assert loader.counts == draws_per_source(cfg.run.seed, [3.0, 1.0], 160).tolist()
    assert 0.6 < loader.counts[0] / 160 < 0.9  # about three in four from the first source
    # Two ranks with half the batch take alternate draws of the same sequence.
    ranks = [make_train_loader(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch_size=2)), r, 2)
             for r in range(2)]
    for step in range(5):
        x0, x1 = next(ranks[0])[0], next(ranks[1])[0]
        assert torch.equal(torch.stack([x0[0], x1[0], x0[1], x1[1]]), batches[step][0])


def test_resume_is_exact_with_any_number_of_ranks(mixed):
    cfg, _ = mixed
    reference = make_train_loader(cfg)
    expected = [next(reference) for _ in range(12)]
    half = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch_size=2))
    two = [make_train_loader(half, r, 2) for r in range(2)]
    for _ in range(3):
        for loader in two:
            next(loader)
    state = two[1].state_dict()
    assert state == two[0].state_dict()  # every rank of a step has the same position
    assert json.loads(json.dumps(state)) == state  # plain values, safe for torch.load(weights_only=True)
    resumed = make_train_loader(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prefetch=2)))
    resumed.load_state_dict(state)
    for want in expected[3:]:
        got = next(resumed)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    resumed.close()
    with pytest.raises(UsageError, match="does not fit this mixture"):
        make_train_loader(cfg).load_state_dict({**state, "weights": [1.0, 1.0]})
    with pytest.raises(UsageError, match="not from a mixture"):
        make_train_loader(cfg).load_state_dict({"kind": "shards", "epoch": 0, "position": 0})


def test_a_source_is_repeated_only_after_every_window_was_used(mixed):
    cfg, manifest = mixed
    loader = make_train_loader(cfg)
    n = (manifest["mixture"][0]["tokens"]["train"] - 1) // SEQ  # the smaller source, with the larger weight
    while loader.counts[0] < 2 * n:
        next(loader)
    first_pass = [loader.window_of(0, j) for j in range(n)]
    assert sorted(first_pass) == list(range(n))
    assert first_pass != [loader.window_of(0, j) for j in range(n, 2 * n)]  # reshuffled for the second pass
    usage = realised_mixture(cfg.data.shards_dir, cfg.run.seed, SEQ, loader.draw * SEQ)
    assert [u.windows for u in usage] == loader.counts
    assert usage[0].epochs >= 2 and usage[1].epochs < usage[0].epochs
    assert sum(u.tokens for u in usage) == loader.draw * SEQ and sum(u.share for u in usage) == pytest.approx(1)
    assert [u.target_share for u in usage] == [0.75, 0.25] and usage[0].prepared_tokens == manifest["mixture"][0]["tokens"]["train"]


def test_realised_mixture_of_a_single_source(fineweb_dir, make_cfg):
    cfg = make_cfg(fineweb_dir)
    manifest = prepare(cfg)
    (usage,) = realised_mixture(manifest, cfg.run.seed, SEQ, 10_000 * SEQ)
    assert usage.share == 1 and usage.windows == 10_000 and usage.folder == ""
    assert usage.epochs == pytest.approx(10_000 / ((manifest["tokens"]["train"] - 1) // SEQ))


def test_validation_covers_every_source_by_weight(mixed):
    cfg, manifest = mixed
    out = Path(cfg.data.shards_dir)
    per_source = []
    for i in range(2):
        files = [e["file"] for e in manifest["splits"]["val"]["shards"] if e["source"] == i]
        per_source.append(np.concatenate([np.fromfile(out / f, dtype="<u2", offset=128) for f in files]).astype(np.int64))
    batches = make_val_batches(cfg, batch_size=3, max_tokens=8 * SEQ)
    rows = torch.cat([x for x, _ in batches]).numpy()
    assert len(rows) == 8
    assert [6, 2] == split_by_weight(8, [3.0, 1.0])
    for r in range(6):
        assert np.array_equal(rows[r], per_source[0][r * SEQ : r * SEQ + SEQ])
    for r in range(2):
        assert np.array_equal(rows[6 + r], per_source[1][r * SEQ : r * SEQ + SEQ])
    assert make_val_batches(cfg, batch_size=3, max_tokens=8 * SEQ)[0][0].equal(batches[0][0])  # fixed


def test_shards_of_another_kind_are_refused(mixed, make_cfg, fineweb_dir):
    cfg, _ = mixed
    single = make_cfg(fineweb_dir, shards_dir=cfg.data.shards_dir)
    with pytest.raises(UsageError, match="prepared from a mixture, but data.source is one source"):
        make_train_loader(single)
    reweighted = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=[
        dataclasses.replace(cfg.data.source[0], weight=1.0), cfg.data.source[1]]))
    with pytest.raises(UsageError, match="prepared for another mixture"):
        make_train_loader(reweighted)


def test_an_interrupted_mixture_resumes_to_identical_shards(make_cfg, sources, tmp_path):
    from test_data_prepare import FailingAfter

    from edulm.data.sources import open_source

    reference = make_cfg(sources, val_tokens=900, shard_tokens=3_000, shards_dir=str(tmp_path / "reference"))
    prepare(reference)
    cfg = make_cfg(sources, val_tokens=900, shard_tokens=3_000, shards_dir=str(tmp_path / "resumed"))
    opened = [open_source(e.source, e.text_field or "text", e.pattern) for e in sources]
    with pytest.raises(OSError, match="disk went away"):
        prepare(cfg, source=[opened[0], FailingAfter(opened[1], 150)])
    assert (tmp_path / "resumed" / ".prepare-state.json").is_file()
    manifest = prepare(cfg)
    for i, entry in enumerate(manifest["mixture"]):
        assert _shard_bytes(tmp_path / "resumed" / entry["folder"]) == _shard_bytes(tmp_path / "reference" / entry["folder"])
    assert manifest["splits"] == json.loads((tmp_path / "reference" / "manifest.json").read_text())["splits"]


def test_cli_mixture_errors_are_one_line(tmp_path, tokenizer_file, fineweb_dir, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"body": "no text field here"}])

    def run(source) -> tuple[int, str]:
        config = tmp_path / "c.json"
        config.write_text(json.dumps({"tokenizer": {"name": str(tokenizer_file)},
                                      "data": {"source": source, "shards_dir": str(tmp_path / "out"), "workers": 1}}))
        capsys.readouterr()
        code = main(["prepare", str(config)])
        return code, capsys.readouterr().err

    for source, message in [
        ([{"source": str(fineweb_dir)}, {"source": str(bad), "weight": 0.5}], f"{bad} line 1: no field 'text' (found: body); set data.text_field to the field that holds the text (in a mixture, that entry's text_field"),
        ([{"source": str(fineweb_dir), "wieght": 2}], "data.source[0]: unknown key 'wieght' (did you mean 'weight'?)"),
        ([{"source": str(fineweb_dir), "weight": -1}], "data.source[0].weight must be a positive number"),
        ([], "data.source is an empty list"),
    ]:
        code, err = run(source)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
        assert not (tmp_path / "out").exists()


def test_a_mixture_manifest_of_the_wrong_shape_is_damage(mixed):
    cfg, manifest = mixed
    path = Path(cfg.data.shards_dir) / "manifest.json"
    for damage, problem in [
        (lambda m: m["splits"]["val"]["shards"][0].pop("source"), "splits.val.shards[0].source is not the number of a mixture source"),
        (lambda m: m["splits"]["train"]["shards"][0].update(source=2), "splits.train.shards[0].source is not the number"),
        (lambda m: m["mixture"][1].pop("weight"), "mixture[1] has no 'weight'"),
    ]:
        broken = json.loads(json.dumps(manifest))
        damage(broken)
        path.write_text(json.dumps(broken))
        for read in (lambda: make_train_loader(cfg), lambda: make_val_batches(cfg, 2),
                     lambda: realised_mixture(cfg.data.shards_dir, 7, SEQ, 1000)):
            with pytest.raises(UsageError, match=f"damaged manifest \\({re.escape(problem)}"):
                read()


@pytest.mark.parametrize("source, message", [
    ([{"source": "a", "weight": float("nan")}], "data.source[0].weight: must be a finite number, got nan"),
    ([{"source": "a", "weight": float("inf")}], "data.source[0].weight: must be a finite number, got inf"),
    ([{"source": "a"}, {"source": "b", "weight": 0}], "data.source[1].weight must be a positive number, got 0.0"),
    ([{"source": "a"}, {"source": "a"}], "data.source[1] repeats the source 'a'"),
    ([{"source": "src/a"}, {"source": "./src/a/"}], "data.source[1] repeats the source './src/a/'"),
    ([{"weight": 2}], "data.source[0] names no source"),
    (["a", "b"], "data.source[0]: expected a mapping with keys source, weight, text_field, pattern"),
    ([{"source": "a", "text_feild": "body"}], "data.source[0]: unknown key 'text_feild' (did you mean 'text_field'?)"),
])
def test_mixture_config_is_validated(source, message):
    from edulm.config import config_from_dict

    with pytest.raises(UsageError) as caught:
        config_from_dict({"data": {"source": source}})
    assert message in str(caught.value)
    with pytest.raises(UsageError, match="data.pattern applies to a single data.source"):
        config_from_dict({"data": {"source": [{"source": "a"}], "pattern": "*.parquet"}})
    cfg = config_from_dict({"data": {"source": [{"source": "a", "weight": 2}, {"source": "b", "text_field": "body"}]}})
    assert [(e.source, e.weight, e.text_field) for e in cfg.data.sources()] == [("a", 2.0, "text"), ("b", 1.0, "body")]


def test_perplexity_of_a_mixture_folder_scores_the_trainers_validation_windows(mixed):
    """`edulm perplexity --data` windows each source on its own and shares a token cap by weight, as the trainer."""
    from edulm.config import ModelConfig
    from edulm.evaluate.perplexity import shards_perplexity
    from edulm.evaluate.heldout import score_heldout
    from edulm.model import LlamaLM
    from edulm.tokenizer.loading import load_tokenizer

    cfg, _ = mixed
    tokenizer = load_tokenizer(cfg.tokenizer.name)
    torch.manual_seed(0)
    model = LlamaLM(ModelConfig(vocab_size=len(tokenizer), n_layers=1, d_model=32, d_ff=64, n_heads=2, n_kv_heads=1,
                                max_seq_len=SEQ)).eval()
    got = shards_perplexity(model, tokenizer, cfg.data.shards_dir, SEQ, batch_size=3, max_tokens=8 * SEQ)
    expected = score_heldout(model, make_val_batches(cfg, batch_size=3, max_tokens=8 * SEQ), "cpu")
    assert (got.tokens, got.windows) == (expected.tokens, expected.windows) == (8 * SEQ, 8)
    assert got.loss == pytest.approx(expected.loss, abs=1e-6)

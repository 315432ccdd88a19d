"""`edulm prepare`: exact token counts, a disjoint held-out split, resumable to identical bytes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_helpers import FaultyDataset, faulty_source, fineweb_rows, local_stream_opener, write_jsonl, write_parquet
from edulm.cli import main
from edulm.data.hub_dataset import HubSource, SourceError
from edulm.data.prepare import prepare
from edulm.data.prepare_state import STATE
from edulm.data.shards import open_split, read_header, verify_shard
from edulm.data.records import RecordStream, Source
from edulm.data.sources import LocalFiles
from edulm.base.errors import UsageError


def _shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("[!.]*.bin"))}


def _encode(tokenizer_file: Path, texts: list[str]) -> list[list[int]]:
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file))
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_fineweb_parquet_to_shards(fineweb_dir, make_cfg, tokenizer_file, paragraphs, tmp_path):
    cfg = make_cfg(fineweb_dir)
    manifest = prepare(cfg)
    texts = [r["text"] for r in fineweb_rows(paragraphs, 120)]
    nonempty = [t for t in texts if t.strip()]
    ids = _encode(tokenizer_file, nonempty)

    # Every non-empty document plus one separator (id 0) each, nothing else.
    assert manifest["tokens"]["train"] + manifest["tokens"]["val"] == sum(len(i) + 1 for i in ids)
    assert manifest["documents"] == {"read": 120, "skipped_empty": 13, "train": 107 - manifest["documents"]["val"],
                                     "val": manifest["documents"]["val"], "past_max_tokens": 0}
    assert manifest["tokenizer"]["eos_id"] == 0 and len(manifest["tokenizer"]["fingerprint"]) > 0
    assert manifest["tokens"]["val"] >= cfg.data.val_tokens and manifest["documents"]["val"] >= 1

    train = np.concatenate(open_split(cfg.data.shards_dir, "train"))
    val = np.concatenate(open_split(cfg.data.shards_dir, "val"))
    # Rebuild both splits from the documents: each document is in exactly one, in source order.
    docs = [np.array(i + [0], dtype=np.uint16) for i in ids]
    val_docs, pos = [], 0
    for d in docs:
        if pos < len(val) and np.array_equal(val[pos : pos + len(d)], d):
            val_docs.append(d)
            pos += len(d)
    assert pos == len(val)
    train_docs = [d for d in docs if not any(d is v for v in val_docs)]
    assert np.array_equal(train, np.concatenate(train_docs))
    assert all(len(x) for x in (train, val)) and int((train == 0).sum() + (val == 0).sum()) == len(docs)

    shards = manifest["splits"]["train"]["shards"]
    assert [s["tokens"] for s in shards[:-1]] == [cfg.data.shard_tokens] * (len(shards) - 1)
    for entry in shards:
        header = verify_shard(Path(cfg.data.shards_dir) / entry["file"], entry["crc32"])
        assert header.fingerprint == manifest["tokenizer"]["fingerprint"]

    # Running again is a no-op; other settings in the same folder are refused.
    assert prepare(cfg)["splits"] == manifest["splits"]
    with pytest.raises(UsageError, match=r"other settings \(val_tokens: 300 -> 999\)"):
        prepare(make_cfg(fineweb_dir, val_tokens=999))


def test_output_does_not_depend_on_the_worker_count(fineweb_dir, make_cfg, tmp_path):
    one = make_cfg(fineweb_dir, shards_dir=str(tmp_path / "one"), workers=1)
    two = make_cfg(fineweb_dir, shards_dir=str(tmp_path / "two"), workers=2)
    prepare(one)
    prepare(two)
    assert _shard_bytes(tmp_path / "one") == _shard_bytes(tmp_path / "two")


def test_token_budget_stops_after_whole_documents(fineweb_dir, make_cfg, tmp_path):
    cfg = make_cfg(fineweb_dir, max_tokens=5_000, val_tokens=1_200)
    manifest = prepare(cfg)
    train = np.concatenate(open_split(cfg.data.shards_dir, "train"))
    assert 5_000 <= manifest["tokens"]["train"] == len(train) < 5_000 + 2_000
    assert train[-1] == 0 and manifest["stopped_at_max_tokens"]
    # reading went on past the budget for held-out documents only, until their quota was met
    docs = manifest["documents"]
    assert manifest["tokens"]["val"] >= 1_200 and docs["past_max_tokens"] > 0
    assert docs["read"] == docs["skipped_empty"] + docs["train"] + docs["val"] + docs["past_max_tokens"]
    # the same held-out documents as without a budget (the rule does not depend on it)
    full = make_cfg(fineweb_dir, val_tokens=1_200, shards_dir=str(tmp_path / "full"))
    prepare(full)
    assert np.array_equal(np.concatenate(open_split(full.data.shards_dir, "val")),
                          np.concatenate(open_split(cfg.data.shards_dir, "val")))


class Counted(Source):
    """``n`` short documents that count how many records were read."""

    name = "counted"

    def __init__(self, n: int):
        self.n, self.reads = n, 0

    def open(self, start=0, token=None):
        def records():
            for i in range(start, self.n):
                self.reads += 1
                yield f"document {i} " * (5 + i % 7)

        return RecordStream(records(), start)


@pytest.mark.parametrize("val_tokens", [0, 500])
def test_token_budget_stops_reading_once_both_splits_are_full(make_cfg, tmp_path, monkeypatch, val_tokens):
    # One document per batch, so the budget (or the held-out quota) is always met at the end of a batch:
    # reading must still stop right there rather than run on to the end of the source.
    monkeypatch.setattr("edulm.data.records.BATCH_DOCS", 1)
    source = Counted(20_000)
    cfg = make_cfg("unused", max_tokens=3_000, val_tokens=val_tokens)
    manifest = prepare(cfg, source=source)
    assert source.reads <= manifest["documents"]["read"] + 1


def test_resume_at_a_shard_that_ends_the_budget_mid_document(make_cfg, tmp_path):
    # The budget is spent exactly at the end of the first shard, inside a document that goes on in the next.
    reference = make_cfg("unused", shards_dir=str(tmp_path / "reference"), max_tokens=2_000, val_tokens=3_000)
    prepare(reference, source=Counted(3_000))
    cfg = make_cfg("unused", shards_dir=str(tmp_path / "resumed"), max_tokens=2_000, val_tokens=3_000)
    with pytest.raises(OSError, match="disk went away"):
        prepare(cfg, source=FailingAfter(Counted(3_000), 900))
    assert (tmp_path / "resumed" / "train-000000.bin").is_file()
    prepare(cfg, source=Counted(3_000))
    assert _shard_bytes(tmp_path / "reference") == _shard_bytes(tmp_path / "resumed")


class FailingAfter(Source):
    """A real local source that fails for good once ``limit`` records have been read (once)."""

    def __init__(self, inner: Source, limit: int):
        self.inner, self.limit, self.name = inner, limit, inner.name

    def total_records(self):
        return self.inner.total_records()

    def open(self, start=0, token=None):
        inner = self.inner.open(start, token)
        limit = self.limit

        def records():
            for text in inner:
                if inner.index > limit:
                    raise OSError("disk went away")
                yield text

        return RecordStream(records(), start)


def test_interrupted_prepare_resumes_to_identical_shards(make_cfg, paragraphs, tmp_path):
    data = tmp_path / "data"
    rows = fineweb_rows(paragraphs, 1500, seed=2)
    write_parquet(data / "a.parquet", rows[:700], row_group_size=64)
    write_jsonl(data / "b.jsonl", rows[700:])
    reference = make_cfg(data, shards_dir=str(tmp_path / "reference"), shard_tokens=7_000, pattern="*")
    prepare(reference)
    cfg = make_cfg(data, shards_dir=str(tmp_path / "resumed"), shard_tokens=7_000, pattern="*")
    for limit in (600, 601, 1100):  # each run dies mid-way; the next continues after the last whole shard
        with pytest.raises(OSError, match="disk went away"):
            prepare(cfg, source=FailingAfter(LocalFiles(str(data), pattern="*"), limit))
        assert (tmp_path / "resumed" / STATE).is_file() and not (tmp_path / "resumed" / "manifest.json").exists()
        for shard in (tmp_path / "resumed").glob("train-*.bin"):
            read_header(shard)  # whatever is there is whole
    manifest = prepare(cfg)
    assert _shard_bytes(tmp_path / "reference") == _shard_bytes(tmp_path / "resumed")
    expected = json.loads((tmp_path / "reference" / "manifest.json").read_text())
    for key in ("documents", "tokens", "splits"):
        assert manifest[key] == expected[key]
    assert not (tmp_path / "resumed" / STATE).exists()


def test_hub_source_with_random_faults_gives_the_fault_free_shards(make_cfg, paragraphs, tmp_path):
    rows = fineweb_rows(paragraphs, 400, seed=3)
    files = [write_parquet(tmp_path / "hub" / f"part-{i}.parquet", rows[i * 200 : (i + 1) * 200], row_group_size=50) for i in range(2)]
    clean = make_cfg(tmp_path / "hub", shards_dir=str(tmp_path / "clean"))
    prepare(clean)
    streamed = make_cfg(tmp_path / "hub", shards_dir=str(tmp_path / "streamed"))
    prepare(streamed, source=faulty_source(files, seed=5, rate=0.01))
    assert _shard_bytes(tmp_path / "clean") == _shard_bytes(tmp_path / "streamed")


class BreaksAt(FaultyDataset):
    """A dataset whose reader fails for good at record ``rate`` (a corrupt file on the hub, say)."""

    def __iter__(self):
        it = iter(self.dataset)
        try:
            for i, record in enumerate(it):
                if i == self.rate:
                    raise ValueError("Parquet magic bytes not found in footer")
                yield record
        finally:
            it.close()


def test_permanent_hub_error_keeps_the_shards_and_resumes(make_cfg, paragraphs, tmp_path):
    rows = fineweb_rows(paragraphs, 900, seed=4)
    files = [write_parquet(tmp_path / "hub" / "part-0.parquet", rows, row_group_size=40)]
    prepare(make_cfg(tmp_path / "hub", shards_dir=str(tmp_path / "reference")))

    opener = local_stream_opener(files)
    broken = HubSource("hf://test/broken", lambda: BreaksAt(opener(), None, 600, []))
    cfg = make_cfg(tmp_path / "hub", shards_dir=str(tmp_path / "resumed"))
    with pytest.raises(SourceError, match="failed at record 600 .*what was written so far is kept"):
        prepare(cfg, source=broken)
    kept = _shard_bytes(tmp_path / "resumed")
    reference = _shard_bytes(tmp_path / "reference")
    assert kept and all(reference[name] == data for name, data in kept.items())
    prepare(cfg, source=HubSource("hf://test/back", opener))
    assert _shard_bytes(tmp_path / "resumed") == reference


def test_vocabulary_too_large_for_uint16(make_cfg, fineweb_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1} | {f"w{i}": i + 2 for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "big.json"))
    cfg = make_cfg(fineweb_dir)
    cfg.tokenizer.name = str(tmp_path / "big.json")
    with pytest.raises(UsageError, match="70,002 tokens; uint16 shards hold at most 65,536"):
        prepare(cfg)
    assert not Path(cfg.data.shards_dir).exists()


def _cli_prepare(tmp_path: Path, tokenizer_file: Path, capsys, **data) -> tuple[int, str]:
    config = tmp_path / "c.yaml"
    items = ", ".join(f"{k}: {json.dumps(v)}" for k, v in data.items())
    config.write_text(f"tokenizer: {{name: {json.dumps(str(tokenizer_file))}}}\n"
                      f"data: {{shards_dir: {json.dumps(str(tmp_path / 'out'))}, workers: 1, {items}}}\n")
    capsys.readouterr()
    code = main(["prepare", str(config)])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "make_source, field, message",
    [
        (lambda d: str(d / "missing"), "text", "no such file or folder"),
        (lambda d: str(write_jsonl(d / "empty.jsonl", [{"text": " "}, {"text": ""}])), "text", "no non-empty documents"),
        (lambda d: str(write_jsonl(d / "x.jsonl", [{"text": "hi"}])), "body", "no field 'body'"),
        (lambda d: str(write_parquet(d / "x.parquet", fineweb_rows(["a b", "c d", "e f", "g h"], 5))), "content", "no column 'content'"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, tokenizer_file, capsys, make_source, field, message):
    code, err = _cli_prepare(tmp_path, tokenizer_file, capsys, source=make_source(tmp_path), text_field=field)
    assert code == 2
    assert err.startswith("edulm: error:") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("files", [["config.yaml", "checkpoints/"], ["config.json", "model.safetensors"]])
def test_shards_dir_holding_a_run_or_a_model_is_refused_untouched(tmp_path, tokenizer_file, capsys, files):
    out = tmp_path / "out"
    out.mkdir()
    for name in files:
        if name.endswith("/"):
            (out / name).mkdir()
        else:
            (out / name).write_text("x")
    source = write_jsonl(tmp_path / "x.jsonl", [{"text": "a few words"}])
    code, err = _cli_prepare(tmp_path, tokenizer_file, capsys, source=str(source))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds a" in err and "not token shards; choose a new or empty folder" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(name.rstrip("/") for name in files)


def test_a_long_record_is_tokenized_in_pieces_to_the_same_tokens(monkeypatch):
    # A tokenizer's working memory grows with the text (5.8 GB for one 31 MB line); in pieces cut before a word's
    # leading space, the tokens are the whole text's.
    import random

    from edulm.data import encode
    from edulm.tokenizer.loading import load_tokenizer

    raw = load_tokenizer("smollm2-offline").backend_tokenizer
    rng = random.Random(0)
    words = ["alpha", "beta,", "  two", "x\ny", "é", "1234", "\ttab", "(c)", "a.b", " "]
    texts = ["".join(rng.choice(words) + rng.choice([" ", "", "  "]) for _ in range(400)) for _ in range(3)]
    whole = encode.encode_texts(raw, texts, 0)
    monkeypatch.setattr(encode, "PIECE_CHARS", 50)
    assert all(len(encode.pieces(t, 50)) > 20 for t in texts)
    cut = encode.encode_texts(raw, texts, 0)
    assert [a.tolist() for a in whole] == [a.tolist() for a in cut]
    assert encode.pieces("x" * 120, 50) == ["x" * 50, "x" * 50, "x" * 20]  # no space to cut before: cut at the size

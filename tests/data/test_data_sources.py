"""Sources: local files in a fixed order with cheap, exact repositioning; hub names; the built-in sample."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from data_helpers import fineweb_rows, write_jsonl, write_parquet
from edulm.data.builtin_sample import BuiltinSample, clean_docstring, harvest
from edulm.data.hub_dataset import HubSpec, is_transient, parse_hub_spec
from edulm.data.records import document_batches
from edulm.data.sources import iter_texts, open_source
from edulm.base.errors import UsageError


def _all(source, start=0):
    with source.open(start) as stream:
        return list(stream)


def test_parquet_folder_reads_every_record_in_path_order(fineweb_dir, paragraphs):
    rows = fineweb_rows(paragraphs, 120)
    source = open_source(str(fineweb_dir))
    assert source.total_records() == 120
    assert _all(source) == [r["text"] for r in rows]
    assert list(iter_texts(str(fineweb_dir))) == [r["text"] for r in rows if r["text"].strip()]


@pytest.mark.parametrize("start", [0, 1, 15, 16, 17, 69, 70, 71, 119, 120, 500])
def test_open_at_any_record_equals_skipping(fineweb_dir, tmp_path, start):
    jsonl = write_jsonl(tmp_path / "mixed" / "b.jsonl", [{"text": f"line {i}"} for i in range(30)])
    (tmp_path / "mixed" / "c.txt").write_text("a whole file is one document")
    write_parquet(tmp_path / "mixed" / "a.parquet", fineweb_rows(["one", "two", "three", "four"], 40), row_group_size=7)
    for source in (open_source(str(fineweb_dir)), open_source(str(jsonl.parent), pattern="*")):
        everything = _all(source)
        with source.open(start) as stream:
            assert list(stream) == everything[start:]
            assert stream.index == max(len(everything), start)


def test_jsonl_txt_gzip_and_globs(tmp_path):
    write_jsonl(tmp_path / "d" / "1.jsonl", [{"text": "first"}, {"text": None}, {"text": "third", "id": 3}])
    (tmp_path / "d" / "2.txt").write_text("a text file\n\nwith paragraphs")
    with gzip.open(tmp_path / "d" / "3.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "zipped"}) + "\n\n")
    (tmp_path / "d" / "notes.md").write_text("ignored: not a data file")
    assert _all(open_source(str(tmp_path / "d"), pattern="*")) == ["first", "", "third", "a text file\n\nwith paragraphs", "zipped"]
    assert _all(open_source(str(tmp_path / "d" / "*.jsonl*"))) == ["first", "", "third", "zipped"]
    assert _all(open_source(str(tmp_path / "d"), pattern="*.jsonl*")) == ["first", "", "third", "zipped"]


def test_a_folder_of_mixed_kinds_needs_a_pattern(tmp_path, fineweb_dir):
    (fineweb_dir / "sub").mkdir()
    (fineweb_dir / "sub" / "urls.txt").write_text("https://example.org/1\n")
    with pytest.raises(UsageError, match=r"several kinds \(2 parquet, 1 txt\); choose the files with a pattern"):
        open_source(str(fineweb_dir))
    assert open_source(str(fineweb_dir), pattern="*.parquet").paths == sorted(fineweb_dir.glob("*.parquet"))
    assert open_source(str(fineweb_dir), pattern="**/*.txt").paths == [fineweb_dir / "sub" / "urls.txt"]
    with pytest.raises(UsageError, match=r"pattern '\*.jsonl' matches no data files in folder"):
        open_source(str(fineweb_dir), pattern="*.jsonl")
    for spec in (str(fineweb_dir / "*.parquet"), str(fineweb_dir / "000_00000.parquet"), "builtin:sample", "hf://a/b"):
        with pytest.raises(UsageError, match=r"a pattern \('\*.txt'\) only applies to a folder source"):
            open_source(spec, pattern="*.txt")


@pytest.mark.parametrize("marker, kind", [("config.yaml", "a training run"), ("checkpoints/", "a training run"),
                                          ("config.json", "a Hugging Face model folder"), ("manifest.json", "prepared token shards")])
def test_a_run_model_or_shards_folder_is_not_a_text_source(tmp_path, marker, kind):
    """A run dir holds JSONL files of its own (eval samples, reports): read as text, prepare would train on them."""
    folder = tmp_path / "folder"
    write_jsonl(folder / "release" / "eval" / "results_samples_quiz.jsonl", [{"text": "a report line"}])
    (folder / marker.rstrip("/")).mkdir() if marker.endswith("/") else (folder / marker).write_text("{}\n")
    with pytest.raises(UsageError, match=f"holds {kind} .*, not text documents"):
        open_source(str(folder))
    assert open_source(str(folder), pattern="release/**/*.jsonl").paths  # a pattern says the files are meant


def test_document_batches_reopen_at_the_batch_start(fineweb_dir):
    source = open_source(str(fineweb_dir))
    everything = _all(source)
    with source.open() as stream:
        batches = list(document_batches(stream, start_doc=5))
    seen = [i for info, _ in batches for i in info.indices]
    assert seen == [i for i, t in enumerate(everything) if i >= 5 and t.strip()]
    assert batches[-1][0].empty_total == sum(1 for t in everything[5:] if not t.strip())
    for info, texts in batches:
        for index, before, text in zip(info.indices, info.empty_before, texts):
            assert before == sum(1 for t in everything[5:index] if not t.strip())
        if info.indices:
            with source.open(info.first, info.token) as again:
                assert list(again)[info.indices[0] - info.first] == texts[0]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("hf://HuggingFaceFW/fineweb-edu/sample-10BT", HubSpec("HuggingFaceFW/fineweb-edu", "sample-10BT", "train")),
        ("hf://HuggingFaceFW/fineweb-edu", HubSpec("HuggingFaceFW/fineweb-edu", None, "train")),
        ("hf://owner/name/cfg@validation", HubSpec("owner/name", "cfg", "validation")),
    ],
)
def test_hub_names(spec, expected):
    assert parse_hub_spec(spec) == expected


@pytest.mark.parametrize("spec", ["hf://", "hf://only-owner", "hf://a/b/c/d", "hf://a//c", "hf://a/b@"])
def test_bad_hub_names(spec):
    with pytest.raises(UsageError, match="hf://OWNER/NAME"):
        parse_hub_spec(spec)


def test_hub_source_refused_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        open_source("hf://HuggingFaceFW/fineweb-edu/sample-10BT")


def test_transient_errors_are_told_from_permanent_ones():
    import httpx2
    import requests
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("GET", "https://huggingface.co/x")
    assert is_transient(httpx2.ReadTimeout("read timed out", request=request))
    assert is_transient(requests.exceptions.ConnectionError("connection reset by peer"))
    assert is_transient(ConnectionResetError(104, "Connection reset by peer"))
    assert is_transient(TimeoutError())
    assert is_transient(HfHubHTTPError("503 Service Unavailable", response=httpx2.Response(503, request=request)))
    try:  # wrapped, as datasets re-raises reader errors
        try:
            raise requests.exceptions.ChunkedEncodingError("connection broken")
        except Exception as inner:
            raise RuntimeError("failed to read shard") from inner
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(HfHubHTTPError("404 Not Found", response=httpx2.Response(404, request=request)))
    assert not is_transient(FileNotFoundError("no such dataset"))
    assert not is_transient(ValueError("bad config name"))


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        open_source(str(tmp_path / "nope.parquet"))
    with pytest.raises(UsageError, match="matches no data files"):
        open_source(str(tmp_path / "*.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no data files"):
        open_source(str(tmp_path / "empty"))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(UsageError, match="not a data file"):
        open_source(str(tmp_path / "data.csv"))
    with pytest.raises(UsageError, match="builtin:sample"):
        open_source("builtin:other")


def test_unknown_text_field(fineweb_dir, tmp_path):
    with pytest.raises(UsageError, match=r"no column 'content' \(columns: text, id,"):
        _all(open_source(str(fineweb_dir), text_field="content"))
    write_jsonl(tmp_path / "x.jsonl", [{"body": "hello"}])
    with pytest.raises(UsageError, match=r"x.jsonl line 1: no field 'text' \(found: body\)"):
        _all(open_source(str(tmp_path / "x.jsonl")))


def test_non_utf8_input_names_the_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UsageError, match=r"latin1.txt: not valid UTF-8"):
        _all(open_source(str(tmp_path / "latin1.txt")))
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UsageError, match=r"bad.jsonl line 2: not valid UTF-8"):
        _all(open_source(str(tmp_path / "bad.jsonl")))


def test_clean_docstring_keeps_prose_and_drops_examples():
    doc = """Return the sum of the values, the way a careful accountant would add a ledger.

        The values are added from left to right, and an empty input gives zero, which is
        what most readers expect from a sum.

        >>> add([1, 2])
        3
        >>> add([])
        0

        Floats are added exactly as Python adds them.
        """
    cleaned = clean_docstring(doc)
    assert cleaned.startswith("Return the sum") and cleaned.endswith("as Python adds them.")
    assert ">>>" not in cleaned and "\n3\n" not in cleaned
    assert clean_docstring("x = 1; y = [2, 3]; z = {'a': (4, 5)}; " * 10) == ""  # code, not prose
    assert clean_docstring("Too short.") == ""


def test_builtin_harvest_is_deterministic_prose(tmp_path, monkeypatch):
    import json as json_module

    roots = [("json", Path(json_module.__file__).parent)]
    first, second = list(harvest(roots)), list(harvest(roots))
    assert first == second and len(first) >= 2
    assert any("JSON" in doc for doc in first)
    monkeypatch.setenv("EDULM_CACHE", str(tmp_path))
    source = BuiltinSample(roots)
    assert _all(source) == first
    assert list((tmp_path / "builtin-sample").glob("*.jsonl"))  # cached for the next run
    assert _all(BuiltinSample(roots), start=1) == first[1:]

"""sample-text draws reproducible samples; contamination finds planted overlaps and none in clean text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edulm.cli import main
from edulm.release.contamination import normalise_words, word_ngrams

TASKS_DIR = Path(__file__).parent / "evaluate" / "tasks"

DOCS = [
    "Clouds form when warm air rises and cools, and the water vapour in it condenses into droplets.",
    "A lever lets a small force lift a heavy load when the pivot sits close to the load.",
    "Bees carry pollen from flower to flower, and the plants make seeds and fruit.",
    "Sound travels as a wave of pressure through air, water and solid walls.",
    "A magnet pulls on iron and steel but not on copper, glass or plastic.",
    "Rivers carry sand and mud to the sea, where it settles and builds wide deltas.",
]

BENCHMARK = [
    "The old lighthouse keeper climbed one hundred and twelve steps every night to light the lamp for passing ships.",
    "Seven green parrots argued loudly on the balcony about who owned the last ripe mango of the summer.",
    "A careful baker weighs the flour, the water and the salt before she mixes the dough for tomorrow.",
    "Too short to test.",
]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def corpus(n: int = 60) -> list[str]:
    """Training documents: the invented facts above, numbered so that each is distinct."""
    return [f"{DOCS[i % len(DOCS)]} This is note number {i} of the set." for i in range(n)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[Path, list[str]]:
    """Prepared shards of ``corpus()`` with a small BPE tokenizer, and the documents themselves."""
    from edulm.config import Config
    from edulm.data.prepare import prepare
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    root = tmp_path_factory.mktemp("contamination")
    docs = corpus()
    save_tokenizer(train_bpe(docs, vocab_size=320), root / "tok")
    cfg = Config()
    cfg.tokenizer.name = str(root / "tok")
    cfg.data.source = str(write_jsonl(root / "docs.jsonl", docs))
    cfg.data.shards_dir = str(root / "shards")
    cfg.data.val_tokens = 60
    cfg.data.workers = 1
    cfg.data.shard_tokens = 150  # several shards, so documents cross shard boundaries
    prepare(cfg)
    return Path(cfg.data.shards_dir), docs


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def test_normalisation_matches_lm_eval_janitor():
    from lm_eval.decontamination.janitor import Janitor

    janitor = Janitor(ngram_n=3)
    for text in ["Hello, World!  It's   (really) 42-ish.\nNew\tline", "ÉCOLE d'été — Ünïcode stays; ASCII goes."]:
        assert normalise_words(text) == janitor.normalize_string(text).split()
    assert list(word_ngrams(["a", "b", "c", "d"], 3)) == ["a b c", "b c d"]


# ---------------------------------------------------------------------------------------------
# sample-text
# ---------------------------------------------------------------------------------------------


def test_sample_from_shards_is_reproducible_and_decodes_whole_documents(shards, tmp_path, capsys):
    shards_dir, docs = shards
    manifest = json.loads((shards_dir / "manifest.json").read_text())
    assert len(manifest["splits"]["train"]["shards"]) > 2
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    for out, seed in ((a, 0), (b, 0), (c, 1)):
        code, printed, err = run(["sample-text", "--data", str(shards_dir), "--docs", "10", "--seed", str(seed), "--out", str(out)], capsys)
        assert code == 0, err
    total = manifest["splits"]["train"]["documents"]
    assert f"sampled 10 of {total:,} documents" in printed
    assert a.read_text() == b.read_text()
    assert a.read_text() != c.read_text()
    records = read_jsonl(a)
    assert len(records) == 10
    assert [r["doc_index"] for r in records] == sorted({r["doc_index"] for r in records})
    assert all(r["text"] in docs for r in records)  # whole documents, decoded exactly
    meta = json.loads((tmp_path / "a.jsonl.meta.json").read_text())
    assert meta["total_documents"] == total and meta["documents"] == 10 and meta["seed"] == 0


def test_shard_documents_are_the_training_documents_in_order(shards):
    from edulm.release.sample_text import ShardDocuments

    shards_dir, docs = shards
    documents = ShardDocuments(shards_dir)
    texts = [text for _, text in documents.texts(range(len(documents)))]
    assert len(texts) == json.loads((shards_dir / "manifest.json").read_text())["splits"]["train"]["documents"]
    positions = [docs.index(t) for t in texts]
    assert positions == sorted(positions)  # the held-out documents are skipped, the rest kept in order


def test_sample_from_source_is_a_reproducible_reservoir(tmp_path, capsys):
    source = write_jsonl(tmp_path / "src.jsonl", corpus(50))
    outs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / f"{name}.jsonl"
        code, _, err = run(["sample-text", "--source", str(source), "--docs", "7", "--seed", str(seed), "--out", str(out)], capsys)
        assert code == 0, err
        outs.append(read_jsonl(out))
    assert outs[0] == outs[1] and outs[0] != outs[2]
    assert all(r["text"] == corpus(50)[r["doc_index"]] for r in outs[0])
    assert json.loads((tmp_path / "a.jsonl.meta.json").read_text())["total_documents"] == 50


def test_sample_text_out_must_be_a_jsonl_file_and_nothing_else_is_overwritten(shards, tmp_path, capsys):
    shards_dir, _ = shards
    manifest = (shards_dir / "manifest.json").read_bytes()
    code, out, err = run(["sample-text", "--data", str(shards_dir), "--docs", "5", "--out", str(shards_dir / "manifest.json")], capsys)
    assert code == 2 and "the sample file must end in .jsonl" in err and len(err.strip().splitlines()) == 1
    assert (shards_dir / "manifest.json").read_bytes() == manifest
    assert not (shards_dir / "manifest.json.meta.json").exists()


def test_a_sample_stopped_before_its_description_is_never_read_with_old_counts(tmp_path, capsys, monkeypatch):
    """The old .meta.json goes before the new sample is written: a draw stopped in between (here a full disk at the
    sample) leaves no description, so readers see an unfinished sample, not a new one beside another's counts.
    And one writer per sample file: a second draw into it is refused."""
    from edulm.base import files
    from edulm.base.lock import folder_lock

    source = write_jsonl(tmp_path / "src.jsonl", corpus(20))
    out = tmp_path / "s.jsonl"
    argv = ["sample-text", "--source", str(source), "--docs", "5", "--out", str(out)]
    assert run(argv, capsys)[0] == 0
    sample = out.read_bytes()

    def full_disk(path, *args, **kwargs):
        raise files.disk_full_error(Path(path).parent, "the training sample", "free space and run again")

    with monkeypatch.context() as m:
        m.setattr(files, "write_text", full_disk)
        code, _, err = run([*argv[:-4], "--docs", "6", "--out", str(out)], capsys)
    assert code == 1 and "no space left" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == sample and not (tmp_path / "s.jsonl.meta.json").exists()

    with folder_lock(out, "edulm sample-text"):
        code, _, err = run(argv, capsys)
    assert code == 2 and "is in use by edulm sample-text" in err


def test_sample_text_needs_exactly_one_input(tmp_path, capsys):
    code, out, err = run(["sample-text", "--out", str(tmp_path / "x.jsonl")], capsys)
    assert code == 2 and "exactly one of --data" in err and out == ""
    assert not (tmp_path / "x.jsonl").exists()


# ---------------------------------------------------------------------------------------------
# contamination
# ---------------------------------------------------------------------------------------------


def test_finds_planted_overlap_and_nothing_in_clean_text(tmp_path, capsys):
    bench = write_jsonl(tmp_path / "bench.jsonl", BENCHMARK)
    # Planted: 14 words of benchmark document 1, re-cased and re-punctuated, inside a longer document.
    planted = "Yesterday I read that SEVEN green parrots -- argued loudly on the balcony, about who owned the last ripe mango! Odd."
    dirty = write_jsonl(tmp_path / "dirty.jsonl", corpus(20)[:10] + [planted] + corpus(20)[10:])
    clean = write_jsonl(tmp_path / "clean.jsonl", corpus(20) + ["Seven green parrots argued loudly on the balcony about a kiwi."])

    code, printed, err = run(["contamination", "--train", str(dirty), "--benchmark", f"quiz={bench}", "--out", str(tmp_path / "dirty")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "dirty" / "contamination.json").read_text())
    quiz = report["tasks"]["quiz"]
    assert (quiz["documents"], quiz["contaminated"], quiz["too_short"]) == (4, 1, 1)
    assert quiz["fraction"] == pytest.approx(0.25)
    example = quiz["examples"][0]
    assert example["document"] == 1 and example["train_document"] == 10
    assert example["ngram"] == "seven green parrots argued loudly on the balcony about who owned the last"
    assert report["train"]["documents_checked"] == 21 and report["train"]["documents_with_overlap"] == 1
    assert report["train"]["full_data"] is None  # a plain source: how much of the training data it is, is unknown
    markdown = (tmp_path / "dirty" / "contamination.md").read_text()
    assert "| quiz | - | 4 | 0 | 1 | 1 | 25.00% |" in markdown and "seven green parrots" in markdown
    assert quiz["flagged_documents"] == [1] and example["match"] == "13-gram"
    assert "1 / 4" in printed

    code, _, err = run(["contamination", "--train", str(clean), "--benchmark", str(bench), "--out", str(tmp_path / "clean")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "clean" / "contamination.json").read_text())
    assert report["tasks"]["bench"]["contaminated"] == 0 and report["overall"]["fraction"] == 0


def test_short_documents_are_matched_whole_down_to_eight_words(tmp_path, capsys):
    """Under 13 words: flagged only when every word occurs, in order, in one training document; under 8: unchecked."""
    from edulm.release.contamination import SHORT_MIN_WORDS

    assert SHORT_MIN_WORDS == 8
    bench = write_jsonl(tmp_path / "short.jsonl", [
        "The copper kettle sang softly on the old stove.",     # 9 words, all in the training text: flagged
        "The copper kettle sang softly on the new stove.",     # 9 words, one differs: clean
        "Copper kettles sing.",                                # 3 words: too short to check
        "Eight words exactly, and every one of them here.",    # 9 words, split over two documents: clean
    ])
    train = write_jsonl(tmp_path / "train.jsonl", corpus(6) + [
        "At dawn THE copper kettle sang -- softly! -- on the old stove, and we woke.",
        "Eight words exactly, and every one", "of them here.",
    ])
    code, _, err = run(["contamination", "--train", str(train), "--benchmark", str(bench), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "contamination.json").read_text())
    short = report["tasks"]["short"]
    assert (short["documents"], short["matched_whole"], short["too_short"], short["checkable"]) == (4, 3, 1, 3)
    assert short["flagged_documents"] == [0] and short["examples"][0]["match"] == "whole document"
    assert short["examples"][0]["ngram"] == "the copper kettle sang softly on the old stove"
    assert report["short_documents"]["min_words"] == 8 and "matched whole" in report["short_documents"]["rule"]
    # With n at or below the floor nothing is matched whole: shorter documents are simply too short.
    code, _, err = run(["contamination", "--train", str(train), "--benchmark", str(bench), "--ngram", "5",
                        "--out", str(tmp_path / "r5")], capsys)
    five = json.loads((tmp_path / "r5" / "contamination.json").read_text())["tasks"]["short"]
    assert code == 0 and (five["matched_whole"], five["too_short"]) == (0, 1)


def test_lm_eval_tasks_and_a_sample_report_what_was_checked(shards, tmp_path, capsys):
    """Benchmark documents come from local lm-eval tasks; the sample's coverage is stated."""
    shards_dir, _ = shards
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in ("tiny_cloze", "tiny_quiz"):
        shutil.copy(TASKS_DIR / f"{name}.jsonl", tasks / f"{name}.jsonl")
        (tasks / f"{name}.yaml").write_text((TASKS_DIR / f"{name}.yaml").read_text().replace("__TASK_DIR__", str(tasks)))
    cloze = [json.loads(line)["text"] for line in (TASKS_DIR / "tiny_cloze.jsonl").read_text().splitlines()]
    sample = tmp_path / "sample.jsonl"
    assert run(["sample-text", "--data", str(shards_dir), "--docs", "5", "--out", str(sample)], capsys)[0] == 0
    with sample.open("a") as f:  # plant a benchmark passage in the sample
        f.write(json.dumps({"text": "From a story book: " + cloze[2].upper()}) + "\n")

    code, _, err = run(["contamination", "--train", str(sample), "--tasks", "tiny_cloze,tiny_quiz",
                        "--include-path", str(tasks), "--out", str(tmp_path / "report")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "contamination.json").read_text())
    assert report["tasks"]["tiny_cloze"]["contaminated"] == 1
    assert report["tasks"]["tiny_cloze"]["examples"][0]["document"] == 2
    assert report["tasks"]["tiny_cloze"]["flagged_documents"] == [2]  # lm-eval's doc_id of that passage
    assert report["tasks"]["tiny_cloze"]["document_kind"] == "decontamination query"
    quiz = report["tasks"]["tiny_quiz"]
    assert (quiz["documents"], quiz["contaminated"], quiz["split"]) == (8, 0, "test")
    train = report["train"]
    assert train["kind"] == "sample" and train["full_data"] is False
    assert train["documents_checked"] == 6 and train["total_documents"] > 6
    assert "A sample of 6 training documents" in (tmp_path / "report" / "contamination.md").read_text()


def test_full_shards_scan(shards, tmp_path, capsys):
    shards_dir, docs = shards
    bench = write_jsonl(tmp_path / "facts.jsonl", [DOCS[0], "Nothing in this sentence was ever part of the training documents at all."])
    code, _, err = run(["contamination", "--train", str(shards_dir), "--benchmark", str(bench), "--out", str(tmp_path / "r")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "contamination.json").read_text())
    assert report["train"]["kind"] == "shards" and report["train"]["full_data"] is True
    assert report["tasks"]["facts"]["contaminated"] == 1 and report["tasks"]["facts"]["examples"][0]["document"] == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train", "MISSING", "--benchmark", "BENCH"], "no such file or folder"),
        (["--train", "TRAIN", "--benchmark", "MISSING"], "no such file"),
        (["--train", "TRAIN", "--benchmark", "BENCH", "--tasks", "arc_easy"], "not both"),
        (["--train", "TRAIN", "--benchmark", "BENCH", "--ngram", "0"], "at least 1"),
        (["--train", "RUN", "--benchmark", "BENCH"], "holds a training run (config.yaml), not text documents"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, message):
    train = write_jsonl(tmp_path / "train.jsonl", corpus(5))
    bench = write_jsonl(tmp_path / "bench.jsonl", BENCHMARK)
    run_dir = tmp_path / "run"  # a run dir with JSONL files of its own (its eval samples)
    (run_dir / "release" / "eval").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("run: {name: x}\n")
    write_jsonl(run_dir / "release" / "eval" / "results_samples_quiz.jsonl", corpus(3))
    values = {"MISSING": str(tmp_path / "missing.jsonl"), "TRAIN": str(train), "BENCH": str(bench), "RUN": str(run_dir)}
    code, out, err = run(["contamination", *[values.get(a, a) for a in argv], "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("meta", ['[1]', '{"documents": "ten", "total_documents": 50}', '{"documents": 1'])
def test_a_damaged_sample_description_counts_as_absent(tmp_path, capsys, meta):
    """A sample's .meta.json cut short or of the wrong shape: the sample is audited as a plain source, no traceback."""
    sample = write_jsonl(tmp_path / "a.jsonl", corpus(5))
    (tmp_path / "a.jsonl.meta.json").write_text(meta)
    bench = write_jsonl(tmp_path / "bench.jsonl", corpus(2))
    code, _, err = run(["contamination", "--train", str(sample), "--benchmark", f"b={bench}", "--ngram", "3",
                        "--out", str(tmp_path / "out")], capsys)
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "out" / "contamination.json").read_text())["train"]["kind"] == "source"

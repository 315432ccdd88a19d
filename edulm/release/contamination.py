"""``edulm contamination``: n-gram overlap between benchmark documents and training text.

The method is the one lm-evaluation-harness uses for decontamination (``lm_eval/decontamination``):
text is normalised by lower-casing ASCII letters and deleting ASCII punctuation (its ``Janitor``
translation table), split on whitespace, and cut into word n-grams (13 by default). A benchmark
document is *contaminated* when any of its n-grams occurs in the training text. A benchmark
document of an lm-eval task is what the harness itself checks: its decontamination query when the
task defines one, else its prompt.

Documents shorter than n words have no n-gram. Following GPT-3's decontamination (which let n fall
to a task's short documents but never below 8 words), a document of at least
:data:`SHORT_MIN_WORDS` words but fewer than n is *matched whole*: it is contaminated when all of its
words occur, in order and adjacent, in one training document. Documents under
:data:`SHORT_MIN_WORDS` words are too short to tell a copy from a common phrase; they are counted
apart and never flagged, so a low fraction is never mistaken for a clean bill on text too short to test.

Every flagged document is listed by number (``flagged_documents``); for an lm-eval task the number
is lm-eval's ``doc_id``, so the flags join with the per-example samples of ``edulm eval`` and
``edulm baselines`` (:mod:`edulm.evaluate.clean` recomputes each score without them). The training
text is read by :mod:`edulm.release.training_text`; the report's format is :mod:`edulm.evaluate.contamination_report`.
"""

from __future__ import annotations

import json
import string
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tqdm.auto import tqdm

from edulm.evaluate.contamination_report import DOCUMENT_IDS, FORMAT, FORMAT_VERSION, REPORT_MD, coverage_sentence, write_report
from edulm.base.errors import UsageError
from edulm.base.logs import progress_bars
from edulm.release.training_text import TrainingText, open_training_text

_TRANSLATION = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
"""lm-eval Janitor's table: upper- to lower-case ASCII letters, ASCII punctuation deleted."""

NORMALISATION = "lower-case ASCII letters, delete ASCII punctuation, split on whitespace, as lm-eval's decontamination Janitor does"

SHORT_MIN_WORDS = 8
"""Fewest words a document shorter than n needs to be matched whole (GPT-3's lower bound on n)."""

EXCERPT_WORDS = 12
"""Words of context shown on each side of a matched n-gram in the examples."""


def normalise_words(text: str) -> list[str]:
    """The words of ``text`` after lm-eval's decontamination normalisation."""
    return text.translate(_TRANSLATION).split()


def word_ngrams(words: list[str], n: int) -> Iterator[str]:
    """Every run of ``n`` consecutive words, joined by single spaces."""
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])


def short_floor(n: int) -> int:
    """Fewest words a document needs to be checked at all: :data:`SHORT_MIN_WORDS`, or ``n`` when n is smaller."""
    return min(SHORT_MIN_WORDS, n)


# ---------------------------------------------------------------------------------------------
# Benchmark documents
# ---------------------------------------------------------------------------------------------


@dataclass
class Benchmark:
    """The documents of one benchmark (an lm-eval task or a local file)."""

    name: str
    """The task (or file) name; the key that joins the report with evaluation results."""
    documents: list[str]
    """Document number -> text; for an lm-eval task the number is lm-eval's ``doc_id``."""
    query: str
    """What a document is: 'decontamination query', 'prompt' or 'file record'."""
    split: str | None = None
    """The split the documents come from (lm-eval tasks)."""


def _task_split(task) -> str | None:
    if task.has_test_docs():
        return task.config.test_split if hasattr(task, "config") else "test"
    if task.has_validation_docs():
        return task.config.validation_split if hasattr(task, "config") else "validation"
    return None


def _task_document(task, doc) -> str:
    if task.should_decontaminate():
        try:
            return str(task.doc_to_decontamination_query(doc))
        except (ValueError, SyntaxError):
            pass  # a template the harness cannot literal-eval; the prompt is the next best text
    return str(task.doc_to_text(doc))


def task_benchmarks(tasks: list[str], include_path: str | None) -> list[Benchmark]:
    """The evaluation documents (test split, else validation) of lm-eval tasks, numbered as lm-eval numbers them.

    Document ``i`` is ``task.eval_docs[i]``, the document lm-eval logs with ``doc_id`` ``i``, so the
    report's flags join with the samples files of ``edulm eval``.
    """
    from edulm.evaluate.tasks import load_task_dict, task_manager

    loaded = load_task_dict(task_manager(tasks, include_path), tasks)
    benchmarks = []
    for name, task in sorted(loaded["tasks"].items()):
        docs = task.eval_docs
        query = "decontamination query" if task.should_decontaminate() else "prompt"
        benchmarks.append(Benchmark(name, [_task_document(task, d) for d in docs], query, _task_split(task)))
    return benchmarks


def _file_documents(path: Path) -> list[str]:
    """Documents of a local benchmark file: JSONL records (their ``text``, else all string fields) or text lines.

    Blank lines are skipped; a document's number is its position among the rest.
    """
    if not path.is_file():
        raise UsageError(f"--benchmark {path}: no such file; pass a .jsonl or .txt file (NAME=PATH or PATH)")
    docs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise UsageError(f"--benchmark {path}: not UTF-8 text (byte {err.start}); convert it to UTF-8") from None
    if path.suffix in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise UsageError(f"{path}:{number}: not a JSON object per line; benchmark JSONL needs one record per line") from None
            if isinstance(record, dict):
                text = record.get("text")
                if not isinstance(text, str):
                    text = " ".join(v if isinstance(v, str) else " ".join(x for x in v if isinstance(x, str))
                                    for v in record.values() if isinstance(v, (str, list)))
            else:
                text = str(record)
            docs.append(text)
    else:
        docs = [line for line in lines if line.strip()]
    return docs


def file_benchmarks(specs: list[str]) -> list[Benchmark]:
    """Benchmarks from ``NAME=PATH`` or ``PATH`` specs (the name defaults to the file's stem)."""
    benchmarks = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).stem, spec
        benchmarks.append(Benchmark(name, _file_documents(Path(path)), "file record"))
    return benchmarks


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskOverlap:
    """Overlap found for one benchmark."""

    benchmark: Benchmark
    """The benchmark the counts are of."""
    too_short: int = 0
    """Documents under :func:`short_floor` words: not checked."""
    matched_whole: int = 0
    """Documents shorter than n words checked by whole-document match."""
    hits: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Contaminated document -> its first match (matched words, how, training document, excerpt)."""


@dataclass
class Lookup:
    """The benchmark documents indexed for the scan."""

    grams: dict[str, list[tuple[int, int]]]
    """n-gram -> ``(benchmark, document)`` of every document that holds it."""
    short: dict[str, list[tuple[int, int, tuple[str, ...]]]]
    """First :func:`short_floor` words of a short document -> ``(benchmark, document, all its words)``."""
    n: int
    """n of the n-grams."""
    floor: int
    """Fewest words of a document matched whole (:func:`short_floor`)."""


def build_lookup(benchmarks: list[Benchmark], n: int) -> tuple[Lookup, list[TaskOverlap]]:
    """Index every benchmark document (see :class:`Lookup`) and make an empty overlap record per benchmark."""
    grams: dict[str, list[tuple[int, int]]] = defaultdict(list)
    short: dict[str, list[tuple[int, int, tuple[str, ...]]]] = defaultdict(list)
    floor = short_floor(n)
    overlaps = []
    for b, bench in enumerate(benchmarks):
        overlap = TaskOverlap(bench)
        for d, doc in enumerate(bench.documents):
            words = normalise_words(doc)
            if len(words) < floor:
                overlap.too_short += 1
            elif len(words) < n:
                overlap.matched_whole += 1
                short[" ".join(words[:floor])].append((b, d, tuple(words)))
            else:
                for gram in set(word_ngrams(words, n)):
                    grams[gram].append((b, d))
        overlaps.append(overlap)
    return Lookup(dict(grams), dict(short), n, floor), overlaps


def _record(overlap: TaskOverlap, d: int, matched: list[str], how: str, index: int, words: list[str], i: int) -> None:
    overlap.hits.setdefault(d, {
        "ngram": " ".join(matched),
        "match": how,
        "train_document": index,
        "train_excerpt": " ".join(words[max(0, i - EXCERPT_WORDS) : i + len(matched) + EXCERPT_WORDS]),
    })


def scan(train: TrainingText, lookup: Lookup, overlaps: list[TaskOverlap]) -> dict[str, int]:
    """Look up every n-gram (and every short document's opening words) of every training document."""
    n, floor = lookup.n, lookup.floor
    documents = words_total = flagged = 0
    for index, text in enumerate(tqdm(train.documents, total=train.expected, desc="scanning training text",
                                      unit="doc", file=sys.stderr, disable=not progress_bars())):
        words = normalise_words(text)
        documents += 1
        words_total += len(words)
        found = False
        for i in range(len(words) - n + 1):
            refs = lookup.grams.get(" ".join(words[i : i + n]))
            for b, d in refs or ():
                found = True
                _record(overlaps[b], d, words[i : i + n], f"{n}-gram", index, words, i)
        if lookup.short:
            for i in range(len(words) - floor + 1):
                for b, d, doc_words in lookup.short.get(" ".join(words[i : i + floor])) or ():
                    if tuple(words[i : i + len(doc_words)]) == doc_words:
                        found = True
                        _record(overlaps[b], d, list(doc_words), "whole document", index, words, i)
        flagged += found
    return {"documents": documents, "words": words_total, "documents_with_overlap": flagged}


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_report(train: TrainingText, scanned: dict[str, int], overlaps: list[TaskOverlap], n: int,
                 examples: int, benchmark_kind: str, include_path: str | None) -> dict[str, Any]:
    """The ``contamination.json`` content."""
    total = train.total_documents
    # A plain source may or may not be all the training data: only the user knows, so say neither.
    full = None if train.kind == "source" else bool(total is not None and scanned["documents"] >= total)
    tasks = {}
    for overlap in overlaps:
        bench = overlap.benchmark
        count = len(bench.documents)
        hits = overlap.hits
        tasks[bench.name] = {
            "documents": count,
            "checkable": count - overlap.too_short,
            "too_short": overlap.too_short,
            "matched_whole": overlap.matched_whole,
            "contaminated": len(hits),
            "fraction": len(hits) / count if count else None,
            "document_kind": bench.query,
            "split": bench.split,
            "flagged_documents": sorted(hits),
            "examples": [
                {"document": d, "benchmark_text": _shorten(bench.documents[d]), **hits[d]}
                for d in sorted(hits)[:examples]
            ],
        }
    all_docs = sum(t["documents"] for t in tasks.values())
    all_hits = sum(t["contaminated"] for t in tasks.values())
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "ngram": n,
        "normalisation": NORMALISATION,
        "short_documents": {
            "min_words": short_floor(n),
            "rule": (f"documents of {short_floor(n)} to {n - 1} words are matched whole (all their words, in order, in one "
                     f"training document); shorter ones are not checked") if short_floor(n) < n else
                    f"documents under {n} words are not checked",
        },
        "document_ids": DOCUMENT_IDS,
        "train": {
            "spec": train.spec,
            "kind": train.kind,
            "documents_checked": scanned["documents"],
            "words_checked": scanned["words"],
            "documents_with_overlap": scanned["documents_with_overlap"],
            "total_documents": total,
            "fraction_checked": scanned["documents"] / total if total else None,
            "full_data": full,
            "sample": train.sample,
        },
        "benchmarks": {"kind": benchmark_kind, "include_path": include_path},
        "tasks": tasks,
        "overall": {"documents": all_docs, "contaminated": all_hits, "fraction": all_hits / all_docs if all_docs else None},
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------------------------


def audit(train_spec: str, out: str | Path, *, tasks: str | list[str] | None = None, include_path: str | None = None,
          benchmark_files: list[str] | None = None, n: int = 13, examples: int = 5) -> dict[str, Any]:
    """Run the audit and write ``contamination.json`` and ``contamination.md`` into ``out`` (locked while written).

    Benchmarks are lm-eval ``tasks`` (a list or ``a,b`` text; None: the reference six) or local
    ``benchmark_files`` (``NAME=PATH`` or ``PATH``). Returns the report.
    """
    from edulm.base.lock import folder_lock

    if n < 1:
        raise UsageError(f"--ngram {n}: must be at least 1")
    if examples < 0:
        raise UsageError(f"--examples {examples}: must be 0 or more")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; pass a folder for contamination.json and contamination.md")
    train = open_training_text(train_spec)
    if benchmark_files:
        if tasks is not None:
            raise UsageError("pass either --tasks (lm-eval tasks) or --benchmark (local files), not both")
        benchmarks, kind = file_benchmarks(benchmark_files), "files"
    else:
        from edulm.evaluate.protocol import parse_tasks

        names = list(tasks) if isinstance(tasks, list) else parse_tasks(tasks)
        benchmarks, kind = task_benchmarks(names, include_path), "lm-eval"
    with folder_lock(out, "edulm contamination"):
        lookup, overlaps = build_lookup(benchmarks, n)
        scanned = scan(train, lookup, overlaps)
        report = build_report(train, scanned, overlaps, n, examples, kind,
                              str(Path(include_path).resolve()) if include_path else None)
        write_report(report, out)
    return report


def contamination_command(train: str, out: str | Path, tasks: str | None = None, include_path: str | None = None,
                          benchmark_files: list[str] | None = None, n: int = 13, examples: int = 5) -> dict[str, Any]:
    """``edulm contamination --train TEXT --out DIR``: audit, then print the per-task counts and the coverage."""
    report = audit(train, out, tasks=tasks, include_path=include_path, benchmark_files=benchmark_files,
                   n=n, examples=examples)
    for name, t in report["tasks"].items():
        fraction = f"{t['fraction']:.2%}" if t["fraction"] is not None else "n/a"
        print(f"{name:<24} {t['contaminated']:>6,} / {t['documents']:<6,} contaminated ({fraction}); "
              f"{t['matched_whole']:,} matched whole, {t['too_short']:,} too short to check")
    print(coverage_sentence(report))
    print(f"report: {Path(out) / REPORT_MD}")
    return report

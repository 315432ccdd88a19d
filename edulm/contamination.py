"""``edulm contamination``: n-gram overlap between benchmark documents and training text.

The method is the one lm-evaluation-harness uses for decontamination (``lm_eval/decontamination``):
text is normalised by lower-casing ASCII letters and deleting ASCII punctuation (its ``Janitor``
translation table), split on whitespace, and cut into word n-grams (13 by default). A benchmark
document is *contaminated* when any of its n-grams occurs in the training text. A benchmark
document of an lm-eval task is what the harness itself checks: its decontamination query when the
task defines one, else its prompt; documents shorter than n words cannot be matched and are
counted separately, so a low fraction is never mistaken for a clean bill on text too short to test.

The training text is a sample written by ``edulm sample-text`` (the report then says how many of
the training documents it covers), any source ``data.source`` accepts, or a prepared shards dir
(every training document, decoded: thorough but slow for billions of tokens).

``sample-text`` itself lives in :mod:`edulm.sample_text`.
"""

from __future__ import annotations

import argparse
import json
import string
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

from edulm.errors import UsageError

REPORT_JSON = "contamination.json"
REPORT_MD = "contamination.md"
FORMAT = "edulm-contamination"

_TRANSLATION = str.maketrans(string.ascii_uppercase, string.ascii_lowercase, string.punctuation)
"""lm-eval Janitor's table: upper- to lower-case ASCII letters, ASCII punctuation deleted."""

NORMALISATION = "lower-case ASCII letters, delete ASCII punctuation, split on whitespace (lm-eval's decontamination Janitor)"

EXCERPT_WORDS = 12
"""Words of context shown on each side of a matched n-gram in the examples."""


def normalise_words(text: str) -> list[str]:
    """The words of ``text`` after lm-eval's decontamination normalisation."""
    return text.translate(_TRANSLATION).split()


def word_ngrams(words: list[str], n: int) -> Iterator[str]:
    """Every run of ``n`` consecutive words, joined by single spaces."""
    for i in range(len(words) - n + 1):
        yield " ".join(words[i : i + n])


# ---------------------------------------------------------------------------------------------
# Benchmark documents
# ---------------------------------------------------------------------------------------------


@dataclass
class Benchmark:
    """The documents of one benchmark (an lm-eval task or a local file)."""

    name: str
    documents: list[str]
    query: str
    """What a document is: 'decontamination query', 'prompt' or 'file record'."""
    split: str | None = None


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
    """The evaluation documents (test split, else validation) of lm-eval tasks."""
    from edulm.evaluate.tasks import load_task_dict, task_manager

    loaded = load_task_dict(task_manager(tasks, include_path), tasks)
    benchmarks = []
    for name, task in sorted(loaded["tasks"].items()):
        docs = task.eval_docs
        query = "decontamination query" if task.should_decontaminate() else "prompt"
        benchmarks.append(Benchmark(name, [_task_document(task, d) for d in docs], query, _task_split(task)))
    return benchmarks


def _file_documents(path: Path) -> list[str]:
    """Documents of a local benchmark file: JSONL records (their ``text``, else all string fields) or text lines."""
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
# Training text
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainingText:
    """Training documents to scan, and what they stand for."""

    spec: str
    kind: str
    """'shards' (every training document), 'sample' (from edulm sample-text) or 'source'."""
    documents: Iterable[str]
    total_documents: int | None = None
    """Documents in the whole training data, when known."""
    sample: dict[str, Any] | None = None
    """The sample's description (from sample-text)."""
    expected: int | None = None
    """Documents the scan will read, when known (for the progress bar)."""


def training_text(spec: str, text_field: str = "text") -> TrainingText:
    """Open ``--train``: a shards dir, a sample written by sample-text, or any data source."""
    from edulm.data.shards import MANIFEST

    path = Path(spec)
    if path.is_dir() and (path / MANIFEST).is_file():
        from edulm.sample_text import ShardDocuments

        documents = ShardDocuments(path)
        texts = (text for _, text in documents.texts(range(len(documents))))
        return TrainingText(spec, "shards", texts, total_documents=len(documents), expected=len(documents))
    from edulm.data.sources import iter_texts, open_source
    from edulm.sample_text import read_meta

    if not spec.startswith(("hf://", "builtin:")) and not path.exists() and not any(c in spec for c in "*?["):
        raise UsageError(f"--train {spec}: no such file or folder; pass a sample JSONL, a shards dir or a data source")
    open_source(spec, text_field)  # bad specs fail here with their own message
    meta = read_meta(path) if path.is_file() else None
    if meta is not None:
        return TrainingText(spec, "sample", iter_texts(spec, text_field), meta.get("total_documents"), meta, meta.get("documents"))
    return TrainingText(spec, "source", iter_texts(spec, text_field))


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


@dataclass
class TaskOverlap:
    """Overlap found for one benchmark."""

    benchmark: Benchmark
    too_short: int = 0
    hits: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Contaminated document -> its first match (n-gram, training document, excerpt)."""


def build_lookup(benchmarks: list[Benchmark], n: int) -> tuple[dict[str, list[tuple[int, int]]], list[TaskOverlap]]:
    """``{n-gram: [(benchmark number, document number), ...]}`` and an empty overlap record per benchmark."""
    lookup: dict[str, list[tuple[int, int]]] = defaultdict(list)
    overlaps = []
    for b, bench in enumerate(benchmarks):
        overlap = TaskOverlap(bench)
        for d, doc in enumerate(bench.documents):
            words = normalise_words(doc)
            if len(words) < n:
                overlap.too_short += 1
                continue
            for gram in set(word_ngrams(words, n)):
                lookup[gram].append((b, d))
        overlaps.append(overlap)
    return lookup, overlaps


def scan(train: TrainingText, lookup: dict[str, list[tuple[int, int]]], overlaps: list[TaskOverlap], n: int) -> dict[str, int]:
    """Look up every n-gram of every training document; returns counts of what was scanned."""
    documents = words_total = flagged = 0
    for index, text in enumerate(tqdm(train.documents, total=train.expected, desc="scanning training text",
                                      unit="doc", file=sys.stderr)):
        words = normalise_words(text)
        documents += 1
        words_total += len(words)
        found = False
        for i in range(len(words) - n + 1):
            gram = " ".join(words[i : i + n])
            refs = lookup.get(gram)
            if not refs:
                continue
            found = True
            for b, d in refs:
                overlaps[b].hits.setdefault(d, {
                    "ngram": gram,
                    "train_document": index,
                    "train_excerpt": " ".join(words[max(0, i - EXCERPT_WORDS) : i + n + EXCERPT_WORDS]),
                })
        flagged += found
    return {"documents": documents, "words": words_total, "documents_with_overlap": flagged}


# ---------------------------------------------------------------------------------------------
# Report
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
            "contaminated": len(hits),
            "fraction": len(hits) / count if count else None,
            "document_kind": bench.query,
            "split": bench.split,
            "examples": [
                {"document": d, "benchmark_text": _shorten(bench.documents[d]), **hits[d]}
                for d in sorted(hits)[:examples]
            ],
        }
    all_docs = sum(t["documents"] for t in tasks.values())
    all_hits = sum(t["contaminated"] for t in tasks.values())
    return {
        "format": FORMAT,
        "ngram": n,
        "normalisation": NORMALISATION,
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


def coverage_sentence(report: dict[str, Any]) -> str:
    """One sentence on how much training text was checked (shared with the model card)."""
    train = report["train"]
    plural = "" if train["documents_checked"] == 1 else "s"
    checked = f"{train['documents_checked']:,} training document{plural} ({train['words_checked']:,} words)"
    if train["full_data"]:
        return f"All {checked} were checked."
    if train["total_documents"]:
        share = train["documents_checked"] / train["total_documents"]
        return (f"A sample of {checked} out of {train['total_documents']:,} ({share:.2%}) was checked; "
                "overlap in the rest of the training data is not ruled out.")
    return f"{checked} from `{train['spec']}` were checked; how much of the full training data they cover is not recorded."


def render_markdown(report: dict[str, Any]) -> str:
    """``contamination.md``: what was checked, the per-task table and examples."""
    n = report["ngram"]
    lines = [
        "# Benchmark contamination audit",
        "",
        f"Method: {n}-gram overlap between benchmark documents and training text, after normalisation "
        f"({report['normalisation']}). A benchmark document counts as contaminated when any of its {n}-grams "
        f"appears in the training text; documents shorter than {n} words cannot be checked and are listed apart.",
        "",
        f"Training text: `{report['train']['spec']}` ({report['train']['kind']}). {coverage_sentence(report)}",
        f"Training documents containing at least one benchmark {n}-gram: {report['train']['documents_with_overlap']:,}.",
        "",
        "| task | split | documents | too short | contaminated | fraction |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, t in report["tasks"].items():
        fraction = f"{t['fraction']:.2%}" if t["fraction"] is not None else "n/a"
        lines.append(f"| {name} | {t['split'] or '-'} | {t['documents']:,} | {t['too_short']:,} | {t['contaminated']:,} | {fraction} |")
    overall = report["overall"]
    if overall["fraction"] is not None:
        lines.append(f"| **all** | | {overall['documents']:,} | | {overall['contaminated']:,} | {overall['fraction']:.2%} |")
    for name, t in report["tasks"].items():
        if not t["examples"]:
            continue
        lines += ["", f"## Examples: {name}", ""]
        for ex in t["examples"]:
            lines += [
                f"- document {ex['document']}: “{ex['benchmark_text']}”",
                f"  - shared {n}-gram: `{ex['ngram']}`",
                f"  - training document {ex['train_document']}: “…{ex['train_excerpt']}…”",
            ]
    lines += ["", f"Written {report['written_at']} by `edulm contamination`.", ""]
    return "\n".join(lines)


def audit(train_spec: str, out: str | Path, *, tasks: str | None = None, include_path: str | None = None,
          benchmark_files: list[str] | None = None, n: int = 13, examples: int = 5) -> dict[str, Any]:
    """Run the audit and write ``contamination.json`` and ``contamination.md`` into ``out``; returns the report."""
    if n < 1:
        raise UsageError(f"--ngram {n}: must be at least 1")
    if examples < 0:
        raise UsageError(f"--examples {examples}: must be 0 or more")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; pass a folder for contamination.json and contamination.md")
    train = training_text(train_spec)
    if benchmark_files:
        if tasks is not None:
            raise UsageError("pass either --tasks (lm-eval tasks) or --benchmark (local files), not both")
        benchmarks, kind = file_benchmarks(benchmark_files), "files"
    else:
        from edulm.evaluate.protocol import parse_tasks

        benchmarks, kind = task_benchmarks(parse_tasks(tasks), include_path), "lm-eval"
    lookup, overlaps = build_lookup(benchmarks, n)
    scanned = scan(train, lookup, overlaps, n)
    report = build_report(train, scanned, overlaps, n, examples, kind, str(Path(include_path).resolve()) if include_path else None)
    out.mkdir(parents=True, exist_ok=True)
    from edulm.files import write_json

    write_json(out / REPORT_JSON, report)
    (out / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    return report


def contamination_command(args: argparse.Namespace) -> None:
    """``edulm contamination --train TEXT --out DIR``: print the per-task fractions."""
    report = audit(args.train, args.out, tasks=args.tasks, include_path=args.include_path,
                   benchmark_files=args.benchmark, n=args.ngram, examples=args.examples)
    for name, t in report["tasks"].items():
        fraction = f"{t['fraction']:.2%}" if t["fraction"] is not None else "n/a"
        print(f"{name:<24} {t['contaminated']:>6,} / {t['documents']:<6,} contaminated ({fraction}); {t['too_short']:,} too short to check")
    print(coverage_sentence(report))
    print(f"report: {Path(args.out) / REPORT_MD}")

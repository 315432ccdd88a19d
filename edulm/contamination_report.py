"""The contamination report: ``contamination.json`` (every number and the flagged documents) and ``contamination.md``.

``contamination.json`` has one entry per task under ``tasks``: document counts (all, checkable,
too short, matched whole, contaminated), the contaminated fraction, ``flagged_documents`` (the
numbers of the contaminated documents: lm-eval's ``doc_id`` for a task) and a few examples. Readers
get the flags with :func:`flagged_documents`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edulm.errors import UsageError

if TYPE_CHECKING:
    from edulm.contamination import TaskOverlap
    from edulm.training_text import TrainingText

REPORT_JSON = "contamination.json"
REPORT_MD = "contamination.md"
FORMAT = "edulm-contamination"
FORMAT_VERSION = 2
"""2: per-document flags (``flagged_documents``) and whole-document matches of short documents."""

DOCUMENT_IDS = ("a document's number is its position in the task's evaluation documents (test split, else "
                "validation): lm-eval's doc_id; for a local file, its record number (blank lines skipped)")


def _shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def build_report(train: "TrainingText", scanned: dict[str, int], overlaps: list["TaskOverlap"], n: int,
                 examples: int, benchmark_kind: str, include_path: str | None) -> dict[str, Any]:
    """The ``contamination.json`` content."""
    from edulm.contamination import NORMALISATION, short_floor

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


def flagged_documents(report: dict[str, Any]) -> dict[str, set[int]]:
    """``{task: numbers of its contaminated documents}`` from a report; a report without flags is an error."""
    if report.get("format") != FORMAT or not isinstance(report.get("tasks"), dict):
        raise UsageError("not a contamination report written by 'edulm contamination'; pass its contamination.json")
    flags = {}
    for task, entry in report["tasks"].items():
        ids = entry.get("flagged_documents") if isinstance(entry, dict) else None
        if not isinstance(ids, list):
            raise UsageError(f"the contamination report lists no flagged documents for {task} (written by an older "
                             "edulm); run 'edulm contamination' again")
        flags[task] = {int(i) for i in ids}
    return flags


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


def method_sentence(report: dict[str, Any]) -> str:
    """How documents were matched, including the rule for short documents (shared with the model card)."""
    n = report.get("ngram", 13)
    rule = (report.get("short_documents") or {}).get("rule")
    text = (f"{n}-gram overlap between benchmark documents and training text, after normalisation "
            f"({report.get('normalisation', '')}): a benchmark document counts as contaminated when any of its {n}-grams "
            "appears in the training text")
    return f"{text}; {rule}." if rule else f"{text}."


def render_markdown(report: dict[str, Any]) -> str:
    """``contamination.md``: what was checked, the per-task table and examples."""
    n = report["ngram"]
    lines = [
        "# Benchmark contamination audit",
        "",
        f"Method: {method_sentence(report)}",
        "",
        f"Training text: `{report['train']['spec']}` ({report['train']['kind']}). {coverage_sentence(report)}",
        f"Training documents containing at least one benchmark {n}-gram or short document: "
        f"{report['train']['documents_with_overlap']:,}.",
        "",
        "| task | split | documents | matched whole | too short | contaminated | fraction |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, t in report["tasks"].items():
        fraction = f"{t['fraction']:.2%}" if t["fraction"] is not None else "n/a"
        lines.append(f"| {name} | {t['split'] or '-'} | {t['documents']:,} | {t['matched_whole']:,} | {t['too_short']:,} "
                     f"| {t['contaminated']:,} | {fraction} |")
    overall = report["overall"]
    if overall["fraction"] is not None:
        lines.append(f"| **all** | | {overall['documents']:,} | | | {overall['contaminated']:,} | {overall['fraction']:.2%} |")
    lines += ["", f"Flagged documents are listed by number in `{REPORT_JSON}` ({report.get('document_ids', DOCUMENT_IDS)})."]
    for name, t in report["tasks"].items():
        if not t["examples"]:
            continue
        lines += ["", f"## Examples: {name}", ""]
        for ex in t["examples"]:
            lines += [
                f"- document {ex['document']}: “{ex['benchmark_text']}”",
                f"  - shared words ({ex.get('match', f'{n}-gram')}): `{ex['ngram']}`",
                f"  - training document {ex['train_document']}: “…{ex['train_excerpt']}…”",
            ]
    lines += ["", f"Written {report['written_at']} by `edulm contamination`.", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``contamination.json`` and ``contamination.md`` into ``out``, each atomically."""
    from edulm.files import write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / REPORT_JSON, report)
    write_text(out / REPORT_MD, render_markdown(report))
    return out / REPORT_JSON, out / REPORT_MD

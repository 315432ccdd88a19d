"""The contamination report's format: ``contamination.json`` (every number and the flagged documents) and ``contamination.md``.

``contamination.json`` has one entry per task under ``tasks``: document counts (all, checkable,
too short, matched whole, contaminated), the contaminated fraction, ``flagged_documents`` (the
numbers of the contaminated documents: lm-eval's ``doc_id`` for a task) and a few examples. Readers
get the flags with :func:`flagged_documents`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edulm.base.errors import UsageError

REPORT_JSON = "contamination.json"
REPORT_MD = "contamination.md"
FORMAT = "edulm-contamination"
FORMAT_VERSION = 2
"""2: per-document flags (``flagged_documents``) and whole-document matches of short documents."""

DOCUMENT_IDS = ("a document's number is its position in the task's evaluation documents (test split, else "
                "validation): lm-eval's doc_id; for a local file, its record number (blank lines skipped)")


def flagged_documents(report: dict[str, Any], where: str | Path) -> dict[str, set[int]]:
    """``{task: numbers of its contaminated documents}`` from the report read from ``where``; a report
    without flags is a :class:`UsageError` naming ``where``."""
    if report.get("format") != FORMAT or not isinstance(report.get("tasks"), dict):
        raise UsageError(f"{where}: not a contamination report written by 'edulm contamination'; pass its contamination.json")
    flags = {}
    for task, entry in report["tasks"].items():
        ids = entry.get("flagged_documents") if isinstance(entry, dict) else None
        if not isinstance(ids, list):
            raise UsageError(f"{where}: the contamination report lists no flagged documents for {task} (written by an older "
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
    from edulm.base.files import write_json, write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / REPORT_JSON, report)
    write_text(out / REPORT_MD, render_markdown(report))
    return out / REPORT_JSON, out / REPORT_MD

"""Contamination-aware scores: lm-eval's per-example results, recomputed without the flagged documents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from edulm.cli import main

QUIZ_PLANTED = [0, 2, 5]
CLOZE_PLANTED = [1]


@pytest.fixture(scope="module")
def audited(tmp_path_factory, tiny_hf_model, other_tiny_hf_model, local_tasks) -> dict[str, Path]:
    """The candidate and one baseline evaluated on the local tasks, and an audit of a training sample into
    which some of their documents were planted (the candidate sits at X/eval/results.json, the report at
    X/contamination/contamination.json: the layout `edulm release` writes)."""
    root = tmp_path_factory.mktemp("audited")
    tasks = ["--tasks", "tiny_quiz,tiny_cloze", "--include-path", str(local_tasks), "--device", "cpu"]
    candidate = root / "eval" / "results.json"
    assert main(["eval", str(tiny_hf_model), "--out", str(candidate), *tasks]) == 0
    assert main(["baselines", "--out", str(root / "baselines"), "--models", f"other={other_tiny_hf_model}", *tasks]) == 0

    quiz = [json.loads(line) for line in (local_tasks / "tiny_quiz.jsonl").read_text().splitlines()]
    cloze = [json.loads(line) for line in (local_tasks / "tiny_cloze.jsonl").read_text().splitlines()]
    sample = [f"Homework sheet. Question: {quiz[i]['question']} Answer: {quiz[i]['answer']}." for i in QUIZ_PLANTED]
    sample += [f"Read aloud: {cloze[i]['text']}" for i in CLOZE_PLANTED]
    sample += ["Rivers carry sand and mud to the sea, where it settles and builds wide deltas."]
    (root / "sample.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in sample))
    assert main(["contamination", "--train", str(root / "sample.jsonl"), "--tasks", "tiny_quiz,tiny_cloze",
                 "--include-path", str(local_tasks), "--out", str(root / "contamination")]) == 0
    return {"root": root, "candidate": candidate, "baselines": root / "baselines",
            "report": root / "contamination" / "contamination.json"}


def _samples(results_file: Path, task: str) -> list[dict]:
    doc = json.loads(results_file.read_text())
    path = results_file.parent / doc["samples_files"][task]
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_flags_join_with_lm_eval_doc_ids(audited):
    report = json.loads(audited["report"].read_text())
    assert report["tasks"]["tiny_quiz"]["flagged_documents"] == QUIZ_PLANTED
    assert report["tasks"]["tiny_cloze"]["flagged_documents"] == CLOZE_PLANTED


def test_clean_scores_equal_lm_eval_samples_without_the_flagged_documents(audited):
    from lm_eval.api.metrics import mean_stderr

    from edulm.evaluate.clean import clean_scores, read_flags
    from edulm.evaluate.results import read_results

    results = read_results(audited["candidate"])
    scores = clean_scores(results, read_flags(audited["report"]))
    raw = json.loads(audited["candidate"].read_text())["results"]
    for task, planted in (("tiny_quiz", QUIZ_PLANTED), ("tiny_cloze", CLOZE_PLANTED)):
        rows = _samples(audited["candidate"], task)
        kept = [r for r in rows if r["doc_id"] not in planted]
        assert len(kept) == len(rows) - len(planted) == 8 - len(planted)
        for metric in ("acc",) + (("acc_norm",) if task == "tiny_quiz" else ()):
            s = scores[task][metric]
            values = [float(r[metric]) for r in kept]
            assert s.full == pytest.approx(raw[task][f"{metric},none"], abs=1e-12)  # recomputed = lm-eval's own
            assert s.clean == pytest.approx(sum(values) / len(values), abs=1e-12)
            assert s.clean_stderr == pytest.approx(mean_stderr(values), abs=1e-12)
            assert (s.documents, s.flagged) == (8, len(planted))
            assert s.moved == (abs(s.clean - s.full) > raw[task][f"{metric}_stderr,none"])
    # A metric aggregated otherwise (perplexity: exp of the mean negative log-likelihood) is recomputed the same way.
    ppl = scores["tiny_cloze"]["perplexity"]
    kept = [r["perplexity"] for r in _samples(audited["candidate"], "tiny_cloze") if r["doc_id"] not in CLOZE_PLANTED]
    assert ppl.clean == pytest.approx(math.exp(-sum(kept) / len(kept)), rel=1e-12) and ppl.clean_stderr is None


def test_compare_reports_clean_scores_of_every_model(audited, capsys):
    """With the candidate at X/eval/results.json, compare finds X/contamination/contamination.json by itself."""
    assert main(["compare", str(audited["candidate"]), str(audited["baselines"])]) == 0
    assert "contamination-aware scores from" in capsys.readouterr().out
    doc = json.loads((audited["root"] / "comparison" / "comparison.json").read_text())
    clean = doc["contamination"]["clean"]
    assert set(clean) == {doc["candidate"]["name"], "other"}
    assert clean["other"]["tiny_quiz"]["acc_norm"]["flagged"] == len(QUIZ_PLANTED)
    assert doc["contamination"]["flagged_in_report"] == {"tiny_quiz": 3, "tiny_cloze": 1}
    md = (audited["root"] / "comparison" / "comparison.md").read_text()
    assert "## Contamination-aware scores" in md and "| tiny_quiz | acc_norm | 3 / 8 | other |" in md


def test_a_report_without_flags_is_a_usage_error(audited, tmp_path, capsys):
    old = json.loads(audited["report"].read_text())
    for task in old["tasks"].values():
        task.pop("flagged_documents")
    (tmp_path / "old.json").write_text(json.dumps(old))
    code = main(["compare", str(audited["candidate"]), str(audited["baselines"]), "--out", str(tmp_path / "c"),
                 "--contamination", str(tmp_path / "old.json")])
    err = capsys.readouterr().err
    assert code == 2 and "run 'edulm contamination' again" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("rows", ['[1, 2]\n', '"text"\n', '{"doc_id": "one"}\n', '{"acc": 1.0}\n'])
def test_a_samples_file_of_the_wrong_shape_is_one_line(audited, tmp_path, capsys, rows):
    """Samples rows that are not lm-eval's mappings with a doc_id stop compare with one line naming the file."""
    import shutil

    copy = tmp_path / "eval"
    shutil.copytree(audited["candidate"].parent, copy)
    samples = copy / json.loads(audited["candidate"].read_text())["samples_files"]["tiny_quiz"]
    samples.write_text(rows)
    code = main(["compare", str(copy / "results.json"), str(audited["baselines"]), "--out", str(tmp_path / "c"),
                 "--contamination", str(audited["report"])])
    err = capsys.readouterr().err
    assert code == 2 and f"{samples}: cannot read this samples file (line 1" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

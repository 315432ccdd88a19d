"""final/README.md always describes the weights beside it, also after a run is extended with --resume auto."""

from __future__ import annotations

import json
import re

import pytest

from edulm.card_sections import fmt_tokens
from edulm.config import config_from_dict
from edulm.train.trainer import train

from train_helpers import tiny_config


def card_facts(path) -> tuple[str, str, list[str]]:
    """(optimizer steps, tokens seen, linked images) of a card."""
    text = path.read_text()
    steps = re.search(r"^\| Optimizer steps \| (.+) \|$", text, re.M).group(1)
    tokens = re.search(r"^\| Tokens seen \| (.+) \|$", text, re.M).group(1)
    return steps, tokens, re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


@pytest.mark.slow
def test_an_extended_run_gets_a_card_of_its_new_weights(corpus, tmp_path):
    run_dir = tmp_path / "run"
    final = run_dir / "final"

    def run(max_steps: int, resume: str | None) -> None:
        # A constant rate: extending the run moves no step's learning rate (a cosine extension is refused).
        train(config_from_dict(tiny_config(corpus, run_dir, max_steps=max_steps, schedule="constant")), resume=resume)

    run(20, None)
    steps, tokens, images = card_facts(final / "README.md")
    assert (steps, tokens) == ("20 of 20", fmt_tokens(20 * 128))
    assert images and all((final / name).is_file() for name in images)  # only plots that exist, copied beside it
    assert "Not run: no lm-evaluation-harness results" in (final / "README.md").read_text()  # training only

    # An evaluation of the 20-step weights must not reach the card of the 30-step ones.
    release_eval = run_dir / "release" / "eval" / "results.json"
    release_eval.parent.mkdir(parents=True)
    release_eval.write_text(json.dumps({"format": "edulm-eval-results", "model": {"name": "tiny"},
                                        "scores": {"arc_easy": {"metric": "acc", "value": 0.5, "stderr": 0.01}}}))
    (final / "NOTES.md").write_text("my notes\n")

    run(30, "auto")
    steps, tokens, images = card_facts(final / "README.md")
    assert (steps, tokens) == ("30 of 30", fmt_tokens(30 * 128))
    assert images and all((final / name).is_file() for name in images)
    assert "arc_easy" not in (final / "README.md").read_text()
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert f"| Tokens seen | {summary['tokens']:,}" in (final / "README.md").read_text()
    # The card of the 20-step weights is set aside by the export, the user's own file kept.
    assert card_facts(final / "README.previous.md")[:2] == ("20 of 20", fmt_tokens(20 * 128))
    assert (final / "NOTES.md").read_text() == "my notes\n"

    # Resumed with nothing left to do: the same weights, so a card there (say, one edulm release wrote) stays.
    (final / "README.md").write_text((final / "README.md").read_text() + "\nEdited by hand.\n")
    run(30, "auto")
    assert (final / "README.md").read_text().endswith("Edited by hand.\n")

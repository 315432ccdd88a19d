"""final/README.md always describes the weights beside it, also after a run is extended with --resume auto."""

from __future__ import annotations

import json
import re

import pytest

from edulm.release.card_sections import fmt_tokens
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
    assert summary["schedule_description"] == "then constant" and "then constant" in (final / "README.md").read_text()
    # The card of the 20-step weights is set aside by the export, the user's own file kept.
    assert card_facts(final / "README.previous.md")[:2] == ("20 of 20", fmt_tokens(20 * 128))
    assert (final / "NOTES.md").read_text() == "my notes\n"

    # Resumed with nothing left to do: the same weights, so a card there (say, one edulm release wrote) stays.
    (final / "README.md").write_text((final / "README.md").read_text() + "\nEdited by hand.\n")
    run(30, "auto")
    assert (final / "README.md").read_text().endswith("Edited by hand.\n")


def test_a_run_whose_final_export_fails_is_not_completed_and_one_resume_finishes_it(corpus, tmp_path, monkeypatch):
    import edulm.hf

    run_dir = tmp_path / "run"
    cfg = config_from_dict(tiny_config(corpus, run_dir, max_steps=6))
    export = edulm.hf.export

    def export_fails(*args, **kwargs):
        raise RuntimeError("the export broke")

    monkeypatch.setattr(edulm.hf, "export", export_fails)
    with pytest.raises(RuntimeError, match="the export broke"):
        train(cfg)
    # Every step trained, but no weights in final/: the records say failed, and how to finish.
    assert not (run_dir / "final").exists()
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["status"] == "failed" and summary["steps"] == 6
    assert summary["failure"]["error"] == "RuntimeError: the export broke"
    assert "step-0000006" in summary["failure"]["advice"] and "--resume auto" in summary["failure"]["advice"]
    last = (run_dir / "training" / "train.log").read_text().strip().splitlines()[-1]
    assert "===== failed at step 6: RuntimeError: the export broke =====" in last

    monkeypatch.setattr(edulm.hf, "export", export)
    train(cfg, resume="auto")  # no step left: writes final/ and its card
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "final" / "README.md").is_file()
    summary = json.loads((run_dir / "training" / "training_summary.json").read_text())
    assert summary["status"] == "completed" and "failure" not in summary
    assert (run_dir / "training" / "train.log").read_text().strip().splitlines()[-1].endswith("completed at step 6 =====")


def test_weights_made_non_finite_by_an_update_are_never_checkpointed_or_exported(corpus, tmp_path):
    from edulm.train.trainer import TrainingDiverged

    run_dir = tmp_path / "run"
    # One update at this rate overflows the weights; the run is shorter than train.max_nonfinite_steps.
    cfg = config_from_dict(tiny_config(corpus, run_dir, max_steps=3, lr=1e308, warmup_steps=0))
    with pytest.raises(TrainingDiverged, match=r"the weights hold NaN or infinite values after step 3 .* lower train.lr"):
        train(cfg)
    assert not list((run_dir / "checkpoints").glob("step-*")) and not (run_dir / "final").exists()
    assert json.loads((run_dir / "training" / "training_summary.json").read_text())["status"] == "failed"


def test_a_sigterm_during_the_final_export_is_heard_after_the_run_completes(corpus, tmp_path, caplog):
    import os
    import signal

    from edulm.train.core_callbacks import FinalExport, default_callbacks
    from edulm.train.callbacks import Callback

    class SigtermNow(Callback):
        def on_end(self, run, status) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would, while final/ is being written

    callbacks = default_callbacks(tensorboard=False, wandb=False, is_main=True)
    at = next(i for i, c in enumerate(callbacks) if isinstance(c, FinalExport))
    callbacks.insert(at, SigtermNow())
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as stopped:
        train(config_from_dict(tiny_config(corpus, run_dir, max_steps=4)), callbacks=callbacks)
    assert stopped.value.code == 143
    assert (run_dir / "final" / "model.safetensors").is_file() and (run_dir / "final" / "README.md").is_file()
    assert json.loads((run_dir / "training" / "training_summary.json").read_text())["status"] == "completed"
    assert "SIGTERM arrived after the last step; the run completed first" in caplog.text

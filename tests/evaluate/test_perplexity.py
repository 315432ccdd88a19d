"""Perplexity and bits per byte: windows as documented, equal to a direct transformers computation, clean CLI."""

from __future__ import annotations

import math
import re

import pytest
import torch
from eval_helpers import transformers_loss

from edulm.cli import main
from edulm.evaluate.perplexity import text_windows

TEXT = (
    "The tide comes in twice a day because the Moon pulls on the oceans. When the Moon is overhead, "
    "the water bulges toward it, and on the far side of the Earth a second bulge forms. Fishermen read "
    "the tide tables to know when the harbour is deep enough for their boats to leave. "
) * 3


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def parse(stdout: str) -> tuple[float, float, float]:
    match = re.fullmatch(r"loss=([0-9.]+) perplexity=([0-9.]+|inf) bits_per_byte=([0-9.]+)\n", stdout)
    assert match, stdout
    return float(match.group(1)), float(match.group(2)), float(match.group(3))


def test_windows_are_non_overlapping_and_score_all_but_first():
    ids = list(range(10))
    assert text_windows(ids, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert text_windows(list(range(9)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # a 1-token tail scores nothing
    assert text_windows(ids, 4, max_tokens=4) == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.compat
def test_text_perplexity_equals_transformers(tiny_hf_model, tmp_path, capsys):
    path = tmp_path / "tide.txt"
    path.write_text(TEXT)
    expected, count, expected_bpb = transformers_loss(tiny_hf_model, TEXT, seq_len=48)
    assert count > 100  # several windows, the last one shorter
    capsys.readouterr()  # what transformers printed while computing the expectation
    code, out, err = run_cli(["perplexity", str(tiny_hf_model), "--text", str(path), "--seq-len", "48", "--device", "cpu"], capsys)
    assert code == 0, err
    loss, ppl, bpb = parse(out)
    assert loss == pytest.approx(expected, abs=2e-6)
    assert ppl == pytest.approx(math.exp(expected), rel=1e-5)
    assert bpb == pytest.approx(expected_bpb, rel=1e-6)
    assert f"window: 48 tokens (--seq-len); scored {count:,} tokens" in err
    assert "\r" not in err and "scoring" not in err  # stderr is no terminal here: no progress bar in it


def test_default_window_is_model_context(tiny_hf_model, tmp_path, capsys):
    path = tmp_path / "tide.txt"
    path.write_text(TEXT)
    expected, _, _ = transformers_loss(tiny_hf_model, TEXT, seq_len=256)  # max_position_embeddings of the fixture
    code, out, _ = run_cli(["perplexity", str(tiny_hf_model), "--text", str(path)], capsys)
    assert code == 0
    assert parse(out)[0] == pytest.approx(expected, abs=2e-6)


def test_data_scores_held_out_split(tiny_hf_model, prepared_shards, capsys):
    import numpy as np
    from transformers import LlamaForCausalLM

    from edulm.data.shards import open_split

    val = torch.from_numpy(np.concatenate(open_split(prepared_shards, "val")).astype("int64"))
    seq_len = 32
    n = (len(val) - 1) // seq_len
    assert n >= 2
    model = LlamaForCausalLM.from_pretrained(tiny_hf_model, dtype=torch.float32).eval()
    with torch.no_grad():
        x = torch.stack([val[w * seq_len : w * seq_len + seq_len] for w in range(n)])
        y = torch.stack([val[w * seq_len + 1 : w * seq_len + seq_len + 1] for w in range(n)])
        expected = float(torch.nn.functional.cross_entropy(model(input_ids=x).logits.flatten(0, 1).double(), y.flatten()))
    code, out, err = run_cli(["perplexity", str(tiny_hf_model), "--data", str(prepared_shards), "--seq-len", "32"], capsys)
    assert code == 0, err
    assert parse(out)[0] == pytest.approx(expected, abs=2e-6)


def test_a_run_defaults_to_its_own_validation_windows(tiny_run, prepared_shards, capsys):
    """`edulm perplexity RUN --data SHARDS` scores what the run's eval rows scored: the same loss."""
    from edulm.evaluate.artifacts import last_validation, metrics_rows

    final = last_validation(metrics_rows(tiny_run))
    code, out, err = run_cli(["perplexity", str(tiny_run), "--data", str(prepared_shards), "--device", "cpu"], capsys)
    assert code == 0, err
    loss, _, bpb = parse(out)
    assert loss == pytest.approx(final["val_loss"], abs=1e-6)
    assert final["val_bpb"] is not None and bpb == pytest.approx(final["val_bpb"], rel=1e-5)
    assert "window: 32 tokens (the run's train.seq_len), at most 96 (the run's train.eval_tokens); scored 96 tokens" in err
    # An explicit window overrides the run's: a different set of windows, a different loss.
    code, out, err = run_cli(["perplexity", str(tiny_run), "--data", str(prepared_shards), "--seq-len", "48"], capsys)
    assert code == 0 and "window: 48 tokens (--seq-len)" in err
    assert parse(out)[0] != pytest.approx(final["val_loss"], abs=1e-6)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--text", "missing.txt"], "no such text file"),
        (["--data", "missing-dir"], "no such folder"),
        (["--text", "DIR"], "is a folder, not a text file; pass --text a UTF-8 text file (a shards dir goes with --data)"),
        (["--data", "TEXT"], "is a file, not a folder; pass --data with a shards dir"),  # the two swapped
        (["--text", "TEXT", "--seq-len", "100000"], "longer than the model's context"),
        (["--text", "TEXT", "--seq-len", "1"], "at least 2 tokens"),
        (["--text", "TEXT", "--seq-len", "0"], "at least 2 tokens"),  # not the default in disguise
    ],
)
def test_bad_input_is_one_line_usage_error(tiny_hf_model, tmp_path, capsys, argv, message):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    argv = [str(path) if a == "TEXT" else str(tmp_path) if a == "DIR" else str(tmp_path / a) if a.startswith("missing") else a
            for a in argv]
    code, out, err = run_cli(["perplexity", str(tiny_hf_model), *argv], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert out == ""

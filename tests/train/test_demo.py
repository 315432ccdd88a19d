"""The demo script (what `make demo` runs) on a tiny config: prepare, train, export, sample, summary."""

from __future__ import annotations

from train_helpers import tiny_config, write_config

from edulm.demo import main, run_demo


def test_demo_runs_the_main_job_end_to_end(corpus, tmp_path, capsys):
    cfg = write_config(tmp_path / "tiny.yaml", tiny_config(corpus, tmp_path / "run", max_steps=20, lr=1e-2))
    result = run_demo(cfg, ["train.eval_interval=20"])
    out = capsys.readouterr().out
    assert result["last_loss"] < result["first_loss"]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert "already prepared" in out  # the shards were there: nothing tokenized twice
    assert "This function returns" in out  # the generated sample follows its prompt
    assert any(line.split() == ["model", str(tmp_path / "run" / "final")] for line in out.splitlines())
    assert any(line.split() == ["log", str(tmp_path / "run" / "training" / "train.log")] for line in out.splitlines())
    assert (tmp_path / "run" / "training" / "train.log").is_file() and (tmp_path / "run" / "final" / "README.md").is_file()
    assert out.strip().splitlines()[-1].startswith(f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f} (step 1 -> 20)")
    # Running it again continues the finished run instead of refusing or starting over.
    assert run_demo(cfg, ["train.eval_interval=20"]) == result


def test_demo_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err

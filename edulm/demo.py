"""The main job end to end on the built-in default (``make demo``): prepare, train, export, generate.

``python -m edulm.demo [CONFIG] [section.key=value ...]`` (default ``configs/smoke.yaml``):

1. tokenizes ``data.source`` into shards (nothing to do when ``data.shards_dir`` already holds them);
2. trains the config, continuing an earlier demo run from its latest checkpoint if there is one;
3. the trainer exports ``final/`` (a Hugging Face folder) through the same code as ``edulm export``;
4. generates a sample from ``final/`` and prints where every artifact is, then one line with the
   loss at the first and the last step.
"""

from __future__ import annotations

import sys
from pathlib import Path


DEFAULT_CONFIG = "configs/smoke.yaml"
PROMPT = "This function returns"


def _default_config() -> Path:
    """configs/smoke.yaml next to the package (a source checkout), else in the working directory."""
    beside_package = Path(__file__).resolve().parent.parent / DEFAULT_CONFIG
    return beside_package if beside_package.is_file() else Path(DEFAULT_CONFIG)


def run_demo(config_path: str | Path, overrides: list[str]) -> dict[str, float]:
    """Prepare + train + export + sample; returns ``{"first_loss", "last_loss", "val_loss"}``."""
    from edulm.config import load_config
    from edulm.base.layout import RunLayout
    from edulm.base.metrics import read_metrics
    from edulm.hf.generate_command import generate_command
    from edulm.train.trainer import train

    cfg = load_config(config_path, overrides)
    shards = Path(cfg.data.shards_dir)
    print(f"== 1/4 data: {cfg.data.source} -> {shards}", flush=True)
    from edulm.data.prepare import prepare

    prepare(cfg)  # returns at once when the shards are already there

    run = RunLayout.of(cfg.run.out_dir)
    print(f"== 2/4 train: {config_path} -> {run.root}", flush=True)
    train(cfg, resume="auto")

    final = run.final
    print(f"== 3/4 export: {final} (Hugging Face folder; AutoModelForCausalLM.from_pretrained loads it)", flush=True)

    print(f"== 4/4 sample (prompt {PROMPT!r}):", flush=True)
    generate_command(str(final), PROMPT, max_new_tokens=48, temperature=0.8, top_p=0.95, seed=0, device="cpu")

    rows = [r for r in read_metrics(run.metrics) if r["loss"] is not None]
    vals = [r["val_loss"] for r in rows if r["val_loss"] is not None]
    print("\nartifacts:")
    print(f"  run config        {run.config}")
    print(f"  checkpoints       {run.checkpoints}")
    print(f"  metrics           {run.metrics}")
    print(f"  summary           {run.summary}")
    print(f"  plots             {', '.join(str(p) for p in run.plots)}")
    print(f"  log               {run.log}")
    print(f"  model             {final}")
    print(f"  model card        {run.card}")
    result = {"first_loss": rows[0]["loss"], "last_loss": rows[-1]["loss"], "val_loss": vals[-1] if vals else float("nan")}
    print(
        f"loss {result['first_loss']:.3f} -> {result['last_loss']:.3f} (step {int(rows[0]['step'])} -> "
        f"{int(rows[-1]['step'])}), held-out loss {result['val_loss']:.3f}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``[CONFIG] [overrides]``; exit codes and one-line errors as ``edulm``'s."""
    from edulm.cli import run_reporting_errors

    args = list(sys.argv[1:] if argv is None else argv)
    config = args.pop(0) if args and "=" not in args[0] else str(_default_config())
    return run_reporting_errors(lambda: run_demo(config, args), prog="edulm demo")


if __name__ == "__main__":
    sys.exit(main())

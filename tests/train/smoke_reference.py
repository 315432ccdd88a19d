"""The smoke recipe's per-step losses on CPU in fp32: recorded once, compared bitwise by a test.

``configs/smoke.yaml`` (model, data, optimizer, schedule shape) cut to :data:`STEPS` steps: a warmup
of 6 steps so the cosine is covered too, a metrics row every step, an evaluation and a checkpoint
after step 8 and at the end (neither may disturb the training numbers). The run is
deterministic on CPU with one thread, so a change that is meant to leave training alone (a
refactoring of the trainer) must reproduce these numbers bit for bit.

Regenerate the fixture (only when a change is *meant* to alter training, and say so in the commit)::

    PYTHONPATH=. python tests/train/smoke_reference.py

The numbers depend on the kernels torch picks for this CPU and on the installed files that
``builtin:sample`` harvests, so the fixture records the torch version, the CPU capability and a
hash of the prepared shards; the test is skipped (with the reason) where the first two differ.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SMOKE_CONFIG = REPO / "configs" / "smoke.yaml"
FIXTURE = Path(__file__).with_name("smoke_losses.json")
STEPS = 16
"""Steps of the recorded run (about 25 s on one CPU thread)."""


def overrides(shards_dir: Path, out_dir: Path, steps: int = STEPS) -> list[str]:
    """The smoke recipe, shortened: fp32 on CPU, a row per step, evaluations and checkpoints every 8 steps."""
    return [
        f"data.shards_dir={shards_dir}", f"run.out_dir={out_dir}", f"train.max_steps={steps}",
        "train.warmup_steps=6", "train.eval_interval=8", "train.ckpt_interval=8",
        "train.device=cpu", "train.precision=fp32", "train.log_interval=1",
    ]


def shards_digest(shards_dir: Path) -> str:
    """SHA-256 over the prepared shard files (names and bytes), to tell a data change from a trainer change."""
    digest = hashlib.sha256()
    for path in sorted(Path(shards_dir).glob("*.bin")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def weights_digest(weights_file: Path) -> str:
    """SHA-256 over the tensors of a safetensors file in name order (not its header layout)."""
    from safetensors.torch import load_file

    digest = hashlib.sha256()
    for name, tensor in sorted(load_file(str(weights_file)).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_smoke(shards_dir: Path, out_dir: Path, steps: int = STEPS) -> dict:
    """Prepare the smoke data into ``shards_dir`` (if needed), train, and return what the fixture holds."""
    from edulm.config import load_config
    from edulm.data.prepare import prepare
    from edulm.base.metrics import read_metrics
    from edulm.train.trainer import train

    cfg = load_config(SMOKE_CONFIG, overrides(shards_dir, out_dir, steps))
    prepare(cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # reductions split over threads would change the last bits
    try:
        train(cfg)
    finally:
        torch.set_num_threads(threads)
    rows = read_metrics(Path(out_dir) / "training" / "training_metrics.csv")
    return {
        "steps": steps,
        "loss": [r["loss"] for r in rows],
        "grad_norm": [r["grad_norm"] for r in rows],
        "lr": [r["lr"] for r in rows],
        "val_loss": [r["val_loss"] for r in rows if r["val_loss"] is not None],
        "weights_sha256": weights_digest(Path(out_dir) / "final" / "model.safetensors"),
    }


def environment(shards_dir: Path) -> dict:
    """What the numbers depend on besides the code."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "shards_sha256": shards_digest(shards_dir),
    }


def main() -> None:
    """Record the fixture (a fresh temporary folder for data and run)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shards, out = Path(tmp) / "shards", Path(tmp) / "run"
        record = run_smoke(shards, out)
        record["environment"] = environment(shards)
    FIXTURE.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {FIXTURE}: {len(record['loss'])} losses, final {record['loss'][-1]!r}, val {record['val_loss']}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()

"""The run directory's file and folder names, defined once (no torch, no third-party imports).

::

    RUN/                              (run.out_dir)
      config.yaml                     the config as asked (CONFIG_FILE)
      checkpoints/                    (CHECKPOINTS_DIR)
        step-0001000/                 one checkpoint (checkpoint_name(step))
          manifest.json               sizes and SHA-256 of every other file, written last (MANIFEST_FILE)
          config.yaml                 the run's config
          model.safetensors           weights, Hugging Face names (MODEL_FILE)
          optimizer.pt                unsharded optimizer state (OPTIMIZER_FILE)
          trainer_state.json          counters, batch geometry, totals (TRAINER_STATE_FILE)
          rank-00000.pt               one per process: data position and RNG states (rank_file(rank))
      training/                       (TRAINING_DIR)
        training_metrics.csv          one row per logged step (METRICS_FILE)
        training_summary.json         totals, throughput, device, cost, versions (SUMMARY_FILE)
        train.log                     the plain log lines (LOG_FILE)
        training_curves.png           (CURVES_FILE)
        loss_curve_zoom.png           (ZOOM_FILE)
        downstream_curves.png         (DOWNSTREAM_PLOT_FILE; with train.downstream)
        tensorboard/                  (TENSORBOARD_DIR, when train.tensorboard is on)
        wandb/                        W&B's files (WANDB_DIR, when train.wandb is on)
        wandb_run.json                the W&B run id a resume continues (WANDB_RUN_FILE)
      final/                          Hugging Face folder of the last step (FINAL_DIR)
        README.md                     the model card (CARD_FILE)
      release/                        what `edulm release` writes (RELEASE_DIR)
        eval/results.json             the run's lm-eval results, samples beside them (EVAL_RESULTS)
        baselines/                    the baselines' results, when no shared folder is given (BASELINES_DIR)
        comparison/                   comparison.json + comparison.md (COMPARISON_DIR)
        contamination/                training_sample.jsonl, contamination.json + .md (CONTAMINATION_DIR, TRAINING_SAMPLE_FILE)

:class:`RunLayout` turns a run dir into these paths; readers (export, card, artifacts, plots, demo)
and the trainer use it or the names, never string literals of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "config.yaml"
"""The run's config in the run dir and in every checkpoint."""
CHECKPOINTS_DIR = "checkpoints"
"""Folder of the run's checkpoints."""
TRAINING_DIR = "training"
"""Folder of the run's metrics, summary, log and plots."""
FINAL_DIR = "final"
"""Hugging Face folder exported after the last step."""
CARD_FILE = "README.md"
"""The model card, inside a Hugging Face folder (``final/``)."""
RELEASE_DIR = "release"
"""Evaluation and release outputs of the run, written by ``edulm release`` and read by ``edulm card``."""
EVAL_NAME = "eval"
"""Folder of the eval results inside ``release/``; ``edulm compare`` finds the two folders below beside it."""
COMPARISON_NAME = "comparison"
"""Folder of ``edulm compare``'s report inside ``release/`` (beside ``eval/``)."""
CONTAMINATION_NAME = "contamination"
"""Folder of the contamination audit inside ``release/`` (beside ``eval/``)."""
EVAL_RESULTS = f"{RELEASE_DIR}/{EVAL_NAME}/results.json"
"""The run's ``edulm eval`` results file (samples files beside it), relative to the run dir."""
BASELINES_DIR = f"{RELEASE_DIR}/baselines"
"""The baselines' results files when no shared folder is given, relative to the run dir."""
COMPARISON_DIR = f"{RELEASE_DIR}/{COMPARISON_NAME}"
"""What ``edulm compare`` writes for the run, relative to the run dir."""
CONTAMINATION_DIR = f"{RELEASE_DIR}/{CONTAMINATION_NAME}"
"""The contamination audit's report (and the training sample it read), relative to the run dir."""
TRAINING_SAMPLE_FILE = "training_sample.jsonl"
"""The sample of training documents the contamination audit reads, under ``CONTAMINATION_DIR``."""

METRICS_FILE = "training_metrics.csv"
"""Metrics rows, under ``training/``."""
SUMMARY_FILE = "training_summary.json"
"""Run summary, under ``training/``."""
LOG_FILE = "train.log"
"""Plain log lines, under ``training/``."""
CURVES_FILE = "training_curves.png"
"""Loss, validation loss, learning rate and throughput, under ``training/``."""
ZOOM_FILE = "loss_curve_zoom.png"
"""Loss after the warmup, under ``training/``."""
PLOT_FILES = (CURVES_FILE, ZOOM_FILE)
"""Every plot the trainer draws, in the order a reader shows them."""
DOWNSTREAM_PLOT_FILE = "downstream_curves.png"
"""The downstream scores against tokens with their chance levels, under ``training/`` (runs with ``train.downstream``)."""
TENSORBOARD_DIR = "tensorboard"
"""TensorBoard event files, under ``training/``."""
WANDB_DIR = "wandb"
"""Weights & Biases' files, under ``training/`` (W&B names this folder itself, below the ``dir`` it is given)."""
WANDB_RUN_FILE = "wandb_run.json"
"""The W&B run's id, project and entity, under ``training/``."""

MANIFEST_FILE = "manifest.json"
"""A checkpoint's integrity manifest (written last: a checkpoint without it is unfinished)."""
MODEL_FILE = "model.safetensors"
"""Weights with Hugging Face names, in a checkpoint and in a Hugging Face folder."""
OPTIMIZER_FILE = "optimizer.pt"
"""A checkpoint's optimizer state."""
TRAINER_STATE_FILE = "trainer_state.json"
"""A checkpoint's trainer counters."""

HF_CONFIG_FILE = "config.json"
"""A Hugging Face model folder's configuration (an export, ``final/``); never at a run dir's or shards dir's top."""

FOLDER_KINDS = {
    "hf": f"a Hugging Face model folder ({HF_CONFIG_FILE})",
    "checkpoint": f"a checkpoint ({MODEL_FILE})",
    "run": f"a training run ({CONFIG_FILE})",
    "shards": f"prepared token shards ({MANIFEST_FILE})",
}
"""How :func:`folder_kind`'s answers are named in messages (with the file that gave each away)."""


def folder_kind(folder: str | Path) -> str | None:
    """What an edulm command already wrote into ``folder``, by the file at its top that only it writes:
    ``"hf"`` (an export), ``"checkpoint"``, ``"run"`` (a run dir), ``"shards"`` (``edulm prepare``), or None.

    Commands that write a folder of one kind refuse a folder of another (a run into an export, shards
    into a run dir), whose files they would otherwise mix with their own.
    """
    folder = Path(folder)
    if (folder / HF_CONFIG_FILE).is_file():
        return "hf"
    if (folder / MODEL_FILE).is_file():
        return "checkpoint"
    if (folder / CONFIG_FILE).is_file() or (folder / CHECKPOINTS_DIR).is_dir():
        return "run"
    if (folder / MANIFEST_FILE).is_file():
        return "shards"
    return None


CHECKPOINT_PREFIX = "step-"
"""Checkpoint folders are ``step-`` and the step with 7 digits."""
_CHECKPOINT_NAME = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")


def checkpoint_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` optimizer steps, e.g. ``step-0001000``."""
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def step_of(path: str | Path) -> int | None:
    """The step encoded in a checkpoint folder name, or None when the name is not ``step-N``."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


RANK_FILE_PREFIX = "rank-"
"""Per-process files in a checkpoint are ``rank-`` and the rank with 5 digits, ``.pt``."""


def rank_file(rank: int) -> str:
    """Name of one process's file in a checkpoint (its data position and RNG states)."""
    return f"{RANK_FILE_PREFIX}{rank:05d}.pt"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run dir."""

    root: Path
    """The run dir (``run.out_dir``)."""

    @classmethod
    def of(cls, run_dir: str | Path) -> "RunLayout":
        """The layout of ``run_dir``."""
        return cls(Path(run_dir))

    @property
    def config(self) -> Path:
        """``config.yaml``."""
        return self.root / CONFIG_FILE

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``."""
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        """``checkpoints/step-N/``."""
        return self.checkpoints / checkpoint_name(step)

    @property
    def training(self) -> Path:
        """``training/``."""
        return self.root / TRAINING_DIR

    @property
    def metrics(self) -> Path:
        """``training/training_metrics.csv``."""
        return self.training / METRICS_FILE

    @property
    def summary(self) -> Path:
        """``training/training_summary.json``."""
        return self.training / SUMMARY_FILE

    @property
    def log(self) -> Path:
        """``training/train.log``."""
        return self.training / LOG_FILE

    @property
    def plots(self) -> tuple[Path, ...]:
        """``training/training_curves.png`` and ``training/loss_curve_zoom.png``."""
        return tuple(self.training / name for name in PLOT_FILES)

    @property
    def downstream_plot(self) -> Path:
        """``training/downstream_curves.png``."""
        return self.training / DOWNSTREAM_PLOT_FILE

    @property
    def tensorboard(self) -> Path:
        """``training/tensorboard/``."""
        return self.training / TENSORBOARD_DIR

    @property
    def wandb(self) -> Path:
        """``training/wandb/``."""
        return self.training / WANDB_DIR

    @property
    def wandb_run(self) -> Path:
        """``training/wandb_run.json``."""
        return self.training / WANDB_RUN_FILE

    @property
    def final(self) -> Path:
        """``final/``."""
        return self.root / FINAL_DIR

    @property
    def card(self) -> Path:
        """``final/README.md``."""
        return self.final / CARD_FILE

    @property
    def release(self) -> Path:
        """``release/``."""
        return self.root / RELEASE_DIR

    def gguf(self, name: str, dtype: str) -> Path:
        """``NAME-DTYPE.gguf`` beside ``final/``: the GGUF file ``edulm release --gguf DTYPE`` writes."""
        return self.root / f"{name}-{dtype}.gguf"

    def gguf_files(self) -> list[Path]:
        """Every ``*.gguf`` beside ``final/``, by name."""
        return sorted(self.root.glob("*.gguf"))

    @property
    def eval_results(self) -> Path:
        """``release/eval/results.json``."""
        return self.root / EVAL_RESULTS

    @property
    def baselines(self) -> Path:
        """``release/baselines/``."""
        return self.root / BASELINES_DIR

    @property
    def comparison(self) -> Path:
        """``release/comparison/``."""
        return self.root / COMPARISON_DIR

    @property
    def contamination(self) -> Path:
        """``release/contamination/``."""
        return self.root / CONTAMINATION_DIR

    @property
    def training_sample(self) -> Path:
        """``release/contamination/training_sample.jsonl``."""
        return self.contamination / TRAINING_SAMPLE_FILE

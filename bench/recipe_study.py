"""Recipe study: how many of the reference recipe's tokens do WSD and Muon need to reach its validation loss,
and how does that saving move with the model's size?

    python bench/recipe_study.py --out runs/recipe-study            # CPU: about 2 hours on 2 cores
    python bench/recipe_study.py --out runs/recipe-study-quick --quick   # a few minutes, every code path
    python bench/recipe_study.py --out runs/recipe-study-gpu        # on a CUDA machine: the larger 'gpu' sizes

Small Llamas of several widths, one data set (``builtin:sample`` unless ``--source``, tokenized with a small
BPE trained on it, so the embedding does not dominate the model) and one held-out split, trained by
``edulm train`` itself (one ``python -m edulm train`` process per run) under three arms:

(a) the reference recipe scaled down: AdamW (0.9, 0.95), weight decay 0.1, warmup + cosine to 0.1x, clip 1.0;
(b) AdamW with WSD (``train.decay_fraction`` 0.2);
(c) Muon (``match_rms_adamw``) with WSD.

Each width trains for the same number of tokens per parameter. At each width every arm sweeps the
learning rate with every seed, and its rate is the one of the lowest *mean* final validation loss over
the seeds (a grid whose best point lies at an edge grows a point past it). The target is (a)'s final
validation loss, seed by seed. A WSD run's intermediate losses are not what a shorter run reaches (its
decay is at the end), so each WSD run is branched from its stable phase into decay runs at shorter
budgets (0.3 ... 0.8 of the steps, and 0.2, 0.1 when 0.3 already reaches the target; each decays over the
last 0.2 of its own budget, as docs/training.md "A decay as its own run" says), and the budget at which
the decayed loss reaches the target is interpolated linearly in log tokens
(``recipe_study_report.budget_to_reach``). Figures over seeds are means with 95% Student-t intervals.

Every run is also scored, in the loop, on a next-word choice task built from the held-out text
(:mod:`recipe_study_task`), so the tables hold a downstream score beside the loss. At the largest width,
Muon's arm is run again with the AdamW part (embedding and norms) at other rates than Muon's matrices
(``train.lr`` against ``train.optimizer_settings.lr``), which measures whether the two need separate rates.
docs/recipes.md has the measured tables and the caveats.

Runs live in ``OUT/runs/WIDTH/NAME``; a rerun with the same settings reuses finished runs and resumes
unfinished ones from their checkpoints (``--resume auto``), so a killed study continues. Writes
``OUT/recipe_study.md`` (tables), ``OUT/recipe_study.json`` (every run) and ``OUT/recipe_study.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe_study_report beside this file
REPO = Path(__file__).resolve().parents[1]

from recipe_study_report import Crossing, best_lr, budget_to_reach, neighbour_lr, write_outputs  # noqa: E402
from recipe_study_task import CHOICES, CONTEXT_WORDS, STRIDE_WORDS, TASK_NAME, write_task  # noqa: E402

from edulm.base.errors import UsageError  # noqa: E402

DECAY_FRACTION = 0.2
CKPT_GRANULARITY = 0.08
"""Trunks checkpoint every 0.08 x steps: the branch point 0.8 x budget of every budget that is a multiple of 0.1."""


@dataclass(frozen=True)
class Width:
    """One model size of the study: its shape, its steps and its learning-rate grids."""

    name: str
    """Its name in the tables and the run folders (``w64``: d_model 64)."""
    model: dict
    """model.* keys of the shape (layers, width, FFN, heads)."""
    steps: int
    """Steps of a full run, (a)'s budget; a multiple of 50, so every branch point is a checkpoint."""
    warmup: int
    """Warmup steps of every run (branches keep their trunk's)."""
    grids: dict
    """Arm -> the learning rates swept first (grown past an edge when the best lies there)."""


@dataclass(frozen=True)
class Preset:
    """One study: its widths, data, batch, seeds, budgets and what is measured beside the loss."""

    name: str
    """The --size name."""
    widths: tuple
    """The model sizes (:class:`Width`), smallest first."""
    vocab_size: int
    """Size of the BPE trained on the study's data (and of every model's embedding)."""
    seq_len: int
    """Tokens per training sequence."""
    micro_batch: int
    """Sequences per step (no accumulation)."""
    evals: int
    """Held-out evaluations per full run (and at the last step)."""
    held_out_tokens: int
    """Tokens held out by edulm prepare, all of them scored at each evaluation."""
    budgets: tuple = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    """Shorter budgets (fractions of ``steps``) every WSD run is branched into; the full run is 1.0."""
    low_budgets: tuple = (0.2, 0.1)
    """Added when the smallest budget already reaches the target (so a fraction is measured, not bounded)."""
    seeds: tuple = (1, 2, 3)
    """Every learning rate of every sweep is trained with each of them."""
    max_extensions: int = 2
    """Points a grid may grow by, per arm and width."""
    embedding_factors: tuple = (0.5, 2.0)
    """At the largest width, Muon's arm again with its AdamW part (embedding, norms) at these multiples of its rate."""
    downstream_examples: int = 500
    """Examples of the next-word task each run is scored on at its last step."""
    max_tokens: int = 0
    """data.max_tokens of the study's prepare (0: the whole source)."""
    device: str = "cpu"
    """train.device of every run ('auto' for the gpu size)."""


ARMS = {
    "a": ("AdamW + cosine (reference)", {"train.optimizer": "adamw", "train.schedule": "cosine"}),
    "b": ("AdamW + WSD", {"train.optimizer": "adamw", "train.schedule": "wsd"}),
    "c": ("Muon + WSD", {"train.optimizer": "muon", "train.schedule": "wsd"}),
}


def _shape(d_model: int, n_layers: int = 4) -> dict:
    """A 4-layer block stack of width ``d_model``: FFN 3 x width, 4 query and 2 key-value heads."""
    return dict(n_layers=n_layers, d_model=d_model, d_ff=3 * d_model, n_heads=4, n_kv_heads=2)


_HIGH = {"a": (8e-3, 1.6e-2, 3.2e-2), "b": (4e-3, 8e-3, 1.6e-2), "c": (8e-3, 1.6e-2, 3.2e-2)}
_MID = {"a": (4e-3, 8e-3, 1.6e-2), "b": (2e-3, 4e-3, 8e-3), "c": (4e-3, 8e-3, 1.6e-2)}
PRESETS = {
    # Widths 32, 48 and 64 (114,976 / 209,328 / 328,256 parameters with the 2,048-token vocabulary), each
    # trained on about 6.2 tokens per parameter (350 / 650 / 1,000 steps of 16 x 128 tokens; the largest is
    # 0.86 epoch of builtin:sample's 2.39M training tokens). Grids centred on the previous study's optima
    # (64 wide: 8e-3, 4e-3, 8e-3), twice higher for the narrowest.
    "cpu": Preset("cpu", (Width("w32", _shape(32), 350, 20, _HIGH), Width("w48", _shape(48), 650, 30, _MID),
                          Width("w64", _shape(64), 1000, 50, _MID)),
                  vocab_size=2048, seq_len=128, micro_batch=16, evals=8, held_out_tokens=65536),
    # Seconds a run: two tiny widths, 2 seeds, small grids, one shorter budget; every code path.
    "quick": Preset("quick", (Width("w16", _shape(16, 2), 50, 5, {"a": (4e-4, 2e-3, 1e-2), "b": (4e-3,), "c": (4e-3,)}),
                              Width("w32", _shape(32, 2), 50, 5, {"a": (2e-3,), "b": (4e-3,), "c": (4e-3,)})),
                    vocab_size=512, seq_len=64, micro_batch=8, evals=2, held_out_tokens=4096, budgets=(0.5,),
                    low_budgets=(), seeds=(1, 2), max_extensions=0, embedding_factors=(2.0,), downstream_examples=40,
                    max_tokens=200_000),
    # A CUDA GPU (not yet run): 8 layers at widths 256 and 384 (about 8.4M and 15.7M parameters with the
    # 8,192-token vocabulary), 65.5M tokens at the larger, bf16. builtin:sample is far smaller than that: pass
    # --source with a larger corpus (a FineWeb-Edu parquet folder), or the study says how often it repeats the data.
    "gpu": Preset("gpu", (Width("w256", _shape(256, 8), 1000, 50,
                                {"a": (1e-3, 2e-3, 4e-3), "b": (1e-3, 2e-3, 4e-3), "c": (1e-3, 2e-3, 4e-3)}),
                          Width("w384", dict(n_layers=8, d_model=384, d_ff=1024, n_heads=6, n_kv_heads=2), 2000, 100,
                                {"a": (1e-3, 2e-3, 4e-3), "b": (1e-3, 2e-3, 4e-3), "c": (1e-3, 2e-3, 4e-3)})),
                  vocab_size=8192, seq_len=512, micro_batch=64, evals=10, held_out_tokens=262_144, device="auto"),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a full run of an arm at a width, or a decay branch of a WSD run at a shorter budget."""

    width: str
    arm: str
    lr: float
    seed: int
    budget: float = 1.0  # fraction of the full run's steps; below 1: a branch of the full run
    embedding: float = 1.0  # the AdamW part's rate as a multiple of lr (Muon's arm only; 1: one shared rate)

    @property
    def name(self) -> str:
        base = f"{self.arm}-lr{self.lr:.1e}" + (f"-emb{self.embedding:g}" if self.embedding != 1.0 else "")
        base += f"-s{self.seed}"
        return base if self.budget == 1.0 else f"{base}-b{self.budget:.2f}"

    @property
    def key(self) -> str:
        return f"{self.width}/{self.name}"

    @property
    def trunk(self) -> "RunSpec":
        return dataclasses.replace(self, budget=1.0)


@dataclass
class Study:
    """The settings of one study and where it lives; runs its runs."""

    preset: Preset
    out: Path
    source: str
    jobs: int
    threads: int
    done: dict = field(default_factory=dict)  # RunSpec.key -> result
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    trained: int = 0  # runs trained (or finished) by this invocation; the others were reused
    task: dict = field(default_factory=dict)  # the next-word task's description

    # ----- set-up -------------------------------------------------------------------------------------

    def settings(self) -> dict:
        """What a cached run must have been trained with (compared on every rerun)."""
        return {"preset": dataclasses.asdict(self.preset), "source": self.source, "arms": ARMS,
                "decay_fraction": DECAY_FRACTION, "ckpt_granularity": CKPT_GRANULARITY,
                "task": {"context_words": CONTEXT_WORDS, "stride_words": STRIDE_WORDS, "choices": CHOICES}}

    def width(self, name: str) -> Width:
        return next(w for w in self.preset.widths if w.name == name)

    def base_config(self) -> dict:
        """The YAML config every run starts from (widths, arms, lrs and seeds come as overrides)."""
        p, first = self.preset, self.preset.widths[0]
        return {
            "run": {"name": "recipe-study", "out_dir": str(self.out / "runs" / "unnamed"), "seed": 1},
            "model": {"vocab_size": p.vocab_size, "max_seq_len": p.seq_len, "rope_theta": 10000.0,
                      "tie_embeddings": True, **first.model},
            "tokenizer": {"name": str(self.out / "tokenizer")},
            "data": {"source": self.source, "shards_dir": str(self.out / "shards"), "val_tokens": p.held_out_tokens,
                     "max_tokens": p.max_tokens, "workers": 1},
            "train": {"seq_len": p.seq_len, "micro_batch_size": p.micro_batch, "grad_accum_steps": 1,
                      "max_steps": first.steps, "warmup_steps": first.warmup, "min_lr_ratio": 0.1, "weight_decay": 0.1,
                      "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "decay_fraction": DECAY_FRACTION,
                      "precision": "auto", "device": p.device, "eval_tokens": p.held_out_tokens, "keep_last": 1,
                      "downstream": [TASK_NAME], "downstream_limit": p.downstream_examples,
                      "downstream_include_path": str(self.out / "downstream")},
        }

    def setup(self) -> None:
        """Settings check, tokenizer, shards, the next-word task and the base config (each made once, then reused)."""
        import yaml

        from edulm.base.files import write_json, write_text
        from edulm.config import config_from_dict
        from edulm.data.prepare import prepare
        from edulm.data.shards import read_manifest
        from edulm.data.tokenizer_training import train_tokenizer

        p = self.preset
        lowest = min(p.budgets + p.low_budgets, default=1.0)
        for w in p.widths:
            if w.steps % 50 or (1 - DECAY_FRACTION) * lowest * w.steps < w.warmup:
                raise UsageError(f"preset {p.name}, {w.name}: steps must be a multiple of 50 (so every branch point is "
                                 "a checkpoint) and every branch must start after the warmup")
        self.out.mkdir(parents=True, exist_ok=True)
        settings_file = self.out / "study_settings.json"
        if settings_file.exists():
            if json.loads(settings_file.read_text()) != json.loads(json.dumps(self.settings())):
                raise UsageError(f"{self.out} holds a study with other settings ({settings_file}); "
                                 "choose another --out, or the same --size/--quick/--source as before")
        else:
            write_json(settings_file, self.settings())
        if not (self.out / "tokenizer" / "tokenizer.json").exists():
            train_tokenizer(self.source, self.out / "tokenizer", p.vocab_size)
        cfg = config_from_dict(self.base_config())
        if not (self.out / "shards" / "manifest.json").exists():
            prepare(cfg)
        self.task = write_task(self.out / "downstream", self.out / "shards", self.out / "tokenizer", p.downstream_examples)
        write_text(self.out / "study.yaml", yaml.safe_dump(self.base_config(), sort_keys=False))
        self.val_bytes = _held_out_bytes(cfg)
        train_tokens = read_manifest(self.out / "shards")["tokens"]["train"]
        for w in p.widths:
            epochs = w.steps * p.micro_batch * p.seq_len / train_tokens
            if epochs > 1:  # repeated data flatters whatever fits it fastest: say so rather than hide it
                print(f"note: a full run of {w.name} reads the training split {epochs:.1f} times; pass --source "
                      "with a larger corpus for one pass", flush=True)

    # ----- runs ---------------------------------------------------------------------------------------

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / "runs" / spec.width / spec.name

    def overrides(self, spec: RunSpec) -> list[str]:
        (_, arm), w = ARMS[spec.arm], self.width(spec.width)
        steps = round(spec.budget * w.steps)
        wsd_trunk = spec.budget == 1.0 and arm["train.schedule"] == "wsd"
        values = {**arm, **{f"model.{k}": v for k, v in w.model.items()},
                  "run.name": f"{spec.width}-{spec.name}", "run.out_dir": str(self.run_dir(spec)), "run.seed": spec.seed,
                  "train.lr": spec.lr * spec.embedding, "train.max_steps": steps, "train.warmup_steps": w.warmup,
                  "train.eval_interval": round(w.steps / self.preset.evals),
                  "train.ckpt_interval": round(CKPT_GRANULARITY * w.steps),
                  # the next-word task at the last step only: one score per run, a few seconds each
                  "train.downstream_interval": w.steps, "train.log_interval": max(1, w.steps // 20),
                  # a trunk keeps every checkpoint: its stable phase is where the branches start
                  "train.keep_last": 1 + round(1 / CKPT_GRANULARITY) if wsd_trunk else 1}
        if spec.embedding != 1.0:  # Muon's matrices keep the arm's rate; train.lr (the AdamW part) moves
            values["train.optimizer_settings.lr"] = spec.lr
        return [f"{k}={v}" for k, v in values.items()]

    def resume_arg(self, spec: RunSpec) -> str:
        """``auto`` (its own newest checkpoint, or a new run), or for a branch not yet started the trunk's checkpoint."""
        from edulm.checkpoint.folders import find_latest_good

        if spec.budget == 1.0 or find_latest_good(self.run_dir(spec)):
            return "auto"
        branch_step = round((1 - DECAY_FRACTION) * spec.budget * self.width(spec.width).steps)
        ckpt = self.run_dir(spec.trunk) / "checkpoints" / f"step-{branch_step:07d}"
        if not ckpt.is_dir():
            raise RuntimeError(f"{spec.key}: the trunk has no checkpoint at step {branch_step} ({ckpt})")
        return str(ckpt)

    def result(self, spec: RunSpec) -> dict | None:
        """A completed run's figures (None when it has not completed)."""
        from edulm.base.layout import RunLayout
        from edulm.base.metrics import read_metrics

        layout = RunLayout.of(self.run_dir(spec))
        try:
            summary = json.loads(layout.summary.read_text())
        except (OSError, ValueError):
            return None
        if summary.get("status") != "completed" or summary.get("final_val_bpb") is None:
            return None
        rows = read_metrics(layout.metrics)
        final = (summary.get("downstream") or {}).get("final") or {}
        return {"name": spec.name, "width": spec.width, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed,
                "budget": spec.budget, "embedding": spec.embedding, "steps": summary["steps"],
                "tokens": summary["tokens"], "parameters": summary["parameters"],
                "val_loss": summary["final_val_loss"], "val_bpb": summary["final_val_bpb"],
                "next_word_acc": final.get(f"downstream/{TASK_NAME}/acc"),
                "next_word_acc_norm": final.get(f"downstream/{TASK_NAME}/acc_norm"),
                "optimizer": summary["optimizer_description"], "schedule": summary["schedule"],
                "curve": [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]}

    def train(self, spec: RunSpec) -> dict:
        """Train ``spec`` with ``python -m edulm train`` (resuming what a killed study left), or reuse it."""
        cached = self.result(spec)
        start, trained = time.perf_counter(), cached is None
        if trained:
            log = self.out / "logs" / spec.width / f"{spec.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "edulm", "--quiet", "train", str(self.out / "study.yaml"),
                   *self.overrides(spec), "--resume", self.resume_arg(spec)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            if self.threads:
                env["OMP_NUM_THREADS"] = str(self.threads)
            with log.open("a") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
            cached = self.result(spec)
            if rc != 0 or cached is None:
                tail = log.read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError(f"{spec.key}: edulm train exited {rc}; see {log}:\n" + "\n".join(tail))
        with self._lock:
            self._count += 1
            self.trained += trained
            how = f"{time.perf_counter() - start:.0f} s" if trained else "cached"
            print(f"[{self._count:3d}] {spec.key:30s} {ARMS[spec.arm][0]:27s} {cached['steps']:6,d} steps "
                  f"{cached['tokens']:12,d} tokens  val_loss {cached['val_loss']:.4f}  ({how})", flush=True)
        self.done[spec.key] = cached
        return cached

    def train_all(self, specs: list[RunSpec]) -> None:
        specs = [s for s in dict.fromkeys(specs) if s.key not in self.done]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(self.train, specs))  # list(): the first failure is raised here

    # ----- the study ----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Every width (smallest first), then the embedding-rate runs; returns the results by width."""
        widths = {w.name: self.run_width(w) for w in self.preset.widths}
        return {"widths": widths, "embedding": self.run_embedding(self.preset.widths[-1], widths[self.preset.widths[-1].name])}

    def run_width(self, w: Width) -> dict:
        """One width's sweeps on every seed, then the WSD arms' branches; returns its arms."""
        p = self.preset
        grids = {arm: sorted(set(w.grids[arm])) for arm in ARMS}
        for extension in range(p.max_extensions + 1):
            self.train_all([RunSpec(w.name, arm, lr, s) for arm in ARMS for lr in grids[arm] for s in p.seeds])
            grown = False
            for arm in ARMS:
                lr, at_edge = best_lr(self.mean_sweep(w.name, arm, grids[arm]))
                if at_edge and len(grids[arm]) >= 3 and extension < p.max_extensions:
                    grids[arm] = sorted(grids[arm] + [neighbour_lr(grids[arm], lr)])
                    grown = True
            if not grown:
                break
        best = {arm: best_lr(self.mean_sweep(w.name, arm, grids[arm])) for arm in ARMS}
        wsd = [arm for arm in ARMS if ARMS[arm][1]["train.schedule"] == "wsd"]
        budgets = {(arm, s): list(p.budgets) for arm in wsd for s in p.seeds}
        while True:  # each pass: whatever became possible (trunks done) and is still missing
            wanted = []
            for (arm, s), bs in budgets.items():
                wanted += [RunSpec(w.name, arm, best[arm][0], s, b) for b in bs]
            wanted = [spec for spec in wanted if spec.key not in self.done]
            for (arm, s), bs in budgets.items():  # a target reached already at the smallest budget: go lower
                crossing = self.crossing(w.name, arm, best[arm][0], s, best["a"][0], bs)
                if crossing and crossing.below is not None and len(bs) < len(p.budgets) + len(p.low_budgets):
                    bs.append(p.low_budgets[len(bs) - len(p.budgets)])
                    wanted.append(RunSpec(w.name, arm, best[arm][0], s, bs[-1]))
            if not wanted:
                break
            self.train_all(wanted)
        return self.summarise(w, grids, best, budgets)

    def run_embedding(self, w: Width, arms: dict) -> dict:
        """Muon's arm at its rate with the AdamW part (embedding, norms) at ``embedding_factors`` x that rate."""
        lr = arms["c"]["lr"]
        factors = (1.0, *self.preset.embedding_factors)
        self.train_all([RunSpec(w.name, "c", lr, s, embedding=f) for f in factors for s in self.preset.seeds])
        rows = {}
        for f in factors:
            runs = [self.done[RunSpec(w.name, "c", lr, s, embedding=f).key] for s in self.preset.seeds]
            rows[f] = {"adamw_lr": lr * f, "val_loss": [r["val_loss"] for r in runs],
                       "next_word_acc": [r["next_word_acc"] for r in runs]}
        return {"width": w.name, "muon_lr": lr, "factors": rows}

    def mean_sweep(self, width: str, arm: str, grid: list[float]) -> dict[float, float]:
        """Each lr's final validation loss, averaged over the seeds."""
        return {lr: sum(self.done[RunSpec(width, arm, lr, s).key]["val_loss"] for s in self.preset.seeds)
                / len(self.preset.seeds) for lr in grid}

    def crossing(self, width: str, arm: str, lr: float, seed: int, lr_a: float, budgets: list[float]) -> Crossing | None:
        """Where the arm's decayed losses reach (a)'s final loss of the same seed; None while runs are missing."""
        keys = [RunSpec(width, arm, lr, seed, b).key for b in budgets] + [RunSpec(width, arm, lr, seed).key]
        target = self.done.get(RunSpec(width, "a", lr_a, seed).key)
        if target is None or any(k not in self.done for k in keys):
            return None
        return budget_to_reach([(self.done[k]["budget"], self.done[k]["val_loss"]) for k in keys], target["val_loss"])

    def summarise(self, w: Width, grids: dict, best: dict, budgets: dict) -> dict:
        arms = {}
        for arm, (title, _) in ARMS.items():
            lr, at_edge = best[arm]
            seeds = []
            for s in self.preset.seeds:
                full = self.done[RunSpec(w.name, arm, lr, s).key]
                target = self.done[RunSpec(w.name, "a", best["a"][0], s).key]["val_loss"]
                entry = {"seed": s, "val_loss": full["val_loss"], "val_bpb": full["val_bpb"], "target": target,
                         "next_word_acc": full["next_word_acc"], "next_word_acc_norm": full["next_word_acc_norm"],
                         "curve": full["curve"], "tokens": full["tokens"], "parameters": full["parameters"]}
                if arm == "a":  # the target is this run's own final loss, reached with all of its tokens
                    crossing = Crossing(1.0)
                else:
                    bs = sorted(budgets[arm, s])
                    crossing = self.crossing(w.name, arm, lr, s, best["a"][0], bs)
                    runs = [self.done[RunSpec(w.name, arm, lr, s, b).key] for b in bs] + [full]
                    entry["branches"] = [(r["budget"], r["val_loss"]) for r in runs]
                    entry["branch_points"] = [(r["tokens"], r["val_loss"]) for r in runs]
                entry["crossing"] = {**dataclasses.asdict(crossing), "text": crossing.describe()}
                seeds.append(entry)
            sweep = {lr_: [self.done[RunSpec(w.name, arm, lr_, s).key]["val_loss"] for s in self.preset.seeds]
                     for lr_ in grids[arm]}
            arms[arm] = {"title": title, "lr": lr, "lr_at_edge": at_edge, "grid": grids[arm], "sweep": sweep,
                         "seeds": seeds}
        return arms


def _held_out_bytes(cfg) -> tuple[int, int]:
    """Scored tokens and the bytes they stand for, over the held-out batches every evaluation uses (for the report)."""
    from edulm.data.loader import make_val_batches
    from edulm.evaluate.bits_per_byte import scored_bytes, token_byte_lengths
    from edulm.model.loss import IGNORE_INDEX
    from edulm.tokenizer.loading import load_tokenizer

    batches = make_val_batches(cfg, cfg.train.micro_batch_size, cfg.train.eval_tokens)
    n_tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in batches)
    return n_tokens, scored_bytes(token_byte_lengths(load_tokenizer(cfg.tokenizer.name)), batches)


def report(study: Study, results: dict, wall_s: float) -> str:
    """Write the markdown, JSON and plot into the study's folder; return the markdown."""
    p = study.preset
    shapes = ", ".join(f"{w.name} ({w.model['n_layers']} layers, d_model {w.model['d_model']}, {w.steps:,} steps)"
                       for w in p.widths)
    header = (
        f"Preset `{p.name}`: widths {shapes}; vocabulary {p.vocab_size}; steps of {p.micro_batch} x {p.seq_len} "
        f"tokens; data `{study.source}`, {study.val_bytes[0]:,} held-out tokens; seeds {', '.join(map(str, p.seeds))}; "
        f"next-word task: {study.task['examples']} examples from the held-out text, chance {study.task['chance']:.2f}, "
        f"a context-blind guess of the most frequent choice {study.task['frequency_guess_acc']:.3f}; "
        f"{len(study.done)} runs; this invocation trained {study.trained} of them ({study.jobs} at a time) in "
        f"{wall_s / 60:.1f} min."
    )
    extra = {"settings": study.settings(), "task": study.task,
             "held_out": {"tokens": study.val_bytes[0], "bytes": study.val_bytes[1]}, "wall_time_s": wall_s}
    return write_outputs(study.out, header, results, list(study.done.values()), extra, f"{p.name} preset")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="study folder (runs, tables, JSON, plot); a rerun reuses its runs")
    parser.add_argument("--quick", action="store_true", help="the 'quick' size: a few minutes, every code path")
    parser.add_argument("--size", choices=("auto", *PRESETS), default="auto",
                        help="auto: 'gpu' when CUDA is available, else 'cpu' (default)")
    parser.add_argument("--source", default="builtin:sample", help="data.source of the study (default builtin:sample)")
    parser.add_argument("--jobs", type=int, default=0, help="runs at once (default: 1 on a GPU, else one per CPU core up to 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per run (default 1: several one-thread runs beat one run on a shared CPU)")
    args = parser.parse_args(argv)
    import torch

    size = "quick" if args.quick else args.size
    if size == "auto":
        size = "gpu" if torch.cuda.is_available() else "cpu"
    preset = PRESETS[size]
    on_gpu = preset.device != "cpu" and torch.cuda.is_available()
    jobs = args.jobs or (1 if on_gpu else min(2, os.cpu_count() or 1))
    study = Study(preset, Path(args.out).resolve(), args.source, jobs, 0 if on_gpu else args.threads)
    start = time.perf_counter()
    study.setup()
    print(f"recipe study '{size}' in {study.out}: {jobs} run(s) at a time"
          + ("" if on_gpu else f", {study.threads} thread(s) each"), flush=True)
    results = study.run()
    print("\n" + report(study, results, time.perf_counter() - start))
    print(f"written: {study.out / 'recipe_study.md'}, recipe_study.json, recipe_study.png")
    return 0


if __name__ == "__main__":
    from bench_main import run_main  # beside this file (bench/ is not a package)

    run_main(main, failures=(RuntimeError,))

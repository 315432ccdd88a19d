"""Recipe study: how many of the reference recipe's tokens do WSD and Muon need to reach its validation loss?

    python bench/recipe_study.py --out runs/recipe-study            # CPU: under an hour on 2 cores
    python bench/recipe_study.py --out runs/recipe-study-quick --quick   # a few minutes, every code path
    python bench/recipe_study.py --out runs/recipe-study-gpu        # on a CUDA machine: the larger 'gpu' size

One small Llama, one data set (``builtin:sample`` unless ``--source``, tokenized with a small BPE trained
on it, so the embedding does not dominate the model) and one held-out split, trained by ``edulm train``
itself (one ``python -m edulm train`` process per run) under three arms:

(a) the reference recipe scaled down: AdamW (0.9, 0.95), weight decay 0.1, warmup + cosine to 0.1x, clip 1.0;
(b) AdamW with WSD (``train.decay_fraction`` 0.2);
(c) Muon (``match_rms_adamw``) with WSD.

Each arm sweeps the learning rate (the reference's 4e-4 is one of (a)'s points; a grid whose best
point lies at an edge grows a point past it) and is represented by its best (lowest final validation
loss, seed 1). Every arm's best lr is then trained with the other seeds. The target is (a)'s final
validation loss (per seed). A WSD run's intermediate losses are not what a shorter run reaches (its
decay is at the end), so each WSD run is branched from its stable phase into decay runs at shorter
budgets (0.3 ... 0.8 of the steps, and 0.2, 0.1 when 0.3 already reaches the target; each decays
over the last 0.2 of its own budget, as docs/training.md "A decay as its own run" says), and the
budget at which the decayed loss reaches the target is interpolated linearly in log tokens
(``recipe_study_report.budget_to_reach``). docs/recipes.md has the measured tables and the caveats.

Runs live in ``OUT/runs/NAME``; a rerun with the same settings reuses finished runs and resumes
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

from edulm.base.errors import UsageError  # noqa: E402

REFERENCE_LR = 4e-4
DECAY_FRACTION = 0.2
CKPT_GRANULARITY = 0.08
"""Trunks checkpoint every 0.08 x steps: the branch point 0.8 x budget of every budget that is a multiple of 0.1."""


@dataclass(frozen=True)
class Preset:
    """One size of the study: model, data, batch, steps, grids, budgets."""

    name: str
    """The --size name."""
    model: dict
    """model.* keys of the shape (layers, width, FFN, heads)."""
    vocab_size: int
    """Size of the BPE trained on the study's data (and of the model's embedding)."""
    seq_len: int
    """Tokens per training sequence."""
    micro_batch: int
    """Sequences per step (no accumulation)."""
    steps: int
    """Steps of a full run, (a)'s budget; a multiple of 50, so every branch point is a checkpoint."""
    warmup: int
    """Warmup steps of every run (branches keep their trunk's)."""
    eval_every: int
    """Steps between held-out evaluations (and at the last step)."""
    held_out_tokens: int
    """Tokens held out by edulm prepare, all of them scored at each evaluation."""
    grids: dict
    """Arm -> the learning rates swept first (grown past an edge when the best lies there)."""
    budgets: tuple = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    """Shorter budgets (fractions of ``steps``) every WSD run is branched into; the full run is 1.0."""
    low_budgets: tuple = (0.2, 0.1)
    """Added when the smallest budget already reaches the target (so a fraction is measured, not bounded)."""
    seeds: tuple = (1, 2)
    """The sweeps use the first; every arm's best lr is trained with all of them."""
    max_extensions: int = 3
    """Points a grid may grow by, per arm."""
    max_tokens: int = 0
    """data.max_tokens of the study's prepare (0: the whole source)."""
    device: str = "cpu"
    """train.device of every run ('auto' for the gpu size)."""


ARMS = {
    "a": ("AdamW + cosine (reference)", {"train.optimizer": "adamw", "train.schedule": "cosine"}),
    "b": ("AdamW + WSD", {"train.optimizer": "adamw", "train.schedule": "wsd"}),
    "c": ("Muon + WSD", {"train.optimizer": "muon", "train.schedule": "wsd"}),
}

_SMALL = dict(n_layers=4, d_model=64, d_ff=192, n_heads=4, n_kv_heads=2)
PRESETS = {
    # 328,256 parameters (131,072 of them the embedding), 1,000 steps of 2,048 tokens = 2.05M tokens
    # (0.86 epoch of builtin:sample's 2.39M training tokens), about 3 minutes a run on one core.
    "cpu": Preset("cpu", _SMALL, vocab_size=2048, seq_len=128, micro_batch=16, steps=1000, warmup=50,
                  eval_every=125, held_out_tokens=65536,
                  grids={"a": (REFERENCE_LR, 2e-3, 4e-3, 8e-3), "b": (4e-3, 8e-3, 1.6e-2), "c": (4e-3, 8e-3, 1.6e-2)}),
    # Seconds a run: a tiny model, a 3-point grid for (a) only, one shorter budget; every code path.
    "quick": Preset("quick", dict(n_layers=2, d_model=32, d_ff=96, n_heads=2, n_kv_heads=1), vocab_size=512,
                    seq_len=64, micro_batch=8, steps=50, warmup=5, eval_every=25, held_out_tokens=4096,
                    grids={"a": (REFERENCE_LR, 2e-3, 1e-2), "b": (4e-3,), "c": (4e-3,)}, budgets=(0.5,),
                    low_budgets=(), max_extensions=0, max_tokens=200_000),
    # A CUDA GPU (not yet run): 15.7M parameters (3.1M of them the embedding), 2,000 steps of 64 x 512 tokens
    # = 65.5M tokens (4.2 per parameter), bf16. builtin:sample is far smaller than that: pass --source with
    # a larger corpus (a FineWeb-Edu parquet folder), or the study says how often it repeats the data.
    "gpu": Preset("gpu", dict(n_layers=8, d_model=384, d_ff=1024, n_heads=6, n_kv_heads=2), vocab_size=8192,
                  seq_len=512, micro_batch=64, steps=2000, warmup=100, eval_every=200, held_out_tokens=262_144,
                  grids={"a": (REFERENCE_LR, 1e-3, 2e-3, 4e-3), "b": (1e-3, 2e-3, 4e-3), "c": (1e-3, 2e-3, 4e-3)},
                  device="auto"),
}


@dataclass(frozen=True)
class RunSpec:
    """One training run: a full run of an arm, or a decay branch of a WSD run at a shorter budget."""

    arm: str
    lr: float
    seed: int
    budget: float = 1.0  # fraction of the full run's steps; below 1: a branch of the full run

    @property
    def name(self) -> str:
        base = f"{self.arm}-lr{self.lr:.1e}-s{self.seed}"
        return base if self.budget == 1.0 else f"{base}-b{self.budget:.2f}"

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
    done: dict = field(default_factory=dict)  # run name -> result
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _count: int = 0
    trained: int = 0  # runs trained (or finished) by this invocation; the others were reused

    # ----- set-up -------------------------------------------------------------------------------------

    def settings(self) -> dict:
        """What a cached run must have been trained with (compared on every rerun)."""
        return {"preset": dataclasses.asdict(self.preset), "source": self.source}

    def base_config(self) -> dict:
        """The YAML config every run starts from (arms, lrs and seeds come as overrides)."""
        p = self.preset
        return {
            "run": {"name": "recipe-study", "out_dir": str(self.out / "runs" / "unnamed"), "seed": 1},
            "model": {"vocab_size": p.vocab_size, "max_seq_len": p.seq_len, "rope_theta": 10000.0,
                      "tie_embeddings": True, **p.model},
            "tokenizer": {"name": str(self.out / "tokenizer")},
            "data": {"source": self.source, "shards_dir": str(self.out / "shards"), "val_tokens": p.held_out_tokens,
                     "max_tokens": p.max_tokens, "workers": 1},
            "train": {"seq_len": p.seq_len, "micro_batch_size": p.micro_batch, "grad_accum_steps": 1,
                      "max_steps": p.steps, "warmup_steps": p.warmup, "min_lr_ratio": 0.1, "weight_decay": 0.1,
                      "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "decay_fraction": DECAY_FRACTION,
                      "precision": "auto", "device": p.device, "eval_interval": p.eval_every,
                      "eval_tokens": p.held_out_tokens, "ckpt_interval": round(CKPT_GRANULARITY * p.steps),
                      "keep_last": 1, "log_interval": max(1, p.steps // 20)},
        }

    def setup(self) -> None:
        """Settings check, tokenizer, shards and the base config (each made once, then reused)."""
        import yaml

        from edulm.config import config_from_dict
        from edulm.data.prepare import prepare
        from edulm.data.shards import read_manifest
        from edulm.base.files import write_json, write_text
        from edulm.data.tokenizer_training import train_tokenizer

        p = self.preset
        lowest = min(p.budgets + p.low_budgets, default=1.0)
        if p.steps % 50 or (1 - DECAY_FRACTION) * lowest * p.steps < p.warmup:
            raise UsageError(f"preset {p.name}: steps must be a multiple of 50 (so every branch point is a checkpoint) "
                             "and every branch must start after the warmup")
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
        write_text(self.out / "study.yaml", yaml.safe_dump(self.base_config(), sort_keys=False))
        self.val_bytes = _held_out_bytes(cfg)
        epochs = p.steps * p.micro_batch * p.seq_len / read_manifest(self.out / "shards")["tokens"]["train"]
        if epochs > 1:  # repeated data flatters whatever fits it fastest: say so rather than hide it
            print(f"note: a full run reads the training split {epochs:.1f} times; pass --source with a larger "
                  "corpus for one pass", flush=True)

    # ----- runs ---------------------------------------------------------------------------------------

    def run_dir(self, spec: RunSpec) -> Path:
        return self.out / "runs" / spec.name

    def overrides(self, spec: RunSpec) -> list[str]:
        p, (_, arm) = self.preset, ARMS[spec.arm]
        steps = round(spec.budget * p.steps)
        wsd_trunk = spec.budget == 1.0 and arm["train.schedule"] == "wsd"
        values = {**arm, "run.name": spec.name, "run.out_dir": str(self.run_dir(spec)), "run.seed": spec.seed,
                  "train.lr": spec.lr, "train.max_steps": steps,
                  # a trunk keeps every checkpoint: its stable phase is where the branches start
                  "train.keep_last": 1 + round(1 / CKPT_GRANULARITY) if wsd_trunk else 1}
        return [f"{k}={v}" for k, v in values.items()]

    def resume_arg(self, spec: RunSpec) -> str:
        """``auto`` (its own newest checkpoint, or a new run), or for a branch not yet started the trunk's checkpoint."""
        from edulm.checkpoint.folders import find_latest_good

        if spec.budget == 1.0 or find_latest_good(self.run_dir(spec)):
            return "auto"
        branch_step = round((1 - DECAY_FRACTION) * spec.budget * self.preset.steps)
        ckpt = self.run_dir(spec.trunk) / "checkpoints" / f"step-{branch_step:07d}"
        if not ckpt.is_dir():
            raise RuntimeError(f"{spec.name}: the trunk has no checkpoint at step {branch_step} ({ckpt})")
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
        loss = summary["final_val_loss"]
        return {"name": spec.name, "arm": spec.arm, "lr": spec.lr, "seed": spec.seed, "budget": spec.budget,
                "steps": summary["steps"], "tokens": summary["tokens"], "parameters": summary["parameters"],
                "val_loss": loss, "val_bpb": summary["final_val_bpb"],
                "optimizer": summary["optimizer_description"], "schedule": summary["schedule"],
                "curve": [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]}

    def train(self, spec: RunSpec) -> dict:
        """Train ``spec`` with ``python -m edulm train`` (resuming what a killed study left), or reuse it."""
        cached = self.result(spec)
        start, trained = time.perf_counter(), cached is None
        if trained:
            log = self.out / "logs" / f"{spec.name}.log"
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
                raise RuntimeError(f"{spec.name}: edulm train exited {rc}; see {log}:\n" + "\n".join(tail))
        with self._lock:
            self._count += 1
            self.trained += trained
            how = f"{time.perf_counter() - start:.0f} s" if trained else "cached"
            print(f"[{self._count:3d}] {spec.name:24s} {ARMS[spec.arm][0]:27s} {cached['steps']:6,d} steps "
                  f"{cached['tokens']:12,d} tokens  val_loss {cached['val_loss']:.4f}  ({how})", flush=True)
        self.done[spec.name] = cached
        return cached

    def train_all(self, specs: list[RunSpec]) -> None:
        specs = [s for s in dict.fromkeys(specs) if s.name not in self.done]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            list(pool.map(self.train, specs))  # list(): the first failure is raised here

    # ----- the study ----------------------------------------------------------------------------------

    def run(self) -> dict:
        """Sweeps, then every arm's best lr on the other seeds, then the WSD arms' branches; returns the results."""
        p, first = self.preset, self.preset.seeds[0]
        grids = {arm: sorted(set(p.grids[arm])) for arm in ARMS}
        for extension in range(p.max_extensions + 1):
            self.train_all([RunSpec(arm, lr, first) for arm in ARMS for lr in grids[arm]])
            grown = False
            for arm in ARMS:
                lr, at_edge = best_lr(self.sweep(arm, grids[arm]))
                if at_edge and len(grids[arm]) >= 3 and extension < p.max_extensions:
                    grids[arm] = sorted(grids[arm] + [neighbour_lr(grids[arm], lr)])
                    grown = True
            if not grown:
                break
        best = {arm: best_lr(self.sweep(arm, grids[arm])) for arm in ARMS}
        wsd = [arm for arm in ARMS if ARMS[arm][1]["train.schedule"] == "wsd"]
        budgets = {(arm, s): list(p.budgets) for arm in wsd for s in p.seeds}
        while True:  # each pass: whatever became possible (trunks done) and is still missing
            wanted = [RunSpec(arm, best[arm][0], s) for arm in ARMS for s in p.seeds]
            for (arm, s), bs in budgets.items():
                if RunSpec(arm, best[arm][0], s).name in self.done:
                    wanted += [RunSpec(arm, best[arm][0], s, b) for b in bs]
            wanted = [w for w in wanted if w.name not in self.done]
            for (arm, s), bs in budgets.items():  # a target reached already at the smallest budget: go lower
                crossing = self.crossing(arm, best[arm][0], s, best["a"][0], bs)
                if crossing and crossing.below is not None and len(bs) < len(p.budgets) + len(p.low_budgets):
                    bs.append(p.low_budgets[len(bs) - len(p.budgets)])
                    wanted.append(RunSpec(arm, best[arm][0], s, bs[-1]))
            if not wanted:
                break
            self.train_all(wanted)
        return self.summarise(grids, best, budgets)

    def sweep(self, arm: str, grid: list[float]) -> dict[float, float]:
        return {lr: self.done[RunSpec(arm, lr, self.preset.seeds[0]).name]["val_loss"] for lr in grid}

    def crossing(self, arm: str, lr: float, seed: int, lr_a: float, budgets: list[float]) -> Crossing | None:
        """Where the arm's decayed losses reach (a)'s final loss of the same seed; None while runs are missing."""
        names = [RunSpec(arm, lr, seed, b).name for b in budgets] + [RunSpec(arm, lr, seed).name]
        target = self.done.get(RunSpec("a", lr_a, seed).name)
        if target is None or any(n not in self.done for n in names):
            return None
        return budget_to_reach([(self.done[n]["budget"], self.done[n]["val_loss"]) for n in names], target["val_loss"])

    def summarise(self, grids: dict, best: dict, budgets: dict) -> dict:
        arms = {}
        for arm, (title, _) in ARMS.items():
            lr, at_edge = best[arm]
            seeds = []
            for s in self.preset.seeds:
                full = self.done[RunSpec(arm, lr, s).name]
                target = self.done[RunSpec("a", best["a"][0], s).name]["val_loss"]
                entry = {"seed": s, "val_loss": full["val_loss"], "val_bpb": full["val_bpb"], "target": target,
                         "curve": full["curve"], "tokens": full["tokens"]}
                if arm == "a":  # the target is this run's own final loss, reached with all of its tokens
                    crossing = Crossing(1.0)
                else:
                    bs = sorted(budgets[arm, s])
                    crossing = self.crossing(arm, lr, s, best["a"][0], bs)
                    runs = [self.done[RunSpec(arm, lr, s, b).name] for b in bs] + [full]
                    entry["branches"] = [(r["budget"], r["val_loss"]) for r in runs]
                    entry["branch_points"] = [(r["tokens"], r["val_loss"]) for r in runs]
                entry["crossing"] = {**dataclasses.asdict(crossing), "text": crossing.describe()}
                seeds.append(entry)
            arms[arm] = {"title": title, "lr": lr, "lr_at_edge": at_edge, "grid": grids[arm], "seeds": seeds}
        return arms


def _held_out_bytes(cfg) -> tuple[int, int]:
    """Scored tokens and the bytes they stand for, over the held-out batches every evaluation uses (for the report)."""
    from edulm.evaluate.bits_per_byte import scored_bytes, token_byte_lengths
    from edulm.data.loader import make_val_batches
    from edulm.model.loss import IGNORE_INDEX
    from edulm.tokenizer.loading import load_tokenizer

    batches = make_val_batches(cfg, cfg.train.micro_batch_size, cfg.train.eval_tokens)
    n_tokens = sum(int((targets != IGNORE_INDEX).sum()) for _, targets in batches)
    return n_tokens, scored_bytes(token_byte_lengths(load_tokenizer(cfg.tokenizer.name)), batches)


def report(study: Study, arms: dict, wall_s: float) -> str:
    """Write the markdown, JSON and plot into the study's folder; return the markdown."""
    p, runs = study.preset, study.done
    first = next(iter(runs.values()))
    tokens_a = arms["a"]["seeds"][0]["tokens"]
    header = (
        f"Preset `{p.name}`: {first['parameters']:,} parameters ({p.model['n_layers']} layers, d_model "
        f"{p.model['d_model']}, vocabulary {p.vocab_size}), {p.steps:,} steps of {p.micro_batch} x {p.seq_len} tokens = "
        f"{tokens_a:,} tokens ({tokens_a / first['parameters']:.1f} per parameter), data `{study.source}`, "
        f"{study.val_bytes[0]:,} held-out tokens; seeds {', '.join(map(str, p.seeds))}; {len(runs)} runs; "
        f"this invocation trained {study.trained} of them ({study.jobs} at a time) in {wall_s / 60:.1f} min."
    )
    sweeps = {arm: study.sweep(arm, arms[arm]["grid"]) for arm in arms}
    extra = {"settings": study.settings(), "held_out": {"tokens": study.val_bytes[0], "bytes": study.val_bytes[1]},
             "wall_time_s": wall_s}
    return write_outputs(study.out, header, arms, sweeps, list(runs.values()), extra,
                         f"{first['parameters'] / 1e6:.2f}M parameters, {p.name} preset")


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
    arms = study.run()
    print("\n" + report(study, arms, time.perf_counter() - start))
    print(f"written: {study.out / 'recipe_study.md'}, recipe_study.json, recipe_study.png")
    return 0


if __name__ == "__main__":
    from bench_main import run_main  # beside this file (bench/ is not a package)

    run_main(main, failures=(RuntimeError,))

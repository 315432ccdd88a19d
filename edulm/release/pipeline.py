"""``edulm release RUN_DIR``: from a trained run to a published model card in one resumable command.

Six steps, each the library call of the command of the same name, all writing under
``RUN_DIR/release/`` except the card. The whole command holds ``RUN_DIR`` (as ``edulm train`` does: a
release of a run in training, or a resume during a release, is refused) and ``RUN_DIR/release/``
(:func:`edulm.base.lock.folder_lock`):

1. ``eval``: the protocol on ``RUN_DIR/final`` -> ``release/eval/results.json`` (+ samples);
2. ``baselines``: the same protocol on the baselines -> ``release/baselines/`` (or ``--baselines DIR``),
   skipping every model whose results are already complete;
3. ``sample-text``: a reproducible sample of the training documents -> ``release/contamination/training_sample.jsonl``;
4. ``contamination``: the n-gram audit of the same tasks -> ``release/contamination/contamination.{json,md}``;
5. ``compare``: scores, win rates, contamination-aware scores (and bits per byte with ``--bpb-text``)
   -> ``release/comparison/``;
6. ``card``: ``final/README.md``, beside the weights it describes.

Every output is written atomically, so it is complete or absent. ``release/release.json`` records,
for each finished step, a fingerprint of its inputs (the files it read, by path, size and
modification time, and the settings); a rerun skips a step whose outputs are present and whose
fingerprint is unchanged, so an interrupted release resumes where it stopped and a finished one
costs nothing to repeat. The state also stamps each step's outputs, so an output damaged or replaced
since (a results file cut short by a bad copy) is written again, and a damaged state file only means
every step runs again. A step that fails for a reason the user can fix (a baseline that cannot be
loaded, no hub) is reported, the steps that do not need it still run, and the command exits 2 with
one line naming what to fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edulm.evaluate.contamination_report import REPORT_JSON, REPORT_MD
from edulm.base.errors import UsageError
from edulm.evaluate import artifacts
from edulm.evaluate.compare import COMPARISON_JSON, COMPARISON_MD
from edulm.base.layout import MODEL_FILE, RunLayout

log = logging.getLogger("edulm")

STATE_FILE = "release.json"
"""In the release folder: the fingerprint of each finished step."""

SAMPLE_DOCS = 10_000
"""Training documents sampled for the contamination audit by default."""


@dataclass
class ReleaseOptions:
    """What ``edulm release`` runs, besides the run dir and the eval settings."""

    baselines_dir: Path | None = None
    """Folder of baseline results (shared between runs if you like); default ``RUN_DIR/release/baselines``."""
    models: str | list[str] | None = None
    """Baselines to evaluate (``--models`` of ``edulm baselines``); None: the seven reference baselines."""
    sample_docs: int = SAMPLE_DOCS
    """Training documents sampled for the contamination audit."""
    shards: Path | None = None
    """Shards dir to sample from; default the run's ``data.shards_dir`` (else its ``data.source``)."""
    ngram: int = 13
    """n of the contamination audit."""
    budgets: Path | None = None
    """Extra training budgets for compare (``--budgets``)."""
    bpb_text: Path | None = None
    """A text file every model is scored on in bits per byte (``compare --bpb-text``)."""
    name: str | None = None
    """Model name on the card (default: run.name)."""
    license: str = "apache-2.0"
    """License on the card."""
    gguf: str | None = None
    """Also write ``final/``'s weights as one GGUF file of this type (f32, f16, bf16, q8_0) beside ``final/``, for
    llama.cpp, Ollama and LM Studio; the card then says how to run it."""

    def __post_init__(self) -> None:
        for name in ("baselines_dir", "shards", "budgets", "bpb_text"):  # paths given as text become paths
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))


def stamp(path: Path) -> Any:
    """What identifies a file's (or a folder's files') current content: path, size and modification time; None if absent."""
    if path.is_dir():
        return [stamp(p) for p in sorted(path.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if not path.is_file():
        return None
    info = path.stat()
    return [str(path.resolve()), info.st_size, info.st_mtime_ns]


def fingerprint(inputs: dict[str, Any]) -> str:
    """A short hash of a step's inputs (file stamps and settings)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Step:
    """One step: what it reads (for the fingerprint), what it writes, and how to run it."""

    name: str
    """As the command of the same name."""
    inputs: Callable[[], dict[str, Any]]
    """What the step reads (file stamps and settings); its fingerprint decides whether a rerun skips it."""
    outputs: list[Path]
    """What it writes; all must exist, unchanged since the step wrote them, for the step to count as done."""
    run: Callable[[], Any]
    """Do the work (a :class:`UsageError` marks the step failed)."""
    always: bool = False
    """Run even when unchanged (the step skips its own finished work, as baselines does per model)."""
    problem: Callable[[Any], str | None] = lambda outcome: None
    """What went wrong, judged from the step's outcome (None: nothing): for a step that reports failures
    instead of raising them, as baselines does for a model it cannot load."""


class Release:
    """The steps of one release of one run, and the state file that lets a rerun skip what is done."""

    def __init__(self, run_dir: str | Path, settings, options: ReleaseOptions) -> None:
        self.run_dir = Path(run_dir)
        self.layout = RunLayout.of(self.run_dir)
        self.settings = settings
        self.options = options
        self.folder = self.layout.release
        self.final = self.layout.final
        # NAME-DTYPE.gguf beside final/, NAME the card's (--name) or the run dir's.
        self.gguf_file = self.layout.gguf(options.name or self.run_dir.resolve().name, options.gguf) if options.gguf else None
        self.eval_file = self.layout.eval_results
        self.baselines_dir = options.baselines_dir or self.layout.baselines
        self.sample = self.layout.training_sample
        self.contamination_dir = self.layout.contamination
        self.comparison_dir = self.layout.comparison
        self.card = self.layout.card
        self.config = artifacts.run_config(self.run_dir) or {}

    # -- checks before any work ----------------------------------------------------------------

    def check(self) -> None:
        """Refuse at once what would fail later: not a run, no final/ folder, unknown tasks or baselines."""
        from edulm.evaluate.baselines import parse_models
        from edulm.evaluate.tasks import task_manager
        from edulm.hf import is_hf_folder

        if not self.run_dir.is_dir() or not self.layout.config.is_file():
            raise UsageError(f"{self.run_dir}: not a run directory (no config.yaml); pass the run.out_dir of a training run")
        if not is_hf_folder(self.final):
            raise UsageError(f"{self.run_dir}: has no final/ model folder; finish training, or run "
                             f"'edulm export {self.run_dir} --out {self.final}'")
        if self.options.sample_docs < 1:
            raise UsageError(f"--docs {self.options.sample_docs}: must be at least 1")
        from edulm.hf.gguf_export import GGUF_DTYPES

        if self.options.gguf is not None and self.options.gguf not in GGUF_DTYPES:
            raise UsageError(f"--gguf {self.options.gguf!r} is not a GGUF type; choose one of {', '.join(GGUF_DTYPES)}")
        parse_models(self.options.models)
        task_manager(self.settings.tasks, self.settings.include_path)

    # -- the steps -------------------------------------------------------------------------------

    def _settings_record(self) -> dict[str, Any]:
        s = self.settings
        include = Path(s.include_path) if s.include_path else None
        record = {"tasks": s.tasks, "limit": s.limit, "dtype": s.dtype, "include_path": stamp(include) if include else None}
        if s.apply_chat_template:  # only when asked: the releases made before the option keep their fingerprints
            record["apply_chat_template"] = True
        return record

    def _sample_source(self) -> dict[str, Any]:
        """Where the training sample comes from: ``{"data": shards}`` or ``{"source": spec}``."""
        from edulm.data.shards import MANIFEST

        data = self.config.get("data") or {}
        shards = self.options.shards or (Path(data["shards_dir"]) if data.get("shards_dir") else None)
        if shards is not None and (Path(shards) / MANIFEST).is_file():
            return {"data": Path(shards)}
        if self.options.shards is not None:
            raise UsageError(f"--shards {self.options.shards}: no manifest.json there; pass a shards dir from 'edulm prepare'")
        if isinstance(data.get("source"), str):
            return {"source": data["source"], "text_field": data.get("text_field") or "text"}
        raise UsageError(f"{self.run_dir}: the run's shards ({shards}) are not here and its data.source is not one "
                         "source; pass --shards DIR")

    def _model_files(self) -> list[Any]:
        """Stamps of what the evaluated model is made of (not the card and plots written beside it)."""
        from edulm.hf.source import hf_weights_file

        names = ("config.json", "tokenizer.json", "tokenizer_config.json")
        return [stamp(hf_weights_file(self.final) or self.final / MODEL_FILE)] + [stamp(self.final / n) for n in names]

    def steps(self) -> list[Step]:
        """The six steps, in the order they run."""
        import lm_eval

        from edulm.data.shards import MANIFEST
        from edulm.evaluate.baselines import failure_summary, parse_models, run_baselines
        from edulm.evaluate.harness import evaluate_model
        from edulm.hf.gguf_export import export_gguf
        from edulm.release.sample_text import draw_sample
        from edulm.release.training_text import meta_path

        o, s = self.options, self.settings

        def sample_key() -> dict[str, Any]:
            """Where the sample comes from (the shards' manifest stamp, or the source) and how many documents."""
            where = {k: stamp(v / MANIFEST) if isinstance(v, Path) else v for k, v in self._sample_source().items()}
            return {"from": where, "docs": o.sample_docs}

        return [
            # The eval folder too: its stamp covers the samples files written beside the results.
            Step("eval", lambda: {"model": self._model_files(), "settings": self._settings_record(), "lm_eval": lm_eval.__version__},
                 [self.eval_file, self.eval_file.parent], lambda: evaluate_model(str(self.final), self.eval_file, s)),
            Step("baselines", dict, [self.baselines_dir],
                 lambda: run_baselines(parse_models(o.models), self.baselines_dir, s), always=True, problem=failure_summary),
            Step("sample-text", sample_key, [self.sample, meta_path(self.sample)],
                 lambda: draw_sample(self.sample, docs=o.sample_docs, **self._sample_source())),
            Step("contamination", lambda: {"sample": stamp(self.sample), "settings": self._settings_record(), "n": o.ngram},
                 [self.contamination_dir / REPORT_JSON, self.contamination_dir / REPORT_MD], self._contamination),
            Step("compare", lambda: {"candidate": stamp(self.eval_file), "baselines": stamp(self.baselines_dir),
                                     "contamination": stamp(self.contamination_dir / REPORT_JSON),
                                     "budgets": stamp(o.budgets) if o.budgets else None,
                                     "bpb_text": stamp(o.bpb_text) if o.bpb_text else None},
                 [self.comparison_dir / COMPARISON_JSON, self.comparison_dir / COMPARISON_MD], self._compare),
            *([Step("gguf", lambda: {"model": self._model_files(), "dtype": o.gguf}, [self.gguf_file],
                    lambda: export_gguf(self.final, self.gguf_file, o.gguf))] if o.gguf else []),
            Step("card", lambda: {"run": [stamp(p) for p in (self.layout.config, self.layout.training)],
                                  "eval": stamp(self.eval_file), "comparison": stamp(self.comparison_dir),
                                  "contamination": stamp(self.contamination_dir / REPORT_JSON),
                                  "gguf": [stamp(p) for p in self.layout.gguf_files()],
                                  "name": o.name, "license": o.license},
                 [self.card], self._card),
        ]

    def _contamination(self) -> Any:
        from edulm.release.contamination import audit

        s = self.settings
        return audit(str(self.sample), self.contamination_dir, tasks=list(s.tasks), include_path=s.include_path,
                     n=self.options.ngram)

    def _compare(self) -> Any:
        from edulm.evaluate.compare import run_compare

        if not self.eval_file.is_file():  # the eval step failed: say so, not what a user of 'edulm compare' would pass
            raise UsageError(f"no evaluation of {self.final} to compare ({self.eval_file} was not written): fix the "
                             "eval step's error above and run 'edulm release' again")
        report = self.contamination_dir / REPORT_JSON
        return run_compare(self.eval_file, self.baselines_dir, self.comparison_dir, self.options.budgets,
                           report if report.is_file() else None, self.options.bpb_text, device=self.settings.device)

    def _card(self) -> Any:
        from edulm.release.card import write_card
        from edulm.base.lock import folder_lock

        # The card reads the run's evaluation, comparison and contamination report from where this release
        # wrote them (edulm.base.layout), whichever exist.
        with folder_lock(self.final, "edulm release (model card)"):
            return write_card(self.run_dir, self.card, name=self.options.name, license=self.options.license)

    # -- running -------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        """The state file's record of finished steps; a damaged one (edulm's own file) only costs a redo of every step."""
        path = self.folder / STATE_FILE
        try:
            state = artifacts.read_json(path, "release state")
        except UsageError as err:
            problem = str(err)
        else:
            if state is None:  # no release yet
                return {"steps": {}}
            steps = state.get("steps")
            problem = None if isinstance(steps, dict) and all(isinstance(v, dict) for v in steps.values()) else \
                f"{path}: the release state is not a mapping of finished steps"
        if problem:
            log.warning("%s; treated as damaged, every step runs again", problem)
            return {"steps": {}}
        return state

    @staticmethod
    def _is_done(step: Step, key: str, record: dict[str, Any]) -> bool:
        """Whether ``step`` finished with these inputs and its outputs are still what it wrote (a file damaged or
        replaced since then is redone; a record from before outputs were stamped only needs them present)."""
        if record.get("fingerprint") != key or not all(p.exists() for p in step.outputs):
            return False
        return "outputs" not in record or record["outputs"] == [stamp(p) for p in step.outputs]

    def run(self) -> dict[str, dict[str, Any]]:
        """Run (or skip) every step under the release folder's lock; returns ``{step: {status, seconds, error}}``."""
        from edulm.base.files import remove_stale_temps, write_json
        from edulm.base.lock import folder_lock

        self.check()
        # The run dir too, as `edulm train` holds it: a release beside a live run would pair the training records of
        # one step with an evaluation of another's weights, and a resume during a release the reverse.
        with folder_lock(self.run_dir, "edulm release"), folder_lock(self.folder, "edulm release"):
            self.folder.mkdir(parents=True, exist_ok=True)
            for folder in (self.folder, self.eval_file.parent, self.contamination_dir, self.comparison_dir):
                remove_stale_temps(folder)
            state = self._state()
            steps = self.steps()
            report: dict[str, dict[str, Any]] = {}
            for i, step in enumerate(steps, 1):
                started = time.time()
                try:
                    key = fingerprint(step.inputs())
                    done = self._is_done(step, key, state["steps"].get(step.name, {}))
                    if done and not step.always:
                        print(f"[{i}/{len(steps)}] {step.name}: up to date, skipped", flush=True)
                        report[step.name] = {"status": "skipped"}
                        continue
                    print(f"[{i}/{len(steps)}] {step.name}: running", flush=True)
                    problem = step.problem(step.run())
                except UsageError as err:
                    problem = str(err)
                if problem:
                    print(f"[{i}/{len(steps)}] {step.name}: failed: {problem}", flush=True)
                    report[step.name] = {"status": "failed", "error": problem}
                    state["steps"].pop(step.name, None)
                else:
                    report[step.name] = {"status": "done", "seconds": round(time.time() - started, 1)}
                    state["steps"][step.name] = {"fingerprint": key, "outputs": [stamp(p) for p in step.outputs],
                                                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
                write_json(self.folder / STATE_FILE, state)
        return report

    def artifacts(self) -> list[tuple[str, Path]]:
        """What the release wrote, for the closing summary."""
        return [("eval results", self.eval_file), ("baselines", self.baselines_dir), ("training sample", self.sample),
                ("contamination", self.contamination_dir / REPORT_MD),
                ("comparison", self.comparison_dir / COMPARISON_MD),
                *([("gguf", self.gguf_file)] if self.gguf_file else []), ("model card", self.card)]


def release(run_dir: str | Path, settings, options: ReleaseOptions | None = None) -> dict[str, dict[str, Any]]:
    """Run every release step for ``run_dir`` (see the module docstring), print where each artifact is, and
    raise a one-line :class:`UsageError` naming the steps that failed, if any."""
    job = Release(run_dir, settings, options or ReleaseOptions())
    report = job.run()
    print(f"release of {job.run_dir}:")
    for what, path in job.artifacts():
        print(f"  {what:<16} {path if path.exists() else 'not written'}")
    failed = {name: r["error"] for name, r in report.items() if r["status"] == "failed"}
    if failed:
        first = next(iter(failed.items()))
        raise UsageError(f"release incomplete: {', '.join(failed)} failed (first: {first[0]}: {first[1]}); fix it and run "
                         "'edulm release' again: finished steps are skipped")
    return report

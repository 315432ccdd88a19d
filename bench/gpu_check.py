"""Everything edulm needs measured on a GPU, from one command in at most eight minutes.

    python3 bench/gpu_check.py --out "$OUT"                   # on one H100 / H200 (any CUDA GPU)
    python3 bench/gpu_check.py --out /tmp/gpu_dry --dry-run   # the same code at tiny sizes on a CPU

Runs from the repository root with nothing installed but torch and transformers (edulm is read from
this checkout; ``datasets``, ``gguf``, ``lm_eval`` and ``wandb`` are not needed), as on a GPU machine
lent for a few minutes with no network. After every part it rewrites its three files in ``--out``:
``gpu_check.md`` (the report it also prints), ``gpu_check.json`` (every figure, machine-readable) and
``gpu_check.log`` (what each part printed), so a check stopped at any point keeps what it measured.
Parts, in order, each with its own time limit (seconds):

- ``environment`` (15): device, memory, compute capability, driver, CUDA / cuDNN / torch / triton /
  transformers versions, the code revision;
- ``compile_warmup`` (in the background): compiles the throughput cases, one step each, in the
  throughput part's order, so that part finds their graphs in inductor's on-disk cache (a cached
  case compiles in seconds instead of about a minute). It runs beside the parts that time nothing
  and is stopped when the first part that times something starts; its seconds per compilation
  are reported;
- ``precision`` (30): a few optimizer steps in bf16 autocast against float32 from the same weights;
- ``gpu_tests`` (90): ``pytest -m gpu`` (the device checks CI never runs), each test's outcome;
- ``sdpa`` (20): which attention kernels (flash, cuDNN, memory-efficient, math, torch's own choice)
  run edulm's attention at the 135M shape in bf16, causal, with grouped K/V heads as edulm passes
  them, and their forward + backward times;
- ``throughput`` (200, plus what the parts before it left unused): edulm against transformers'
  ``LlamaForCausalLM`` with the same weights, batches, bf16 autocast, ``torch.compile`` and fused
  AdamW (``bench/train_throughput.py``'s code), at micro-batch 8 and 16, seq 2048, first without
  then with gradient checkpointing: tokens/s, MFU, peak allocated and reserved memory. A case
  starts only while the time left exceeds its projection (the longest case so far; for a case the
  warm-up did not compile, that plus the warm-up's longest compilation); the ones left out are
  listed with the command that measures them;
- ``fast_config`` (85): the throughput of ``configs/edu_135m_fast.yaml``'s own settings, when it exists.

The foreground limits add up to 440 s of the 480 s budget (process start-ups take the rest). Each part runs in
its own process group with a hard time limit, so a part that fails, runs out of memory, poisons the
CUDA context or overruns is recorded as such and the next part still runs; what a part had measured
before its limit is kept, and a case that fails (out of memory, a compiler error) is recorded with its
first line while the part goes on. Every part counts its time from one absolute deadline set by the
parent, so a slow start-up eats its own part's time, never the next one's. Stopping the check (SIGTERM,
SIGINT) stops the running parts and their children and still writes the report. ``--dry-run`` runs the same parts on the CPU at tiny sizes (compiling with
``aot_eager``), recording what needs CUDA as skipped, so the script cannot rot (``tests/test_bench.py``
runs it; ``--in-process`` there runs the parts one after another in one process, quicker to start).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
# bench's own modules, and edulm from this checkout: the check needs no `pip install` (a GPU machine lent for
# a few minutes has no network to install with).
for _folder in (BENCH.parent, BENCH):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import torch  # noqa: E402

import gpu_check_parts as parts  # noqa: E402
import gpu_check_throughput as throughput  # noqa: E402
from gpu_check_report import markdown_report  # noqa: E402

from edulm.data.workers import kill_on_parent_death  # noqa: E402
from edulm.base.errors import UsageError  # noqa: E402
from edulm.base.files import write_json, write_text  # noqa: E402

REPORT_FILES = ("gpu_check.md", "gpu_check.json", "gpu_check.log")
"""Everything the check writes in ``--out``: a folder that comes back from a lent machine holds few files."""


@dataclass(frozen=True)
class Part:
    """One measured part of the check."""

    name: str
    """Its key in the JSON and its ``--parts`` name."""
    seconds: int
    """Its time limit on a GPU (the sum stays under eight minutes with process start-ups)."""
    run: Callable[[parts.Context], dict]
    """``run(ctx) -> result``."""
    background: bool = False
    """Runs beside the parts that follow it until a part that times something starts (in its own process; with
    ``--in-process``, or when no part after it times anything, it runs in its turn and its time counts)."""
    times: bool = False
    """It measures speed: no background part may run beside it."""
    stretch: bool = False
    """It may also use the time the parts before it left unused (keeping the limits of the parts after it)."""


PARTS = [
    Part("environment", 15, parts.environment),
    Part("compile_warmup", 200, throughput.compile_warmup, background=True),
    Part("precision", 30, parts.precision),
    Part("gpu_tests", 90, parts.gpu_tests),
    Part("sdpa", 20, parts.sdpa_backends, times=True),
    Part("throughput", 200, throughput.throughput, times=True, stretch=True),
    Part("fast_config", 85, throughput.fast_config, times=True, stretch=True),
]
BUDGET_S = 480
"""The whole check: eight minutes."""
MIN_PART_S = 5
"""A part is not started with less time than this left of the whole budget."""
KILL_GRACE_S = 10
"""A part's process gets this long after its own deadline (or a request to stop) before it is killed."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.md, gpu_check.json and gpu_check.log "
                                                 "(rewritten after every part)")
    p.add_argument("--work", default=None, help="folder for the parts' own files (default: a new temporary folder)")
    p.add_argument("--revision", default=None,
                   help="the code revision to report (default: git's, where the checkout has its .git)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: checks the code paths, measures nothing")
    p.add_argument("--parts", default=",".join(part.name for part in PARTS), help="comma-separated parts to run (default: all)")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"the whole check's time limit (default {BUDGET_S})")
    p.add_argument("--config", default="configs/l20_135m_deepthin.yaml", help="the 135M run config measured")
    p.add_argument("--fast-config", default="configs/edu_135m_fast.yaml", help="a config whose own settings are timed, if it exists")
    p.add_argument("--gpu-tests", default=None,
                   help="space-separated test paths for pytest -m gpu (default: the test files that hold such tests)")
    p.add_argument("--in-process", action="store_true",
                   help="run the parts in this process (no hard time limits; quicker start for --dry-run)")
    p.add_argument("--run-part", default=None, help=argparse.SUPPRESS)  # a child process: run this one part
    p.add_argument("--part-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--part-deadline", type=float, default=None, help=argparse.SUPPRESS)  # time.time() to end by
    args = p.parse_args(argv)
    names = [n.strip() for n in args.parts.split(",") if n.strip()]
    unknown = [n for n in names if n not in {part.name for part in PARTS}]
    if unknown or not names:
        p.error(f"--parts: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(part.name for part in PARTS)}")
    args.parts = names
    args.config, args.fast_config = _from_repo(args.config), _from_repo(args.fast_config)
    args.gpu_tests = args.gpu_tests or " ".join(parts.gpu_test_files())
    return args


def _from_repo(path: str) -> str:
    """A relative config path that is not there from the current folder but is in the repository: the
    repository's (so the defaults, ``configs/...``, hold wherever the check is started from)."""
    in_repo = parts.REPO / path
    return str(in_repo) if not Path(path).exists() and in_repo.exists() else path


def _device(dry_run: bool) -> torch.device:
    if dry_run:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UsageError("no CUDA device here; run on a GPU machine, or pass --dry-run to check the script on the CPU")
    return torch.device("cuda")


def _context(args: argparse.Namespace, deadline: float, work: Path, partial: Callable[[dict], None]) -> parts.Context:
    """The part's context; ``deadline`` is a ``time.time()`` (one clock for the parent and its children)."""
    return parts.Context(
        device=_device(args.dry_run),
        sizes=parts.Sizes.dry_run() if args.dry_run else parts.Sizes(),
        deadline=time.monotonic() + (deadline - time.time()), out_dir=work, config=args.config,
        fast_config=args.fast_config, gpu_tests=args.gpu_tests.split(), partial=partial, revision=args.revision,
    )


def _outcome(result: dict) -> str:
    return "failed" if result.get("failed") else "skipped" if result.get("skipped") else "ok"


def run_part_here(part: Part, args: argparse.Namespace, deadline: float, work: Path,
                  part_file: Path | None = None) -> dict:
    """Run one part in this process until ``deadline`` (a ``time.time()``); ``{status, seconds, result, reason}``.
    With ``part_file``, partial results are written there as they come (so a parent that kills this process still
    has them)."""
    def partial(result: dict) -> None:
        if part_file is not None:
            write_json(part_file, {"status": "partial", "result": result}, f"the {part.name} part's results")

    start = time.monotonic()
    try:
        result = part.run(_context(args, deadline, work, partial))
        record = {"status": _outcome(result), "result": result, "reason": result.get("failed") or result.get("skipped")}
    except Exception as err:  # noqa: BLE001 - a failing part is recorded; the others still run
        record = {"status": "failed", "result": None, "reason": f"{type(err).__name__}: {parts.first_line(err)}"}
    record["seconds"] = round(time.monotonic() - start, 1)
    if part_file is not None:
        write_json(part_file, record, f"the {part.name} part's results")
    return record


@dataclass
class Started:
    """A part running in its own process."""

    part: Part
    process: subprocess.Popen
    part_file: Path
    seconds: float
    started: float


def start_part(part: Part, args: argparse.Namespace, seconds: float, work: Path) -> Started:
    """Start one part in a child process (its output goes to ``WORK/NAME.log``); it saves its results as it goes,
    and ends by ``seconds`` from now (less a margin to write them), however long its own start-up takes."""
    part_file = work / f"{part.name}.json"
    part_file.unlink(missing_ok=True)
    deadline = time.time() + seconds - 2
    command = [sys.executable, str(Path(__file__).resolve()), "--out", args.out, "--work", str(work),
               "--run-part", part.name, "--part-file", str(part_file), "--part-deadline", repr(deadline),
               "--config", args.config, "--fast-config", args.fast_config, "--gpu-tests", args.gpu_tests,
               *(["--revision", args.revision] if args.revision else []), *(["--dry-run"] if args.dry_run else [])]
    with (work / f"{part.name}.log").open("w") as log:
        # A process group of its own: stopping the part also stops what it started (compile workers, pytest); and
        # killed with its parent, even by SIGKILL (which the parent cannot catch to stop it), on Linux.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=kill_on_parent_death)
    return Started(part, process, part_file, seconds, time.monotonic())


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to the process group the part's process leads (gone already: nothing to do)."""
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def finish_part(run: Started, stop: bool = False) -> dict:
    """Wait for a started part (at most until ``KILL_GRACE_S`` after its deadline; at once with ``stop``: it is asked
    to end, then killed), and return its record; what it saved before being stopped is kept."""
    process = run.process
    if stop:
        _signal_group(process, signal.SIGTERM)
    wait = KILL_GRACE_S if stop else max(run.seconds - (time.monotonic() - run.started), 0) + KILL_GRACE_S
    try:
        process.wait(timeout=wait)
        killed = False
    except subprocess.TimeoutExpired:
        killed = True
    _signal_group(process, signal.SIGKILL)  # whatever it left running (its process group, by its id)
    process.wait()
    took = round(time.monotonic() - run.started, 1)
    saved = json.loads(run.part_file.read_text()) if run.part_file.is_file() else None
    if saved and saved["status"] != "partial":
        return {**saved, "seconds": took}
    result = saved and saved["result"]
    if stop:
        return {"status": "stopped", "seconds": took, "result": result,
                "reason": "stopped when a part that times something started; what it finished is kept"}
    if killed:
        return {"status": "timeout", "seconds": took, "result": result,
                "reason": f"killed after its {run.seconds:.0f} s limit; the results it saved before are kept"}
    log = run.part_file.with_suffix(".log")
    tail = (log.read_text(errors="replace").strip().splitlines() or [""])[-1][:300] if log.is_file() else ""
    return {"status": "failed", "seconds": took, "result": result,
            "reason": f"the part's process exited with code {process.returncode}: {tail}"}


class Stopped(Exception):
    """The check itself was asked to stop (SIGTERM, SIGINT): the running parts are stopped, the report written."""


def _stop_on_signal(signum: int, frame: Any) -> None:
    raise Stopped(signal.Signals(signum).name)


def write_report(out: Path, work: Path, report: dict, order: list[str]) -> str:
    """Write the three report files from what has been measured so far; returns the markdown."""
    text = markdown_report(report)
    write_json(out / "gpu_check.json", report, "the GPU check's figures")
    write_text(out / "gpu_check.md", text, "the GPU check's report")
    logs = [f"== {name}\n{(work / f'{name}.log').read_text(errors='replace')}" for name in order
            if (work / f"{name}.log").is_file()]
    write_text(out / "gpu_check.log", "\n".join(logs), "the GPU check's part logs")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check-"))
    work.mkdir(parents=True, exist_ok=True)
    by_name = {part.name: part for part in PARTS}
    if args.run_part:  # inside a child process
        run_part_here(by_name[args.run_part], args, args.part_deadline, work, Path(args.part_file))
        return 0
    _device(args.dry_run)  # no CUDA and no --dry-run: say so before anything runs
    started, start = datetime.now(timezone.utc), time.monotonic()
    records: dict[str, Any] = {}
    running: list[Started] = []  # parts in their own processes, to stop if the check itself is stopped

    def say(name: str) -> None:
        rec = records[name]
        print(f"gpu_check: {name}: {rec['status']} ({rec['seconds']} s)" + (f" - {rec['reason']}" if rec.get("reason") else ""),
              file=sys.stderr, flush=True)

    def report(stopped: str | None = None) -> dict:
        return {
            "started_at": started.isoformat(timespec="seconds"), "seconds": round(time.monotonic() - start, 1),
            "budget_s": args.budget_s, "dry_run": args.dry_run, "isolated": not args.in_process,
            "command": "python3 bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "revision": args.revision, "stopped": stopped,
            "background": [name for name in args.parts if by_name[name].background and not args.in_process],
            "parts": {name: records[name] for name in args.parts if name in records},  # in the order of the parts
            "not_reached": [name for name in args.parts if name not in records],
        }

    def finish(run: Started, stop: bool = False) -> None:
        records[run.part.name] = {**finish_part(run, stop=stop), "limit_s": round(run.seconds)}
        running.remove(run)
        say(run.part.name)
        write_report(out, work, report(), args.parts)

    previous = {signum: signal.signal(signum, _stop_on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    stopped = None
    try:
        for name in args.parts:
            part = by_name[name]
            for run in [r for r in running if r.part.background and part.times]:
                finish(run, stop=True)
            left = args.budget_s - (time.monotonic() - start)
            later = sum(by_name[n].seconds for n in args.parts[args.parts.index(name) + 1:] if not by_name[n].background)
            seconds = min(max(part.seconds, left - later) if part.stretch else part.seconds, left)
            if seconds < MIN_PART_S:
                records[name] = {"status": "skipped", "seconds": 0, "result": None, "limit_s": round(seconds),
                                 "reason": f"the check's {args.budget_s:.0f} s budget is spent"}
            elif args.in_process:
                records[name] = {**run_part_here(part, args, time.time() + seconds, work), "limit_s": round(seconds)}
            else:
                running.append(start_part(part, args, seconds, work))
                if part.background and any(by_name[n].times for n in args.parts[args.parts.index(name) + 1:]):
                    continue  # runs beside the next parts until a timed one starts
                finish(running[-1])
                continue
            say(name)
            write_report(out, work, report(), args.parts)
        for run in list(running):  # a background part that no timed part stopped
            finish(run)
    except Stopped as err:
        stopped = f"the check was stopped ({err}) after {time.monotonic() - start:.0f} s; what it measured is kept"
        print(f"gpu_check: {stopped}", file=sys.stderr, flush=True)
        for run in list(running):
            finish(run, stop=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    text = write_report(out, work, report(stopped), args.parts)
    print(text)
    return 1 if stopped else 0


if __name__ == "__main__":
    from bench_main import run_main  # beside this file (bench/ is not a package)

    run_main(main)

"""torchrun with two gloo processes gives the losses of one process with twice the accumulation,
and resumes exactly from its own checkpoint (DDP and FSDP2), on a WSD schedule (Muon's twin of these
tests, test_muon_distributed.py, runs the default cosine).

The loader deals window ``i`` of the shuffled order to rank ``i mod 2``, so one step of two processes
(micro-batch 2, no accumulation) sees the same four windows as one step of one process (micro-batch
2, accumulation 2): the losses agree up to float summation order.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_helpers import REPO, cli_env, run_cli, tiny_config, write_config

from edulm.checkpoint import folders as checkpoint
from edulm.base.layout import MODEL_FILE, rank_file
from edulm.base.metrics import read_metrics

pytestmark = pytest.mark.slow

# A WSD schedule whose decay takes the last 3 steps: the resume from step 3 continues into the decay.
COMMON = dict(max_steps=6, eval_interval=3, ckpt_interval=3, micro_batch_size=2, schedule="wsd", decay_fraction=0.5)


@pytest.fixture(scope="module")
def single_process_run(corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    cfg = write_config(tmp / "single.yaml", tiny_config(corpus, tmp / "run", grad_accum_steps=2, **COMMON))
    done = run_cli("train", str(cfg))
    assert done.returncode == 0, done.stderr
    return tmp / "run"


@pytest.fixture(scope="module")
def single_process_rows(single_process_run):
    return read_metrics(single_process_run / "training" / "training_metrics.csv")


def torchrun_train(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edulm", "train", *args],
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
    # torch's own deprecation notices are edulm's to avoid (DDP's broadcast_buffers in torch 2.13), not the user's to read.
    assert "FutureWarning" not in done.stderr and "DeprecationWarning" not in done.stderr, done.stderr
    return done


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_with_double_accumulation(corpus, tmp_path, single_process_rows, strategy):
    cfg = write_config(tmp_path / "pair.yaml", tiny_config(corpus, tmp_path / "pair", grad_accum_steps=1,
                                                           distributed=strategy, **COMMON))
    torchrun_train(str(cfg))
    one = single_process_rows
    two = read_metrics(tmp_path / "pair" / "training" / "training_metrics.csv")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    assert [r["tokens"] for r in one] == [r["tokens"] for r in two]
    for a, b in zip(one, two):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)
        if a["val_loss"] is not None:
            assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-5)
    last = tmp_path / "pair" / "checkpoints" / "step-0000006"
    assert checkpoint.verify(last) is None
    assert all((last / name).is_file() for name in (MODEL_FILE, rank_file(0), rank_file(1)))  # one file per process
    assert (tmp_path / "pair" / "final" / "config.json").is_file()

    # Resuming the pair from its step-3 checkpoint (the optimizer state is re-sharded under FSDP2)
    # repeats steps 4 to 6 exactly.
    resumed = write_config(tmp_path / "resumed.yaml", tiny_config(corpus, tmp_path / "resumed", grad_accum_steps=1,
                                                                  distributed=strategy, **COMMON))
    torchrun_train(str(resumed), "--resume", str(tmp_path / "pair" / "checkpoints" / "step-0000003"))
    again = read_metrics(tmp_path / "resumed" / "training" / "training_metrics.csv")
    assert [r["step"] for r in again] == [4, 5, 6]
    assert [r["loss"] for r in again] == [r["loss"] for r in two[3:]]
    assert [r["grad_norm"] for r in again] == [r["grad_norm"] for r in two[3:]]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_run_resumes_on_another_number_of_processes_as_if_uninterrupted(corpus, tmp_path, single_process_run,
                                                                         single_process_rows, strategy):
    """1 -> 2 and 2 -> 1 processes from step 3: the same 4 sequences per step regrouped (2 x 2 accumulation on one,
    2 x 1 on each of two), the data position carried over, so steps 4 to 6 are the uninterrupted run's."""
    single = single_process_run / "checkpoints" / "step-0000003"
    on_two = write_config(tmp_path / "on_two.yaml", tiny_config(corpus, tmp_path / "on_two", grad_accum_steps=1,
                                                                distributed=strategy, **COMMON))
    done = torchrun_train(str(on_two), "--resume", str(single))
    assert "resumed on 2 processes from a checkpoint of 1: 2 x 2 accumulation x 1 processes" in done.stderr
    grown = read_metrics(tmp_path / "on_two" / "training" / "training_metrics.csv")
    # The two-process run's own step-6 checkpoint, resumed from step 3 on one process.
    pair = tmp_path / "pair.yaml"
    write_config(pair, tiny_config(corpus, tmp_path / "pair", grad_accum_steps=1, distributed=strategy, **COMMON))
    torchrun_train(str(pair))
    on_one = write_config(tmp_path / "on_one.yaml", tiny_config(corpus, tmp_path / "on_one", grad_accum_steps=2, **COMMON))
    done = run_cli("train", str(on_one), "--resume", str(tmp_path / "pair" / "checkpoints" / "step-0000003"))
    assert done.returncode == 0, done.stderr
    assert "resumed on 1 processes from a checkpoint of 2" in done.stderr
    shrunk = read_metrics(tmp_path / "on_one" / "training" / "training_metrics.csv")
    for resumed in (grown, shrunk):
        assert [r["step"] for r in resumed] == [4, 5, 6]
        assert [r["tokens"] for r in resumed] == [r["tokens"] for r in single_process_rows[3:]]
        for a, b in zip(single_process_rows[3:], resumed):
            assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)
    # A global batch the processes cannot share evenly is refused before anything is written.
    on_three = write_config(tmp_path / "on_three.yaml", tiny_config(corpus, tmp_path / "on_three", **COMMON))
    refused = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=3", "-m", "edulm", "train",
         str(on_three), "--resume", str(single)], env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "3 processes cannot share evenly" in refused.stderr
    assert not (tmp_path / "on_three" / "training").exists()


def test_a_run_dir_in_use_is_refused_on_every_rank(corpus, tmp_path):
    """Rank 0 decides and tells the others: both processes end with the one line, none waits for the other."""
    from edulm.base.lock import folder_lock

    cfg = write_config(tmp_path / "pair.yaml", tiny_config(corpus, tmp_path / "pair", **COMMON))
    with folder_lock(tmp_path / "pair", "edulm train"):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "edulm", "train",
             str(cfg)], env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
        )
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if line.startswith("edulm: error:") and "is in use by edulm train" in line]
    assert len(refusals) == 2, done.stderr  # one per rank
    assert not (tmp_path / "pair").exists()


def test_ddp_is_wrapped_then_compiled_and_matches_one_eager_process(tmp_path):
    """train.compile=true under DDP: the DDP wrapper is what gets compiled (DDPOptimizer then splits the graph at
    gradient buckets), the losses equal one eager process with double accumulation, and names keep no prefix."""
    from ddp_compile_worker import MODEL, STEPS, batches

    from edulm.config import TrainConfig
    from edulm.model.llama import LlamaLM
    from edulm.train.distributed import DistEnv
    from edulm.train.optim import build_optimizer
    from edulm.train.step import train_step

    out = tmp_path / "ddp.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "train" / "ddp_compile_worker.py"), str(out)],
        env=cli_env(), cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    assert got["order"] == {"wrapper_is_ddp": True, "wrapper_compiled": True, "model_compiled_on_its_own": False}
    assert got["graphs"] >= 1

    torch.manual_seed(0)
    model = LlamaLM(MODEL)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-3))
    rank0, rank1 = batches(0, 2), batches(1, 2)
    data = iter([b for step in zip(rank0, rank1) for b in step])
    env = DistEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    expected = [train_step(model, optimizer, data, 2, 1.0, env, None).loss for _ in range(STEPS)]
    assert got["losses"] == pytest.approx(expected, abs=1e-5)
    assert got["names"] == sorted(model.state_dict())  # Hugging Face names: no "module." or "_orig_mod."

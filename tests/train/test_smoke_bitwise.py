"""The smoke recipe trains bit for bit as recorded (CPU, fp32, one thread): refactorings change nothing.

The fixture ``smoke_losses.json`` comes from ``tests/train/smoke_reference.py``; see there for what
the run is and when regenerating it is legitimate.
"""

from __future__ import annotations

import json

import pytest
from smoke_reference import FIXTURE, environment, run_smoke

pytestmark = pytest.mark.slow


def test_smoke_losses_are_bitwise_as_recorded(tmp_path):
    expected = json.loads(FIXTURE.read_text())
    shards = tmp_path / "shards"
    got = run_smoke(shards, tmp_path / "run", steps=expected["steps"])
    here, there = environment(shards), expected["environment"]
    for key in ("torch", "cpu_capability"):
        if here[key] != there[key]:
            pytest.skip(f"recorded with {key} {there[key]}, this machine has {here[key]}: float kernels differ")
    assert here["shards_sha256"] == there["shards_sha256"], (
        "the prepared smoke data differ from the recorded run's; if that is intended, regenerate the fixture "
        "with tests/train/smoke_reference.py"
    )
    for key in ("loss", "grad_norm", "lr", "val_loss"):
        assert got[key] == expected[key], key  # == on floats read back from their repr: bitwise
    assert got["weights_sha256"] == expected["weights_sha256"]

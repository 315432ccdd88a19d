"""Run provenance: versions, code revision, the cost formula."""

import torch

from edulm.train.provenance import code_revision, cost_estimate, versions


def test_cost_formula():
    c = cost_estimate(7200, 1, 2.5)
    assert c["gpu_hours"] == 2 and c["cost"] == 5.0 and "2.5" in c["formula"]
    assert cost_estimate(7200, 0, None)["cost"] is None


def test_versions_and_revision():
    assert versions()["torch"] == torch.__version__
    revision = code_revision()
    assert revision is None or len(revision.removesuffix("-dirty")) == 40

"""Fixtures for trainer tests: a small synthetic corpus, a tiny BPE tokenizer and prepared shards.

Built once per test session; each test gets its own run dir.
"""

from __future__ import annotations

import json

import pytest
import torch
from train_helpers import synthetic_documents, tiny_config

from edulm.config import config_from_dict


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, str]:
    """``{"tokenizer": folder, "shards": folder, "source": jsonl}``: prepared once per session."""
    from edulm.data.prepare import prepare
    from edulm.tokenizer.loading import save_tokenizer
    from edulm.tokenizer.bpe import train_bpe

    root = tmp_path_factory.mktemp("corpus")
    docs = synthetic_documents(600)
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok_dir = root / "tokenizer"
    save_tokenizer(train_bpe(docs, vocab_size=300), tok_dir)
    corpus = {"tokenizer": str(tok_dir), "shards": str(root / "shards"), "source": str(source)}
    prepare(config_from_dict(tiny_config(corpus, root / "unused")))  # the data settings every tiny config shares
    return corpus




@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread, and a busy machine makes spinning worker threads slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter):
    """The fault battery's table and counts, when it ran (see fault_battery.py)."""
    from fault_battery import print_report

    print_report(terminalreporter)

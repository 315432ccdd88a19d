"""Fixtures for trainer tests: a small synthetic corpus, a tiny BPE tokenizer and prepared shards.

Built once per test session; each test gets its own run dir.
"""

from __future__ import annotations

import json

import pytest
from train_helpers import synthetic_documents

from edulm.config import config_from_dict


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, str]:
    """``{"tokenizer": folder, "shards": folder, "source": jsonl}``: prepared once per session."""
    from edulm.data.prepare import prepare
    from edulm.tokenizer import save_tokenizer, train_bpe

    root = tmp_path_factory.mktemp("corpus")
    docs = synthetic_documents(600)
    source = root / "docs.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok_dir = root / "tokenizer"
    save_tokenizer(train_bpe(docs, vocab_size=300), tok_dir)
    cfg = config_from_dict({
        "tokenizer": {"name": str(tok_dir)},
        "data": {"source": str(source), "shards_dir": str(root / "shards"), "val_tokens": 4000, "workers": 1},
    })
    prepare(cfg)
    return {"tokenizer": str(tok_dir), "shards": str(root / "shards"), "source": str(source)}



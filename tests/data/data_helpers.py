"""Helpers shared by the data tests (fixture data builders)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from edulm.data.hub_dataset import HubSource, RetryPolicy


def paragraphs_from_stdlib() -> list[str]:
    """Real English paragraphs: the docstrings of a few standard-library packages."""
    import email
    import json as json_module

    from edulm.data.builtin_sample import harvest

    roots = [("json", Path(json_module.__file__).parent), ("email", Path(email.__file__).parent)]
    return [p for doc in harvest(roots) for p in doc.split("\n\n") if len(p) > 40]


FINEWEB_COLUMNS = ("text", "id", "dump", "url", "date", "file_path", "language", "language_score", "token_count", "score", "int_score")


def fineweb_rows(paragraphs: list[str], n: int, seed: int = 0) -> list[dict]:
    """``n`` FineWeb-Edu-schema records; every 9th text is empty or whitespace-only."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        if i % 9 == 4:
            text = "" if i % 2 else "  \n\t "
        else:
            text = "\n\n".join(rng.sample(paragraphs, rng.randint(1, 4)))
        rows.append({
            "text": text, "id": f"<urn:uuid:{i:08d}>", "dump": "CC-MAIN-2024-10", "url": f"https://example.org/{i}",
            "date": "2024-02-20T00:00:00Z", "file_path": "s3://commoncrawl/x.warc.gz", "language": "en",
            "language_score": 0.95, "token_count": len(text.split()), "score": 3.1, "int_score": 3,
        })
    return rows


def write_parquet(path: Path, rows: list[dict], row_group_size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({c: [r[c] for r in rows] for c in FINEWEB_COLUMNS})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def local_stream_opener(files):
    import datasets

    return lambda: datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=True)


class FaultyDataset:
    """Wraps a streaming dataset; iteration raises one of ``errors`` at random points (``rate`` per record)."""

    def __init__(self, dataset, rng: random.Random | None, rate: float, errors):
        self.dataset, self.rng, self.rate, self.errors = dataset, rng, rate, errors

    @property
    def column_names(self):
        return self.dataset.column_names

    def select_columns(self, columns):
        return type(self)(self.dataset.select_columns(columns), self.rng, self.rate, self.errors)

    def state_dict(self):
        return self.dataset.state_dict()

    def load_state_dict(self, state):
        self.dataset.load_state_dict(state)

    def __iter__(self):
        it = iter(self.dataset)
        try:
            for record in it:
                if self.rng.random() < self.rate:
                    raise self.rng.choice(self.errors)()
                yield record
        finally:
            it.close()


def _network_errors():
    import httpx2
    import requests
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("GET", "https://huggingface.co/datasets/x/resolve/main/data.parquet")
    return [
        lambda: httpx2.ReadTimeout("The read operation timed out", request=request),
        lambda: requests.exceptions.ConnectionError("Connection reset by peer"),
        lambda: ConnectionResetError(104, "Connection reset by peer"),
        lambda: HfHubHTTPError("502 Bad Gateway", response=httpx2.Response(502, request=request)),
    ]


def faulty_source(files, seed=0, rate=0.005, open_failures=0.3, max_retries=30):
    """A hub source over local parquet that fails at random while opening and while reading."""
    rng = random.Random(seed)
    errors = _network_errors()
    opener = local_stream_opener(files)

    def open_faulty():
        if rng.random() < open_failures:
            raise rng.choice(errors)()
        return FaultyDataset(opener(), rng, rate, errors)

    return HubSource("hf://test/faulty", open_faulty, retry=RetryPolicy(max_retries=max_retries, sleep=lambda s: None))


WORDS = tuple(f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ri", "so", "ta", "ve", "zu") for b in ("", "n", "s", "ra", "to", "ki", "mo", "le"))
"""80 made-up words: a corpus and tokenizer that are the same in every environment."""


def wordlevel_tokenizer(path: Path) -> Path:
    """A word-level tokenizer.json over :data:`WORDS` (``<|endoftext|>`` is id 0): no training, no drift."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0, "[UNK]": 1} | {w: i + 2 for i, w in enumerate(WORDS)} | {".": len(WORDS) + 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def synthetic_corpus(folder: Path, n: int = 900, seed: int = 11) -> Path:
    """``n`` documents of made-up words (1 in 13 empty or blank) as two parquet files and one jsonl file."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        if i % 13 == 6:
            texts.append("" if i % 2 else " \n ")
        else:
            texts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 160))) + " .")
    rows = [{c: 0 for c in FINEWEB_COLUMNS} | {"text": t, "id": str(i), "dump": "", "url": "", "date": "",
                                                "file_path": "", "language": "en"} for i, t in enumerate(texts)]
    third = n // 3
    write_parquet(folder / "a.parquet", rows[:third], row_group_size=50)
    write_parquet(folder / "b.parquet", rows[third : 2 * third], row_group_size=64)
    write_jsonl(folder / "c.jsonl", [{"text": t} for t in texts[2 * third :]])
    return folder

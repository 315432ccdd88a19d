"""Hub streams: transient faults are retried and the stream resumes at the exact next record.

The dataset is a real ``datasets`` streaming dataset over local parquet files (the same code path as
the hub, minus the network); the fault injector raises the exception types the network stack raises.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest

from data_helpers import FaultyDataset, faulty_source, fineweb_rows, local_stream_opener, write_parquet
from edulm.data.hub_dataset import SNAPSHOT_EVERY, HubSource, RetryPolicy, SourceError
from edulm.base.errors import UsageError


@pytest.fixture
def parquet_files(tmp_path, paragraphs):
    rows = fineweb_rows(paragraphs, 2600)
    files = [write_parquet(tmp_path / f"part-{i}.parquet", rows[i * 1000 : (i + 1) * 1000], row_group_size=300) for i in range(3)]
    return files, [r["text"] for r in rows]


def test_random_transient_faults_lose_skip_or_repeat_nothing(parquet_files, caplog):
    files, texts = parquet_files
    with faulty_source(files, seed=1).open() as stream:
        got = list(stream)
    assert got == texts
    # Faults did happen and were reported (as warnings of the edulm logger).
    assert any(r.levelname == "WARNING" and "retrying in" in r.getMessage() for r in caplog.records)


def test_resume_token_reopens_at_the_exact_record(parquet_files):
    files, texts = parquet_files
    clean = HubSource("hf://test/clean", local_stream_opener(files))
    with clean.open() as stream:
        for _ in range(3 * SNAPSHOT_EVERY + 37):
            next(stream)
        index, token = stream.index, stream.resume_token()
    assert token["index"] == 3 * SNAPSHOT_EVERY  # a snapshot, then the records read since
    with faulty_source(files, seed=2).open(index, token) as stream:
        assert list(stream) == texts[index:]


def test_permanent_error_while_opening_is_a_usage_error():
    def missing():
        raise FileNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")

    with pytest.raises(UsageError, match="cannot open the dataset .*doesn't exist"):
        next(HubSource("hf://nobody/nothing", missing).open())


def test_permanent_error_mid_stream_stops_with_the_position(parquet_files):
    files, _ = parquet_files
    opener = local_stream_opener(files)

    class Corrupt(FaultyDataset):
        def __iter__(self):
            for i, record in enumerate(self.dataset):
                if i == 10:
                    raise ValueError("Parquet magic bytes not found in footer")
                yield record

    source = HubSource("hf://test/corrupt", lambda: Corrupt(opener(), None, 0, []))
    stream = source.open()
    assert len([next(stream) for _ in range(10)]) == 10
    with pytest.raises(SourceError, match="failed at record 10 .*magic bytes"):
        next(stream)


def test_gives_up_after_the_retry_budget(parquet_files):
    files, _ = parquet_files
    source = faulty_source(files, rate=1.0, open_failures=0, max_retries=3)
    with pytest.raises(SourceError, match="gave up at record 0 after 3 retries"):
        next(source.open())


def test_backoff_grows_and_stays_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, rng=random.Random(0))
    delays = [policy.delay(attempt) for attempt in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.0 and 4 <= delays[3] <= 8
    assert all(15 <= d <= 30 for d in delays[6:])


def test_closing_a_stream_midway_exits_cleanly(parquet_files):
    """A datasets stream abandoned mid-way aborts the interpreter at exit unless closed."""
    files, _ = parquet_files
    script = textwrap.dedent(f"""
        import datasets
        from edulm.data.hub_dataset import HubSource
        files = {[str(f) for f in files]!r}
        source = HubSource("hf://t/t", lambda: datasets.load_dataset("parquet", data_files=files, split="train", streaming=True))
        stream = source.open()
        for _ in range(50):
            next(stream)
        stream.close()
        print("done")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "terminate called" not in result.stderr and "Traceback" not in result.stderr

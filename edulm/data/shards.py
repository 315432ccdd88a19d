"""The token shard file format and the ``manifest.json`` that lists a prepared directory's shards.

A shard is a 128-byte little-endian header followed by ``n_tokens`` uint16 token ids::

    offset  size  field
    0       8     magic b"EDULMTOK"
    8       4     format version (1)
    12      4     header size in bytes (128)
    16      8     number of tokens
    24      4     CRC-32 of the token bytes
    28      4     reserved (0)
    32      64    tokenizer fingerprint, ASCII, zero-padded
    96      32    reserved (0)

Documents are concatenated, each followed by one end-of-document token, so a shard is a slice of one
long token stream (a document may continue into the next shard). A shard is written under a temporary
name and renamed when complete, so a file with a shard's name is always whole.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edulm.data.manifest import REBUILD_MANIFEST, check_manifest
from edulm.base.errors import UsageError
from edulm.base.files import atomic_path

MAGIC = b"EDULMTOK"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQII64s32x")
HEADER_BYTES = HEADER.size  # 128
TOKEN_DTYPE = np.dtype("<u2")
MAX_VOCAB = 1 << 16
"""uint16 holds ids 0..65535."""
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class ShardHeader:
    """What a shard's header says about it."""

    n_tokens: int
    crc32: int
    fingerprint: str


def shard_name(split: str, index: int) -> str:
    """File name of shard ``index`` of ``split``: ``train-000003.bin``."""
    return f"{split}-{index:06d}.bin"


REPREPARE = "delete its shards dir (data.shards_dir, the whole folder) and run 'edulm prepare' again"
"""What to do about a damaged shard: `edulm prepare` trusts a folder whose manifest says it is finished
("already prepared; nothing to do"), so only a folder prepared afresh brings the shard back."""


def write_shard(path: Path, tokens: np.ndarray, fingerprint: str) -> dict[str, Any]:
    """Write ``tokens`` as a complete shard at ``path``; returns its manifest entry (file, tokens, crc32)."""
    data = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    encoded = fingerprint.encode("ascii")
    if len(encoded) > 64:
        raise ValueError(f"tokenizer fingerprint longer than 64 characters: {fingerprint!r}")
    crc = zlib.crc32(memoryview(data).cast("B"))
    with atomic_path(path, f"token shard {path.name}", fsync=True) as tmp, open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, FORMAT_VERSION, HEADER_BYTES, data.size, crc, 0, encoded))
        f.write(memoryview(data).cast("B"))
    return {"file": path.name, "tokens": int(data.size), "crc32": crc}


def read_header(path: Path) -> ShardHeader:
    """Parse and check a shard's header and size (UsageError naming the file when it is damaged)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
        size = path.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"{path}: shard file is missing; {REPREPARE}") from None
    if len(raw) < HEADER_BYTES:
        raise UsageError(f"{path}: truncated shard ({size} bytes, shorter than its header); {REPREPARE}")
    magic, version, header_bytes, n_tokens, crc, _, fp = HEADER.unpack(raw)
    if magic != MAGIC:
        raise UsageError(f"{path}: not an edulm token shard (bad magic); {REPREPARE}")
    if version != FORMAT_VERSION or header_bytes != HEADER_BYTES:
        raise UsageError(f"{path}: shard format version {version} is not supported (expected {FORMAT_VERSION}); {REPREPARE}")
    expected = HEADER_BYTES + n_tokens * TOKEN_DTYPE.itemsize
    if size != expected:
        raise UsageError(f"{path}: truncated or corrupt shard ({size} bytes, header says {expected}); {REPREPARE}")
    return ShardHeader(n_tokens=n_tokens, crc32=crc, fingerprint=fp.rstrip(b"\0").decode("ascii", "replace"))


def open_shard(path: Path, fingerprint: str | None = None) -> np.ndarray:
    """Memory-map a shard's tokens after checking its header (and tokenizer fingerprint when given)."""
    header = read_header(path)
    if fingerprint is not None and header.fingerprint != fingerprint:
        raise UsageError(
            f"{path}: shard was tokenized with a different tokenizer (fingerprint {header.fingerprint[:12]}..., "
            f"run uses {fingerprint[:12]}...); prepare the data with the run's tokenizer"
        )
    if header.n_tokens == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(header.n_tokens,))


def verify_shard(path: Path, crc32: int | None = None) -> ShardHeader:
    """Read a whole shard and check its CRC-32 against the header (and ``crc32`` when given)."""
    header = read_header(path)
    crc = 0
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    if crc != header.crc32 or (crc32 is not None and crc != crc32):
        raise UsageError(f"{path}: corrupt shard (checksum mismatch); {REPREPARE}")
    return header


def read_manifest(shards_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared directory (UsageError when missing, unreadable, unfinished or of the wrong shape)."""
    path = Path(shards_dir) / MANIFEST
    if not path.is_file():
        hint = " (an 'edulm prepare' there did not finish; run it again)" if (Path(shards_dir) / ".prepare-state.json").exists() else ""
        raise UsageError(f"{path}: no manifest{hint}; run 'edulm prepare CONFIG' to tokenize data.source into data.shards_dir")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise UsageError(f"{path}: not a valid edulm manifest (not JSON); {REBUILD_MANIFEST}") from None
    return check_manifest(manifest, path)


def check_fingerprint(manifest: dict[str, Any], folder: Path, fingerprint: str | None) -> None:
    """Refuse shards whose manifest records another tokenizer than the one with ``fingerprint`` (None: no check)."""
    recorded = manifest["tokenizer"]["fingerprint"]
    if fingerprint is not None and recorded != fingerprint:
        raise UsageError(
            f"{folder / MANIFEST}: shards were tokenized with tokenizer '{manifest['tokenizer']['name']}' "
            f"(fingerprint {recorded[:12]}...), not the run's tokenizer ({fingerprint[:12]}...); "
            "prepare the data with the run's tokenizer or change tokenizer.name"
        )


def open_shards(folder: Path, entries: list[dict[str, Any]], fingerprint: str) -> list[np.ndarray]:
    """Memory-mapped token arrays of the manifest ``entries``, each checked against its entry and ``fingerprint``."""
    arrays = []
    for entry in entries:
        path = folder / entry["file"]
        array = open_shard(path, fingerprint)
        header = read_header(path)
        if header.n_tokens != entry["tokens"] or header.crc32 != entry["crc32"]:
            raise UsageError(f"{path}: shard does not match {MANIFEST} (tokens or checksum differ); {REPREPARE}")
        arrays.append(array)
    return arrays


def open_split(shards_dir: str | Path, split: str = "train", fingerprint: str | None = None) -> list[np.ndarray]:
    """Memory-mapped token arrays of one split's shards, in order, each checked against the manifest.

    In a mixture's folder a split is every source's shards, source after source.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    folder = Path(shards_dir)
    manifest = read_manifest(folder)
    check_fingerprint(manifest, folder, fingerprint)
    return open_shards(folder, manifest["splits"][split]["shards"], manifest["tokenizer"]["fingerprint"])

"""Read the history of an offline wandb run (``run-*.wandb``) without the wandb service.

The file is a LevelDB-style log of protobuf ``Record`` messages after a 7-byte W&B header:
32 KiB blocks of chunks, each ``crc32c (4) | length (2, little-endian) | type (1) | data``,
type 1 a whole record, 2/3/4 its first/middle/last part.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7  # b":W&B" + magic (2) + version (1)
CHUNK_HEADER = 7


def records(path: str | Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb run file (no :W&B header)")
    pos, parts = HEADER, []
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zeroed tail of a file still being written
            break
        parts.append(chunk)
        if kind in (1, 4):  # a whole record, or the last part of one
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def _items(items) -> dict[str, Any]:
    """History items as a dict; nested keys (a wandb.Image's fields) as nested dicts."""
    out: dict[str, Any] = {}
    for item in items:
        value = json.loads(item.value_json)
        if item.key:
            out[item.key] = value
            continue
        *parents, last = item.nested_key
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def history(path: str | Path) -> list[dict[str, Any]]:
    """Every ``wandb.log`` row of the run as a dict (keys as logged, values decoded from JSON)."""
    return [_items(r.history.item) for r in records(path) if r.WhichOneof("record_type") == "history"]


def find_run_file(run_dir: str | Path) -> Path | None:
    """The newest ``wandb/*run-*/run-*.wandb`` under a run directory, or None."""
    files = sorted(Path(run_dir).glob("wandb/*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None

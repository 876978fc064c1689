"""Read the records of an offline W&B run file (`run-*.wandb`), which is what `wandb sync` uploads.

The file is a 7-byte W&B header followed by a LevelDB-style log: 32 KiB blocks of chunks, each with a
7-byte header (crc32c, length, type: 1 full, 2 first, 3 middle, 4 last). Each record is a protobuf
`wandb.proto.wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def summary_and_config(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Last value of each summary key and each top-level config key (JSON strings), as the server would see them."""
    summary: dict[str, str] = {}
    config: dict[str, str] = {}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
        elif kind == "config":
            config.update({item.key: item.value_json for item in record.config.update})
        elif kind == "run":
            config.update({item.key: item.value_json for item in record.run.config.update})
    return summary, config


def history_keys(path: Path) -> set[str]:
    """Every metric name logged to the run's history."""
    return {item.key or "/".join(item.nested_key) for record in read_records(path)
            if record.WhichOneof("record_type") == "history" for item in record.history.item}


def history_series(path: Path, *keys: str) -> list[tuple[float, ...]]:
    """The logged rows (in order) that carry every one of `keys`, as tuples of their values."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            if all(k in row for k in keys):
                rows.append(tuple(float(row[k]) for k in keys))
    return rows

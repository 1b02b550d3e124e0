"""Read the history rows of a W&B offline run file (``run-*.wandb``) without network or the W&B service.

The file is W&B's LevelDB-style log: a 7-byte file header, then 32 KiB blocks of records, each with a 7-byte header
(crc32, length, type) and a chunk of a serialized ``wandb_internal_pb2.Record``; records can span blocks.
"""

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = BLOCK - offset % BLOCK
        if room < 7:
            offset += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        if kind == FULL:
            pending = b""
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def history(path: Path) -> list[dict]:
    rows = []
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows

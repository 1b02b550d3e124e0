"""JSONL files for the command tests: rows in, rows out."""

import json


def write_jsonl(path, rows):
    """Write rows (dicts, or raw lines as strings) one per line; returns the path."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]

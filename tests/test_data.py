"""One loader for local files, save_to_disk directories and the shipped problems; the shipped golds all parse."""

import json

import pytest
from datasets import Dataset, DatasetDict
from math_verify import parse

from reasonflux_rl.data import load_smoke_math, load_table

ROWS = [{"problem": f"{i}+{i}?", "solution": str(2 * i)} for i in range(5)]


@pytest.mark.parametrize("form", ["jsonl", "parquet", "disk", "disk_dict"])
def test_load_table_reads_every_local_form(tmp_path, form):
    dataset = Dataset.from_list(ROWS)
    if form == "jsonl":
        path = tmp_path / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif form == "parquet":
        path = tmp_path / "rows.parquet"
        dataset.to_parquet(str(path))
    elif form == "disk":
        path = tmp_path / "disk"
        dataset.save_to_disk(str(path))
    else:
        path = tmp_path / "disk_dict"
        DatasetDict({"train": dataset, "test": Dataset.from_list(ROWS[:2])}).save_to_disk(str(path))
    loaded = load_table(str(path), split="test" if form == "disk_dict" else "train")
    assert loaded.to_list() == (ROWS[:2] if form == "disk_dict" else ROWS)


def test_shipped_problems_have_parseable_distinct_golds():
    rows = load_smoke_math()
    assert len(rows) >= 64
    assert len({row["problem"] for row in rows}) == len(rows)
    for row in rows:
        assert parse(row["solution"]), row

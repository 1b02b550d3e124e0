"""Data: the problems shipped with the package (``smoke_math.jsonl``, 96 small math problems with reference answers;
``lab_train.jsonl`` and ``lab_test.jsonl``, the lab's problems, and ``lab_r1_*.jsonl``, the longer ones of the R1-style
lab, written by ``reasonflux_rl.lab.task.dataset_rows``) and one loader for every place a command reads a table
from."""

from __future__ import annotations

import json
from pathlib import Path

SMOKE_MATH_PATH = Path(__file__).with_name("smoke_math.jsonl")
BUILTIN = "builtin:smoke_math"
LAB = "builtin:lab"
# Each builtin lab data set, by the stem of its files: the lab's chains, and the R1-style lab's longer ones.
LABS = {LAB: "lab", "builtin:lab_r1": "lab_r1"}
LAB_SPLITS = ("train", "test")


def lab_path(split: str, name: str = LAB) -> Path:
    """Where the problems of ``split`` (``train`` or ``test``) of a builtin lab data set are shipped."""
    if split not in LAB_SPLITS:
        raise ValueError(f"{name} has the splits {list(LAB_SPLITS)}, not {split!r}")
    return Path(__file__).with_name(f"{LABS[name]}_{split}.jsonl")


def load_smoke_math() -> list[dict[str, str]]:
    """The shipped smoke-test problems as ``{"problem", "solution"}`` rows.

    Example:
    ```python
    >>> from reasonflux_rl.data import load_smoke_math
    >>> rows = load_smoke_math()
    >>> len(rows) >= 64, sorted(rows[0])
    (True, ['problem', 'solution'])

    ```
    """
    return [json.loads(line) for line in SMOKE_MATH_PATH.read_text().splitlines() if line]


def load_table(name: str, config: str | None = None, split: str = "train"):
    """A ``datasets.Dataset`` from a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a ``save_to_disk``
    directory (a ``DatasetDict`` gives its ``split``), ``builtin:smoke_math``, ``builtin:lab`` or
    ``builtin:lab_r1`` (its ``train`` or ``test`` split), or a hub dataset name.

    Example:
    ```python
    >>> from reasonflux_rl.data import load_table
    >>> load_table("builtin:smoke_math").num_rows, load_table("builtin:lab", split="test").num_rows
    (96, 46)

    ```
    """
    from datasets import Dataset, load_dataset, load_from_disk

    if name == BUILTIN:
        if split != "train":
            raise ValueError(f"{BUILTIN} has a train split only, not {split!r}")
        return Dataset.from_list(load_smoke_math())
    if name in LABS:
        return load_dataset("json", data_files=str(lab_path(split, name)), split="train")
    path = Path(name)
    if path.is_file():
        suffix = path.suffix.lstrip(".")
        return load_dataset({"jsonl": "json"}.get(suffix, suffix), data_files=str(path), split="train")
    if path.is_dir() and any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json")):
        dataset = load_from_disk(str(path))
        return dataset[split] if hasattr(dataset, "keys") else dataset
    return load_dataset(name, name=config, split=split)

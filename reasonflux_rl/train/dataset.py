"""The training data of ``reasonflux-rl train``: the dataset keys, the ``prompt`` column built from the problems, the
held-out split; and the same rows written to disk for ``trl grpo``, which reads a ``prompt`` column as it is.

``python -m reasonflux_rl.train.dataset --out recipes/smoke/trl_grpo_data`` writes the data of
``recipes/smoke/trl_grpo.yaml`` from the shipped problems (``builtin:smoke_math``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ScriptArguments

from reasonflux_rl.data import BUILTIN, load_table
from reasonflux_rl.errors import ConfigError
from reasonflux_rl.prm.engine.format import DEFAULT_SYSTEM_PROMPT
from reasonflux_rl.rewards.config import RewardArguments


@dataclass
class TrainScriptArguments(ScriptArguments):
    """Dataset keys of ``reasonflux-rl train``, on top of TRL's ``ScriptArguments``.

    ``dataset_name`` is a hub name, a directory written by ``save_to_disk``, a local ``.jsonl``/``.json``/``.parquet``
    file, ``builtin:smoke_math`` or ``builtin:lab`` (the problems shipped with the package; the lab's held-out ones are
    its ``test`` split). Rows need the problem column; a ``prompt`` column is built from it (a user turn with
    ``instruction`` appended) unless the dataset already has one.

    Example:
    ```python
    >>> from reasonflux_rl.train.dataset import TrainScriptArguments
    >>> TrainScriptArguments().dataset_name, TrainScriptArguments().eval_holdout_size
    ('builtin:smoke_math', 0)

    ```
    """

    dataset_name: str | None = field(default=BUILTIN, metadata={"help": "Dataset to train on."})
    eval_holdout_size: int = field(
        default=0,
        metadata={"help": "Rows held out of the training split (seeded) for evaluation during training; 0: evaluate "
                  "on the dataset's dataset_test_split when eval_strategy asks for evaluation."},
    )
    instruction: str = field(
        default=DEFAULT_SYSTEM_PROMPT, metadata={"help": "Appended to each problem when building the prompt."}
    )


def load_train_dataset(script_args: TrainScriptArguments, reward_args: RewardArguments, split: str | None = None):
    """Load a split (default: the training split, ``dataset_train_split``) and make sure it has a ``prompt`` and the
    reward's gold column.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.train.dataset import TrainScriptArguments, load_train_dataset
    >>> rows = load_train_dataset(TrainScriptArguments(), RewardArguments(prm_beta=0))
    >>> rows.num_rows, rows[0]["prompt"][0]["role"], rows[0]["solution"]
    (96, 'user', '138')
    >>> lab = TrainScriptArguments(dataset_name="builtin:lab", instruction="")
    >>> load_train_dataset(lab, RewardArguments(prm_beta=0), split="test")[0]["prompt"][0]["content"]
    'Start at 2. Apply F then G, in turn, 5 times.'

    ```
    """
    name = script_args.dataset_name
    if not name:
        raise ConfigError("dataset_name is required")
    dataset = load_table(name, config=script_args.dataset_config, split=split or script_args.dataset_train_split)

    missing = [c for c in (reward_args.solution_column,) if c not in dataset.column_names]
    if "prompt" not in dataset.column_names and reward_args.problem_column not in dataset.column_names:
        missing.append(reward_args.problem_column)
    if missing:
        raise ConfigError(
            f"dataset {name!r} lacks column(s) {missing}; it has {dataset.column_names}. Set solution_column / "
            "problem_column to the right names."
        )
    suffix = f"\n{script_args.instruction}" if script_args.instruction else ""
    if "prompt" not in dataset.column_names:
        dataset = dataset.map(
            lambda row: {"prompt": [{"role": "user", "content": row[reward_args.problem_column] + suffix}]}
        )
    elif isinstance(dataset[0]["prompt"], str):
        # A plain-string prompt would reach the policy without its chat template (and without the R1-distill
        # "<think>" pre-fill); make it a user turn, keeping the bare problem for the PRM.
        add_problem = reward_args.problem_column not in dataset.column_names

        def to_user_turn(row: dict) -> dict:
            out = {"prompt": [{"role": "user", "content": row["prompt"] + suffix}]}
            if add_problem:
                out[reward_args.problem_column] = row["prompt"]
            return out

        dataset = dataset.map(to_user_turn)
    return dataset


def split_holdout(dataset, size: int, seed: int):
    """``(train, eval)`` with ``size`` rows held out for evaluation (``eval`` is None for size 0).

    Example:
    ```python
    >>> from datasets import Dataset
    >>> from reasonflux_rl.train.dataset import split_holdout
    >>> train, held_out = split_holdout(Dataset.from_list([{"x": i} for i in range(10)]), 2, seed=0)
    >>> train.num_rows, held_out.num_rows
    (8, 2)

    ```
    """
    if size <= 0:
        return dataset, None
    if size >= len(dataset):
        raise ConfigError(f"eval_holdout_size={size} leaves no training rows (the dataset has {len(dataset)})")
    parts = dataset.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]


def prompt_rows(dataset_name: str = BUILTIN, instruction: str = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """The rows ``reasonflux-rl train`` trains on for ``dataset_name``: ``prompt`` (a user turn), ``problem``,
    ``solution``.

    Example:
    ```python
    >>> from reasonflux_rl.train.dataset import prompt_rows
    >>> row = prompt_rows()[0]
    >>> sorted(row), row["problem"]
    (['problem', 'prompt', 'solution'], 'Compute $26 + 16 \\\\times 7$.')

    ```
    """
    script_args = TrainScriptArguments(dataset_name=dataset_name, instruction=instruction)
    # prm_beta 0: the rows depend on the column names alone, not on any PRM.
    return load_train_dataset(script_args, RewardArguments(prm_beta=0.0)).to_list()


def write_prompt_dataset(out: str | Path, dataset_name: str = BUILTIN,
                         instruction: str = DEFAULT_SYSTEM_PROMPT) -> Path:
    """Write [`prompt_rows`] as ``out/train.jsonl``, a folder ``datasets.load_dataset`` (and so ``trl grpo``'s
    ``dataset_name``) reads as a ``train`` split. Deterministic: the same input writes the same bytes.

    Example:
    ```python
    >>> import tempfile
    >>> from datasets import load_dataset
    >>> from reasonflux_rl.train.dataset import write_prompt_dataset
    >>> folder = write_prompt_dataset(tempfile.mkdtemp())
    >>> load_dataset(str(folder))["train"].column_names
    ['problem', 'solution', 'prompt']

    ```
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in prompt_rows(dataset_name, instruction)]
    (folder / "train.jsonl").write_text("".join(lines))
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reasonflux_rl.train.dataset --out DIR [--dataset_name NAME]``: [`write_prompt_dataset`].

    Example:
    ```python
    >>> import tempfile
    >>> from reasonflux_rl.train.dataset import main
    >>> main(["--out", tempfile.mkdtemp()])  # doctest: +ELLIPSIS
    wrote 96 rows to .../train.jsonl

    ```
    """
    parser = argparse.ArgumentParser(prog="python -m reasonflux_rl.train.dataset",
                                     description=write_prompt_dataset.__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write train.jsonl into")
    parser.add_argument("--dataset_name", default=BUILTIN, help=f"problems to build the prompts from ({BUILTIN})")
    parser.add_argument("--instruction", default=DEFAULT_SYSTEM_PROMPT, help="appended to each problem")
    args = parser.parse_args(argv)
    file = write_prompt_dataset(args.out, args.dataset_name, args.instruction) / "train.jsonl"
    print(f"wrote {len(file.read_text().splitlines())} rows to {file}")


if __name__ == "__main__":
    main()

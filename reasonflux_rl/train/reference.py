"""The key reference, generated from the dataclasses so it cannot drift from them: ``reasonflux-rl train --help``
and ``docs/configuration.md``.

``python -m reasonflux_rl.train.reference --write`` rewrites ``docs/configuration.md``; ``--check`` exits 1 when the
page differs from what the dataclasses give (``tests/test_docs.py`` runs the same comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from reasonflux_rl.rewards.config import ENV_PREFIX, RewardArguments
from reasonflux_rl.train.dataset import TrainScriptArguments

WIDTH = 118
PAGE = Path("docs/configuration.md")
USAGE = ("usage: reasonflux-rl train --config FILE.yaml [--dry-run] [--accelerate_config FILE | --num_processes N] "
         "[--KEY VALUE ...]")
# The options that are ``reasonflux-rl train``'s own, not a dataclass field (launch.py reads them).
LAUNCH_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--config FILE.yaml", "the recipe: a TRL YAML file of the keys below and TRL's, with an optional env: section"),
    ("--dry-run", "check the launch before any weights load and print the effective settings as JSON"),
    ("--accelerate_config FILE", "with --dry-run: the launch's accelerate config (its num_processes, DeepSpeed file)"),
    ("--num_processes N", "with --dry-run: the number of processes of the launch"),
    ("-h, --help", "this help; --help-all adds TRL's GRPOConfig and ModelConfig flags"),
)


class Key(NamedTuple):
    """One configuration key: its name, value type, default as a YAML value (None: unset) and help.

    Example:
    ```python
    >>> from reasonflux_rl.train.reference import Key
    >>> Key("prm_beta", "float", "0.75", "Weight of the PRM score.").default
    '0.75'

    ```
    """

    name: str
    type: str
    default: str | None
    help: str


def yaml_value(value: Any) -> str | None:
    """A default as it is written in a recipe (``None`` when unset).

    Example:
    ```python
    >>> from reasonflux_rl.train.reference import yaml_value
    >>> yaml_value(True), yaml_value(0.75), yaml_value("mean"), yaml_value(None)
    ('true', '0.75', 'mean', None)

    ```
    """
    if value is None or value is dataclasses.MISSING:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _type_name(annotation: Any) -> str:
    # Fields are annotated with strings (``from __future__ import annotations``) until HfArgumentParser resolves
    # them in place to types; both must read the same.
    if isinstance(annotation, str):
        text = annotation
    elif type(annotation) is type:
        text = annotation.__name__
    else:
        text = str(annotation)
    text = text.replace("typing.", "").replace(" | None", "").replace("None | ", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional["):-1]
    return text


def keys(config: type) -> list[Key]:
    """The keys of a dataclass, in declaration order.

    Example:
    ```python
    >>> from reasonflux_rl.rewards.config import RewardArguments
    >>> from reasonflux_rl.train.reference import keys
    >>> keys(RewardArguments)[0][:3]
    ('prm_beta', 'float', '0.75')

    ```
    """
    rows = []
    for f in dataclasses.fields(config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append(Key(f.name, _type_name(f.type), yaml_value(default), " ".join(f.metadata.get("help", "").split())))
    return rows


def own_dataset_keys() -> list[Key]:
    """The dataset keys ``reasonflux-rl train`` adds to TRL's ``ScriptArguments`` (and changes the default of).

    Example:
    ```python
    >>> from reasonflux_rl.train.reference import own_dataset_keys
    >>> [key.name for key in own_dataset_keys()]
    ['dataset_name', 'eval_holdout_size', 'instruction']

    ```
    """
    from trl import ScriptArguments

    inherited = {f.name: f.default for f in dataclasses.fields(ScriptArguments)}
    return [key for key in keys(TrainScriptArguments)
            if key.name not in inherited or yaml_value(inherited[key.name]) != key.default]


def _columns(cells: list[str], width: int = WIDTH) -> list[str]:
    # Two columns, filled down, so that the keys read in declaration order.
    half = (len(cells) + 1) // 2
    left, right = cells[:half], cells[half:]
    gap = max(len(cell) for cell in left) + 3
    return [f"  {a.ljust(gap)}{b}".rstrip() for a, b in zip(left, right + [""])]


def _short(value: str | None, limit: int = 22) -> str:
    if value is None:
        return "(unset)"
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _detail(key: Key, indent: int = 6) -> list[str]:
    default = "unset" if key.default is None else _short(key.default, 60)
    metavar = f"{key.type[5:-1].upper()} ..." if key.type.startswith("list[") else key.type.upper()
    head = f"  --{key.name} {metavar}  (default: {default})"
    body = textwrap.wrap(key.help, WIDTH - indent, initial_indent=" " * indent, subsequent_indent=" " * indent)
    return [head, *body]


def train_help(trl_flags: str | None = None) -> str:
    """The text of ``reasonflux-rl train --help``: the launch options and every reward key with its default on the
    first screen, then each key's help. ``trl_flags`` (``--help-all``: the argparse help of TRL's GRPOConfig and
    ModelConfig flags) comes last, in place of the line that points to it.

    Example:
    ```python
    >>> from reasonflux_rl.train.reference import train_help
    >>> text = train_help()
    >>> text.splitlines()[0].split(" --config")[0]
    'usage: reasonflux-rl train'
    >>> text.splitlines()[-1]
    "TRL's GRPOConfig and ModelConfig flags (hundreds): reasonflux-rl train --help-all"
    >>> train_help(trl_flags="  --learning_rate LEARNING_RATE").splitlines()[-1]
    '  --learning_rate LEARNING_RATE'

    ```
    """
    reward, dataset = keys(RewardArguments), own_dataset_keys()
    option_width = max(len(name) for name, _ in LAUNCH_OPTIONS) + 2
    lines = [
        USAGE,
        "       (python -m reasonflux_rl.train takes the same arguments)",
        "",
        "GRPO in TRL with the reward r = (1 - prm_beta) * r_outcome + prm_beta * normalise(r_prm). The YAML holds",
        "the keys below and TRL's GRPOConfig / ModelConfig keys; --KEY VALUE overrides it. Every key:",
        "docs/configuration.md.",
        "",
        "launch options:",
        *(f"  {name.ljust(option_width)}{text}" for name, text in LAUNCH_OPTIONS),
        "",
        "reward keys (RewardArguments) and their defaults:",
        *_columns([f"--{key.name} {_short(key.default)}" for key in reward]),
        "",
        "dataset keys (beside TRL's ScriptArguments):",
        *_columns([f"--{key.name} {_short(key.default)}" for key in dataset]),
        "",
        "reward keys:",
        *(line for key in reward for line in _detail(key)),
        "",
        "dataset keys:",
        *(line for key in dataset for line in _detail(key)),
        "",
    ]
    if trl_flags is None:
        lines.append("TRL's GRPOConfig and ModelConfig flags (hundreds): reasonflux-rl train --help-all")
    else:
        lines += ["all flags (TRL's GRPOConfig, ModelConfig and ScriptArguments, and the keys above):", "", trl_flags]
    return "\n".join(lines).rstrip("\n") + "\n"


def _table(rows: list[Key]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in rows:
        default = "unset" if key.default is None else f"`{cell(key.default)}`"
        out.append(f"| `{key.name}` | {key.type} | {default} | {cell(key.help)} |")
    return out


def _para(text: str) -> list[str]:
    return textwrap.wrap(text, WIDTH, break_long_words=False, break_on_hyphens=False)


_INTRO = (
    "`reasonflux-rl train --config FILE.yaml` reads the YAML with TRL's `TrlParser`: it holds keys of TRL's "
    "`GRPOConfig` and `ModelConfig`, the dataset keys and the reward keys below; `--key value` on the command line "
    "overrides the file, and an `env:` section sets environment variables. A bad reward key (a `prm_beta` outside "
    "[0, 1], an unknown normalisation or aggregation, a missing PRM path, a PRM directory whose weights hold no step "
    "head) stops the command with a one-line error naming the key and the allowed values, before any model or "
    "dataset is loaded. `reasonflux-rl train --help` lists the same keys; `--help-all` adds TRL's."
)
_TOPICS = (
    "What the keys do, by topic: [the reward and the mix](reward.md), [the outcome reward](outcome.md), "
    "[PRM checkpoints](prm-checkpoints.md), [where the PRM runs](placement.md), [cluster runs](cluster.md)."
)
_ENV = (
    "`trl grpo` imports reward functions by dotted path (`reasonflux_rl.rewards.mixed_reward`, "
    "`reasonflux_rl.rewards.outcome_reward`, `reasonflux_rl.rewards.format_reward`) and gives them no configuration "
    f"of its own. They read every reward key above from an environment variable named `{ENV_PREFIX}` + the key "
    f"upper-cased (`{ENV_PREFIX}PRM_NAME_OR_PATH`, `{ENV_PREFIX}PRM_BETA`, ...), which the YAML's `env:` section can "
    f"set; a list key such as `{ENV_PREFIX}PRM_SERVER_URLS` takes comma- or space-separated values. The outcome "
    "reward reads only the outcome keys, `thinking_prefilled` and `solution_column`."
)


def _page_intro() -> list[str]:
    return [
        "<!-- Generated by `python -m reasonflux_rl.train.reference --write` from the dataclasses' fields and help "
        "(reasonflux_rl/rewards/config.py, reasonflux_rl/train/dataset.py, reasonflux_rl/train/reference.py); edit "
        "those, not this page. tests/test_docs.py fails when they disagree. -->",
        "",
        "# Configuration reference",
        "",
        *_para(_INTRO),
        "",
        *_para(_TOPICS),
        "",
    ]


def _page_env() -> list[str]:
    return [
        "## Environment variables (`trl grpo`)",
        "",
        *_para(_ENV),
        "",
        "| variable | meaning |",
        "|---|---|",
        f"| `{ENV_PREFIX}<KEY>` | the reward key `<key>` (e.g. `{ENV_PREFIX}PRM_BETA` is `prm_beta`) |",
        f"| `{ENV_PREFIX}NUM_GENERATIONS` | the group size (`num_generations`) that the `group_*` normalisations "
        "need under `trl grpo`; `reasonflux-rl train` passes it itself |",
        "",
        "`recipes/smoke/trl_grpo.yaml` is a runnable example.",
        "",
    ]


def configuration_page() -> str:
    """``docs/configuration.md``: every key of ``reasonflux-rl train`` that is not TRL's, generated from the
    dataclasses' fields and help.

    Example:
    ```python
    >>> from reasonflux_rl.train.reference import configuration_page
    >>> page = configuration_page()
    >>> page.splitlines()[2], "| `prm_beta` | float | `0.75` |" in page
    ('# Configuration reference', True)

    ```
    """
    lines = [
        *_page_intro(),
        "## Launch options of `reasonflux-rl train`",
        "",
        "| option | meaning |",
        "|---|---|",
        *(f"| `{name}` | {text} |" for name, text in LAUNCH_OPTIONS),
        "",
        "## Reward keys (`RewardArguments`)",
        "",
        *_table(keys(RewardArguments)),
        "",
        "## Dataset keys (`reasonflux-rl train`)",
        "",
        *_para("TRL's `ScriptArguments` keys (`dataset_config`, `dataset_train_split`, ...) apply too; these are added "
               "or have another default:"),
        "",
        *_table(own_dataset_keys()),
        "",
        *_page_env(),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m reasonflux_rl.train.reference [--write | --check] [--page PATH]``: print, rewrite or check
    ``docs/configuration.md`` (the check exits 1 when the page is stale).

    Example:
    ```python
    >>> import tempfile, pathlib
    >>> from reasonflux_rl.train.reference import main
    >>> page = pathlib.Path(tempfile.mkdtemp()) / "configuration.md"
    >>> main(["--write", "--page", str(page)])
    >>> main(["--check", "--page", str(page)])  # up to date: returns

    ```
    """
    parser = argparse.ArgumentParser(prog="python -m reasonflux_rl.train.reference", description=__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="rewrite the page")
    action.add_argument("--check", action="store_true", help="exit 1 when the page differs")
    parser.add_argument("--page", default=str(PAGE), help=f"the page (default: {PAGE})")
    args = parser.parse_args(argv)
    page, text = Path(args.page), configuration_page()
    if args.write:
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(text)
    elif args.check:
        if not page.is_file() or page.read_text() != text:
            print(f"{page} is stale: run python -m reasonflux_rl.train.reference --write", file=sys.stderr)
            raise SystemExit(1)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()

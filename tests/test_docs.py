"""The documentation: every page is reachable from the README, every relative link and anchor resolves, and the
configuration reference is what the dataclasses generate."""

import dataclasses
import re
from pathlib import Path

import pytest

from reasonflux_rl.rewards.config import ENV_PREFIX, RewardArguments
from reasonflux_rl.train.reference import configuration_page
from reasonflux_rl.train.reference import main as reference_main

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [REPO / "README.md", REPO / "benchmarks/README.md", *DOCS]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (not - or _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [target for target in LINK.findall(text) if not re.match(r"\w+://|mailto:", target)]


def test_the_docs_pages_exist():
    names = {page.name for page in DOCS}
    assert {"reward.md", "configuration.md", "outcome.md", "prm-checkpoints.md", "placement.md", "cluster.md",
            "offline-tools.md", "benchmarks.md", "architecture.md"} <= names


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / target.split("#")[0]).resolve() for target in relative_links(REPO / "README.md")}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_and_their_anchors_resolve(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.name}")
    assert broken == []


def test_the_configuration_page_is_generated_from_the_dataclasses():
    page = (REPO / "docs/configuration.md").read_text()
    assert page == configuration_page(), "stale: run python -m reasonflux_rl.train.reference --write"
    for field in dataclasses.fields(RewardArguments):
        assert f"| `{field.name}` |" in page, field.name


def test_the_reference_check_fails_on_a_stale_page(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    page.write_text(configuration_page().replace("`prm_beta`", "`old_beta`"))
    with pytest.raises(SystemExit) as stale:
        reference_main(["--check", "--page", str(page)])
    assert stale.value.code == 1 and "stale" in capsys.readouterr().err
    reference_main(["--write", "--page", str(page)])
    reference_main(["--check", "--page", str(page)])


def test_the_trl_grpo_variables_are_documented():
    import inspect

    from reasonflux_rl.rewards import build

    # The variable the dotted-path reward reads for the group size, as the code spells it.
    assert '"NUM_GENERATIONS"' in inspect.getsource(build)
    for page in ("docs/configuration.md", "docs/reward.md", "README.md"):
        assert f"{ENV_PREFIX}NUM_GENERATIONS" in (REPO / page).read_text(), page


def test_the_benchmarks_readme_points_to_the_docs():
    text = (REPO / "benchmarks/README.md").read_text()
    assert "../docs/benchmarks.md" in text and "## The GPU kit" in text


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_dotted_name_the_docs_give_exists(page):
    import importlib

    missing = []
    for name in sorted(set(re.findall(r"reasonflux_rl(?:\.\w+)+", page.read_text()))):
        parts = name.split(".")
        # The longest importable prefix is the module; the rest are attributes of it.
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        for attribute in parts[cut:]:
            obj = getattr(obj, attribute, None)
        if obj is None:
            missing.append(name)
    assert missing == []

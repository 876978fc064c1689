"""Every table of the default in the docs is what its command prints from a committed results file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "experiments" / "default"


def script(name: str, directory: Path = DEFAULT) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, directory / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def results(name: str) -> dict:
    return json.loads((DEFAULT / name).read_text())


def test_readme_first_table_is_the_committed_cold_run() -> None:
    """README's console table (`tables.py console`) equals the committed results.json of a cold default run, number
    for number, and that run measured draft use and the mean gain."""
    committed = results("results_default_seed0.json")
    block = script("tables").console(committed)
    readme = (ROOT / "README.md").read_text()
    assert f"```\n{block}\n```" in readme
    assert "draft use pit" in block and "gain pit [95% CI]" in block


@pytest.mark.parametrize("doc", ["README.md", "experiments/README.md"])
def test_per_seed_table_is_the_committed_file(doc: str) -> None:
    table = script("tables").seeds_table(results("results_seeds.json"))
    assert len(results("results_seeds.json")["seeds"]) >= 3
    assert table in (ROOT / doc).read_text()


def test_counterfactual_drafts_table_is_the_committed_file() -> None:
    """The six-draft table of issue #29 in experiments/README.md, from its committed file (M_PIT's models are not)."""
    drafts = script("drafts")
    committed = results("results_drafts.json")
    assert drafts.table(committed["runs"]) in (ROOT / "experiments" / "README.md").read_text()


def test_probes_table_is_the_committed_file() -> None:
    """Issue #29's SFT-only val probes in experiments/README.md, from their committed file."""
    table = script("tables").probes_table(results("results_probes.json"))
    assert table in (ROOT / "experiments" / "README.md").read_text()


def test_flake_table_counts_the_committed_runs() -> None:
    """#32's table in experiments/flake/README.md is what `table.py` counts from the committed results.txt."""
    flake = script("table", ROOT / "experiments" / "flake")
    table = flake.table(flake.runs(flake.RESULTS.read_text()))
    assert table.count("\n") >= 3 and table in (ROOT / "experiments" / "flake" / "README.md").read_text()

"""Defects an MIR researcher met using mess as a Python library in a notebook (notes/api_session31.md): the docs'
examples as written, edge input to the public functions, and the probing flow."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

from mess.search.vectors import VectorSet
from mess.store import FeatureStore, Run

SRC = Path(__file__).resolve().parents[1] / "src"
DOCS = Path(__file__).resolve().parents[1] / "docs"


# ---------------------------------------------------------------- the docs' examples


def _doctest_modules() -> list[str]:
    """Every module of the package whose docstrings hold a ``>>>`` example."""
    return sorted(
        ".".join(p.relative_to(SRC).with_suffix("").parts)
        for p in SRC.joinpath("mess").rglob("*.py")
        if ">>>" in p.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("module", _doctest_modules())
def test_the_docstring_examples_run_as_written(module: str) -> None:
    """Docstring ``Examples:`` (those not marked ``doctest: +SKIP``) print what they claim."""
    found = doctest.DocTestFinder().find(importlib.import_module(module))
    assert any(t.examples for t in found), module
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in found:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0, module


def _python_blocks(doc: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)


def test_the_docs_python_imports_name_what_the_package_has() -> None:
    """docs/search.md imported ``resolve_query`` from ``mess.search.query``, which has not held it since queries
    moved to ``mess.query``: the first line of the search API example failed with ImportError."""
    imports = [
        line
        for doc in sorted(DOCS.glob("*.md"))
        for block in _python_blocks(doc)
        for line in block.splitlines()
        if line.startswith(("from mess", "import mess"))
    ]
    assert len(imports) >= 15, imports
    for line in imports:
        exec(line.split("#")[0], {})  # noqa: S102 -- the docs' own import lines


def test_the_search_api_example_runs_as_written(msd: tuple[FeatureStore, Run, VectorSet]) -> None:
    """docs/search.md's example used a ``store`` it never opened; it now opens one, and runs on a real store."""
    fs, _, _ = msd
    (block,) = _python_blocks(DOCS / "search.md")
    code = block.replace('FeatureStore(".mess")', f"FeatureStore({str(fs.root)!r}, readonly=True)")
    code = code.replace('"song.flac"', "1")
    printed: list[tuple] = []
    exec(code, {"print": lambda *a: printed.append(a)})  # noqa: S102 -- the doc's example
    assert len(printed) == 10
    assert all(isinstance(p[0], str) and -1.0 <= p[1] <= 1.0 for p in printed)

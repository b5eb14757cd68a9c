"""Every chapter is a jupytext pair in sync, and runs end to end through papermill with its CI parameters,
with no figure whose labels overlap.

nbval (``pytest --nbval-lax notebooks/``, part of the default ``pytest`` run) re-executes the stored
notebooks and compares the outputs of the cells marked ``# NBVAL_CHECK_OUTPUT``.
"""
from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest

from recsize.book import wide_output_lines

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CHAPTERS = sorted(p.stem for p in NOTEBOOKS.glob("ch*.py"))
REAL_CACHE = os.environ.get("RECSIZE_DATA")  # read before any fixture points it at a temporary folder


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 3, CHAPTERS


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_pair_in_sync(chapter):
    text = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    ipynb_path = NOTEBOOKS / f"{chapter}.ipynb"
    assert ipynb_path.exists(), f"{ipynb_path.name} is missing: run `recsize book run --in-place --chapters {chapter}`"
    stored = nbformat.read(ipynb_path, as_version=4)
    assert _cells(text) == _cells(stored), (
        f"{chapter}.py and {chapter}.ipynb differ: run `recsize book run --in-place --chapters {chapter}`")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_structure(chapter):
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters' (papermill)"
    assert "full run" in params[0].source, "the parameters cell documents the full-run values"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "What you will learn" in text and "## Summary" in text and "## Exercises" in text
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in nb.cells), "at least one checked deterministic cell"


@pytest.mark.notebook
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_runs_with_papermill(chapter, tmp_path, monkeypatch):
    import papermill as pm
    if REAL_CACHE is None:
        monkeypatch.delenv("RECSIZE_DATA", raising=False)
    else:
        monkeypatch.setenv("RECSIZE_DATA", REAL_CACHE)
    # Every figure the chapter draws is checked for labels that overlap (recsize.plots, the preface): the
    # kernel reads this matplotlibrc, whose figure hook makes savefig raise OverlappingTexts.
    rc = tmp_path / "matplotlibrc"
    rc.write_text("figure.hooks: recsize.plots:fail_on_overlapping_texts\n")
    monkeypatch.setenv("MATPLOTLIBRC", str(rc))
    out_nb = tmp_path / f"{chapter}.ipynb"
    figures = tmp_path / "results"
    # only the parameters the chapter declares: an unknown name is refused (recsize.params.check_parameters)
    declared = set(pm.inspect_notebook(str(NOTEBOOKS / f"{chapter}.ipynb")))
    parameters = {k: v for k, v in {"out_dir": str(figures), "seed": 0}.items() if k in declared}
    pm.execute_notebook(str(NOTEBOOKS / f"{chapter}.ipynb"), str(out_nb), cwd=str(NOTEBOOKS),
                        parameters=parameters, progress_bar=False, kernel_name="python3")
    nb = nbformat.read(out_nb, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    wide = wide_output_lines(nb)
    assert not wide, f"{len(wide)} output lines of {chapter} exceed 88 columns, e.g. {wide[0]!r}"
    assert list(figures.glob("*.png")), "the chapter saves at least one figure"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_code_fits_the_books_column(chapter):
    """The book's code cells show about 88 columns: wider chapter code is cut off on the page."""
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    wide = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
            if len(line) > 88]
    assert not wide, f"{len(wide)} code lines of {chapter} exceed 88 columns, e.g. {wide[0]!r}"


def _wide_markdown_lines(source: str, width: int = 88) -> list[str]:
    """Lines of a Markdown cell that the book shows unwrapped: fenced code blocks and table rows."""
    wide, fence = [], False
    for line in source.splitlines():
        if line.strip().startswith("```"):
            fence = not fence
            continue
        if (fence or line.lstrip().startswith("|")) and len(line) > width:
            wide.append(line)
    return wide


def test_wide_markdown_lines_are_found():
    text = "prose " * 30 + "\n```bash\n" + "x" * 89 + "\n```\n| " + "a" * 87 + " |\n" + "y" * 100
    assert _wide_markdown_lines(text) == ["x" * 89, "| " + "a" * 87 + " |"]
    assert _wide_markdown_lines("```\n" + "x" * 88 + "\n```\n| short |") == []


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_markdown_fits_the_books_column(chapter):
    """Code blocks and tables in Markdown cells are not wrapped on the page: wider lines are cut off (code
    blocks) or scroll sideways (tables), so they follow the 88-column rule of code cells. Prose wraps."""
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    wide = [line for c in nb.cells if c.cell_type == "markdown" for line in _wide_markdown_lines(c.source)]
    assert not wide, f"{len(wide)} Markdown code or table lines of {chapter} exceed 88 columns, e.g. {wide[0]!r}"

"""`recsize book run`: chapters found, full-run parameters valid, execution summarised."""
from __future__ import annotations

import json

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from recsize.book import NOTEBOOKS, chapters, full_parameters, run_book
from recsize.cli import main


def _parameters(chapter: str) -> set[str]:
    nb = jupytext.read(NOTEBOOKS / f"{chapter}.py")
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = set()
    for line in cell.source.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def test_full_parameters_are_chapter_parameters():
    full = full_parameters()
    assert set(full) <= set(chapters()), "full_run.json names a chapter that does not exist"
    for chapter, params in full.items():
        unknown = set(params) - _parameters(chapter)
        assert not unknown, f"{chapter}: full_run.json sets {unknown}, which are not in its parameters cell"


def _fake_notebooks(folder, fail: bool = False):
    folder.mkdir()
    for name, body in (("ch01_a", "print('a')"), ("ch02_b", "raise ValueError('boom')" if fail else "print('b')")):
        params = new_code_cell("out_dir = 'results'\nsize = 1", metadata={"tags": ["parameters"]})
        work = new_code_cell("from pathlib import Path\nPath(out_dir).mkdir(parents=True, exist_ok=True)\n"
                             "(Path(out_dir) / 'size.txt').write_text(str(size))\n" + body)
        nb = new_notebook(cells=[params, work], metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                        "display_name": "Python 3"}})
        nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / "full_run.json").write_text(json.dumps({"ch01_a": {"size": 7}}))
    return folder


@pytest.mark.notebook
def test_run_book_executes_and_summarises(tmp_path):
    nbs = _fake_notebooks(tmp_path / "nbs")
    rows = run_book(tmp_path / "out", full=True, notebooks=nbs)
    assert [r["chapter"] for r in rows] == ["ch01_a", "ch02_b"]
    assert all(r["status"] == "ok" for r in rows)
    assert (tmp_path / "out" / "ch01_a" / "size.txt").read_text() == "7"   # full-run parameter applied
    assert (tmp_path / "out" / "ch02_b" / "size.txt").read_text() == "1"   # CI default kept
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["full"] is True and len(summary["chapters"]) == 2


@pytest.mark.notebook
def test_run_book_reports_a_failing_chapter(tmp_path):
    nbs = _fake_notebooks(tmp_path / "nbs", fail=True)
    rows = run_book(tmp_path / "out", notebooks=nbs, only=["ch02_b"])
    assert len(rows) == 1 and rows[0]["status"].startswith("error: ValueError")


def test_unknown_chapter_is_a_clear_error(capsys):
    assert main(["book", "run", "--chapters", "ch99_nothing"]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter" in err and "ch01_why_size" in err

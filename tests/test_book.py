"""`recsize book run`: chapters found, full-run parameters valid, execution summarised; `recsize book build`:
the table of contents matches the chapters, the jupyter-book command line, a tiny book built end to end."""
from __future__ import annotations

import json

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from recsize.book import (BOOK, NOTEBOOKS, PUBLISHED, BookBuildFailed, build_book, build_command, chapters,
                          full_parameters, published_state, run_book, stage_book, toc_chapters,
                          wide_output_lines)
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


@pytest.mark.notebook
def test_publish_stores_the_full_run_with_its_provenance_and_tracks_the_code(tmp_path):
    nbs, published = _fake_notebooks(tmp_path / "nbs"), tmp_path / "published"
    rows = run_book(tmp_path / "out", full=True, only=["ch01_a"], notebooks=nbs, publish=True,
                    published=published)
    assert rows[0]["status"] == "ok" and sorted(p.name for p in published.iterdir()) == ["ch01_a.ipynb"]
    run = nbformat.read(published / "ch01_a.ipynb", as_version=4)
    meta = run.metadata["recsize_run"]
    assert meta["parameters"] == {"size": 7} and "cores" in meta["machine"] and meta["seconds"] > 0
    assert len(meta["date"]) == 10 and "papermill" not in run.metadata
    assert published_state("ch01_a", nbs, published) == "current"
    assert published_state("ch02_b", nbs, published) == "missing"
    chapter = nbformat.read(nbs / "ch01_a.ipynb", as_version=4)
    chapter.cells[1].source += "\nprint('changed')"
    nbformat.write(chapter, nbs / "ch01_a.ipynb")
    assert published_state("ch01_a", nbs, published) == "stale"


def test_publish_needs_full(tmp_path, capsys):
    with pytest.raises(ValueError, match="add --full"):
        run_book(tmp_path / "out", publish=True)
    assert main(["book", "run", "--publish", "--chapters", "ch00_preface", "--out", str(tmp_path)]) == 2
    assert "add --full" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())      # refused before any work


def _chapter(path, output: str, title: str = "# Title", extra_code: str = "", meta=None):
    code = new_code_cell("print(6 * 7)" + extra_code)
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    cells = [nbformat.v4.new_markdown_cell(f"{title}\n\nIntro text."), code]
    nbformat.write(new_notebook(cells=cells, metadata=meta or {}), path)


def test_stage_book_shows_the_current_published_run_and_says_which_run_a_page_shows(tmp_path):
    nbs, published = tmp_path / "nbs", tmp_path / "published"
    nbs.mkdir(), published.mkdir()
    for name in ("ch01_a", "ch02_b", "ch03_c"):
        _chapter(nbs / f"{name}.ipynb", "CI output\n", title=f"# Chapter {name}")
    run = {"recsize_run": {"parameters": {"epochs": 300}, "machine": "AMD EPYC, 2 cores", "seconds": 1500.0,
                           "date": "2026-12-02"}}
    _chapter(published / "ch01_a.ipynb", "full output\n", title="# Old title", meta=run)  # current
    _chapter(published / "ch02_b.ipynb", "old output\n", extra_code="  # old", meta=run)   # stale
    stage = stage_book(tmp_path / "stage", ["ch01_a", "ch02_b", "ch03_c"], nbs, published)
    pages = {n: nbformat.read(stage / f"{n}.ipynb", as_version=4) for n in ("ch01_a", "ch02_b", "ch03_c")}
    first = pages["ch01_a"].cells[0].source
    assert first.startswith("# Chapter ch01_a\n\n```{note}\n**Published run.**")
    assert first.endswith("Intro text.")
    assert "`epochs = 300`" in first and "AMD EPYC, 2 cores, 2026-12-02, in 25 min" in first
    assert pages["ch01_a"].cells[1].outputs[0].text == "full output\n"     # the full run's outputs
    assert "Old title" not in first                                     # with the chapter's text as it is
    assert "out of date" in pages["ch02_b"].cells[0].source and "**CI run.**" in pages["ch02_b"].cells[0].source
    assert pages["ch02_b"].cells[1].outputs[0].text == "CI output\n"
    assert "not been published yet" in pages["ch03_c"].cells[0].source
    assert pages["ch03_c"].cells[0].source.startswith("# Chapter ch03_c\n\n```{note}")
    assert nbformat.read(nbs / "ch01_a.ipynb", as_version=4).cells[0].source == "# Chapter ch01_a\n\nIntro text."


def test_a_page_shows_the_values_the_published_run_used():
    from recsize.book import with_published_outputs
    params = new_code_cell("epochs = 3", metadata={"tags": ["parameters"]})
    work = new_code_cell("print(epochs)")
    chapter = new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\nNew prose."), params, work])
    ran_work = new_code_cell("print(epochs)")
    ran_work.outputs = [nbformat.v4.new_output("stream", name="stdout", text="300\n")]
    injected = new_code_cell("# Parameters\nepochs = 300\nout_dir = \"/home/publisher/results/ch\"",
                             metadata={"tags": ["injected-parameters"]})
    run = new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\nOld prose."), params, injected, ran_work],
                       metadata={"recsize_run": {"parameters": {"epochs": 300}}})
    page = with_published_outputs(chapter, run)
    assert [c.source for c in page.cells] == ["# T\n\nNew prose.", "epochs = 3", "# Parameters\nepochs = 300",
                                              "print(epochs)"]
    assert page.cells[3].outputs[0].text == "300\n" and not chapter.cells[2].get("outputs")


def test_every_published_run_matches_its_chapter():
    """A chapter edited after its full run was published must be re-run (or the book would show outputs
    of code that no longer exists); the book then falls back to the CI run."""
    stale = [p.stem for p in sorted(PUBLISHED.glob("*.ipynb")) if published_state(p.stem) != "current"]
    assert not stale, (f"published runs out of date with their chapters: {stale}; re-run "
                       f"recsize book run --full --publish --chapters {' '.join(stale)}")


def test_every_chapter_of_the_book_has_a_published_run():
    """Every page of the book shows its chapter's full run, not its CI run (issue 28)."""
    missing = [name for name in toc_chapters() if not (PUBLISHED / f"{name}.ipynb").exists()]
    assert not missing, (f"chapters without a published full run: {missing}; run "
                         f"recsize book run --full --publish --chapters {' '.join(missing)}")


def test_every_published_output_fits_the_books_column():
    """What a reader sees must not scroll sideways: every printed line of a published run fits."""
    wide = {p.stem: wide_output_lines(nbformat.read(p, as_version=4)) for p in sorted(PUBLISHED.glob("*.ipynb"))}
    wide = {name: lines for name, lines in wide.items() if lines}
    assert not wide, f"published output lines over 88 columns: { {n: l[0] for n, l in wide.items()} }"


def test_wide_output_lines_finds_streams_results_and_tracebacks_but_not_figures():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="short\n" + "s" * 89 + "\n"),
            nbformat.v4.new_output("execute_result", data={"text/plain": "r" * 90}),
            nbformat.v4.new_output("display_data", data={"image/png": "", "text/plain": "f" * 99}),
            nbformat.v4.new_output("error", ename="E", evalue="v", traceback=["t" * 100]),
        ]),
        nbformat.v4.new_markdown_cell("m" * 200),
    ])
    assert wide_output_lines(nb) == ["s" * 89, "r" * 90, "t" * 100]
    assert wide_output_lines(nb, width=100) == []


def test_unknown_chapter_is_a_clear_error(capsys):
    assert main(["book", "run", "--chapters", "ch99_nothing"]) == 2
    err = capsys.readouterr().err
    assert "unknown chapter" in err and "ch01_why_size" in err


# --- `recsize book build`: the HTML book (Jupyter Book 1.x) --------------------------------------------------


def test_toc_lists_every_chapter_in_book_order():
    """book/_toc.yml and notebooks/ch*.ipynb name the same chapters, the preface first, in book order."""
    listed, present = toc_chapters(), chapters()
    assert len(listed) == len(set(listed)), f"a chapter is listed twice in book/_toc.yml: {listed}"
    missing = sorted(set(present) - set(listed))
    assert not missing, f"{missing} exist in notebooks/ but are not in book/_toc.yml: add them in book order"
    extra = sorted(set(listed) - set(present))
    assert not extra, (f"book/_toc.yml lists {extra}, but notebooks/ has no such .ipynb "
                       "(write the chapter, or remove it from the table of contents)")
    assert listed[0] == "ch00_preface"
    assert listed == sorted(listed), "chapters are listed in book order (ch00 ... ch08, then the appendices)"


def test_toc_has_the_head_to_head_chapter_before_the_appendix():
    listed = toc_chapters()
    assert listed.index("ch07_ihas") + 1 == listed.index("ch08_head_to_head") == listed.index("chA1_serving") - 1


def test_build_command_arguments(tmp_path):
    cmd = build_command(tmp_path / "out")
    assert cmd[3:5] == ["build", str(NOTEBOOKS)]
    assert cmd[cmd.index("--config") + 1] == str(BOOK / "_config.yml")
    assert cmd[cmd.index("--toc") + 1] == str(BOOK / "_toc.yml")
    assert cmd[cmd.index("--path-output") + 1] == str((tmp_path / "out").resolve())
    assert "-W" in cmd and "--keep-going" in cmd
    assert "--all" in cmd   # every page re-read (from the cache): no stale prev / next links


def test_book_shows_the_stored_outputs():
    """The build does not execute the chapters: it shows the outputs stored in each .ipynb (written by
    `recsize book run --in-place`; nbval re-executes every chapter in CI and compares the checked cells)."""
    import yaml
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    assert config["only_build_toc_files"] is True
    assert config["execute"]["execute_notebooks"] == "off"


def test_build_without_jupyter_book_is_a_clear_error(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jupyter_book" else real(name, *a))
    assert main(["book", "build", "--out", "unused"]) == 2
    assert "pip install -e '.[dev]'" in capsys.readouterr().err


def _fake_book(tmp_path, chapters_in_toc):
    nbs = tmp_path / "nbs"
    nbs.mkdir(parents=True)
    for name in ("ch00_a", "ch01_b"):
        code = new_code_cell("print(6 * 7)")
        code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="stored output 43\n")]
        cells = [nbformat.v4.new_markdown_cell(f"# Title of {name}\n\nSome text."), code]
        nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "language": "python",
                                                                "display_name": "Python 3"}})
        nbformat.write(nb, nbs / f"{name}.ipynb")
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text((BOOK / "_config.yml").read_text())
    (book / "_toc.yml").write_text("format: jb-book\nroot: ch00_a\nchapters:\n"
                                   + "".join(f"  - file: {c}\n" for c in chapters_in_toc))
    return nbs, book


def test_build_refuses_a_toc_that_does_not_match_the_notebooks(tmp_path):
    nbs, book = _fake_book(tmp_path, ["ch01_b", "ch02_missing"])
    with pytest.raises(BookBuildFailed, match="ch02_missing"):
        build_book(tmp_path / "out", notebooks=nbs, book=book)
    nbs, book = _fake_book(tmp_path / "again", [])
    with pytest.raises(BookBuildFailed, match="ch01_b not in"):
        build_book(tmp_path / "out", notebooks=nbs, book=book)


@pytest.mark.notebook
def test_build_book_shows_stored_outputs_and_writes_html(tmp_path):
    pytest.importorskip("jupyter_book")
    nbs, book = _fake_book(tmp_path, ["ch01_b"])
    index = build_book(tmp_path / "out", notebooks=nbs, book=book, quiet=True)
    assert index == (tmp_path / "out" / "_build" / "html" / "index.html").resolve()
    page = (index.parent / "ch01_b.html").read_text()
    assert "Title of ch01_b" in page and "stored output 43" in page   # the stored output, not re-run
    assert "CI run." in page and "not been published yet" in page     # and the page says which run it is
    assert not (tmp_path / "out" / "_build" / ".jupyter_cache").exists()

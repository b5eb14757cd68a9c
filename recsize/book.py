"""Run every chapter of the book through papermill and summarise the wall times; build the book as HTML.

Explained in the README (and in the preface). ``recsize book run`` executes each chapter notebook with
its CI parameters (the defaults of its ``parameters`` cell); ``--full`` applies the full-run parameters
of ``notebooks/full_run.json``. Every executed notebook, its figures and ``summary.json`` go to the
output folder. ``recsize book build`` builds the chapters listed in ``book/_toc.yml`` into an HTML
Jupyter Book (``book/_build/html/index.html``), executing them with their CI parameters and caching the
outputs.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def chapters(notebooks: Path = NOTEBOOKS) -> list[str]:
    """Chapter names (``ch01_why_size``, ...) in book order."""
    return sorted(p.stem for p in notebooks.glob("ch*.ipynb"))


def full_parameters(notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """The full-run parameters of every chapter, from ``notebooks/full_run.json``."""
    data = json.loads((notebooks / "full_run.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's timing metadata so that the text form stays clean and diffs stay small."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def _sync(path: Path) -> None:
    """Bring the other half of a chapter pair (text form and .ipynb) up to date with ``path``."""
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(path)], check=True, cwd=path.parent)


def run_book(out_dir: str | Path | None, full: bool = False, only: list[str] | None = None,
             notebooks: Path = NOTEBOOKS, progress: bool = False, in_place: bool = False) -> list[dict]:
    """Execute the chapters (all, or those named in ``only``) into ``out_dir``; returns one summary row
    per chapter (name, seconds, status) and writes ``summary.json``. With ``in_place`` (after editing a
    chapter's text form), sync each pair, execute it with its CI parameters into its own .ipynb (the
    outputs nbval checks) and sync back; nothing else is written. Explained in the README."""
    if in_place and full:
        raise ValueError("--in-place stores the CI-parameter outputs that nbval checks; it cannot take --full")
    try:
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError
    except ImportError:
        raise RuntimeError("recsize book run needs the dev extras: pip install -e '.[dev]'") from None
    if not notebooks.is_dir():
        raise FileNotFoundError(f"no notebooks folder at {notebooks}: run from a source checkout of recsize")
    names = chapters(notebooks)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise ValueError(f"unknown chapter(s) {unknown}; chapters are {', '.join(names)}")
        names = [n for n in names if n in only]
    out = notebooks.resolve() if in_place else Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params_full = full_parameters(notebooks) if full else {}
    rows = []
    for name in names:
        params = {} if in_place else {**params_full.get(name, {}), "out_dir": str(out / name)}
        if in_place:
            _sync(notebooks / f"{name}.py")
        start = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(notebooks / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                                parameters=params, cwd=str(notebooks), progress_bar=progress,
                                kernel_name="python3")
        except PapermillExecutionError as e:
            status = f"error: {e.ename}: {e.evalue}"
        if in_place:
            strip_run_metadata(notebooks / f"{name}.ipynb")
            _sync(notebooks / f"{name}.ipynb")
        rows.append({"chapter": name, "seconds": round(time.perf_counter() - start, 1), "status": status,
                     "parameters": params})
        print(f"{name:24s} {rows[-1]['seconds']:8.1f} s  {status}", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':24s} {total:8.1f} s  ({'full' if full else 'CI'} parameters; outputs in {out})")
    if in_place:
        return rows
    from .files import write_json
    write_json({"full": full, "chapters": rows, "total_seconds": round(total, 1)}, out / "summary.json")
    return rows


# --- the book as HTML (Jupyter Book 1.x) -------------------------------------------------------------------

BOOK = NOTEBOOKS.parent / "book"


class BookBuildFailed(RuntimeError):
    """jupyter-book returned an error (a warning, a failing cell, a missing chapter); its output says which."""


def toc_chapters(toc: Path = BOOK / "_toc.yml") -> list[str]:
    """The chapters listed in the book's table of contents (``book/_toc.yml``), in book order. Explained in
    the README (and in the preface)."""
    try:
        import yaml
    except ImportError:
        raise RuntimeError("reading the book's table of contents needs PyYAML: pip install -e '.[dev]'") from None
    data = yaml.safe_load(Path(toc).read_text())
    names = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(Path(entry["file"]).with_suffix("").as_posix())
            walk(entry.get("sections"))

    for part in data.get("parts") or [{"chapters": data.get("chapters")}]:
        walk(part.get("chapters"))
    return names


def build_command(out_dir: str | Path = BOOK, notebooks: Path = NOTEBOOKS, book: Path = BOOK,
                  keep_going: bool = True) -> list[str]:
    """The jupyter-book command line that ``recsize book build`` runs (absolute paths, so it runs from any
    folder): source ``notebooks/``, configuration and table of contents from ``book/``, HTML to
    ``OUT/_build/html``; warnings are errors (``-W -n``), ``--keep-going`` lists them all. ``--all``
    re-reads every chapter (a few seconds): an incremental Sphinx build would keep stale previous / next links on the neighbours of a
    chapter added to the table of contents. Explained in the README (and in the preface)."""
    cmd = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; "
           "sys.argv[0] = 'jupyter-book'; sys.exit(main())",
           "build", str(Path(notebooks).resolve()), "--config", str((Path(book) / "_config.yml").resolve()),
           "--toc", str((Path(book) / "_toc.yml").resolve()), "--path-output", str(Path(out_dir).resolve()),
           "-W", "-n", "--all"]
    if keep_going:
        cmd.append("--keep-going")
    return cmd


def build_book(out_dir: str | Path = BOOK, notebooks: Path = NOTEBOOKS, book: Path = BOOK,
               quiet: bool = False, env: dict[str, str] | None = None) -> Path:
    """Build the book as HTML with Jupyter Book 1.x and return the path of ``index.html``. The chapters are
    not executed: every page shows the outputs stored in its .ipynb (``recsize book run --in-place`` writes
    them; nbval re-executes every chapter in CI). Warnings fail the build.
    Explained in the README (and in the preface)."""
    if importlib.util.find_spec("jupyter_book") is None:
        raise RuntimeError("recsize book build needs Jupyter Book 1.x (the dev extras): pip install -e '.[dev]'")
    for path in (notebooks, Path(book) / "_config.yml", Path(book) / "_toc.yml"):
        if not Path(path).exists():
            raise FileNotFoundError(f"{path} is missing: run from a source checkout of recsize")
    listed = toc_chapters(Path(book) / "_toc.yml")
    missing = [name for name in listed if not (Path(notebooks) / f"{name}.ipynb").exists()]
    if missing:
        raise BookBuildFailed(f"{Path(book) / '_toc.yml'} lists {', '.join(missing)}, but there is no such "
                              f"notebook in {notebooks}")
    unlisted = sorted(set(chapters(notebooks)) - set(listed))
    if unlisted:
        raise BookBuildFailed(f"{', '.join(unlisted)} not in {Path(book) / '_toc.yml'}: add them in book order")
    cmd = build_command(out_dir, notebooks, book)
    if quiet:
        cmd.append("-q")
    done = subprocess.run(cmd, env=env)
    index = Path(out_dir).resolve() / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.exists():
        raise BookBuildFailed(f"jupyter-book build failed (exit status {done.returncode}); the messages above "
                              "say which chapter and why")
    return index

"""Run every chapter of the book through papermill and summarise the wall times; build the book as HTML.

Explained in the README (and in the preface). ``recsize book run`` executes each chapter notebook with
its CI parameters (the defaults of its ``parameters`` cell); ``--full`` applies the full-run parameters
of ``notebooks/full_run.json``. Every executed notebook, its figures and ``summary.json`` go to the
output folder. ``recsize book run --full --publish`` stores each full-run execution as the chapter's
*published run* (``book/published/NAME.ipynb``, with its parameters, machine, date and wall time).
``recsize book build`` builds the chapters listed in ``book/_toc.yml`` into an HTML Jupyter Book
(``book/_build/html/index.html``) without executing anything: a page shows the chapter's published run
where one exists and matches the chapter's code, otherwise the CI-parameter outputs stored in
``notebooks/NAME.ipynb``, and a note at its top says which.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .files import MARK, check_output_file, marker, staged, write_json

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
BOOK = NOTEBOOKS.parent / "book"
PUBLISHED = BOOK / "published"       # the full-run executions the book shows


def chapters(notebooks: Path = NOTEBOOKS) -> list[str]:
    """Chapter names (``ch01_why_size``, ...) in book order."""
    return sorted(p.stem for p in notebooks.glob("ch*.ipynb"))


def full_parameters(notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """The full-run parameters of every chapter, from ``notebooks/full_run.json``."""
    data = json.loads((notebooks / "full_run.json").read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _drop_run_metadata(nb) -> None:
    """Remove papermill's run and timing metadata from notebook ``nb`` (in place)."""
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)


def _sync(path: Path) -> None:
    """Bring the other half of a chapter pair (text form and .ipynb) up to date with ``path``."""
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(path)], check=True, cwd=path.parent)


def check_declared(params: dict[str, dict], names: list[str], notebooks: Path = NOTEBOOKS) -> dict[str, dict]:
    """Refuse, before any chapter runs, a full-run parameter that chapter's parameters cell does not declare
    (papermill would only warn, and run the chapter on its defaults); returns ``params``. Explained in the
    README."""
    import difflib

    import papermill as pm
    for name in names:
        declared = list(pm.inspect_notebook(str(notebooks / f"{name}.ipynb")))
        for bad in sorted(set(params.get(name, {})) - set(declared)):
            close = difflib.get_close_matches(bad, declared, n=1)
            raise ValueError(f"{name}: {notebooks / 'full_run.json'} sets {bad!r}, which is not a parameter of the "
                             f"chapter{f' (did you mean {close[0]}?)' if close else ''}: fix that file")
    return params


def run_book(out_dir: str | Path | None, full: bool = False, only: list[str] | None = None,
             notebooks: Path = NOTEBOOKS, progress: bool = False, in_place: bool = False,
             publish: bool = False, published: Path = PUBLISHED) -> list[dict]:
    """Execute the chapters (all, or those named in ``only``) into ``out_dir``; returns one summary row
    per chapter (name, seconds, status) and writes ``summary.json``. With ``in_place`` (after editing a
    chapter's text form), sync each pair, execute it with its CI parameters into its own .ipynb (the
    outputs nbval checks) and sync back; nothing else is written. With ``publish`` (needs ``full``), each
    chapter that runs without error also becomes its published run (:func:`publish_run`), one chapter
    at a time, so an interrupted run keeps the chapters it finished. Explained in the README."""
    if in_place and full:
        raise ValueError("--in-place stores the CI-parameter outputs that nbval checks; it cannot take --full")
    if publish and not full:
        raise ValueError("--publish stores full runs: add --full")
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
    params_full = check_declared(full_parameters(notebooks), names, notebooks) if full else {}
    out = notebooks.resolve() if in_place else Path(out_dir).resolve()
    if not in_place:
        check_run_outputs(out, names)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:
        params = {} if in_place else {**params_full.get(name, {}), "out_dir": str(out / name)}
        if in_place:
            _sync(notebooks / f"{name}.py")
        start = time.perf_counter()
        status = "ok"
        with staged(out / f"{name}.ipynb") as tmp:   # whole or not at all: papermill writes as it goes
            try:
                with warnings.catch_warnings():  # the staged name ends in .part, not .ipynb: expected
                    warnings.filterwarnings("ignore", "The specified file .* does not end in one of")
                    pm.execute_notebook(str(notebooks / f"{name}.ipynb"), str(tmp), parameters=params,
                                        cwd=str(notebooks), progress_bar=progress, kernel_name="python3")
            except PapermillExecutionError as e:
                status = f"error: {e.ename}: {e.evalue}"
            _finish_notebook(tmp, in_place)
        if in_place:
            _sync(notebooks / f"{name}.ipynb")
        rows.append({"chapter": name, "seconds": round(time.perf_counter() - start, 1), "status": status,
                     "parameters": params})
        if publish and status == "ok":
            publish_run(out / f"{name}.ipynb", name, params_full.get(name, {}), rows[-1]["seconds"],
                        published)
        print(f"{name:24s} {rows[-1]['seconds']:8.1f} s  {status}", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':24s} {total:8.1f} s  ({'full' if full else 'CI'} parameters; outputs in {out})")
    if in_place:
        return rows
    write_json({"full": full, "chapters": rows, "total_seconds": round(total, 1)}, out / "summary.json",
               "book-summary")
    return rows


def check_run_outputs(out: Path, names: list[str]) -> None:
    """Before any chapter runs: ``OUT/summary.json`` and every ``OUT/NAME.ipynb`` to be written are absent
    or recsize's own (:func:`recsize.files.check_output_file`); anything else raises ``ValueError``
    naming it. Explained in the README."""
    check_output_file(out / "summary.json", "--out", "json")
    for name in names:
        check_output_file(out / f"{name}.ipynb", "--out", "ipynb")


def _finish_notebook(path: Path, in_place: bool) -> None:
    """An executed notebook before it replaces its target: in place, without papermill's timing metadata
    (the chapter's own .ipynb); otherwise with recsize's marker in its metadata."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    if in_place:
        _drop_run_metadata(nb)
    else:
        nb.metadata[MARK] = marker("book-run")
    nbformat.write(nb, path)


def interrupted_book(args) -> str:
    """What an interrupted ``recsize book run`` / ``build`` leaves, for the one line the command line
    prints. Explained in the README."""
    if args.book_command == "build":
        return "the staged source and HTML may be incomplete: run recsize book build again"
    if args.in_place:
        return "the chapters that finished are updated in notebooks/; the one running was left as it was"
    published = "; their published runs are stored" if args.publish else ""
    return (f"the notebooks of the chapters that finished are in {Path(args.out).resolve()}{published}; the "
            "chapter running and summary.json were not written")


# --- the book as HTML (Jupyter Book 1.x) -------------------------------------------------------------------


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
               quiet: bool = False, env: dict[str, str] | None = None, published: Path | None = None) -> Path:
    """Build the book as HTML with Jupyter Book 1.x and return the path of ``index.html``. The chapters are
    not executed: every page shows a chapter's published full run where it is current, otherwise the CI
    outputs stored in its .ipynb (``recsize book run --in-place`` writes them; nbval re-executes every
    chapter in CI), staged with their provenance notes in ``OUT/_source`` (:func:`stage_book`;
    ``published`` defaults to ``book/published`` next to the table of contents). Warnings fail the build.
    Explained in the README (and in the preface)."""
    names = chapters(notebooks)
    for folder, old in (("_source", _old_stage(names)), ("_build", _old_build)):
        check_made_folder(Path(out_dir).resolve() / folder, old)   # before anything: never a user's folder
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
    _claim_folder(Path(out_dir).resolve() / "_build", _old_build)
    source = stage_book(Path(out_dir).resolve() / "_source", listed, notebooks,
                        Path(book) / "published" if published is None else published,
                        static=Path(book) / "_static")
    cmd = build_command(out_dir, source, book)
    if quiet:
        cmd.append("-q")
    done = subprocess.run(cmd, env=env)
    index = Path(out_dir).resolve() / "_build" / "html" / "index.html"
    if done.returncode != 0 or not index.exists():
        raise BookBuildFailed(f"jupyter-book build failed (exit status {done.returncode}); the messages above "
                              "say which chapter and why")
    return index


MADE = ".recsize-made"        # in every folder recsize made for the book: it may empty and refill it

def _old_build(entries: set[str]) -> bool:
    """An older recsize's OUT/_build (before the marker): only what jupyter-book writes, Sphinx's
    environment (.doctrees) included."""
    return ".doctrees" in entries and entries <= {"html", ".doctrees", "jupyter_execute"}


def _old_stage(names: list[str]):
    """An older recsize's OUT/_source (before the marker): only the chapters' notebooks and _static."""
    return lambda entries: entries <= {"_static", *(f"{name}.ipynb" for name in names)}


def check_made_folder(folder: Path, old) -> None:
    """Raise ``ValueError`` unless ``folder`` is absent or a folder recsize made: it holds the marker file
    :data:`MADE`, or its entries are what an older recsize wrote there (``old(entries)``). A user's
    folder is never written into or deleted. Explained in the README."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    entries = {p.name for p in folder.iterdir()} if folder.is_dir() and not folder.is_symlink() else None
    if entries is None or not (MADE in entries or old(entries)):
        raise ValueError(f"--out: {folder} exists and was not made by recsize (no {MADE} in it): recsize does "
                         "not write into it or delete it; choose another --out folder, or delete it yourself")


def _claim_folder(folder: Path, old, empty: bool = False) -> None:
    """Make ``folder`` recsize's (checked by :func:`check_made_folder`; emptied with ``empty``) and record
    it with the marker file."""
    check_made_folder(folder, old)
    if empty and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MADE).write_text("made by recsize book build: it empties and refills this folder\n")


# --- published runs: what a reader sees ----------------------------------------------------------------------

def code_cells(nb) -> list[str]:
    """The sources of a notebook's code cells, without papermill's injected parameters: what must agree
    between a chapter and its published run."""
    return [c.source for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


COLUMN = 88   # characters the book's code and output boxes show without scrolling


def wide_output_lines(nb, width: int = COLUMN) -> list[str]:
    """The printed lines of a notebook's outputs (streams, plain-text results shown as text,
    tracebacks) wider than the book's column: on the page they scroll or are cut. Figures and
    HTML outputs are not text lines. Explained in the preface (how the book is made)."""
    wide = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            data = out.get("data", {})
            if "text" in out:
                text = out["text"]
            elif out.get("output_type") == "error":
                text = "\n".join(out.get("traceback", []))
            elif any(k in data for k in ("image/png", "image/svg+xml", "text/html")):
                continue
            else:
                text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            wide += [line for line in text.splitlines() if len(line) > width]
    return wide


def publish_run(executed: Path, name: str, parameters: dict, seconds: float,
                published: Path = PUBLISHED) -> Path:
    """Store a full-run execution of chapter ``name`` as its published run ``published/NAME.ipynb``
    (written whole, then renamed), with its provenance in the notebook's metadata (``recsize_run``: the
    full-run parameters, machine, date and wall time). Explained in the preface."""
    import nbformat
    from .files import atomic_write
    from .resources import machine
    nb = nbformat.read(executed, as_version=4)
    _drop_run_metadata(nb)
    nb.metadata["recsize_run"] = {"parameters": parameters, "machine": machine(), "seconds": round(seconds, 1),
                                  "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    published.mkdir(parents=True, exist_ok=True)
    target = published / f"{name}.ipynb"
    with atomic_write(target, "w") as f:
        nbformat.write(nb, f)
    return target


def published_state(name: str, notebooks: Path = NOTEBOOKS, published: Path = PUBLISHED) -> str:
    """``"current"`` where chapter ``name`` has a published run made from its present code, ``"stale"``
    where the code changed since (re-run ``recsize book run --full --publish --chapters NAME``),
    ``"missing"`` where none was published. Explained in the preface."""
    import nbformat
    path = Path(published) / f"{name}.ipynb"
    if not path.exists():
        return "missing"
    run = nbformat.read(path, as_version=4)
    chapter = nbformat.read(Path(notebooks) / f"{name}.ipynb", as_version=4)
    return "current" if code_cells(run) == code_cells(chapter) else "stale"


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def provenance_note(name: str, state: str, run: dict | None = None) -> str:
    """The note at the top of a page: which execution it shows, with what parameters, where, when, how long.
    Explained in the preface."""
    if state == "current":
        params = ", ".join(f"`{k} = {v!r}`" for k, v in run["parameters"].items()) or "its defaults"
        return (f"```{{note}}\n**Published run.** This page shows the chapter executed with its full-run "
                f"parameters ({params}) on {run['machine']}, {run['date']}, in {_minutes(run['seconds'])}. "
                "CI executes the same code with small parameters (`recsize book run`).\n```")
    why = ("its full run is out of date with the chapter's code" if state == "stale"
           else "its full run has not been published yet")
    return ("```{note}\n**CI run.** This page shows the chapter executed with its small CI parameters (the "
            f"defaults of its parameters cell): {why} (`recsize book run --full --publish --chapters {name}`). "
            "Numbers printed by training here are not results; tables read from `evidence/` or `benchmarks/out` "
            "are.\n```")


def with_published_outputs(chapter, run):
    """The chapter notebook ``chapter`` with the outputs of its published ``run`` (same code cells, in order):
    its prose as it stands now, the full run's outputs, and papermill's injected-parameters cell after the
    parameters cell so that a reader sees the values the run used (less ``out_dir``, the absolute folder
    of the machine that published it)."""
    import copy
    nb = copy.deepcopy(chapter)
    ran = [c for c in run.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    injected = [c for c in run.cells if "injected-parameters" in c.metadata.get("tags", [])]
    cells, done = [], iter(ran)
    for cell in nb.cells:
        if cell.cell_type == "code":
            out = next(done)
            cell.outputs, cell.execution_count = copy.deepcopy(out.outputs), out.get("execution_count")
        cells.append(cell)
        if injected and "parameters" in cell.metadata.get("tags", []):
            shown = copy.deepcopy(injected[0])  # the run's values, not the publishing machine's folders
            shown.source = "\n".join(line for line in shown.source.splitlines()
                                      if not line.startswith("out_dir ="))
            cells.append(shown)
    nb.cells = cells
    nb.metadata["recsize_run"] = run.metadata["recsize_run"]
    return nb


def stage_book(stage: Path, names: list[str], notebooks: Path = NOTEBOOKS, published: Path = PUBLISHED,
               static: Path | None = BOOK / "_static") -> Path:
    """Write the book's source into ``stage``: for every chapter of ``names``, its text as it stands with the
    outputs of its published run where that run is current (:func:`published_state`,
    :func:`with_published_outputs`), otherwise its CI-executed notebook, with the provenance note
    (:func:`provenance_note`) after its title; and the book's ``static`` files (its CSS) as ``_static``.
    ``stage`` must be absent or a folder recsize made (:func:`check_made_folder`); it is emptied first.
    Returns ``stage``. Explained in the preface."""
    import nbformat
    _claim_folder(stage, _old_stage(names), empty=True)
    if static is not None and Path(static).is_dir():
        shutil.copytree(static, stage / "_static")
    for name in names:
        state = published_state(name, notebooks, published)
        nb = nbformat.read(Path(notebooks) / f"{name}.ipynb", as_version=4)
        if state == "current":
            nb = with_published_outputs(nb, nbformat.read(Path(published) / f"{name}.ipynb", as_version=4))
        note = provenance_note(name, state, nb.metadata.get("recsize_run"))
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown")
        title, _, rest = nb.cells[first].source.partition("\n")
        nb.cells[first].source = "\n\n".join(part for part in (title, note, rest.strip("\n")) if part)
        nbformat.write(nb, stage / f"{name}.ipynb")
    return stage

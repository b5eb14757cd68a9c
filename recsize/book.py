"""Run every chapter of the book through papermill and summarise the wall times.

Explained in the README (and in the preface). ``recsize book run`` executes each chapter notebook with
its CI parameters (the defaults of its ``parameters`` cell); ``--full`` applies the full-run parameters
of ``notebooks/full_run.json``. Every executed notebook, its figures and ``summary.json`` go to the
output folder.
"""
from __future__ import annotations

import json
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


def run_book(out_dir: str | Path, full: bool = False, only: list[str] | None = None,
             notebooks: Path = NOTEBOOKS, progress: bool = False) -> list[dict]:
    """Execute the chapters (all, or those named in ``only``) into ``out_dir``; returns one summary row
    per chapter (name, seconds, status) and writes ``summary.json``. Explained in the README."""
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
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params_full = full_parameters(notebooks) if full else {}
    rows = []
    for name in names:
        params = {**params_full.get(name, {}), "out_dir": str(out / name)}
        start = time.perf_counter()
        status = "ok"
        try:
            pm.execute_notebook(str(notebooks / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
                                parameters=params, cwd=str(notebooks), progress_bar=progress,
                                kernel_name="python3")
        except PapermillExecutionError as e:
            status = f"error: {e.ename}: {e.evalue}"
        rows.append({"chapter": name, "seconds": round(time.perf_counter() - start, 1), "status": status,
                     "parameters": params})
        print(f"{name:24s} {rows[-1]['seconds']:8.1f} s  {status}", flush=True)
    total = sum(r["seconds"] for r in rows)
    print(f"{'total':24s} {total:8.1f} s  ({'full' if full else 'CI'} parameters; outputs in {out})")
    from .cli import write_json
    write_json({"full": full, "chapters": rows, "total_seconds": round(total, 1)}, out / "summary.json")
    return rows

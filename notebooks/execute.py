"""Sync every chapter pair and execute it in place, so the .ipynb carries the outputs nbval checks.

    python notebooks/execute.py                 # all chapters, CI parameters (the notebook defaults)
    python notebooks/execute.py ch01_why_size   # one chapter

Edit the text form (``chNN_*.py``), then run this before committing. Explained in the README.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

HERE = Path(__file__).resolve().parent


def chapters(names: list[str]) -> list[Path]:
    found = sorted(HERE.glob("ch*.py"))
    if names:
        found = [p for p in found if p.stem in names or p.name in names]
        if not found:
            raise SystemExit(f"no chapter matches {names}; chapters are named like ch01_why_size")
    return found


def strip_run_metadata(path: Path) -> None:
    """Drop papermill's timing metadata so that the text form stays clean and diffs stay small."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def main(argv: list[str]) -> int:
    for text in chapters(argv):
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(text)], check=True, cwd=HERE)
        nb = text.with_suffix(".ipynb")
        start = time.perf_counter()
        pm.execute_notebook(str(nb), str(nb), cwd=str(HERE), progress_bar=False, kernel_name="python3")
        strip_run_metadata(nb)
        subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(nb)], check=True, cwd=HERE)
        print(f"{nb.name}: executed in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

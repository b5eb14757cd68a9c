"""From the benchmark outputs to the evidence store: each declared grid's ``benchmarks/out/NAME_*.json``
files (``benchmarks/prune.py --out``), merged, become ``evidence/NAME.jsonl``. Explained in Chapter 8.

The files are merged by :func:`merge_runs` (the first file holding a cell wins, as ``benchmarks/report.py``
and the chapters read them before the store existed); every file's settings must agree with the
declaration (:func:`recsize.experiments.declare.differing_settings`: a method's own settings where the file
holds that method), and every stored cell must be a declared one. A migrated cell's provenance is its
file's: the machine, the device where the file says it, the file as ``source`` and, as ``date``, when git
last committed that file; the code's commit and the library versions were not recorded then (None).

    python -m recsize.experiments.migrate            # every declared grid with files in benchmarks/out
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from . import store
from .declare import EXPERIMENTS, Experiment, differing_settings, get, run_setting
from .records import Cell

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "benchmarks" / "out"


def run_files(folder, prefix: str) -> list[Path]:
    """The outputs ``folder/PREFIX_*.json`` of parallel ``benchmarks/prune.py`` runs, sorted, without the
    single-seed probes (``*_seed0.json``). Explained in Chapter 8."""
    return [p for p in sorted(Path(folder).glob(f"{prefix}_*.json")) if not p.stem.endswith("_seed0")]


def merge_runs(paths) -> tuple[list[dict], list[dict]]:
    """The cells (``runs``) of several benchmark outputs of ``benchmarks/prune.py`` run in parallel, each
    (method, sparsity, seed) once (the first file holding it wins), and each file's settings and machine.
    Explained in Chapter 8.

    Files whose settings would change a cell's numbers (:data:`~recsize.experiments.declare.RUN_SETTINGS`: data, backbone, d_max, epoch
    cap, patience, ...) cannot be merged: a ValueError names the first file that differs and how. A
    method's own settings (PEP's, CIESS's, iHAS's) bind only files that both hold cells of it."""
    runs, seen, settings, held = [], set(), [], []
    for path in paths:
        data = json.loads(Path(path).read_text())
        mine = {**data["settings"], "machine": data["machine"], "file": Path(path).name}
        methods = {r["method"] for r in data["runs"]}
        for other, theirs in zip(settings, held):
            differ = [f"{k} {run_setting(other, k)!r} vs {run_setting(mine, k)!r}"
                      for k in differing_settings(other, mine, methods & theirs)]
            if differ:
                raise ValueError(f"{mine['file']} was run with other settings than {other['file']} "
                                 f"({'; '.join(differ)}): merge only runs of one protocol (rename one file)")
        settings.append(mine)
        held.append(methods)
        for r in data["runs"]:
            key = (r["method"], r["sparsity"], r["seed"])
            if key not in seen:
                seen.add(key)
                runs.append(r)
    return runs, settings


def _committed(path: Path) -> str | None:
    """When git last committed ``path`` (ISO date), None if untracked or without git."""
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%cI", "--", str(path)], cwd=path.parent,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _source(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def stored_cells(experiment, out=OUT) -> list[Cell]:
    """The cells of ``out/NAME_*.json`` (:func:`run_files`, merged by :func:`merge_runs`) as
    :class:`~recsize.experiments.records.Cell` of the declared ``experiment``, in the merged order, each with its file's provenance. A file computed with
    other settings than the declaration, or a cell outside it, raises ValueError. Explained in Chapter 8."""
    experiment = experiment if isinstance(experiment, Experiment) else get(experiment)
    files = run_files(out, experiment.name)
    if not files:
        raise ValueError(f"no {Path(out) / experiment.name}_*.json to migrate: run benchmarks/prune.py first")
    runs, settings = merge_runs(files)
    declared = experiment.settings()
    origin = {}
    for path, mine in zip(files, settings):
        data = json.loads(path.read_text())
        methods = {r["method"] for r in data["runs"]}
        differ = differing_settings(mine, declared, methods)
        if differ:
            shown = ", ".join(f"{k} {run_setting(mine, k)!r} vs {run_setting(declared, k)!r}" for k in differ)
            raise ValueError(f"{path.name} was run with other settings than {experiment.name} declares ({shown}): "
                             "correct the declaration in recsize/experiments/declare.py")
        known = {**mine, "device": data.get("device"), "date": _committed(path), "file": _source(path)}
        for r in data["runs"]:
            origin.setdefault((r["method"], r["sparsity"], r["seed"]), known)
    outside = sorted(set(origin) - set(experiment.cells()))
    if outside:
        raise ValueError(f"{experiment.name}'s files hold cells it does not declare, e.g. {outside[:3]}: add their "
                         "methods, budgets or seeds to the declaration")
    return [Cell.from_prune_run(r, origin[r["method"], r["sparsity"], r["seed"]], experiment) for r in runs]


def migrate(experiment, out=OUT, folder=None) -> list[Cell]:
    """Write ``experiment``'s stored benchmark cells (:func:`stored_cells`) to its evidence file
    (:func:`recsize.experiments.store.write`, the whole file at once) and return them. Explained in Chapter 8."""
    cells = stored_cells(experiment, out)
    store.write(experiment, cells, folder)
    return cells


def migrate_all(names=None, out=OUT, folder=None) -> dict[str, int]:
    """Migrate every declared experiment (or ``names``) that has files in ``out``: name -> cells stored.
    Explained in Chapter 8."""
    counts = {}
    for name in names or EXPERIMENTS:
        if run_files(out, name):
            counts[name] = len(migrate(name, out, folder))
    return counts


def main(argv=None) -> int:
    """``python -m recsize.experiments.migrate [NAME ...]``: migrate and say how many cells each grid has.
    Explained in Chapter 8."""
    names = list(sys.argv[1:] if argv is None else argv) or None
    for name, n in migrate_all(names).items():
        print(f"{name}: {n} cells -> {store.path_of(name)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

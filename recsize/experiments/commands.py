"""What the command line calls (``recsize experiments list / run / report``); the argument parsing is the
CLI's. Explained in Chapter 8.

Each function validates its input first and raises ValueError with one sentence naming the fix (an
unknown experiment or method, an empty seed list), so the CLI can print it as one line.
"""
from __future__ import annotations

from . import store
from .declare import get, list_experiments


def cli_list(folder=None) -> str:
    """One line per declared experiment: name, backbone on data, methods, budgets, seeds, cells stored of
    those declared, and what it is quoted for. Explained in Chapter 8."""
    lines = []
    for e in list_experiments():
        stored = len(store.read(e, folder))
        budgets = ", ".join(f"{100 * c:g}" for c in e.sparsities)
        lines.append(f"{e.name:28s}{e.backbone} on {e.dataset}, {len(e.methods)} methods, c = {budgets} %, seeds "
                     f"{', '.join(map(str, e.seeds))}: {stored} of {len(e.cells())} cells stored"
                     + (f"  ({e.note})" if e.note else ""))
    return "\n".join(lines)


def cli_run(name: str, seeds=None, device: str = "cpu", jobs: int = 1, quiet: bool = False, methods=None,
            folder=None) -> int:
    """Compute the cells of experiment ``name`` still missing from its evidence file (``seeds`` and
    ``methods``: part of the declared grid; None: all of it), ``jobs`` seeds at once; one line per cell
    unless ``quiet``. Returns 0. Explained in Chapter 8."""
    experiment = get(name)
    if seeds is not None and len(list(seeds)) == 0:
        raise ValueError(f"the seed list is empty: give at least one seed of {name} "
                         f"({', '.join(map(str, experiment.seeds))}), or none to run every declared seed")
    if methods is not None and len(list(methods)) == 0:
        raise ValueError(f"the method list is empty: give at least one method of {name}, or none to run all")
    if methods is not None:
        unknown = [m for m in methods if m not in experiment.methods]
        if unknown:
            raise ValueError(f"unknown method {', '.join(unknown)} for experiment {name}: choose from "
                             f"{', '.join(experiment.methods)}")
    from .runner import run
    done = run(experiment, seeds=seeds, methods=methods, device=device, jobs=jobs, store=folder, progress=not quiet)
    if not quiet:
        left = len(store.missing(experiment, store.read(experiment, folder)))
        print(f"{name}: {len(done)} cells computed and stored in {store.path_of(experiment, folder)}; "
              f"{left} declared cells missing", flush=True)
    return 0


def cli_report(name: str | None = None, folder=None) -> str:
    """The report of experiment ``name`` (:func:`recsize.experiments.report.report`), or of every declared
    experiment with stored cells when ``name`` is None. Explained in Chapter 8."""
    from .report import report
    if name is not None:
        return report(get(name), folder)
    return "\n\n".join(report(e, folder) for e in list_experiments() if store.read(e, folder))

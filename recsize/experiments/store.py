"""The evidence store: one JSON Lines file per experiment, one line per cell. Explained in Chapter 8.

``evidence/NAME.jsonl`` (at the repository root, tracked by git; every function takes another
``folder``) starts with a header line, ``{"recsize": {"format": "experiment", "version": 1},
"experiment": NAME, "declaration": {...}}`` (the :class:`~recsize.experiments.declare.Experiment` whose
cells follow), then holds one :class:`~recsize.experiments.records.Cell` per line, sorted by (method,
sparsity, seed), so that adding a cell is a one-line diff. Every write replaces the whole file at once
(a temporary file, then a rename: :func:`recsize.files.atomic_write`), and only a file recsize wrote
(its header) is replaced.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..files import MARK, NotReplaceable, UnreadableFile, atomic_write, check_replaceable
from .declare import Experiment, differing_settings, get, run_setting
from .records import Cell

EVIDENCE = Path(__file__).resolve().parents[2] / "evidence"
FORMAT, VERSION = "experiment", 1


def _name(experiment) -> str:
    return experiment.name if isinstance(experiment, Experiment) else str(experiment)


def _declared(experiment) -> Experiment:
    return experiment if isinstance(experiment, Experiment) else get(experiment)


def path_of(experiment, folder=None) -> Path:
    """Where ``experiment``'s cells are stored: ``FOLDER/NAME.jsonl`` (default folder: the repository's
    ``evidence/``). Explained in Chapter 8."""
    return Path(folder if folder is not None else EVIDENCE) / f"{_name(experiment)}.jsonl"


def _lines(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise UnreadableFile(f"{path}:{number} is not a JSON line (truncated or edited by hand?); restore it "
                                 "with git, or delete it and migrate / run the experiment again") from None
    return out


def _check_header(path: Path, lines: list[dict], name: str, writing: bool = False) -> dict | None:
    """The header of an existing evidence file (None for no file); a file recsize did not write, or that
    holds another experiment, raises :class:`~recsize.files.NotReplaceable`."""
    if writing:
        check_replaceable(path)   # a regular file, not a link, a folder or a device
    if not path.exists():
        return None
    head = lines[0] if lines else {}
    mark = head.get(MARK) if isinstance(head, dict) else None
    if not isinstance(mark, dict) or mark.get("format") != FORMAT:
        raise NotReplaceable(f"{path} was not written by recsize (its first line has no recsize experiment "
                             "marker): recsize does not overwrite it; move it away or choose another folder")
    if mark.get("version") != VERSION:
        raise NotReplaceable(f"{path} is an evidence file of version {mark.get('version')}, this recsize reads "
                             f"version {VERSION}: update recsize")
    if head.get("experiment") != name:
        raise NotReplaceable(f"{path} holds experiment {head.get('experiment')!r}, not {name!r}: rename it")
    return head


def declaration(experiment, folder=None) -> Experiment | None:
    """The declaration stored in the header of ``experiment``'s evidence file, None without a file.
    Explained in Chapter 8."""
    path = path_of(experiment, folder)
    head = _check_header(path, _lines(path), _name(experiment))
    return None if head is None else Experiment.from_dict(head["declaration"])


def read(experiment, folder=None) -> list[Cell]:
    """The stored cells of ``experiment`` (a declared name or an :class:`Experiment`), sorted by
    (method, sparsity, seed); none without a file. Explained in Chapter 8."""
    path = path_of(experiment, folder)
    lines = _lines(path)
    _check_header(path, lines, _name(experiment))
    try:
        return [Cell.from_dict(line) for line in lines[1:]]
    except (TypeError, ValueError) as e:
        raise UnreadableFile(f"{path} holds a line that is not a cell ({e}); restore it with git") from None


def write(experiment, cells, folder=None) -> Path:
    """Store ``cells`` as ``experiment``'s evidence, replacing the file at once (temporary file, then
    rename). Refused (ValueError) where a cell belongs to another experiment or repeats a (method,
    sparsity, seed), where the file was not written by recsize, or where its cells were computed with
    settings that change numbers (d_max, epochs, patience, a method's own settings) other than the
    declaration's. Returns the path. Explained in Chapter 8."""
    experiment = _declared(experiment)
    cells = sorted(cells, key=lambda c: c.key)
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError(f"cells repeat a (method, sparsity, seed): {sorted({k for k in keys if keys.count(k) > 1})}")
    other = sorted({c.experiment for c in cells} - {experiment.name})
    if other:
        raise ValueError(f"cells of experiment(s) {other} cannot be stored as {experiment.name!r}")
    path = path_of(experiment, folder)
    head = _check_header(path, _lines(path), experiment.name, writing=True)
    if head is not None:
        old = Experiment.from_dict(head["declaration"]).settings()
        differ = differing_settings(old, experiment.settings(), {c.method for c in cells})
        if differ:
            shown = ", ".join(f"{k} {run_setting(old, k)!r} vs {run_setting(experiment.settings(), k)!r}"
                              for k in differ)
            raise ValueError(f"{path} holds cells computed with other settings ({shown}): declare another "
                             "experiment (another name) for other settings")
    header = {MARK: {"format": FORMAT, "version": VERSION}, "experiment": experiment.name,
              "declaration": experiment.to_dict()}
    with atomic_write(path, "w") as f:
        for line in (header, *(c.to_dict() for c in cells)):
            f.write(json.dumps(line) + "\n")
    return path


def add(experiment, cell: Cell, folder=None) -> Path:
    """Store one cell: it replaces the stored cell of the same (method, sparsity, seed) or joins the
    others; the file is rewritten at once (:func:`write`), so a run stopped at any moment keeps every
    cell it finished. Explained in Chapter 8."""
    cells = [c for c in read(experiment, folder) if c.key != cell.key]
    return write(experiment, [*cells, cell], folder)


def missing(experiment, cells) -> list[tuple]:
    """The declared (method, sparsity, seed) cells of ``experiment`` not among ``cells`` (Cells or keys),
    in the order the runner computes them. Explained in Chapter 8."""
    experiment = _declared(experiment)
    held = {c.key if isinstance(c, Cell) else tuple(c) for c in cells}
    return [k for k in experiment.cells() if k not in held]

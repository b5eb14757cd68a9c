"""Check a chapter's parameters before it does any work: one clear line for a value of the wrong type or range.

Explained in the Preface (Running a chapter with other parameters). papermill injects its values in a cell
right after a chapter's ``parameters`` cell, and ``-p`` passes text where it cannot read a number (``-p dims
'[0]'`` gives the *string* ``'[0]'``); without a check, a bad value ends deep in the first training cell.
So the next cell of every chapter calls :func:`check_parameters`, with one *kind* per parameter::

    check_parameters(globals(), dims=["positive int"], epochs="positive int",
                     seed="non-negative int", dataset="dataset", out_dir="path")

A kind is one of the names in :data:`KINDS`; a one-element list ``[kind]`` means a non-empty list of
that kind. A bad value raises :class:`ParameterError`, which Jupyter and papermill show as one line; so
does a name the chapter does not declare (papermill would otherwise run the whole chapter on its defaults
after ``-p sed 3``), and a ``path`` parameter whose name ends in ``_dir`` (an output folder) that names a
file.
"""
from __future__ import annotations

import difflib
import json
import math
import numbers
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping

# What IPython (Jupyter, papermill) defines in a notebook's namespace besides the chapter's own names.
NOTEBOOK_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})


class ParameterError(ValueError):
    """A chapter parameter of the wrong type or range; the message names it, the value, what it expects and a
    valid ``papermill -p`` / ``-y``. Shown without a traceback. Explained in the Preface."""

    def _render_traceback_(self) -> list[str]:
        # IPython (Jupyter, papermill) shows these lines instead of a traceback.
        return [f"{type(self).__name__}: {self}"]


def _int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _choices(kind: str) -> tuple[str, ...]:
    # Imported when needed: the lists live with the code that uses them (backbones imports torch).
    if kind == "dataset":
        from .data import DATASETS
        return tuple(DATASETS)
    if kind == "protocol":
        from .data import PROTOCOLS
        return tuple(PROTOCOLS)
    if kind == "baseline method":
        from .search.baselines import METHODS
        return tuple(METHODS)
    if kind == "reward form":
        from .search.ciess_env import REWARDS
        return tuple(REWARDS)
    from .backbones import BACKBONES, CTR_BACKBONES, TOPK_BACKBONES
    return tuple({"backbone": BACKBONES, "top-k backbone": TOPK_BACKBONES,
                  "ctr backbone": CTR_BACKBONES}[kind])


@dataclass(frozen=True)
class Kind:
    """What a parameter may hold: a test, its description (one value, several) and examples."""
    ok: Callable[[object], bool] | None  # None: a choice among _choices(name)
    one: str
    many: str
    example: object
    examples: list


KINDS: dict[str, Kind] = {
    "positive int": Kind(lambda v: _int(v) and v > 0, "a positive integer", "positive integers", 10, [2, 8, 32]),
    "non-negative int": Kind(lambda v: _int(v) and v >= 0, "a non-negative integer", "non-negative integers",
                             0, [0, 1, 2]),
    "positive number": Kind(lambda v: _real(v) and v > 0, "a positive number", "positive numbers", 0.01,
                            [0.01, 0.1]),
    "non-negative number": Kind(lambda v: _real(v) and v >= 0, "a non-negative number", "non-negative numbers",
                                0.1, [0.0, 0.1]),
    "number in [0, 1]": Kind(lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]", "numbers in [0, 1]",
                             0.3, [0.0, 0.3, 1.0]),
    # the papers' sparsity c (the pruned fraction) and recsize's density 1 - c (the kept fraction)
    "sparsity": Kind(lambda v: _real(v) and 0 <= v < 1, "a sparsity in [0, 1)", "sparsities in [0, 1)", 0.9,
                     [0.8, 0.9, 0.95]),
    "density": Kind(lambda v: _real(v) and 0 < v <= 1, "a density in (0, 1]", "densities in (0, 1]", 0.1,
                    [0.2, 0.1, 0.05]),
    "path": Kind(lambda v: isinstance(v, os.PathLike) or isinstance(v, str) and v.strip() != "",
                 "a non-empty path", "non-empty paths", "results/run1", ["results/run1"]),
    "dataset": Kind(None, "a dataset", "datasets", "ml-100k", ["ml-100k", "ml-1m"]),
    "protocol": Kind(None, "a split protocol", "split protocols", "random-811", ["random-811"]),
    "backbone": Kind(None, "a backbone", "backbones", "lightgcn", ["mf", "fm"]),
    "top-k backbone": Kind(None, "a top-k backbone", "top-k backbones", "lightgcn", ["mf", "lightgcn"]),
    "ctr backbone": Kind(None, "a CTR backbone", "CTR backbones", "deepfm", ["fm", "deepfm"]),
    "baseline method": Kind(None, "a baseline method", "baseline methods", "mde", ["es", "mr", "mde"]),
    "reward form": Kind(None, "a CIESS reward form", "CIESS reward forms", "code", ["code", "paper"]),
}


def _describe(value) -> str:
    """``value`` in words, as the message's "got ..." says it."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    if value is None or isinstance(value, bool):
        return text
    if isinstance(value, str):
        return f"the string {text}" if value else "the empty string ''"
    if _int(value):
        return f"the integer {text}"
    if _real(value) or isinstance(value, float):
        return f"the number {text}"
    if isinstance(value, (list, tuple)):
        return f"the empty {type(value).__name__} {text}" if not value else f"the {type(value).__name__} {text}"
    return f"a {type(value).__name__} {text}"


def _fits(kind_name: str, value) -> bool:
    kind = KINDS[kind_name]
    if kind.ok is None:
        return isinstance(value, str) and value in _choices(kind_name)
    return kind.ok(value)


def _kind_of(name: str, kind) -> tuple[str, bool]:
    """(kind name, is it a list) for one entry of the spec; a bad spec is the chapter's bug (ValueError)."""
    is_list = isinstance(kind, list)
    if is_list:
        if len(kind) != 1:
            raise ValueError(f"check_parameters: the kind of {name} is a list of one kind, such as "
                             f"['positive int'], got {kind!r}")
        kind = kind[0]
    if kind not in KINDS:
        raise ValueError(f"check_parameters: unknown kind {kind!r} for {name}; kinds are {', '.join(KINDS)}")
    return kind, is_list


def _problem(name: str, kind_name: str, is_list: bool, value) -> str | None:
    """The one-line message for a bad ``value`` of parameter ``name``, or None if it is good."""
    kind = KINDS[kind_name]
    choices = _choices(kind_name) if kind.ok is None else None
    listed = f" ({', '.join(map(repr, choices))})" if choices else ""
    if is_list:
        if isinstance(value, (list, tuple)) and value:
            bad = [v for v in value if not _fits(kind_name, v)]
            if not bad:
                return None
            got = f"{_describe(value)}, whose item {bad[0]!r} is not {kind.one}"
        else:
            got = _describe(value)
        expected = f"a list of {kind.many}{listed} such as {json.dumps(kind.examples)}"
        usage = f"-y '{name}: {json.dumps(kind.examples)}'"
    else:
        if _fits(kind_name, value):
            return None
        expected = (f"{kind.one}, one of {', '.join(map(repr, choices))}" if choices
                    else f"{kind.one} such as {kind.example!r}")
        got = _describe(value)
        usage = f"-p {name} {shlex.quote(str(kind.example))}"
    text_given = isinstance(value, str) and (is_list or not isinstance(kind.example, str))
    hint = f"papermill -p passes text: use {usage}" if text_given else f"e.g. {usage}"
    return f"parameter {name}: expected {expected}, got {got} ({hint})"


def _folder_problem(name: str, value) -> str | None:
    """An output folder parameter (``*_dir``) that names a file, or a path under a file."""
    path = Path(value).expanduser()
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if p.is_dir():
                return None
            under = "" if p == path else f" (it is under {str(p)!r})"
            return (f"parameter {name}: {str(value)!r} is a file, not a folder{under}: give a folder for the "
                    f"chapter's outputs, e.g. -p {name} results/run1")
    return None


def unknown_parameters(namespace: Mapping[str, object], declared) -> list[str]:
    """The names in ``namespace`` (a chapter's ``globals()`` in the cell after its parameters) that are not in
    ``declared``: IPython's own names, ``_``-names, modules, functions and classes are not parameters.
    Explained in the Preface."""
    return [n for n, v in namespace.items()
            if n not in declared and not n.startswith("_") and n not in NOTEBOOK_NAMES
            and not isinstance(v, (ModuleType, type)) and not callable(v)]


def check_parameters(namespace: Mapping[str, object], **spec) -> None:
    """Check the chapter parameters named in ``spec`` (name = kind, see :data:`KINDS`; ``[kind]`` for a
    non-empty list) as found in ``namespace`` (a chapter passes ``globals()``). Raise :class:`ParameterError`
    with one line for a name ``spec`` does not declare (a misspelt ``papermill -p``), then for the first bad
    value; a spec naming a kind that does not exist, or a parameter that is not defined, is a bug of the
    chapter (``ValueError``). Every chapter calls it in the cell after its ``parameters`` cell. Explained in
    the Preface."""
    for name in unknown_parameters(namespace, spec):
        close = difflib.get_close_matches(name, list(spec), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ParameterError(f"parameter {name} is not a parameter of this chapter{hint}: its parameters are "
                             f"{', '.join(spec)}")
    for name, kind in spec.items():
        kind_name, is_list = _kind_of(name, kind)
        if name not in namespace:
            raise ValueError(f"check_parameters: {name} is not defined: is it in the parameters cell?")
        message = _problem(name, kind_name, is_list, namespace[name])
        if message is None and kind_name == "path" and not is_list and name.endswith("_dir"):
            message = _folder_problem(name, namespace[name])
        if message is not None:
            raise ParameterError(message)

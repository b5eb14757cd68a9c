"""What recsize itself downloaded into a dataset folder of the cache. Explained in Chapter 2.

Every download or extraction that lands a file in ``cache_dir() / NAME`` records it in
``NAME/.recsize-downloaded.json`` (written atomically)::

    {"about": "...", "files": {"ml-100k.zip": {"size": 4924029, "sha256": "...", "source": "https://..."}}}

A file is *recsize's own* only while it is in this manifest with the same size and SHA-256 as when it was
written. Anything else in the folder (a file the user put there, or one of recsize's downloads that was
since edited or replaced) is the user's: recsize reads it and never renames, moves or overwrites it.
Only its own files may be moved aside (:func:`recsize.files.move_aside`) when they fail their check.
This module imports nothing from :mod:`recsize.data`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files import write_json

MANIFEST = ".recsize-downloaded.json"
ABOUT = ("files recsize downloaded into this folder, with their size and sha256 when written; recsize moves "
         "aside only these, and only while unchanged. Every other file here is yours: recsize only reads it.")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB chunks. Explained in Chapter 2."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def entries(folder: Path) -> dict[str, dict]:
    """The manifest of ``folder``: file name -> ``{"size", "sha256", "source"}``; empty when there is none
    or it cannot be read (then no file counts as recsize's own, the safe side)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, dict)} if isinstance(files, dict) else {}


def record(folder: Path, sources: dict[str, str]) -> None:
    """Record the files ``folder / name`` (just written by recsize) with their size and SHA-256 and where
    they came from (``sources``: name -> source). Explained in Chapter 2."""
    folder = Path(folder)
    files = entries(folder)
    for name, source in sources.items():
        path = folder / name
        files[name] = {"size": path.stat().st_size, "sha256": file_digest(path), "source": source}
    write_json({"about": ABOUT, "files": dict(sorted(files.items()))}, folder / MANIFEST)


def forget(folder: Path, names: list[str]) -> None:
    """Drop ``names`` from the manifest (after recsize moved those files aside)."""
    folder = Path(folder)
    files = entries(folder)
    if any(n in files for n in names):
        write_json({"about": ABOUT, "files": {k: v for k, v in files.items() if k not in names}},
                   folder / MANIFEST)


def is_own(path: Path) -> bool:
    """Whether ``path`` is recsize's own download: in its folder's manifest with the same size and SHA-256
    as now. Explained in Chapter 2."""
    path = Path(path)
    entry = entries(path.parent).get(path.name)
    if entry is None:
        return False
    try:
        if path.stat().st_size != entry.get("size"):
            return False
        return file_digest(path) == entry.get("sha256")
    except OSError:
        return False

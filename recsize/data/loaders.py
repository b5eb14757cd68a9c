"""Reading datasets into one in-memory form, :class:`Interactions`.

Explained in Chapter 2 (Data and evaluation protocol). The layers point down: :mod:`.interactions` holds
the in-memory form and :mod:`.formats` parses (neither imports from the package), :mod:`.sources` finds and
checks the files, :mod:`.synthetic` generates data, and this module loads all of them.
Reading never moves or changes a file: :func:`load` calls ``fetch(..., repair=False)``.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from .formats import (ML100K_GENRES, CorruptFile, check_lightgcn_sizes, parse_grouplens_items, parse_ml1m_ratings,
                      parse_recbole_items, parse_table, parse_users, read_lightgcn_files, read_text)
from .interactions import Interactions
from .sources import DATASETS, LIGHTGCN_SIZES, fetch
from .synthetic import make_synthetic

__all__ = ["ML100K_GENRES", "Interactions", "load", "read_lightgcn", "read_ml1m", "read_ml100k_grouplens",
           "read_ml100k_recbole"]


def _reindex(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map raw ids to 0..n-1 in sorted order of the raw ids; returns (unique raw ids, new ids)."""
    uniq, inv = np.unique(raw, return_inverse=True)
    return uniq, inv.astype(np.int64)


def _ml100k_frame(inter: np.ndarray, users: dict, items: dict, source: str) -> Interactions:
    """Assemble ml-100k from raw columns; both sources go through here so they give identical data."""
    raw_u, raw_i = inter[:, 0].astype(np.int64), inter[:, 1].astype(np.int64)
    uid, u = _reindex(raw_u)
    iid, i = _reindex(raw_i)
    if len(inter) == 0:
        raise CorruptFile("ml-100k ratings file is empty")
    uf = {k: np.asarray([users[k][x] for x in uid]) for k in ("age", "gender", "occupation", "zip_code")}
    itf = {k: np.asarray([items[k][x] for x in iid]) for k in ("release_year", "genre", "title")}
    uf["age"] = uf["age"].astype(np.int64)
    return Interactions("ml-100k", len(uid), len(iid), u, i, inter[:, 2].astype(np.float32),
                        inter[:, 3].astype(np.int64), uf, itf, source=source,
                        meta={"raw_user_ids": uid, "raw_item_ids": iid})


def read_ml100k_grouplens(zip_path: Path, source: str = "") -> Interactions:
    """Read the official ml-100k.zip (``u.data``, ``u.user``, ``u.item``). Explained in Chapter 2."""
    with zipfile.ZipFile(zip_path) as z:
        data, user_txt, item_txt = (z.read(f"ml-100k/{m}").decode("latin-1") for m in ("u.data", "u.user", "u.item"))
    inter = parse_table(data, "\t", 4, f"u.data in {zip_path}", path=zip_path)
    users = parse_users(user_txt, "|", f"u.user in {zip_path}", path=zip_path)
    items = parse_grouplens_items(item_txt, f"u.item in {zip_path}", path=zip_path)
    return _ml100k_frame(inter, users, items, source)


def read_ml100k_recbole(folder: Path, source: str = "") -> Interactions:
    """Read RecBole's atomic ml-100k files (``.inter``, ``.user``, ``.item``). Explained in Chapter 2."""
    paths = {m: Path(folder) / f"ml-100k.{m}" for m in ("inter", "user", "item")}
    inter = parse_table(read_text(paths["inter"]), "\t", 4, str(paths["inter"]), header=1, path=paths["inter"])
    users = parse_users(read_text(paths["user"]), "\t", str(paths["user"]), header=1, path=paths["user"])
    items = parse_recbole_items(read_text(paths["item"]), str(paths["item"]), path=paths["item"])
    return _ml100k_frame(inter, users, items, source)


def read_ml1m(path: Path, source: str = "") -> Interactions:
    """Read ML-1M's ``ratings.dat`` (``user::item::rating::timestamp``, latin-1) from the official ml-1m.zip
    or, for any other file name, from the file itself (taken out of the zip). Explained in Chapter 2."""
    path = Path(path)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            text = z.read("ml-1m/ratings.dat").decode("latin-1")
        inter = parse_ml1m_ratings(text, f"ratings.dat in {path}", path)
    else:
        inter = parse_ml1m_ratings(read_text(path), str(path), path)
    uid, u = _reindex(inter[:, 0].astype(np.int64))
    iid, i = _reindex(inter[:, 1].astype(np.int64))
    return Interactions("ml-1m", len(uid), len(iid), u, i, inter[:, 2].astype(np.float32),
                        inter[:, 3].astype(np.int64), source=source,
                        meta={"raw_user_ids": uid, "raw_item_ids": iid})


def read_lightgcn(folder: Path, name: str, source: str = "", check_sizes: bool = False) -> Interactions:
    """Read a LightGCN-format set (``train.txt``/``test.txt``, one line ``user item item ...``).

    Explained in Chapter 2. Ids are kept as published (they are already 0-based and contiguous). A bad
    line raises :class:`CorruptFile` with the file and line number. With ``check_sizes`` the counts must
    match the published sizes, which catches truncated downloads.
    """
    files = read_lightgcn_files(Path(folder))
    if check_sizes and name in LIGHTGCN_SIZES:
        check_lightgcn_sizes(files, name, LIGHTGCN_SIZES[name], Path(folder))
    n_users, n_items, _ = files.sizes()
    user = np.concatenate([files.train_user, files.test_user])
    item = np.concatenate([files.train_item, files.test_item])
    given_test = np.zeros(len(user), dtype=bool)
    given_test[len(files.train_user):] = True
    return Interactions(name, n_users, n_items, user, item, given_test=given_test, source=source)


def load(name: str, *, offline: bool = False, verbose: bool = True, **synthetic_kwargs) -> Interactions:
    """Load a dataset by name: ``ml-100k`` (default of the book), ``ml-1m``, ``gowalla``, ``yelp2018``,
    ``amazon-book`` or ``synthetic`` (keyword arguments go to :func:`recsize.data.synthetic.make_synthetic`).

    Explained in Chapter 2.
    """
    if name == "synthetic":
        return make_synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise TypeError(f"unexpected arguments for {name!r}: {sorted(synthetic_kwargs)}")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    got = fetch(name, offline=offline, verbose=verbose, repair=False)  # reading never moves a file
    try:
        if got.layout == "grouplens-dat":
            return read_ml1m(got.path / "ratings.dat", got.source)
        if got.layout == "grouplens-zip":
            zip_path = got.path / f"{name}.zip"
            return (read_ml100k_grouplens if name == "ml-100k" else read_ml1m)(zip_path, got.source)
        if got.layout == "recbole-atomic":
            return read_ml100k_recbole(got.path, got.source)
        if got.layout == "lightgcn":
            return read_lightgcn(got.path, name, got.source)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, io.UnsupportedOperation) as e:
        raise CorruptFile(f"{name} files in {got.path} could not be read ({e}); replace them, or delete them and "
                          f"run 'recsize data fetch {name}'") from e
    raise AssertionError(f"unhandled layout {got.layout}")

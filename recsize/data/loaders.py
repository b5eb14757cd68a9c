"""Reading datasets into one in-memory form, :class:`Interactions`.

Explained in Chapter 2 (Data and evaluation protocol).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .sources import DATASETS, LIGHTGCN_SIZES, CorruptFile, fetch

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]


@dataclass
class Interactions:
    """User-item interactions with ids re-indexed to ``0..n-1``, plus optional side features.

    Explained in Chapter 2. ``user_features`` / ``item_features`` map a field name to an array with one
    entry per user / item (used by the CTR view). ``given_test`` marks interactions that a published
    split puts in its test file (LightGCN-format sets).
    """

    name: str
    n_users: int
    n_items: int
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    user_features: dict[str, np.ndarray] = field(default_factory=dict)
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    given_test: np.ndarray | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        if self.user.shape != self.item.shape:
            raise ValueError(f"user and item arrays differ in length ({len(self.user)} vs {len(self.item)})")
        if len(self.user) and (self.user.min() < 0 or self.user.max() >= self.n_users):
            raise ValueError(f"user ids must lie in [0, {self.n_users}); got [{self.user.min()}, {self.user.max()}]")
        if len(self.item) and (self.item.min() < 0 or self.item.max() >= self.n_items):
            raise ValueError(f"item ids must lie in [0, {self.n_items}); got [{self.item.min()}, {self.item.max()}]")

    def __len__(self) -> int:
        return len(self.user)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    def density(self) -> float:
        return len(self) / (self.n_users * self.n_items)

    def __str__(self) -> str:
        uc, ic = self.user_counts(), self.item_counts()
        top = np.sort(ic)[::-1]
        head = top[: max(1, self.n_items // 5)].sum() / max(1, top.sum())
        return (f"{self.name}: {self.n_users:,} users, {self.n_items:,} items, {len(self):,} interactions, "
                f"density {self.density():.4%}\n"
                f"  per user: min {uc.min()}, median {int(np.median(uc))}, max {uc.max()}; "
                f"per item: min {ic.min()}, median {int(np.median(ic))}, max {ic.max()}; "
                f"top 20% items hold {head:.1%} of interactions\n"
                f"  source: {self.source or 'n/a'}")

    __repr__ = __str__


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


def _parse_numeric(text: str, sep: str, ncols: int, what: str) -> np.ndarray:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    try:
        arr = np.array([ln.split(sep)[:ncols] for ln in lines], dtype=np.float64)
    except ValueError as e:
        raise CorruptFile(f"{what} could not be parsed ({e}); delete it from the cache and fetch again") from e
    if arr.ndim != 2 or arr.shape[1] != ncols:
        raise CorruptFile(f"{what} does not have {ncols} columns per line")
    return arr


def read_ml100k_grouplens(zip_path: Path, source: str = "") -> Interactions:
    """Read the official ml-100k.zip (``u.data``, ``u.user``, ``u.item``). Explained in Chapter 2."""
    with zipfile.ZipFile(zip_path) as z:
        data = z.read("ml-100k/u.data").decode("latin-1")
        user_txt = z.read("ml-100k/u.user").decode("latin-1")
        item_txt = z.read("ml-100k/u.item").decode("latin-1")
    inter = _parse_numeric(data, "\t", 4, "u.data")
    users = {"age": {}, "gender": {}, "occupation": {}, "zip_code": {}}
    for ln in user_txt.splitlines():
        if ln.strip():
            uid, age, gender, occ, zc = ln.split("|")
            for k, v in zip(users, (int(age), gender, occ, zc)):
                users[k][int(uid)] = v
    items = {"release_year": {}, "genre": {}, "title": {}}
    for ln in item_txt.splitlines():
        if ln.strip():
            parts = ln.split("|")
            iid = int(parts[0])
            date = parts[2]
            flags = [int(x) for x in parts[5:24]]
            genres = [g for g, f in zip(ML100K_GENRES, flags) if f]
            items["release_year"][iid] = date[-4:] if date else ""
            items["genre"][iid] = genres[0] if genres else "unknown"
            title = parts[1]
            # u.item titles end with " (YEAR)"; RecBole strips it, and so do we
            if title.endswith(")") and " (" in title:
                title = title[: title.rfind(" (")]
            items["title"][iid] = title
    return _ml100k_frame(inter, users, items, source)


def read_ml100k_recbole(folder: Path, source: str = "") -> Interactions:
    """Read RecBole's atomic ml-100k files (``.inter``, ``.user``, ``.item``). Explained in Chapter 2."""
    def rows(member: str) -> list[list[str]]:
        text = (folder / member).read_text(encoding="latin-1")
        return [ln.split("\t") for ln in text.splitlines()[1:] if ln.strip()]

    inter = _parse_numeric((folder / "ml-100k.inter").read_text("latin-1").split("\n", 1)[1], "\t", 4,
                           "ml-100k.inter")
    users = {"age": {}, "gender": {}, "occupation": {}, "zip_code": {}}
    for uid, age, gender, occ, zc in rows("ml-100k.user"):
        for k, v in zip(users, (int(age), gender, occ, zc)):
            users[k][int(uid)] = v
    items = {"release_year": {}, "genre": {}, "title": {}}
    for r in rows("ml-100k.item"):
        iid = int(r[0])
        items["title"][iid] = r[1]
        items["release_year"][iid] = r[2] if len(r) > 2 else ""
        genres = r[3].split() if len(r) > 3 and r[3].strip() else ["unknown"]
        items["genre"][iid] = genres[0]
    return _ml100k_frame(inter, users, items, source)


def read_ml1m(zip_path: Path, source: str = "") -> Interactions:
    """Read the official ml-1m.zip (``ratings.dat``: user::item::rating::timestamp). Explained in Chapter 2."""
    with zipfile.ZipFile(zip_path) as z:
        text = z.read("ml-1m/ratings.dat").decode("latin-1")
    inter = _parse_numeric(text.replace("::", "\t"), "\t", 4, "ratings.dat")
    uid, u = _reindex(inter[:, 0].astype(np.int64))
    iid, i = _reindex(inter[:, 1].astype(np.int64))
    return Interactions("ml-1m", len(uid), len(iid), u, i, inter[:, 2].astype(np.float32),
                        inter[:, 3].astype(np.int64), source=source,
                        meta={"raw_user_ids": uid, "raw_item_ids": iid})


def _read_adjacency_lists(path: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, ln in enumerate(f, 1):
            parts = ln.split()
            if not parts:
                continue
            try:
                ids = np.asarray(parts, dtype=np.int64)
            except ValueError:
                raise CorruptFile(f"{path}:{lineno} is not a list of integers ('user item item ...')") from None
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    if not users:
        raise CorruptFile(f"{path} is empty")
    return np.concatenate(users), np.concatenate(items)


def read_lightgcn(folder: Path, name: str, source: str = "", check_sizes: bool = False) -> Interactions:
    """Read a LightGCN-format set (``train.txt``/``test.txt``, one line ``user item item ...``).

    Explained in Chapter 2. Ids are kept as published (they are already 0-based and contiguous).
    With ``check_sizes`` the counts must match the published sizes, which catches truncated downloads.
    """
    tu, ti = _read_adjacency_lists(Path(folder) / "train.txt")
    su, si = _read_adjacency_lists(Path(folder) / "test.txt")
    user, item = np.concatenate([tu, su]), np.concatenate([ti, si])
    n_users, n_items = int(user.max()) + 1, int(item.max()) + 1
    if check_sizes and name in LIGHTGCN_SIZES:
        want = LIGHTGCN_SIZES[name]
        got = (n_users, n_items, len(user))
        if got != want:
            raise CorruptFile(f"{name}: found {got} users/items/interactions, published sizes are {want}")
    given_test = np.zeros(len(user), dtype=bool)
    given_test[len(tu):] = True
    return Interactions(name, n_users, n_items, user, item, given_test=given_test, source=source)


def load(name: str, *, offline: bool = False, verbose: bool = True, **synthetic_kwargs) -> Interactions:
    """Load a dataset by name: ``ml-100k`` (default of the book), ``ml-1m``, ``gowalla``, ``yelp2018``,
    ``amazon-book`` or ``synthetic`` (keyword arguments go to :func:`recsize.data.synthetic.make_synthetic`).

    Explained in Chapter 2.
    """
    if name == "synthetic":
        from .synthetic import make_synthetic
        return make_synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise TypeError(f"unexpected arguments for {name!r}: {sorted(synthetic_kwargs)}")
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    got = fetch(name, offline=offline, verbose=verbose)
    try:
        if got.layout == "grouplens-zip":
            zip_path = got.path / f"{name}.zip"
            return (read_ml100k_grouplens if name == "ml-100k" else read_ml1m)(zip_path, got.source)
        if got.layout == "recbole-atomic":
            return read_ml100k_recbole(got.path, got.source)
        if got.layout == "lightgcn":
            return read_lightgcn(got.path, name, got.source)
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, io.UnsupportedOperation) as e:
        raise CorruptFile(f"{name} files in {got.path} could not be read ({e}); delete them and fetch again") from e
    raise AssertionError(f"unhandled layout {got.layout}")

"""The dataset file formats, parsed and checked line by line. Explained in Chapter 2.

The bottom layer of :mod:`recsize.data`: it imports nothing from the package, :mod:`.sources` imports it
to check the files in the cache, and :mod:`.loaders` imports both to read them. Every problem raises
:class:`CorruptFile` naming the file and, for text, the line (``path:17: ...``); the caller adds the fix,
because only it knows whether the file is the user's or a download of recsize's own.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ML100K_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western"]

USER_FIELDS = ("age", "gender", "occupation", "zip_code")


class CorruptFile(ValueError):
    """A data file failed its checksum or could not be parsed. Explained in Chapter 2.

    The message is one line naming the file, the problem and the fix; ``path`` and ``line`` (1-based, or
    None) say where, so that a caller can word the fix.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        super().__init__(message)
        self.path = Path(path) if path is not None else None
        self.line = line


def numbered_lines(text: str, header: int = 0) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for every non-blank line after the first ``header`` lines. Lines end at
    ``\\n`` only (latin-1 text may hold other characters that ``str.splitlines`` would break at)."""
    for n, ln in enumerate(text.split("\n"), 1):
        if n > header and ln.strip():
            yield n, ln.rstrip("\r")


def _int(token: str, where: str, n: int, what: str, path=None) -> int:
    try:
        value = int(token)
    except ValueError:
        raise CorruptFile(f"{where}:{n}: {what} {token!r} is not an integer", path, n) from None
    if value < 0:
        raise CorruptFile(f"{where}:{n}: {what} {value} is negative", path, n)
    return value


def _row_problem(fields: list[str], ncols: int, id_cols: int, sep: str) -> str | None:
    if len(fields) < ncols:
        return f"{len(fields)} field(s), expected {ncols} separated by {sep!r}"
    for k, token in enumerate(fields[:ncols]):
        try:
            value = float(token)
        except ValueError:
            return f"field {k + 1} is {token!r}, not a number"
        if not math.isfinite(value):
            return f"field {k + 1} is {token!r}, not a finite number"
        if k < id_cols and (value < 0 or value != int(value)):
            return f"field {k + 1} is {token!r}, not an id (a non-negative integer)"
    return None


def parse_table(text: str, sep: str, ncols: int, where: str, header: int = 0, id_cols: int = 2,
                path: Path | None = None) -> np.ndarray:
    """The first ``ncols`` numeric fields of every line, as float64 (one row per non-blank line).

    Explained in Chapter 2. The first ``id_cols`` fields must be ids (non-negative integers); ``where``
    names the file in messages (``u.data in ml-100k.zip``), ``header`` lines are skipped.
    """
    rows = list(numbered_lines(text, header))
    if not rows:
        raise CorruptFile(f"{where} has no data lines", path)
    try:
        arr = np.array([ln.split(sep)[:ncols] for _, ln in rows], dtype=np.float64)
        bad = np.zeros(len(rows), dtype=bool) if arr.ndim == 2 and arr.shape[1] == ncols else None
    except ValueError:  # a token that is not a number, or ragged rows
        arr, bad = None, None
    if bad is not None:
        ids = arr[:, :id_cols]
        bad = ~np.isfinite(arr).all(axis=1) | (ids < 0).any(axis=1) | (ids != np.floor(ids)).any(axis=1)
        if not bad.any():
            return arr
    for n, ln in rows:  # the slow path, only to name the first bad line
        problem = _row_problem(ln.split(sep), ncols, id_cols, sep)
        if problem:
            raise CorruptFile(f"{where}:{n}: {problem}", path, n)
    raise CorruptFile(f"{where} could not be parsed", path)  # not reached: some line is bad


def parse_users(text: str, sep: str, where: str, header: int = 0, path: Path | None = None) -> dict:
    """ml-100k's users (``user|age|gender|occupation|zip_code``): ``{field: {raw user id: value}}``.

    Explained in Chapter 2. Used for GroupLens' ``u.user`` and RecBole's ``ml-100k.user``.
    """
    users: dict[str, dict] = {k: {} for k in USER_FIELDS}
    for n, ln in numbered_lines(text, header):
        fields = ln.split(sep)
        if len(fields) != 5:
            raise CorruptFile(f"{where}:{n}: {len(fields)} field(s), expected 5 (user, age, gender, occupation, "
                              f"zip code) separated by {sep!r}", path, n)
        uid, age = _int(fields[0], where, n, "user id", path), _int(fields[1], where, n, "age", path)
        for k, v in zip(USER_FIELDS, (age, *fields[2:])):
            users[k][uid] = v
    return users


def parse_grouplens_items(text: str, where: str, path: Path | None = None) -> dict:
    """GroupLens' ``u.item`` (``id|title|date|video date|url|19 genre flags``): ``{field: {raw id: value}}``
    with the release year, the first genre and the title without its `` (YEAR)``, as RecBole stores it.

    Explained in Chapter 2.
    """
    items: dict[str, dict] = {"release_year": {}, "genre": {}, "title": {}}
    for n, ln in numbered_lines(text):
        parts = ln.split("|")
        if len(parts) < 5 + len(ML100K_GENRES):
            raise CorruptFile(f"{where}:{n}: {len(parts)} field(s), expected {5 + len(ML100K_GENRES)} "
                              f"separated by '|'", path, n)
        iid = _int(parts[0], where, n, "item id", path)
        flags = [_int(x, where, n, "genre flag", path) for x in parts[5:5 + len(ML100K_GENRES)]]
        genres = [g for g, f in zip(ML100K_GENRES, flags) if f]
        date, title = parts[2], parts[1]
        items["release_year"][iid] = date[-4:] if date else ""
        items["genre"][iid] = genres[0] if genres else "unknown"
        # u.item titles end with " (YEAR)"; RecBole strips it, and so do we
        if title.endswith(")") and " (" in title:
            title = title[: title.rfind(" (")]
        items["title"][iid] = title
    return items


def parse_recbole_items(text: str, where: str, path: Path | None = None) -> dict:
    """RecBole's ``ml-100k.item`` (header, then ``id, title, year, genres`` tab-separated):
    ``{field: {raw id: value}}``. Explained in Chapter 2."""
    items: dict[str, dict] = {"release_year": {}, "genre": {}, "title": {}}
    for n, ln in numbered_lines(text, header=1):
        r = ln.split("\t")
        if len(r) < 2:
            raise CorruptFile(f"{where}:{n}: {len(r)} field(s), expected at least 2 (item id, title) "
                              f"separated by tabs", path, n)
        iid = _int(r[0], where, n, "item id", path)
        items["title"][iid] = r[1]
        items["release_year"][iid] = r[2] if len(r) > 2 else ""
        genres = r[3].split() if len(r) > 3 and r[3].strip() else ["unknown"]
        items["genre"][iid] = genres[0]
    return items


def read_text(path: Path) -> str:
    """The text of a latin-1 data file (every byte decodes, so only the parsers can reject it)."""
    return Path(path).read_text(encoding="latin-1")


def check_recbole_member(path: Path) -> None:
    """Parse one of RecBole's atomic ml-100k files (``.inter``, ``.user`` or ``.item``, by its suffix);
    raise :class:`CorruptFile` at the first bad line. Explained in Chapter 2."""
    path = Path(path)
    text = read_text(path)
    if path.suffix == ".inter":
        parse_table(text, "\t", 4, str(path), header=1, path=path)
    elif path.suffix == ".user":
        parse_users(text, "\t", str(path), header=1, path=path)
    elif path.suffix == ".item":
        parse_recbole_items(text, str(path), path=path)


# ------------------------------------------------------------------------ LightGCN's adjacency lists

ADJACENCY_FORMAT = "each line is 'user item item ...', non-negative integers separated by spaces"


def read_adjacency_lists(path: Path, empty_users: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The (user, item) pairs of a LightGCN-format file, one line ``user item item ...`` per user.

    Explained in Chapter 2. A line with a token that is not an integer or a negative id raises
    :class:`CorruptFile` naming the file and the line, and so does a user with no items unless
    ``empty_users`` (the published amazon-book ``test.txt`` has four users without test items, which
    LightGCN's own loader skips); blank lines are skipped.
    """
    path = Path(path)
    users, items = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, ln in enumerate(f, 1):
            parts = ln.split()
            if not parts:
                continue
            try:
                ids = np.asarray(parts, dtype=np.int64)
            except (ValueError, OverflowError):
                token = next((t for t in parts if not _is_int(t)), ln.strip())
                raise CorruptFile(f"{path}:{n}: {token[:40]!r} is not an integer ({ADJACENCY_FORMAT})",
                                  path, n) from None
            if ids.min() < 0:
                raise CorruptFile(f"{path}:{n}: negative id {int(ids.min())} ({ADJACENCY_FORMAT})", path, n)
            if len(ids) < 2 and not empty_users:
                raise CorruptFile(f"{path}:{n}: user {ids[0]} has no items ({ADJACENCY_FORMAT})", path, n)
            users.append(np.full(len(ids) - 1, ids[0]))
            items.append(ids[1:])
    if not users or not sum(len(i) for i in items):
        raise CorruptFile(f"{path} is empty ({ADJACENCY_FORMAT})", path)
    return np.concatenate(users), np.concatenate(items)


def _is_int(token: str) -> bool:
    try:
        np.int64(int(token))
    except (ValueError, OverflowError):
        return False
    return True


@dataclass
class LightGCNFiles:
    """The pairs of a LightGCN-format set: ``train.txt`` then ``test.txt``. Explained in Chapter 2."""

    train_user: np.ndarray
    train_item: np.ndarray
    test_user: np.ndarray
    test_item: np.ndarray

    def sizes(self) -> tuple[int, int, int]:
        """(users, items, interactions), users and items counted as the largest id + 1."""
        n_users = int(max(self.train_user.max(), self.test_user.max())) + 1
        n_items = int(max(self.train_item.max(), self.test_item.max())) + 1
        return n_users, n_items, len(self.train_user) + len(self.test_user)

    def repeats(self) -> tuple[int, int, int]:
        """(pairs repeated in train.txt, pairs repeated in test.txt, distinct test pairs also in train.txt).

        Explained in Chapter 2. The published test files repeat none."""
        n_items = self.sizes()[1]
        train = self.train_user * n_items + self.train_item
        test = self.test_user * n_items + self.test_item
        train_set, test_set = np.unique(train), np.unique(test)
        return (len(train) - len(train_set), len(test) - len(test_set),
                len(np.intersect1d(train_set, test_set, assume_unique=True)))

    def repeats_note(self) -> str:
        """The :meth:`repeats` in words (``train.txt repeats 2 (user, item) pairs, ...``), or ``""``.

        Explained in Chapter 2."""
        dup_train, dup_test, overlap = self.repeats()
        if not (dup_train or dup_test or overlap):
            return ""
        also = f"{overlap:,} pair of test.txt is" if overlap == 1 else f"{overlap:,} pairs of test.txt are"
        return (f"train.txt repeats {_pairs(dup_train)}, test.txt repeats {_pairs(dup_test)}, and {also} also "
                f"in train.txt")


def _pairs(k: int) -> str:
    return "none" if not k else f"{k:,} (user, item) pair" + ("s" if k > 1 else "")


def read_lightgcn_files(folder: Path) -> LightGCNFiles:
    """Parse ``folder/train.txt`` and ``folder/test.txt``. Explained in Chapter 2."""
    tu, ti = read_adjacency_lists(Path(folder) / "train.txt")
    su, si = read_adjacency_lists(Path(folder) / "test.txt", empty_users=True)
    return LightGCNFiles(tu, ti, su, si)


def check_published_sizes(got: tuple[int, int, int], want: tuple[int, int, int], what: str, unit: str,
                          path: Path, note: str = "") -> None:
    """Raise :class:`CorruptFile` unless ``got`` is the published (users, items, ``unit``): ``what`` names
    the files and the verb (``ml-1m: ratings.dat in FOLDER holds``), ``note`` says what else was found.
    Explained in Chapter 2.
    This is what catches a truncated file where no checksum is published."""
    if tuple(got) != tuple(want):
        raise CorruptFile(f"{what} {got[0]:,} users, {got[1]:,} items and "
                          f"{got[2]:,} {unit}; the published sizes are {want[0]:,} users, {want[1]:,} items and "
                          f"{want[2]:,} {unit}" + (f" ({note})" if note else ""), path)


def check_lightgcn_sizes(files: LightGCNFiles, name: str, want: tuple[int, int, int], folder: Path) -> None:
    """Raise :class:`CorruptFile` unless the files hold the published (users, items, interactions), naming
    any repeated pairs. Explained in Chapter 2. This is what catches a truncated download."""
    got = files.sizes()
    if got != tuple(want):
        check_published_sizes(got, want, f"{name}: train.txt and test.txt in {folder} hold", "interactions", folder,
                              files.repeats_note())


# ------------------------------------------------------------------------ ML-1M's ratings.dat

def parse_ml1m_ratings(text: str, where: str, path: Path | None = None) -> np.ndarray:
    """ML-1M's ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) as a float64 array, one row per
    rating; a bad line raises :class:`CorruptFile` naming it. Explained in Chapter 2."""
    return parse_table(text, "::", 4, where, path=path)


def ml1m_sizes(ratings: np.ndarray) -> tuple[int, int, int]:
    """(users, items, ratings) of a parsed ``ratings.dat``: distinct user and movie ids, and rows.

    Explained in Chapter 2."""
    return len(np.unique(ratings[:, 0])), len(np.unique(ratings[:, 1])), len(ratings)

"""Where datasets come from: the local cache, the official archives, and the PyPI fallback.

Explained in Chapter 2 (Data and evaluation protocol).

Every dataset lives in ``cache_dir() / NAME``. Sources are tried in order and the one that served is
reported: (1) files already in the cache, verified by checksum (LightGCN-format sets, and an ml-1m
``ratings.dat`` put there by hand: parsed and checked against the published sizes); (2) the official
archive, downloaded and verified; (3) for ml-100k only, the copy that RecBole 1.2.1 redistributes inside
its wheel on PyPI, fetched with ``pip download --no-deps`` and read from the zip without installing
RecBole.

Files you put into the cache are inputs: recsize only reads them, and when one is wrong it stops with
:class:`CorruptFile` naming the file, the line and the fix, leaving the file byte for byte as it was.
Only recsize's own downloads (recorded in :mod:`.manifest`) are ever moved aside, under a name that
never overwrites (:func:`recsize.files.move_aside`), and only by :func:`fetch` (``load``, ``prepare`` and
``recsize data info`` never move anything). Writes are atomic (temporary file, then rename), and a
download never lands on a file that is not recsize's own. A ``$RECSIZE_DATA`` (or dataset folder) that
is a file, a symlink loop or a link to nothing stops every command with one line before anything is read.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_copy, atomic_write_bytes, move_aside  # noqa: F401
from . import manifest
from .formats import (CorruptFile, check_lightgcn_sizes, check_published_sizes, check_recbole_member, ml1m_sizes,
                      parse_ml1m_ratings, read_lightgcn_files, read_text)
from .manifest import file_digest

ENV_VAR = "RECSIZE_DATA"

# Official GroupLens archives; GroupLens publishes MD5 sums, so those are what we verify.
OFFICIAL = {
    "ml-100k": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "md5",
                "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip", "md5",
              "c4d9eecfca2ab87c1945afe126590906"),
}

# The RecBole 1.2.1 wheel and the SHA-256 of the three ml-100k members we read from it.
RECBOLE_WHEEL = "recbole-1.2.1-py3-none-any.whl"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
RECBOLE_MEMBERS = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}

# LightGCN-format sets: train.txt / test.txt from the LightGCN authors' repository. No checksum is
# published, so a download is checked by parsing it and comparing the published sizes.
LIGHTGCN_URL = "https://raw.githubusercontent.com/kuandeng/LightGCN/master/Data/{name}/{file}"
LIGHTGCN_SIZES = {  # users, items, interactions (train + test)
    "gowalla": (29858, 40981, 1027370),
    "yelp2018": (31668, 38048, 1561406),
    "amazon-book": (52643, 91599, 2984108),
}

LIGHTGCN_FILES = ("train.txt", "test.txt")

# ml-1m's ratings.dat (UserID::MovieID::Rating::Timestamp), taken out of ml-1m.zip and put into the cache
# by hand: users, movies (distinct ids) and ratings, as GroupLens publishes them.
ML1M_SIZES = (6040, 3706, 1000209)

DATASETS = ("ml-100k", "ml-1m", "gowalla", "yelp2018", "amazon-book", "synthetic")


class DatasetUnavailable(RuntimeError):
    """No source could provide the dataset; the message lists what was tried and the manual fix, ``summary``
    says it in one line (what the command line prints without ``--verbose``)."""

    def __init__(self, message: str, summary: str | None = None):
        super().__init__(message)
        self.summary = message if summary is None else summary


def cache_dir() -> Path:
    """Root of the local data cache: ``$RECSIZE_DATA`` if set, else ``~/.cache/recsize``.

    Explained in Chapter 2.
    """
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recsize"


@dataclass
class Fetched:
    """What a fetch produced: the folder with the verified files, their layout and which source served.

    ``moved`` lists ``(file, where it was kept)`` for each corrupt download of recsize's own that this
    fetch moved aside; ``source`` says so too.
    """

    name: str
    path: Path
    layout: str  # "grouplens-zip", "grouplens-dat" (ml-1m's ratings.dat), "recbole-atomic", "lightgcn"
    source: str  # human-readable description of the source that served
    tried: list[str] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)


def _names(paths: list[Path]) -> str:
    return " and ".join(p.name for p in paths)


def refuse_to_overwrite(paths: list[Path]) -> None:
    """Raise :class:`CorruptFile` if any of ``paths`` exists and is not recsize's own download: nothing
    recsize downloads lands on a file it did not write. Explained in Chapter 2."""
    for p in paths:
        if p.exists() and not manifest.is_own(p):
            raise CorruptFile(f"{p} is in the way: recsize would download {p.name} there, but it never overwrites "
                              f"a file it did not download; move that file elsewhere or delete it", p)


@dataclass
class _Cache:
    """One fetch's view of a dataset folder: what was tried, what was moved aside, and whether moving
    recsize's own corrupt downloads aside is allowed (``repair``; never for load/prepare)."""

    name: str
    folder: Path
    repair: bool
    tried: list[str] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def failed(self, paths: list[Path], problem: str, fix: str) -> None:
        """``paths`` failed their check. A user's file stops the fetch with :class:`CorruptFile` (``fix``
        says what to do) and is left byte for byte as it was; recsize's own downloads are moved aside under
        names that never overwrite, so that the next source can replace them."""
        paths = [p for p in paths if p.exists()]
        if not paths:  # gone meanwhile: nothing to report or move
            return
        users = [p for p in paths if not manifest.is_own(p)]
        them = "them" if len(paths) > 1 else "it"
        if users:
            raise CorruptFile(f"{problem} -- recsize did not download {_names(users)}, so it leaves "
                              f"{'them' if len(users) > 1 else 'it'} untouched; {fix}", users[0])
        if not self.repair:
            raise CorruptFile(f"{problem} -- recsize downloaded {_names(paths)} itself: run 'recsize data fetch "
                              f"{self.name}' to move {them} aside and download {them} again", paths[0])
        for p in paths:
            kept = move_aside(p)
            self.moved.append((p, kept))
            self.tried.append(f"local cache: {problem}; recsize had downloaded {p.name}, moved it aside to {kept}")
        manifest.forget(self.folder, [p.name for p in paths])

    def note(self) -> str:
        """What this fetch moved aside, for the ``source`` line: ``(replaced the corrupt X, kept as Y)``."""
        done = [f"replaced the corrupt {p.name}, kept as {kept}" if p.exists()
                else f"moved the corrupt {p.name} aside to {kept}" for p, kept in self.moved]
        return f" ({'; '.join(done)})" if done else ""

    def archive_ok(self, archive: Path, url: str, algorithm: str, digest: str) -> bool:
        if not archive.exists():
            return False
        got = file_digest(archive, algorithm)
        if got == digest:
            return True
        self.failed([archive], f"{archive} is not the official {archive.name} ({algorithm} {got}, expected {digest})",
                    f"replace it with {url} or delete it; recsize will then download it")
        return False

    def recbole_ok(self) -> bool:
        ok = True
        for member, digest in RECBOLE_MEMBERS.items():
            p = self.folder / member
            if not p.exists():
                ok = False
                continue
            got = file_digest(p)
            if got == digest:
                continue
            ok = False
            checksum = f"sha256 {got[:12]}..., expected {digest[:12]}..."
            try:
                check_recbole_member(p)
                problem = f"{p} is not RecBole's {member} ({checksum})"
            except CorruptFile as e:  # say where it goes wrong, if a line does
                problem = f"{e}, so it is not RecBole's {member} ({checksum})"
            self.failed([p], problem, f"replace it with {member} from {RECBOLE_WHEEL} (recbole/dataset_example/"
                                      f"ml-100k/) or delete it; recsize will then download it")
        return ok

    def lightgcn_ok(self) -> bool:
        paths = [self.folder / f for f in LIGHTGCN_FILES]
        have = [p for p in paths if p.exists()]
        if not have:
            self.tried.append(f"local cache: no train.txt/test.txt in {self.folder}")
            return False
        if len(have) == 1:
            (p,) = have
            missing = next(q.name for q in paths if q != p)
            if not manifest.is_own(p):
                raise CorruptFile(f"{self.folder} has {p.name} but no {missing}: put {missing} from the LightGCN "
                                  f"repository (Data/{self.name}/) beside it, or delete {p.name}; recsize will then "
                                  f"download both", p)
            self.tried.append(f"local cache: {p.name} without {missing} in {self.folder}")
            return False
        try:
            files = read_lightgcn_files(self.folder)
            check_lightgcn_sizes(files, self.name, LIGHTGCN_SIZES[self.name], self.folder)
            self.warn_repeats(files.repeats_note())
            return True
        except CorruptFile as e:
            if e.line is not None:
                fix = (f"fix line {e.line} of {e.path.name}, or delete train.txt and test.txt; recsize will then "
                       f"download them")
            else:
                fix = (f"replace them with Data/{self.name}/train.txt and test.txt of the LightGCN repository, or "
                       f"delete both; recsize will then download them")
            self.failed(paths, str(e), fix)
            return False

    def warn_repeats(self, note: str) -> None:
        """Keep a warning about repeated pairs in LightGCN-format files that pass the size check."""
        if note:
            self.warnings.append(
                f"{self.name}: {note} ({self.folder}): recsize keeps each pair once per file, and a test pair that "
                f"is also a training pair can never be recalled (training items are left out of the ranking); if "
                f"these are not the files you meant, take train.txt and test.txt again from the LightGCN "
                f"repository (Data/{self.name}/)")

    def ratings_ok(self) -> bool:
        """ml-1m: a ``ratings.dat`` in the folder (the user's, taken out of ml-1m.zip), parsed and checked
        against the published sizes; a bad line or wrong size stops with :class:`CorruptFile`."""
        p = self.folder / "ratings.dat"
        if not p.exists():
            self.tried.append(f"local cache: no ratings.dat in {self.folder}")
            return False
        try:
            ratings = parse_ml1m_ratings(read_text(p), str(p), p)
            check_published_sizes(ml1m_sizes(ratings), ML1M_SIZES, f"{self.name}: {p} holds", "ratings", p)
            return True
        except CorruptFile as e:
            fix = (f"fix line {e.line} of ratings.dat, or delete it" if e.line is not None
                   else "replace it with ratings.dat of the official ml-1m.zip, or delete it")
            self.failed([p], str(e), fix + "; recsize will then download ml-1m.zip")
            return False


def folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a folder of the data cache (a file, a symlink loop, a link to nothing, not
    readable), or None when it is a folder or does not exist yet. Explained in Chapter 2."""
    try:
        if path.is_dir():  # follows links
            return None
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{path} is a symlink loop, not a folder"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                return f"{path} is a symlink to {os.readlink(path)}, which does not exist"
            return None  # created when needed
        return f"{path} cannot be read ({e.strerror})"
    return f"{path} is a file, not a folder"


def _download(url: str, dest: Path, algorithm: str | None, digest: str | None, timeout: float) -> None:
    """Download ``url`` to ``dest`` atomically, verifying the checksum before the rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        if algorithm is not None:
            got = file_digest(Path(tmp), algorithm)
            if got != digest:
                raise CorruptFile(f"download of {url} has {algorithm} {got}, expected {digest}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_lightgcn(name: str, folder: Path, timeout: float) -> str:
    """Download train.txt and test.txt into a hidden staging folder, check them there, and only then move
    them into ``folder`` and record them: an unchecked download never lands in the cache. Returns what
    :meth:`~recsize.data.formats.LightGCNFiles.repeats_note` says of them."""
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".download-"))
    urls = {f: LIGHTGCN_URL.format(name=name, file=f) for f in LIGHTGCN_FILES}
    try:
        for f, url in urls.items():
            _download(url, staging / f, None, None, timeout)
        try:
            files = read_lightgcn_files(staging)
            check_lightgcn_sizes(files, name, LIGHTGCN_SIZES[name], folder)
        except CorruptFile as e:
            raise CorruptFile("the download fails its check: " + str(e).replace(f"{staging}{os.sep}", "")) from None
        refuse_to_overwrite([folder / f for f in urls])
        for f in urls:
            os.replace(staging / f, folder / f)
        manifest.record(folder, urls)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return files.repeats_note()


def extract_recbole_wheel(wheel: Path, folder: Path) -> None:
    """Read the ml-100k members out of RecBole's wheel (a zip) and write them, verified, to ``folder``.

    Explained in Chapter 2. A member already in ``folder`` with the right checksum is left as it is (it may
    be the user's); the ones written are recorded as recsize's own downloads in the folder's manifest.
    """
    got = file_digest(wheel)
    if got != RECBOLE_WHEEL_SHA256:
        raise CorruptFile(f"{wheel} has sha256 {got}, expected {RECBOLE_WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as z:
        blobs = {}
        for member, digest in RECBOLE_MEMBERS.items():
            data = z.read(f"recbole/dataset_example/ml-100k/{member}")
            if hashlib.sha256(data).hexdigest() != digest:
                raise CorruptFile(f"{member} inside {wheel.name} fails its sha256 check")
            dest = Path(folder) / member
            if dest.exists() and file_digest(dest) == digest:
                continue
            blobs[member] = data
    refuse_to_overwrite([Path(folder) / m for m in blobs])
    for member, data in blobs.items():
        atomic_write_bytes(Path(folder) / member, data)
    if blobs:
        manifest.record(Path(folder), {m: f"PyPI: {RECBOLE_WHEEL}" for m in blobs})


def _pip_download_recbole(folder: Path, timeout: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", tmp, "recbole==1.2.1"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wheel = Path(tmp) / RECBOLE_WHEEL
        if proc.returncode != 0 or not wheel.exists():
            err = (proc.stderr or proc.stdout).strip().splitlines()
            raise RuntimeError("pip download failed: " + (err[-1] if err else f"exit {proc.returncode}"))
        extract_recbole_wheel(wheel, folder)


def _manual_help(name: str, folder: Path) -> str:
    if name == "ml-100k":
        return (f"put the official ml-100k.zip (MD5 {OFFICIAL['ml-100k'][2]}) into {folder}/, or the three "
                f"files {', '.join(RECBOLE_MEMBERS)} from {RECBOLE_WHEEL} (recbole/dataset_example/ml-100k/)"
                f" into {folder}/")
    if name in OFFICIAL:
        url, alg, digest = OFFICIAL[name]
        return (f"download {url} (MD5 {digest}) and put it into {folder}/, or put the ratings.dat it holds "
                f"(ml-1m/ratings.dat) there")
    if name in LIGHTGCN_SIZES:
        return (f"put train.txt and test.txt from the LightGCN repository (Data/{name}/) into {folder}/")
    return f"put the files into {folder}/"


def fetch(name: str, *, offline: bool = False, timeout: float = 30.0, verbose: bool = True,
          repair: bool = True) -> Fetched:
    """Make dataset ``name`` available in the cache and say which source served it.

    Explained in Chapter 2. ``offline=True`` only looks at the cache. Raises :class:`DatasetUnavailable`
    with every attempt listed and where to put the files by hand, and :class:`CorruptFile` (one line:
    file, line, fix) when a file the user put into the cache is wrong; that file is left untouched.
    With ``repair`` (the default; ``load`` passes False) a corrupt download of recsize's own is moved
    aside (:func:`recsize.files.move_aside`) and replaced, and ``source`` says so; without it such a file
    raises :class:`CorruptFile` and nothing is moved.
    """
    if name not in DATASETS or name == "synthetic":
        known = ", ".join(d for d in DATASETS if d != "synthetic")
        raise ValueError(f"unknown dataset {name!r}: choose one of {known} (or 'synthetic', which is generated)")
    root = cache_dir()
    for p in (root, root / name):
        problem = folder_problem(p)
        if problem:
            link = "point the link at a folder, or " if os.path.islink(p) else ""
            raise DatasetUnavailable(f"{problem}: the data cache needs a folder there; {link}set ${ENV_VAR} to a "
                                     f"folder (it is created if missing)")
    folder = root / name
    cache = _Cache(name, folder, repair)
    tried = cache.tried

    def served(layout: str, source: str) -> Fetched:
        source += cache.note()
        if verbose:
            print(f"[recsize] {name}: served by {source}\n[recsize]   from {folder}", file=sys.stderr)
        for w in cache.warnings:  # even when not verbose: the data are not what they seem
            print(f"[recsize] warning: {w}", file=sys.stderr)
        return Fetched(name, folder, layout, source, tried, cache.moved)

    # 1. the local cache
    if name in OFFICIAL:
        url, alg, digest = OFFICIAL[name]
        archive = folder / f"{name}.zip"
        if cache.archive_ok(archive, url, alg, digest):
            return served("grouplens-zip", f"local cache ({archive.name}, {alg} verified)")
        tried.append(f"local cache: no valid {archive}")
    if name == "ml-1m" and cache.ratings_ok():
        return served("grouplens-dat", "local cache (ratings.dat, sizes verified)")
    if name == "ml-100k":
        if cache.recbole_ok():
            return served("recbole-atomic", "local cache (RecBole atomic files, sha256 verified)")
        tried.append(f"local cache: no valid RecBole atomic files in {folder}")
    if name in LIGHTGCN_SIZES and cache.lightgcn_ok():
        return served("lightgcn", "local cache (train.txt/test.txt, sizes verified)")

    if offline:
        raise _unavailable(name, folder, tried + ["network sources skipped (offline)"], offline=True,
                           moved=cache.note())

    # 2. the official source
    if name in OFFICIAL:
        url, alg, digest = OFFICIAL[name]
        archive = folder / f"{name}.zip"
        refuse_to_overwrite([archive])
        try:
            _download(url, archive, alg, digest, timeout)
        except Exception as e:  # network down, checksum mismatch, ...
            tried.append(f"official archive {url}: {type(e).__name__}: {e}")
        else:
            manifest.record(folder, {archive.name: url})
            return served("grouplens-zip", f"official archive {url} ({alg} verified)")
    if name in LIGHTGCN_SIZES:
        refuse_to_overwrite([folder / f for f in LIGHTGCN_FILES])
        try:
            cache.warn_repeats(_download_lightgcn(name, folder, timeout))
            return served("lightgcn", "LightGCN repository (sizes verified)")
        except Exception as e:
            tried.append(f"LightGCN repository: {type(e).__name__}: {e}")

    # 3. ml-100k only: the copy inside RecBole's wheel on PyPI
    if name == "ml-100k":
        try:
            _pip_download_recbole(folder, timeout=max(timeout, 120))
            return served("recbole-atomic", "PyPI: recbole==1.2.1 wheel (read from the zip, sha256 verified)")
        except Exception as e:
            tried.append(f"PyPI recbole==1.2.1 wheel: {type(e).__name__}: {e}")

    raise _unavailable(name, folder, tried, moved=cache.note())


def _unavailable(name: str, folder: Path, tried: list[str], offline: bool = False,
                 moved: str = "") -> DatasetUnavailable:
    """The error listing every source ``tried``; its one-line summary keeps what was moved aside
    (``moved``, :meth:`_Cache.note`), so that a user always learns where a file went."""
    lines = [f"dataset {name!r} is not available. Tried:"] + [f"  - {t}" for t in tried]
    lines.append(f"Fix: {_manual_help(name, folder)}")
    lines.append(f"(the cache root is {cache_dir()}; set ${ENV_VAR} to use another folder)")
    where = "in the local cache (offline)" if offline else f"from any source ({len(tried)} tried)"
    return DatasetUnavailable("\n".join(lines), f"dataset {name!r} is not available {where}{moved}. "
                                                f"Fix: {_manual_help(name, folder)}")

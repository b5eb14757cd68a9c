"""Where datasets come from: the local cache, the official archives, and the PyPI fallback.

Explained in Chapter 2 (Data and evaluation protocol).

Every dataset lives in ``cache_dir() / NAME``. Sources are tried in order and the one that served is
reported: (1) files already in the cache, verified by checksum; (2) the official archive, downloaded
and verified; (3) for ml-100k only, the copy that RecBole 1.2.1 redistributes inside its wheel on PyPI,
fetched with ``pip download --no-deps`` and read from the zip without installing RecBole.
Writes are atomic (temporary file, then rename); a corrupt cached file is moved aside, never used.
"""
from __future__ import annotations

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

DATASETS = ("ml-100k", "ml-1m", "gowalla", "yelp2018", "amazon-book", "synthetic")


class DatasetUnavailable(RuntimeError):
    """No source could provide the dataset; the message lists what was tried and the manual fix."""


class CorruptFile(ValueError):
    """A data file failed its checksum or could not be parsed."""


def cache_dir() -> Path:
    """Root of the local data cache: ``$RECSIZE_DATA`` if set, else ``~/.cache/recsize``.

    Explained in Chapter 2.
    """
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "recsize"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _quarantine(path: Path, reason: str) -> str:
    bad = path.with_name(path.name + ".corrupt")
    os.replace(path, bad)
    return f"{path} is corrupt ({reason}); moved aside to {bad.name}"


@dataclass
class Fetched:
    """What a fetch produced: the folder with the verified files, their layout and which source served."""

    name: str
    path: Path
    layout: str  # "grouplens-zip", "recbole-atomic", "lightgcn", ...
    source: str  # human-readable description of the source that served
    tried: list[str] = field(default_factory=list)


def _check_cached_archive(path: Path, algorithm: str, digest: str, tried: list[str]) -> bool:
    if not path.exists():
        return False
    got = file_digest(path, algorithm)
    if got == digest:
        return True
    tried.append(_quarantine(path, f"{algorithm} {got[:12]}... expected {digest[:12]}..."))
    return False


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


def _recbole_members_ok(folder: Path, tried: list[str]) -> bool:
    ok = True
    for member, digest in RECBOLE_MEMBERS.items():
        p = folder / member
        if not p.exists():
            ok = False
            continue
        if file_digest(p) != digest:
            tried.append(_quarantine(p, "sha256 mismatch"))
            ok = False
    return ok


def extract_recbole_wheel(wheel: Path, folder: Path) -> None:
    """Read the ml-100k members out of RecBole's wheel (a zip) and write them, verified, to ``folder``.

    Explained in Chapter 2.
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
            blobs[member] = data
    for member, data in blobs.items():
        atomic_write_bytes(folder / member, data)


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
        return f"download {url} (MD5 {digest}) and put it into {folder}/"
    if name in LIGHTGCN_SIZES:
        return (f"put train.txt and test.txt from the LightGCN repository (Data/{name}/) into {folder}/")
    return f"put the files into {folder}/"


def fetch(name: str, *, offline: bool = False, timeout: float = 30.0, verbose: bool = True) -> Fetched:
    """Make dataset ``name`` available in the cache and say which source served it.

    Explained in Chapter 2. ``offline=True`` only looks at the cache. Raises :class:`DatasetUnavailable`
    with every attempt listed and where to put the files by hand.
    """
    if name not in DATASETS or name == "synthetic":
        known = ", ".join(d for d in DATASETS if d != "synthetic")
        raise ValueError(f"unknown dataset {name!r}: choose one of {known} (or 'synthetic', which is generated)")
    folder = cache_dir() / name
    tried: list[str] = []

    def served(layout: str, source: str) -> Fetched:
        if verbose:
            print(f"[recsize] {name}: served by {source} ({folder})", file=sys.stderr)
        return Fetched(name, folder, layout, source, tried)

    # 1. the local cache
    if name in OFFICIAL:
        url, alg, digest = OFFICIAL[name]
        archive = folder / f"{name}.zip"
        if _check_cached_archive(archive, alg, digest, tried):
            return served("grouplens-zip", f"local cache ({archive.name}, {alg} verified)")
        tried.append(f"local cache: no valid {archive}")
    if name == "ml-100k":
        if _recbole_members_ok(folder, tried):
            return served("recbole-atomic", "local cache (RecBole atomic files, sha256 verified)")
        tried.append(f"local cache: no valid RecBole atomic files in {folder}")
    if name in LIGHTGCN_SIZES:
        try:
            if (folder / "train.txt").exists() and (folder / "test.txt").exists():
                from .loaders import read_lightgcn  # local import: loaders import this module
                read_lightgcn(folder, name, check_sizes=True)
                return served("lightgcn", "local cache (train.txt/test.txt, sizes verified)")
            tried.append(f"local cache: no train.txt/test.txt in {folder}")
        except CorruptFile as e:
            for f in ("train.txt", "test.txt"):
                if (folder / f).exists():
                    _quarantine(folder / f, str(e))
            tried.append(f"local cache: {e}; files moved aside")

    if offline:
        raise DatasetUnavailable(_unavailable(name, folder, tried + ["network sources skipped (offline)"]))

    # 2. the official source
    if name in OFFICIAL:
        url, alg, digest = OFFICIAL[name]
        try:
            _download(url, folder / f"{name}.zip", alg, digest, timeout)
            return served("grouplens-zip", f"official archive {url} ({alg} verified)")
        except Exception as e:  # network down, checksum mismatch, ...
            tried.append(f"official archive {url}: {type(e).__name__}: {e}")
    if name in LIGHTGCN_SIZES:
        try:
            for f in ("train.txt", "test.txt"):
                _download(LIGHTGCN_URL.format(name=name, file=f), folder / f, None, None, timeout)
            from .loaders import read_lightgcn
            read_lightgcn(folder, name, check_sizes=True)
            return served("lightgcn", "LightGCN repository (sizes verified)")
        except Exception as e:
            for f in ("train.txt", "test.txt"):
                (folder / f).unlink(missing_ok=True)
            tried.append(f"LightGCN repository: {type(e).__name__}: {e}")

    # 3. ml-100k only: the copy inside RecBole's wheel on PyPI
    if name == "ml-100k":
        try:
            _pip_download_recbole(folder, timeout=max(timeout, 120))
            return served("recbole-atomic", "PyPI: recbole==1.2.1 wheel (read from the zip, sha256 verified)")
        except Exception as e:
            tried.append(f"PyPI recbole==1.2.1 wheel: {type(e).__name__}: {e}")

    raise DatasetUnavailable(_unavailable(name, folder, tried))


def _unavailable(name: str, folder: Path, tried: list[str]) -> str:
    lines = [f"dataset {name!r} is not available. Tried:"] + [f"  - {t}" for t in tried]
    lines.append(f"Fix: {_manual_help(name, folder)}")
    lines.append(f"(the cache root is {cache_dir()}; set ${ENV_VAR} to use another folder)")
    return "\n".join(lines)

"""Writing files safely: the one place recsize writes to disk. Explained in Chapter 3 (and the README).

Every file recsize writes goes through :func:`atomic_write`: the bytes land in a temporary file in the
target's folder, are flushed to disk, get the permissions the user's umask asks for (``mkstemp``
alone would make every result 0600), and only then replace the target in one rename. An interrupted
or failed write leaves the old file (or none) and no ``.part`` file behind; temporary files are named
``.NAME.PID.XXXXXXXX.part``, so the next write of ``NAME`` removes those of killed recsize processes.

recsize replaces only what it wrote (:func:`check_replaceable`): its JSON results carry a marker
(``{"recsize": {"format": ..., "version": ...}, ...}``), its archives (``torch.save``, ``np.savez``) a
``recsize.json`` entry; a device, a FIFO, a symlink or a folder is never replaced.

The checks below (:func:`check_output_file`, :func:`check_output_dir`) run before any work, so a run
never trains for an hour and then fails to write its result. This module imports nothing from recsize:
every other module may import it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process's umask, read without changing it where /proc allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new regular file gets from ``open()``: 0666 minus the umask."""
    return 0o666 & ~_umask()


PART = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]{8}\.part")   # .NAME.PID.XXXXXXXX.part


def _remove_stale_parts(path: Path) -> None:
    """Remove the temporary files that recsize processes which no longer exist left beside ``path``
    (``.NAME.PID.XXXXXXXX.part``, killed before they could clean up); nothing else is touched."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = PART.fullmatch(entry.name)
        if not m or m["name"] != path.name or not entry.is_file(follow_symlinks=False):
            continue
        try:
            os.kill(int(m["pid"]), 0)
        except ProcessLookupError:
            Path(entry.path).unlink(missing_ok=True)
        except (PermissionError, OverflowError):  # alive (another user's), or no such pid at all
            pass


@contextlib.contextmanager
def staged(path: str | os.PathLike) -> Iterator[Path]:
    """Yield the path of a temporary file beside ``path`` (``.NAME.PID.XXXXXXXX.part``); on success it
    gets the umask's permissions and replaces ``path`` in one rename, on any exception (Ctrl-C included)
    it is removed and ``path`` is left as it was. Stale temporary files of dead recsize processes are
    removed first. For writers that want a path (papermill); :func:`atomic_write` gives a file object.
    Explained in Chapter 3."""
    path = Path(path)
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None and e.errno is not None:  # a full disk or a quota: name the file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` atomically.

    Explained in Chapter 3. ``with atomic_write(p, "w") as f: f.write(text)``. On any exception (Ctrl-C
    included) the temporary file is removed and ``path`` is left as it was. A ``path`` that exists and
    is not a regular file (a device, a FIFO, a symlink, a folder) is refused (:class:`NotReplaceable`).
    """
    with staged(path) as tmp, open(tmp, mode) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically. Explained in Chapter 2."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` to ``dst`` atomically. Explained in Chapter 2."""
    import shutil
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


# --- what recsize wrote: a marker in every result and archive ---------------------------------------------

MARK = "recsize"                 # the key of the marker in recsize's JSON, the name of its archive entry
# results written before the marker existed are recognised by their keys (a train / search result, the
# book's summary); any other JSON object without the marker is not recsize's
OLD_RESULT_KEYS = ({"backbone", "dataset"}, {"dataset", "protocol"}, {"chapters", "total_seconds"})


def marker(format: str) -> dict:
    """The marker recsize puts in every result and archive it writes: its format and recsize's version.
    Explained in Chapter 3."""
    from . import __version__
    return {"format": format, "version": __version__}


def marked(obj: dict, format: str) -> dict:
    """``obj`` with recsize's marker as its first key (``{"recsize": {"format", "version"}, ...}``)."""
    return {MARK: marker(format), **{k: v for k, v in obj.items() if k != MARK}}


def _zip_marker_name(names: list[str]) -> str:
    """Where the marker goes in an archive: ``recsize.json`` at the top of a NumPy ``.npz``, under the
    record folder of a ``torch.save`` archive (``archive/.data/recsize.json``: torch.load reads only
    its own records, and every entry must share their folder)."""
    first = names[0] if names else ""
    return f"{first.split('/')[0]}/.data/{MARK}.json" if "/" in first else f"{MARK}.json"


def _mark_archive(path: Path, format: str) -> None:
    import zipfile
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(_zip_marker_name(z.namelist()), json.dumps(marker(format)))


def is_recsize_archive(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip archive (``torch.save``, ``np.savez``) carrying recsize's marker entry.
    Explained in Chapter 3."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return _zip_marker_name(names) in names


def _json_is_ours(path: Path, kind: str) -> bool:
    """Whether a JSON file (``kind`` ``"json"``) or notebook (``"ipynb"``) is one recsize wrote: it
    carries the marker (a notebook: in its metadata), or it is an older recsize's (a result with the
    keys of one; a notebook papermill executed from the chapter of the same name, or a published run)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    if not isinstance(data, dict):
        return False
    if kind == "ipynb":
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        run = meta.get("papermill") if isinstance(meta.get("papermill"), dict) else {}
        return (isinstance(meta.get(MARK), dict) or "recsize_run" in meta
                or Path(str(run.get("input_path", ""))).name == path.name)
    return (isinstance(data.get(MARK), dict) and "format" in data[MARK]) or any(k <= set(data) for k in OLD_RESULT_KEYS)


class NotReplaceable(ValueError):
    """An output path holds something recsize did not write (or not a regular file): it is left alone."""


def check_replaceable(path: str | os.PathLike, kind: str | None = None, flag: str | None = None) -> None:
    """Raise :class:`NotReplaceable` (one line naming the file and the fix) unless ``path`` is absent or a
    regular file that recsize may replace: with ``kind`` ``"json"`` (a result or notebook) one carrying
    recsize's marker, or a result of an older recsize (:data:`OLD_RESULT_KEYS`); with ``"zip"`` an
    archive carrying the marker entry; with ``"ipynb"`` a notebook recsize executed; with ``"none"`` nothing that exists; without ``kind`` any regular
    file. A device, a FIFO, a symlink or a folder is never replaced. Explained in Chapter 3."""
    path = Path(path)
    name = f"{flag} {path}" if flag else str(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError:
        return                               # the folder checks (or the write itself) say what is wrong
    if stat.S_ISLNK(st.st_mode):
        raise NotReplaceable(f"{name} is a symbolic link: recsize does not replace it; give the path of a "
                             "new file (or of the link's target, if that is an earlier result)")
    if stat.S_ISDIR(st.st_mode):
        raise NotReplaceable(f"{name} is a directory; give a file name inside it, e.g. {path / 'result.json'}")
    if not stat.S_ISREG(st.st_mode):
        raise NotReplaceable(f"{name} is not a regular file (a device, a FIFO or a socket): recsize does not "
                             "replace it; give the path of a new file")
    if kind == "none":
        raise NotReplaceable(f"{name} exists: recsize does not overwrite it; choose another name")
    if kind is None or (kind == "zip" and is_recsize_archive(path)) or (kind in ("json", "ipynb")
                                                                         and _json_is_ours(path, kind)):
        return
    older = "; written by an older recsize? delete it yourself" if kind == "zip" else ""
    raise NotReplaceable(f"{name} exists and was not written by recsize (it has no recsize marker): recsize "
                         f"does not overwrite it; choose another name or delete it yourself{older}")


def write_json(obj, path: str | os.PathLike, format: str | None = None) -> None:
    """Write ``obj`` as indented JSON atomically. With ``format`` (a result: ``"result"``,
    ``"book-summary"``) the dict carries recsize's marker (:func:`marked`) and ``path`` is replaced only
    if recsize wrote it (:func:`check_replaceable`). Explained in Chapter 3."""
    if format is not None:
        obj = marked(obj, format)
        check_replaceable(path, "json")
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def _disk_full(path: Path, e: RuntimeError) -> OSError:
    """torch's zip writer turns a failed write (a full disk) into ``RuntimeError: unexpected pos``: one
    ``OSError`` naming the file instead."""
    try:
        full = os.statvfs(path.parent).f_bavail == 0
    except OSError:
        full = False
    code = errno.ENOSPC if full or "unexpected pos" in str(e) else errno.EIO
    return OSError(code, os.strerror(code), str(path))


def atomic_save(obj, path: str | os.PathLike, format: str = "torch") -> None:
    """``torch.save`` atomically, so no half-written checkpoint is ever left, with recsize's marker entry
    in the archive; ``path`` is replaced only if recsize wrote it (:func:`check_replaceable`). A full
    disk raises ``OSError`` naming ``path``, which keeps its previous contents. Explained in Chapter 3."""
    import torch
    path = Path(path)
    check_replaceable(path, "zip")
    with staged(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
        except RuntimeError as e:
            if "unexpected pos" not in str(e) and "failed writing" not in str(e):
                raise
            raise _disk_full(path, e) from None
        _mark_archive(tmp, format)


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` atomically, with recsize's marker entry (``recsize.json``, listed in ``np.load``'s
    ``files``); ``path`` is replaced only if recsize wrote it. Explained in Chapter 5."""
    import numpy as np
    path = Path(path)
    check_replaceable(path, "zip")
    with staged(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        _mark_archive(tmp, "npz")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())


def move_aside(path: str | os.PathLike, suffix: str = ".corrupt") -> Path:
    """Rename ``path`` to a name that does not exist yet (``x.corrupt``, ``x.corrupt.1``, ...) and return
    it. Never overwrites: the new name is claimed with a hard link, which fails if it exists.

    Only for files recsize itself wrote (a download that failed its check); a user's own files are never
    moved. Explained in Chapter 2.
    """
    path = Path(path)
    for n in range(10_000):
        target = path.with_name(path.name + suffix + (f".{n}" if n else ""))
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError as e:  # a file system without hard links: rename if the name is still free
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV) or target.exists():
                raise
            os.replace(path, target)
            return target
        os.unlink(path)
        return target
    raise FileExistsError(f"no free name for {path}{suffix}: clean up the folder {path.parent}")


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``: tried for real (a read-only mount or an ACL is not
    seen by permission bits), with a hidden probe file that is removed at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".recsize-probe.")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_output_file(path: str | os.PathLike, flag: str, kind: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be written as a file; raise ``ValueError`` naming
    ``flag`` and the fix otherwise. An existing ``path`` must be a regular file that recsize may replace
    (:func:`check_replaceable` with ``kind``: ``"json"``, ``"zip"``, ``"none"``); a trailing slash
    names a folder, not a file. Explained in Chapter 3."""
    if str(path).endswith(("/", os.sep)):
        raise ValueError(f"{flag} {path}: a trailing slash names a folder, not a file; give a file name, "
                         f"e.g. {Path(path) / 'result.json'}")
    path = Path(path).expanduser()
    if path.name in ("", ".", ".."):
        raise ValueError(f"{flag} {path} is not a file name; give one such as results/run.json")
    check_replaceable(path, kind, flag)
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    if not _can_create_in(folder):
        raise ValueError(f"{flag} {path}: the folder {folder} is not writable; choose a folder you can write to")
    return path


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """Check, before any work, that ``path`` is (or can become) a writable folder; raise ``ValueError``
    naming ``flag`` and the fix otherwise. Explained in Chapter 3."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder; give a folder (it is created if missing)")
    folder = _nearest_existing(path)
    if not folder.is_dir():
        raise ValueError(f"{flag} {path}: {folder} is a file, not a folder; choose another path")
    if not _can_create_in(folder):
        raise ValueError(f"{flag} {path}: {folder} is not writable; choose a folder you can write to")
    return path


class UnreadableFile(ValueError):
    """A file recsize wrote earlier cannot be read back (truncated, garbage, another format)."""


_ARRAY = "__ndarray__"


def _to_plain(obj):
    import numpy as np
    import torch
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays cannot be stored as plain tensors")
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    return obj


def _from_plain(obj):
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return obj[_ARRAY].numpy()
        return {k: _from_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_plain(v) for v in obj)
    return obj


def save_plain(obj, path: str | os.PathLike) -> None:
    """Save nested dicts / lists of tensors, NumPy arrays and numbers atomically as plain tensors, so
    :func:`load_plain` can read them with ``weights_only=True`` (no pickled code runs on load).
    Explained in Chapter 6 (the CIESS checkpoint)."""
    atomic_save(_to_plain(obj), path, "plain")


def load_plain(path: str | os.PathLike, what: str = "file", fix: str = "delete it to start over"):
    """Read a file written by :func:`save_plain`; a truncated or foreign file raises
    :class:`UnreadableFile` naming it and the fix. Explained in Chapter 6."""
    import torch
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UnreadableFile(f"{path} is not a readable {what} (truncated or another format: {reason}); "
                             f"{fix}") from None
    return _from_plain(blob)


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike, flag: str = "the folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (a ``.recsize.lock`` file in it) for the duration: a second
    process that asks for the same folder is refused at once with ``ValueError``, instead of two runs
    overwriting each other's checkpoints. The lock goes with the process (killed included). Chapter 6."""
    import fcntl
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".recsize.lock"
    try:  # never through a symlink, never blocking on a FIFO: the lock must be recsize's regular file
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, file_mode())
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise ValueError(f"{flag} {folder}: {lock} is not a regular file (a symlink, a FIFO or a device): "
                         "recsize does not use it; delete it or use another folder")
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ValueError(f"another recsize process (pid {other}) is using {flag} {folder}: wait for it to "
                             f"finish, or use another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield folder
    finally:
        os.close(fd)

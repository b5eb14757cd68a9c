"""Writing files safely: the one place recsize writes to disk. Explained in Chapter 3 (and the README).

Every file recsize writes goes through :func:`atomic_write`: the bytes land in a temporary file in the
target's folder, are flushed to disk, get the permissions the user's umask asks for (``mkstemp``
alone would make every result 0600), and only then replace the target in one rename. An interrupted
or failed write leaves the old file (or none) and no ``.part`` file behind.

The checks below (:func:`check_output_file`, :func:`check_output_dir`) run before any work, so a run
never trains for an hour and then fails to write its result. This module imports nothing from recsize:
every other module may import it.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path`` atomically.

    Explained in Chapter 3. ``with atomic_write(p, "w") as f: f.write(text)``. On any exception (Ctrl-C
    included) the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically. Explained in Chapter 2."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` to ``dst`` atomically. Explained in Chapter 2."""
    import shutil
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def write_json(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically. Explained in Chapter 3."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically, so no half-written checkpoint is ever left. Explained in Chapter 3."""
    import torch
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


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


def _looks_like(path: Path, kind: str) -> bool:
    """Whether an existing file is of the kind recsize would write there (so replacing it is expected)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if kind == "json":
                f.seek(0)
                return isinstance(json.loads(f.read().decode()), dict)
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return head == b"PK\x03\x04" or head == b""  # torch.save and np.savez write zip archives


def check_output_file(path: str | os.PathLike, flag: str, kind: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be written as a file; raise ``ValueError`` naming
    ``flag`` and the fix otherwise. With ``kind`` (``"json"``, or ``"zip"`` for torch / NumPy files) an
    existing file of another kind is not overwritten: it is probably not a result of recsize's.
    Explained in Chapter 3."""
    path = Path(path).expanduser()
    if kind is not None and path.is_file() and not _looks_like(path, kind):
        what = "a JSON object" if kind == "json" else "a PyTorch or NumPy archive"
        raise ValueError(f"{flag} {path} exists and is not {what}, so probably not an earlier result: "
                         "recsize does not overwrite it; choose another name or delete it yourself")
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a directory; give a file name inside it, e.g. {path / 'result.json'}")
    if path.name in ("", ".", ".."):
        raise ValueError(f"{flag} {path} is not a file name; give one such as results/run.json")
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
    atomic_save(_to_plain(obj), path)


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
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
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

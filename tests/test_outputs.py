"""recsize replaces nothing but its own results (issue 29, part A): every output path is absent or a
regular file that recsize wrote (a marker in its JSON, an entry in its archives, its notebooks'
metadata); devices, FIFOs, symlinks, a user's JSON or zip, a user's folders are refused in one line,
exit 2, before any work, and left as they were. Writes are atomic, a full disk is one line naming the
file, stale temporary files of dead recsize processes are removed, nothing else is."""
from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import recsize.files as files
from recsize.cli import main
from recsize.files import atomic_save, write_json

from conftest import one_line_error  # noqa: E402

TRAIN = ["train", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1", "--quiet"]
SEARCH = ["search", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1", "--quiet"]
CIESS = [*SEARCH, "--method", "ciess", "--budgets", "0.5", "--episodes", "1", "--iterations", "2",
         "--epochs-per-iteration", "1", "--top-l", "1"]
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


def _snapshot(path: Path):
    """What must not change: the kind of the entry (lstat) and, for a regular file, its bytes."""
    st = os.lstat(path)
    data = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), st.st_rdev, st.st_ino, data, link


def _special(tmp_path: Path, kind: str) -> Path:
    p = tmp_path / f"special-{kind}"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "chardev":
        os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))   # a second /dev/null
    elif kind == "symlink-stdout":
        p.symlink_to("/proc/self/fd/1")
    elif kind == "symlink-file":
        (tmp_path / "target.json").write_text('{"mine": true}')
        p.symlink_to(tmp_path / "target.json")
    elif kind == "dangling":
        p.symlink_to(tmp_path / "nowhere")
    return p


SPECIALS = ["fifo", pytest.param("chardev", marks=ROOT_ONLY), "symlink-stdout", "symlink-file", "dangling"]


@pytest.mark.parametrize("kind", SPECIALS)
@pytest.mark.parametrize("command", ["train --out", "train --checkpoint", "search --out", "export --out"])
def test_no_output_flag_replaces_a_device_fifo_or_symlink(command, kind, tmp_path, no_work, capsys):
    target = _special(tmp_path, kind)
    before = _snapshot(target)
    name, flag = command.split()
    argv = {"train": TRAIN, "search": [*SEARCH, "--method", "es", "--budget", "0.5"],
            "export": ["export", "--format", "torchrec", f"user={tmp_path / 'u.pt'}"]}[name]
    line = one_line_error(capsys, main([*argv, flag, str(target)]), flag, str(target))
    assert "not a regular file" in line or "symbolic link" in line
    assert _snapshot(target) == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("kind", SPECIALS)
def test_the_dnis_arrays_never_replace_a_special_file(kind, tmp_path, no_work, capsys):
    npz = _special(tmp_path, kind).rename(tmp_path / "r.npz") if kind != "dangling" else None
    if npz is None:
        npz = tmp_path / "r.npz"
        npz.symlink_to(tmp_path / "nowhere")
    before = _snapshot(npz)
    one_line_error(capsys, main([*SEARCH, "--method", "dnis", "--budget", "0.5", "--out", str(tmp_path / "r.json")]),
                   "--out (its .npz)", str(npz))
    assert _snapshot(npz) == before


def test_write_time_checks_refuse_special_files_too(tmp_path):
    """The Python API (CompactEmbedding.save, write_json) checks again when it writes."""
    fifo = _special(tmp_path, "fifo")
    for write in (lambda: write_json({"a": 1}, fifo), lambda: atomic_save({"a": 1}, fifo),
                  lambda: files.atomic_write_bytes(fifo, b"x")):
        with pytest.raises(files.NotReplaceable, match="not a regular file"):
            write()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


# -- only what recsize wrote is replaced -------------------------------------------------------------------
def test_a_users_json_object_and_zip_are_never_overwritten(tmp_path, no_work, capsys):
    package = tmp_path / "package.json"
    package.write_text('{"name": "mine", "version": "1.0.0"}\n')
    docx = tmp_path / "report.docx"
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    mine_pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, mine_pt)          # a user's own torch.save archive
    before = {p: p.read_bytes() for p in (package, docx, mine_pt)}
    one_line_error(capsys, main([*TRAIN, "--out", str(package)]), "--out", str(package), "not written by recsize")
    for ckpt in (docx, mine_pt):
        one_line_error(capsys, main([*TRAIN, "--checkpoint", str(ckpt)]), "--checkpoint", str(ckpt),
                       "not written by recsize")
    with pytest.raises(files.NotReplaceable, match="not written by recsize"):
        atomic_save({"a": 1}, docx)                    # the Python API refuses too
    assert {p: p.read_bytes() for p in before} == before


def test_results_carry_the_marker_and_replace_each_other(tmp_path, capsys):
    out, ckpt = tmp_path / "r.json", tmp_path / "m.pt"
    assert main([*TRAIN, "--out", str(out), "--checkpoint", str(ckpt)]) == 0
    first = json.loads(out.read_text())
    assert first["recsize"]["format"] == "result" and first["recsize"]["version"]
    assert list(first)[0] == "recsize" and first["backbone"] == "mf"
    assert files.is_recsize_archive(ckpt)
    assert torch.load(ckpt, weights_only=False)["epoch"] >= 0          # the marker does not disturb loading
    assert main([*TRAIN, "--out", str(out), "--checkpoint", str(ckpt), "--dim", "4"]) == 0
    assert json.loads(out.read_text())["dim"] == 4


def test_an_older_recsize_result_without_the_marker_is_replaced(tmp_path, capsys):
    """A result written before the marker existed has the keys of one: it may still be replaced; any
    other JSON object may not."""
    out = tmp_path / "old.json"
    out.write_text(json.dumps({"backbone": "mf", "dataset": "synthetic", "protocol": "random-811", "dim": 8}))
    assert main([*TRAIN, "--out", str(out)]) == 0
    assert json.loads(out.read_text())["recsize"]["format"] == "result"


def test_an_older_archive_without_the_marker_is_refused_with_the_fix(tmp_path, no_work, capsys):
    old = tmp_path / "old.pt"
    torch.save({"state_dict": {}, "epoch": 1, "config": {}}, old)
    one_line_error(capsys, main([*TRAIN, "--checkpoint", str(old)]), "older recsize", "delete it yourself")


def test_npz_and_plain_archives_carry_the_marker(tmp_path):
    files.save_npz(tmp_path / "a.npz", x=np.arange(3))
    assert files.is_recsize_archive(tmp_path / "a.npz")
    assert np.load(tmp_path / "a.npz")["x"].tolist() == [0, 1, 2]
    files.save_plain({"x": np.arange(2)}, tmp_path / "p.pt")
    assert files.is_recsize_archive(tmp_path / "p.pt")
    assert files.load_plain(tmp_path / "p.pt")["x"].tolist() == [0, 1]


def test_export_never_replaces_anything(tmp_path, no_work, capsys):
    out = tmp_path / "e.pt"
    atomic_save({"a": 1}, out)                           # even recsize's own archive: export never overwrites
    before = out.read_bytes()
    one_line_error(capsys, main(["export", "--format", "torchrec", "--out", str(out), f"user={tmp_path / 'u.pt'}"]),
                   "--out", "exists")
    assert out.read_bytes() == before


# -- a trailing slash means a folder --------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--out", "--checkpoint"])
def test_a_trailing_slash_is_a_folder_not_a_file(flag, tmp_path, no_work, capsys):
    one_line_error(capsys, main([*TRAIN, flag, f"{tmp_path / 'dir'}/"]), flag, "trailing slash")
    assert list(tmp_path.iterdir()) == []


# -- a full disk -----------------------------------------------------------------------------------------
def _full_torch_save(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04partial")
    raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4416 vs 4352")


def _full_write(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("how", ["torch", "write"])
def test_a_full_disk_during_torch_save_names_the_file_and_keeps_the_previous(how, tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_save({"epoch": 1}, target)
    before = target.read_bytes()
    if how == "torch":
        monkeypatch.setattr(torch, "save", _full_torch_save)
    else:
        monkeypatch.setattr(torch.serialization, "_open_zipfile_writer",
                            lambda f: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as e:
        atomic_save({"epoch": 2}, target)
    assert e.value.filename == str(target) and e.value.errno == errno.ENOSPC
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_full_disk_in_the_cli_is_one_line_naming_the_checkpoint(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "m.pt"
    monkeypatch.setattr(torch, "save", _full_torch_save)
    line = one_line_error(capsys, main([*TRAIN, "--checkpoint", str(ckpt)]), str(ckpt))
    assert "No space left" in line and "unexpected pos" not in line
    assert list(tmp_path.iterdir()) == []


def test_a_full_ciess_checkpoint_is_one_line_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    import recsize.search.ciess as ciess
    calls = []
    real = ciess.save_plain

    def second_fails(obj, path):
        calls.append(path)
        if len(calls) == 2:
            monkeypatch.setattr(torch, "save", _full_torch_save)
        real(obj, path)
    monkeypatch.setattr(ciess, "save_plain", second_fails)
    line = one_line_error(capsys, main([*CIESS, "--checkpoint-dir", str(tmp_path)]), str(tmp_path / "ciess.pt"))
    assert "No space left" in line
    assert files.load_plain(tmp_path / "ciess.pt")["state"]  # the first checkpoint, whole
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


# -- stale temporary files --------------------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_part_files_of_dead_recsize_processes_are_removed_and_nothing_else(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".r.json.{dead}.ab_cd123.part"
    alive = tmp_path / f".r.json.{os.getpid()}.ab_cd123.part"      # a write in flight: kept
    users = [tmp_path / ".r.json.notes.part", tmp_path / f".r.json.{dead}.part",
             tmp_path / f".other.json.{dead}.ab_cd123.part"]
    for p in (stale, alive, *users):
        p.write_text("x")
    write_json({"a": 1}, tmp_path / "r.json")
    assert not stale.exists()
    assert alive.exists() and all(p.read_text() == "x" for p in users)


def test_temporary_files_carry_the_pid(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b)))
    write_json({"a": 1}, tmp_path / "r.json")
    assert seen and seen[0].startswith(f".r.json.{os.getpid()}.") and seen[0].endswith(".part")


# -- the CIESS checkpoint folder -----------------------------------------------------------------------------
def test_a_fifo_as_the_ciess_checkpoint_is_refused_without_hanging(tmp_path, no_work, capsys):
    fifo = tmp_path / "ciess.pt"
    os.mkfifo(fifo)
    for extra in ([], ["--resume"]):
        one_line_error(capsys, main([*CIESS, "--checkpoint-dir", str(tmp_path), *extra]), str(fifo),
                       "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlinked_lock_file_never_truncates_its_target(tmp_path, no_work, capsys):
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes")
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / ".recsize.lock").symlink_to(mine)
    one_line_error(capsys, main([*CIESS, "--checkpoint-dir", str(folder)]), ".recsize.lock")
    assert mine.read_text() == "my notes" and (folder / ".recsize.lock").is_symlink()


# -- recsize book run / build ---------------------------------------------------------------------------
def _fake_notebooks(folder: Path) -> Path:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    folder.mkdir()
    for name in ("ch01_a", "ch02_b"):
        nb = new_notebook(cells=[new_code_cell("out_dir = 'x'", metadata={"tags": ["parameters"]})])
        nbformat.write(nb, folder / f"{name}.ipynb")
    (folder / "full_run.json").write_text("{}")
    return folder


def _fake_execute(calls: list, fail_on: int | None = None, exc=KeyboardInterrupt):
    def execute(input_path, output_path, **kwargs):
        calls.append(Path(output_path))
        Path(output_path).write_text(Path(input_path).read_text()[:40])   # papermill writes as it goes
        if fail_on is not None and len(calls) == fail_on:
            raise exc("SIGTERM") if exc is not KeyboardInterrupt else exc()
        Path(output_path).write_text(Path(input_path).read_text())
    return execute


def test_book_run_never_replaces_a_users_notebook_summary_or_fifo(tmp_path, monkeypatch):
    import papermill
    from recsize.book import run_book
    nbs = _fake_notebooks(tmp_path / "nbs")
    out = tmp_path / "out"
    out.mkdir()
    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(calls))
    mine = out / "ch02_b.ipynb"
    mine.write_text((nbs / "ch02_b.ipynb").read_text())          # the user's own copy of a notebook
    with pytest.raises(ValueError, match="ch02_b.ipynb.*not written by recsize"):
        run_book(out, notebooks=nbs)
    mine.unlink()
    (out / "summary.json").write_text('{"mine": 1}')
    with pytest.raises(ValueError, match="summary.json.*not written by recsize"):
        run_book(out, notebooks=nbs)
    (out / "summary.json").unlink()
    os.mkfifo(out / "summary.json")
    with pytest.raises(ValueError, match="not a regular file"):
        run_book(out, notebooks=nbs)
    assert calls == []                                            # refused before any chapter ran
    assert stat.S_ISFIFO(os.lstat(out / "summary.json").st_mode)


def test_book_run_writes_notebooks_whole_and_replaces_its_own(tmp_path, monkeypatch):
    import nbformat
    import papermill
    from recsize.book import run_book
    nbs = _fake_notebooks(tmp_path / "nbs")
    out = tmp_path / "out"
    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(calls, fail_on=2))
    with pytest.raises(KeyboardInterrupt):
        run_book(out, notebooks=nbs)
    assert sorted(p.name for p in out.iterdir()) == ["ch01_a.ipynb"]   # no partial ch02_b, no .part
    assert nbformat.read(out / "ch01_a.ipynb", as_version=4).metadata["recsize"]["format"] == "book-run"
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(calls))
    assert [r["status"] for r in run_book(out, notebooks=nbs)] == ["ok", "ok"]   # its own: replaced
    assert json.loads((out / "summary.json").read_text())["recsize"]["format"] == "book-summary"


def test_book_run_interrupted_says_what_was_kept(tmp_path, monkeypatch, capsys):
    import papermill
    from recsize.book import chapters
    from recsize.cli import Terminated
    first, second = chapters()[:2]
    calls = []
    monkeypatch.setattr(papermill, "execute_notebook", _fake_execute(calls, fail_on=2, exc=Terminated))
    out = tmp_path / "out"
    rc = main(["book", "run", "--out", str(out), "--chapters", first, second])
    err = capsys.readouterr().err
    assert rc == 130 and len(err.strip().splitlines()) == 1, err
    assert "nothing was written" not in err and str(out.resolve()) in err and "SIGTERM" in err
    assert sorted(p.name for p in out.iterdir()) == [f"{first}.ipynb"]


def test_book_build_never_deletes_a_users_source_or_build_folder(tmp_path, capsys):
    for sub, name in (("_source", "index.rst"), ("_build", "html/index.html")):
        out = tmp_path / sub.strip("_")
        mine = out / sub / name
        mine.parent.mkdir(parents=True)
        mine.write_text("mine")
        line = one_line_error(capsys, main(["book", "build", "--out", str(out)]), str(out / sub))
        assert "not made by recsize" in line
        assert mine.read_text() == "mine"


def test_stage_book_replaces_only_a_folder_it_made(tmp_path):
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook
    from recsize.book import stage_book
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(new_notebook(cells=[new_markdown_cell("# T\ntext")]), nbs / "ch01_a.ipynb")
    stage = tmp_path / "_source"
    stage_book(stage, ["ch01_a"], nbs, tmp_path / "published", static=None)
    stage_book(stage, ["ch01_a"], nbs, tmp_path / "published", static=None)     # its own: replaced
    (stage / ".recsize-made").unlink()                                           # an older recsize's stage
    stage_book(stage, ["ch01_a"], nbs, tmp_path / "published", static=None)
    assert sorted(p.name for p in stage.iterdir()) == [".recsize-made", "ch01_a.ipynb"]
    users = tmp_path / "mine"
    users.mkdir()
    (users / "index.rst").write_text("mine")
    (users / "ch01_a.ipynb").write_text("mine")
    with pytest.raises(ValueError, match="not made by recsize"):
        stage_book(users, ["ch01_a"], nbs, tmp_path / "published", static=None)
    assert sorted(p.name for p in users.iterdir()) == ["ch01_a.ipynb", "index.rst"]

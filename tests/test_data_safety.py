"""Never lose a user's file (Chapter 2): files put into $RECSIZE_DATA are read, never moved or overwritten;
only recsize's own downloads (in the folder's manifest) are moved aside, under names that never overwrite.
Bad lines are reported with the file and the line number. Every test runs in a private $RECSIZE_DATA."""
from __future__ import annotations

import ast
import hashlib
import zipfile
from pathlib import Path

import pytest

import recsize.data.sources as sources
from recsize.cli import main
from recsize.data import CorruptFile, DatasetUnavailable, cache_dir, fetch, load, prepare, read_lightgcn
from recsize.data import manifest
from recsize.data.loaders import read_ml1m, read_ml100k_grouplens, read_ml100k_recbole
from test_data import grouplens_zip, lightgcn_files, md5, recbole_files, sha256

GOOD_TRAIN, GOOD_TEST = "0 1 2 3\n1 0 4\n2 1\n", "0 5\n1 2\n2 3 4\n"  # 3 users, 6 items, 10 interactions
BAD_TRAIN = "0 1 2 3\n1 0 4\n2 x 1\n"  # line 3 holds a token that is not an integer


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def network(monkeypatch):
    """The network sources, faked: ``payloads`` maps a file name to the bytes a download of it gives
    (missing: the network is unreachable); every call is recorded."""
    calls, payloads = [], {}

    def download(url, dest, algorithm, digest, timeout):
        calls.append(url)
        if dest.name not in payloads:
            raise OSError("network is unreachable")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(payloads[dest.name])

    def pip_download(folder, timeout):
        calls.append("pip")
        if "wheel" not in payloads:
            raise OSError("pip: network is unreachable")
        sources.extract_recbole_wheel(payloads["wheel"], folder)

    monkeypatch.setattr(sources, "_download", download)
    monkeypatch.setattr(sources, "_pip_download_recbole", pip_download)
    return calls, payloads


@pytest.fixture
def tiny_gowalla(monkeypatch):
    """gowalla's published sizes set to those of the tiny fixture files, so that good files pass."""
    monkeypatch.setitem(sources.LIGHTGCN_SIZES, "gowalla", (3, 6, 10))
    return cache_dir() / "gowalla"


def run_cli(args, capsys) -> tuple[int, str, str]:
    rc = main(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("recsize data: error: ") and "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------ a user's LightGCN files are inputs

COMMANDS = {"info": ["data", "info", "gowalla"], "fetch-offline": ["data", "fetch", "gowalla", "--offline"],
            "fetch": ["data", "fetch", "gowalla"]}


@pytest.mark.parametrize("command", COMMANDS)
def test_users_bad_lightgcn_line_stays_byte_identical(command, tiny_gowalla, network, capsys):
    folder = lightgcn_files(tiny_gowalla, train=BAD_TRAIN, test=GOOD_TEST)
    before = snapshot(folder)
    rc, _, err = run_cli(COMMANDS[command], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert f"{folder / 'train.txt'}:3:" in line and "'x' is not an integer" in line
    assert "fix line 3 of train.txt, or delete train.txt and test.txt; recsize will then download them" in line
    assert snapshot(folder) == before  # nothing renamed, moved, added or overwritten
    assert network[0] == []  # and nothing downloaded


@pytest.mark.parametrize("command", COMMANDS)
def test_users_lightgcn_files_of_the_wrong_size_stay(command, network, capsys):
    folder = lightgcn_files(cache_dir() / "gowalla", train=GOOD_TRAIN, test=GOOD_TEST)  # real sizes: far off
    before = snapshot(folder)
    rc, _, err = run_cli(COMMANDS[command], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert str(folder) in line and "published sizes" in line and "delete both" in line
    assert snapshot(folder) == before and network[0] == []


def test_a_second_attempt_still_leaves_the_users_file(tiny_gowalla, network, capsys):
    folder = lightgcn_files(tiny_gowalla, train=BAD_TRAIN, test=GOOD_TEST)
    before = snapshot(folder)
    for _ in range(2):
        assert main(["data", "fetch", "gowalla"]) == 2
        assert main(["data", "info", "gowalla"]) == 2
    capsys.readouterr()
    assert snapshot(folder) == before


@pytest.mark.parametrize("train, line, problem", [
    ("0 1 2\n1\n2 3\n", 2, "user 1 has no items"),
    ("0 1 2\n1 3\n\n-2 3\n", 4, "negative id -2"),
    ("0 1 -5\n", 1, "negative id -5"),
    ("0 1 2\n1 2.5\n", 2, "'2.5' is not an integer"),
    ("0 1\n1 2\n2 3\n3 seven\n", 4, "'seven' is not an integer"),
])
def test_bad_lightgcn_lines_are_rejected_with_their_number(train, line, problem, tmp_path):
    folder = lightgcn_files(tmp_path, train=train, test=GOOD_TEST)
    with pytest.raises(CorruptFile) as e:
        read_lightgcn(folder, "tiny")
    assert f"{folder / 'train.txt'}:{line}: {problem}" in str(e.value)
    assert e.value.line == line and e.value.path == folder / "train.txt"


def test_users_lone_lightgcn_file_is_never_downloaded_over(tiny_gowalla, network, capsys):
    tiny_gowalla.mkdir(parents=True)
    (tiny_gowalla / "train.txt").write_text(GOOD_TRAIN)
    network[1].update({"train.txt": b"0 9\n", "test.txt": b"0 8\n"})
    rc, _, err = run_cli(["data", "fetch", "gowalla"], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert "has train.txt but no test.txt" in line and "delete train.txt" in line
    assert snapshot(tiny_gowalla) == {"train.txt": GOOD_TRAIN.encode()} and network[0] == []


# ------------------------------------------------------------------ recsize's own downloads

def own_lightgcn(folder: Path, train: str, test: str = GOOD_TEST) -> Path:
    """LightGCN files as if recsize had downloaded them: recorded in the folder's manifest."""
    lightgcn_files(folder, train=train, test=test)
    manifest.record(folder, {"train.txt": "test", "test.txt": "test"})
    return folder


def test_own_corrupt_download_is_moved_aside_twice_never_overwritten(tiny_gowalla, network, capsys):
    folder = tiny_gowalla
    kept = []
    for attempt, bad in enumerate(["0 1 2\n1\n", "0 1 2\n2\n"]):  # two different corrupt downloads
        own_lightgcn(folder, train=bad)
        verbose = ["--verbose"] if attempt else []  # every source tried, the reasons included
        rc, _, err = run_cli(["data", "fetch", "gowalla", "--offline", *verbose], capsys)
        assert rc == 2 and "Traceback" not in err
        suffix = ".corrupt" + (f".{attempt}" if attempt else "")
        assert not (folder / "train.txt").exists() and not (folder / "test.txt").exists()
        assert (folder / f"train.txt{suffix}").read_text() == bad
        assert (folder / f"test.txt{suffix}").read_text() == GOOD_TEST
        if verbose:  # every attempt: where the files went (the full new path) and why
            assert f"moved it aside to {folder / f'train.txt{suffix}'}" in err
            assert f"train.txt:2: user {attempt + 1} has no items" in err
        else:  # one line, which still says where they went
            assert len(err.strip().splitlines()) == 1
            assert f"moved the corrupt train.txt aside to {folder / f'train.txt{suffix}'}" in err
        kept.append(folder / f"train.txt{suffix}")
        assert manifest.entries(folder) == {}  # moved aside: no longer counted as a download
    assert kept[0].read_text() == "0 1 2\n1\n"  # the first one was not overwritten by the second


def test_own_corrupt_download_is_replaced_and_reported(tiny_gowalla, network, capsys):
    folder = own_lightgcn(tiny_gowalla, train="0 1 2\n1\n")
    network[1].update({"train.txt": GOOD_TRAIN.encode(), "test.txt": GOOD_TEST.encode()})
    rc, out, _ = run_cli(["data", "fetch", "gowalla"], capsys)
    assert rc == 0
    assert (f"LightGCN repository (sizes verified) (replaced the corrupt train.txt, kept as "
            f"{folder / 'train.txt.corrupt'}; replaced the corrupt test.txt, kept as "
            f"{folder / 'test.txt.corrupt'})") in out
    assert (folder / "train.txt").read_text() == GOOD_TRAIN
    assert (folder / "train.txt.corrupt").read_text() == "0 1 2\n1\n"
    assert manifest.is_own(folder / "train.txt") and manifest.is_own(folder / "test.txt")
    assert not [p for p in folder.iterdir() if p.name.startswith(".download-")]  # no staging folder left


def test_reading_never_moves_even_own_files(tiny_gowalla, network, capsys):
    folder = own_lightgcn(tiny_gowalla, train="0 1 2\n1\n")
    before = snapshot(folder)
    rc, _, err = run_cli(["data", "info", "gowalla"], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert "run 'recsize data fetch gowalla' to move them aside" in line
    with pytest.raises(CorruptFile):
        load("gowalla", verbose=False)
    with pytest.raises(CorruptFile):
        prepare("gowalla")
    assert snapshot(folder) == before and network[0] == []


def test_an_own_file_the_user_changed_is_the_users(tiny_gowalla, network):
    """Recorded, but its bytes differ from the record (the user edited or replaced it): left alone."""
    folder = own_lightgcn(tiny_gowalla, train=GOOD_TRAIN)
    (folder / "train.txt").write_text(BAD_TRAIN)
    before = snapshot(folder)
    with pytest.raises(CorruptFile, match="recsize did not download train.txt"):
        fetch("gowalla", verbose=False)
    assert snapshot(folder) == before


def test_a_good_download_is_recorded(tiny_gowalla, network):
    network[1].update({"train.txt": GOOD_TRAIN.encode(), "test.txt": GOOD_TEST.encode()})
    got = fetch("gowalla", verbose=False)
    assert got.source == "LightGCN repository (sizes verified)" and got.moved == []
    files = manifest.entries(tiny_gowalla)
    assert sorted(files) == ["test.txt", "train.txt"]
    assert files["train.txt"]["sha256"] == hashlib.sha256(GOOD_TRAIN.encode()).hexdigest()
    assert files["train.txt"]["size"] == len(GOOD_TRAIN) and files["train.txt"]["source"].endswith("/train.txt")
    assert fetch("gowalla", offline=True, verbose=False).source.startswith("local cache")


def test_a_bad_download_never_lands(tiny_gowalla, network):
    network[1].update({"train.txt": b"0 1\n1\n", "test.txt": GOOD_TEST.encode()})
    with pytest.raises(DatasetUnavailable, match=r"the download fails its check: train.txt:2: user 1 has no items"):
        fetch("gowalla", verbose=False)
    assert snapshot(tiny_gowalla) == {}


# ------------------------------------------------------------------ ml-100k: RecBole files and the zip

@pytest.fixture
def tiny_ml100k(monkeypatch, tmp_path):
    """Checksums set to those of the fixture files; returns (folder, the fixture's bytes, a fake wheel)."""
    good = recbole_files(tmp_path / "good")
    blobs = {m: (good / m).read_bytes() for m in sources.RECBOLE_MEMBERS}
    for m, data in blobs.items():
        monkeypatch.setitem(sources.RECBOLE_MEMBERS, m, hashlib.sha256(data).hexdigest())
    wheel = tmp_path / sources.RECBOLE_WHEEL
    with zipfile.ZipFile(wheel, "w") as z:
        for m, data in blobs.items():
            z.writestr(f"recbole/dataset_example/ml-100k/{m}", data)
    monkeypatch.setattr(sources, "RECBOLE_WHEEL_SHA256", sha256(wheel))
    return cache_dir() / "ml-100k", blobs, wheel


def corrupt_inter(folder: Path) -> bytes:
    text = (folder / "ml-100k.inter").read_text(encoding="latin-1").splitlines(keepends=True)
    text[3] = "3\t9\tfive\t881171488\n"  # line 4 (after the header)
    (folder / "ml-100k.inter").write_text("".join(text), encoding="latin-1")
    return (folder / "ml-100k.inter").read_bytes()


@pytest.mark.parametrize("offline", [True, False])
def test_users_corrupt_recbole_file_is_left_alone(offline, tiny_ml100k, network, capsys):
    folder, blobs, wheel = tiny_ml100k
    recbole_files(folder)
    corrupt_inter(folder)
    network[1]["wheel"] = wheel
    before = snapshot(folder)
    rc, _, err = run_cli(["data", "fetch", "ml-100k", *(["--offline"] if offline else [])], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert f"{folder / 'ml-100k.inter'}:4: field 3 is 'five', not a number" in line
    assert "recsize did not download ml-100k.inter" in line and "or delete it; recsize will then download it" in line
    assert snapshot(folder) == before and network[0] == []


def test_own_corrupt_recbole_file_is_moved_aside_and_replaced(tiny_ml100k, network, capsys):
    folder, blobs, wheel = tiny_ml100k
    recbole_files(folder)
    bad = corrupt_inter(folder)
    manifest.record(folder, {"ml-100k.inter": "PyPI: recbole-1.2.1-py3-none-any.whl"})
    network[1]["wheel"] = wheel
    user_files = {m: (folder / m).read_bytes() for m in ("ml-100k.user", "ml-100k.item")}
    rc, out, _ = run_cli(["data", "fetch", "ml-100k"], capsys)
    assert rc == 0
    kept = folder / "ml-100k.inter.corrupt"
    assert f"PyPI: recbole==1.2.1 wheel (read from the zip, sha256 verified) (replaced the corrupt ml-100k.inter, " \
           f"kept as {kept})" in out
    assert kept.read_bytes() == bad and (folder / "ml-100k.inter").read_bytes() == blobs["ml-100k.inter"]
    assert {m: (folder / m).read_bytes() for m in user_files} == user_files  # the valid ones: not rewritten
    assert sorted(manifest.entries(folder)) == ["ml-100k.inter"]


def test_users_corrupt_zip_is_never_downloaded_over(monkeypatch, network, capsys, tmp_path):
    folder = cache_dir() / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "ml-100k.zip").write_bytes(b"my own notes, not a zip")
    payload = grouplens_zip(tmp_path / "ml-100k.zip").read_bytes()
    network[1]["ml-100k.zip"] = payload
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k",
                        (sources.OFFICIAL["ml-100k"][0], "md5", hashlib.md5(payload).hexdigest()))
    for args in (["data", "fetch", "ml-100k"], ["data", "info", "ml-100k"]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 2
        line = assert_one_line_error(err)
        assert f"{folder / 'ml-100k.zip'} is not the official ml-100k.zip" in line
    assert snapshot(folder) == {"ml-100k.zip": b"my own notes, not a zip"} and network[0] == []


def test_own_corrupt_zip_is_moved_aside_and_replaced(monkeypatch, network, capsys, tmp_path):
    folder = cache_dir() / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "ml-100k.zip").write_bytes(b"a truncated download")
    manifest.record(folder, {"ml-100k.zip": sources.OFFICIAL["ml-100k"][0]})
    payload = grouplens_zip(tmp_path / "ml-100k.zip").read_bytes()
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k",
                        (sources.OFFICIAL["ml-100k"][0], "md5", hashlib.md5(payload).hexdigest()))
    # reading (info/load) does not move it
    rc, _, err = run_cli(["data", "info", "ml-100k"], capsys)
    assert rc == 2 and "run 'recsize data fetch ml-100k'" in err
    assert (folder / "ml-100k.zip").read_bytes() == b"a truncated download"
    # fetch moves it aside and downloads the archive again
    network[1]["ml-100k.zip"] = payload
    rc, out, _ = run_cli(["data", "fetch", "ml-100k"], capsys)
    assert rc == 0
    kept = folder / "ml-100k.zip.corrupt"
    assert f"(replaced the corrupt ml-100k.zip, kept as {kept})" in out
    assert kept.read_bytes() == b"a truncated download" and (folder / "ml-100k.zip").read_bytes() == payload
    assert manifest.is_own(folder / "ml-100k.zip")
    assert load("ml-100k", offline=True, verbose=False).n_users == 3
    assert md5(folder / "ml-100k.zip") == sources.OFFICIAL["ml-100k"][2]


# ------------------------------------------------------------------ the other readers: a bad line's number

def test_grouplens_and_ml1m_readers_name_the_line(tmp_path):
    path = grouplens_zip(tmp_path / "ml-100k.zip")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n).decode("latin-1") for n in z.namelist()}
    for member, edit, line, problem in [
        ("ml-100k/u.data", lambda t: t.replace("12\t9\t1\t", "12\t9\t\t", 1), 3, "field 3 is '', not a number"),
        ("ml-100k/u.data", lambda t: t.replace("3\t5\t3", "-3\t5\t3", 1), 2, "field 1 is '-3', not an id"),
        ("ml-100k/u.data", lambda t: t + "7\t5\n", 8, "2 field(s), expected 4"),
        ("ml-100k/u.user", lambda t: t.replace("|53|", "|old|", 1), 2, "age 'old' is not an integer"),
        ("ml-100k/u.item", lambda t: t.replace("9|GoldenEye", "nine|GoldenEye", 1), 2, "item id 'nine'"),
    ]:
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            for n, text in members.items():
                z.writestr(n, edit(text) if n == member else text)
        with pytest.raises(CorruptFile) as e:
            read_ml100k_grouplens(bad)
        assert f"{member.split('/')[1]} in {bad}:{line}: {problem}" in str(e.value)
        assert e.value.line == line
    ml1m = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(ml1m, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n\n1::661::3\n")
    with pytest.raises(CorruptFile, match=rf"ratings.dat in {ml1m}:3: 3 field\(s\), expected 4"):
        read_ml1m(ml1m)


def test_recbole_reader_names_the_line(tmp_path):
    folder = recbole_files(tmp_path / "rb")
    corrupt_inter(folder)
    with pytest.raises(CorruptFile, match=rf"{folder / 'ml-100k.inter'}:4: field 3 is 'five'"):
        read_ml100k_recbole(folder)
    folder = recbole_files(tmp_path / "rb2")
    user = folder / "ml-100k.user"
    user.write_text(user.read_text() + "99\t40\tM\n")
    with pytest.raises(CorruptFile, match=rf"{user}:5: 3 field\(s\), expected 5"):
        read_ml100k_recbole(folder)


# ------------------------------------------------------------------ the layers point down

def imports_of(module: str) -> list[tuple[str, bool]]:
    """(imported module, imported inside a function) for every relative import of recsize/data/MODULE.py."""
    tree = ast.parse((Path(sources.__file__).parent / f"{module}.py").read_text())
    nested = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    return [("." * n.level + (n.module or ""), id(n) in nested)
            for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_no_import_circle_between_sources_and_loaders():
    assert all(m == "..files" for m, _ in imports_of("manifest"))
    assert imports_of("formats") == []  # the parsers import nothing from the package
    assert {m for m, _ in imports_of("sources")} <= {"..files", ".", ".manifest", ".formats"}
    assert (".sources", False) in imports_of("loaders")
    assert not any(nested for m, nested in imports_of("loaders") if m in (".sources", ".formats"))

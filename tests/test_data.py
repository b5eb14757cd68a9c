"""Loaders on tiny fixture files written here, and the source chain of fetch() with the network cut off."""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

import recsize.data.sources as sources
from recsize.data import manifest
from recsize.data import (CorruptFile, DatasetUnavailable, Interactions, cache_dir, ctr_view, fetch, load, prepare,
                          read_lightgcn, read_ml1m, read_ml100k_grouplens, read_ml100k_recbole)
from recsize.data.loaders import ML100K_GENRES
from recsize.data.sources import atomic_write_bytes, extract_recbole_wheel

# ---------------------------------------------------------------- tiny ml-100k content, two layouts
# raw user ids 3, 7, 12; raw item ids 5, 9, 40, 41 (deliberately not contiguous)
RATINGS = [(7, 40, 4, 881250949), (3, 5, 3, 891717742), (12, 9, 1, 878887116), (3, 40, 5, 880606923),
           (12, 41, 2, 886397596), (7, 5, 4, 884182806), (3, 9, 2, 881171488)]
USERS = [(3, 24, "M", "technician", "85711"), (7, 53, "F", "other", "94043"),
         (12, 23, "M", "writer", "32067")]
# id, title as in u.item, date, genres (ML100K_GENRES order), title as RecBole stores it, year
ITEMS = [(5, "Toy Story (1995)", "01-Jan-1995", ["Animation", "Children's", "Comedy"], "Toy Story", "1995"),
         (9, "GoldenEye (1995)", "01-Jan-1995", ["Action", "Adventure", "Thriller"], "GoldenEye", "1995"),
         (40, "Twelve Monkeys (1995)", "01-Jan-1996", ["Drama", "Sci-Fi"], "Twelve Monkeys", "1996"),
         (41, "Mystery Film (1997)", "", [], "Mystery Film", "")]


def grouplens_zip(path: Path) -> Path:
    u_data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    u_user = "".join("|".join(map(str, row)) + "\n" for row in USERS)
    lines = []
    for iid, title, date, genres, _, _ in ITEMS:
        flags = "|".join("1" if g in genres else "0" for g in ML100K_GENRES)
        lines.append(f"{iid}|{title}|{date}||http://us.imdb.com/x|{flags}\n")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-100k/u.data", u_data)
        z.writestr("ml-100k/u.user", u_user)
        z.writestr("ml-100k/u.item", "".join(lines))
    return path


def recbole_files(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS), encoding="latin-1")
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join("\t".join(map(str, row)) + "\n" for row in USERS), encoding="latin-1")
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{iid}\t{rb_title}\t{year}\t{' '.join(genres)}\n"
                  for iid, _, _, genres, rb_title, year in ITEMS), encoding="latin-1")
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def assert_same_interactions(a: Interactions, b: Interactions) -> None:
    assert (a.name, a.n_users, a.n_items) == (b.name, b.n_users, b.n_items)
    for attr in ("user", "item", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
    assert a.user_features.keys() == b.user_features.keys()
    assert a.item_features.keys() == b.item_features.keys()
    for k in a.user_features:
        np.testing.assert_array_equal(a.user_features[k], b.user_features[k], err_msg=k)
    for k in a.item_features:
        np.testing.assert_array_equal(a.item_features[k], b.item_features[k], err_msg=k)
    for k in ("raw_user_ids", "raw_item_ids"):
        np.testing.assert_array_equal(a.meta[k], b.meta[k])


def test_grouplens_reader(tmp_path):
    d = read_ml100k_grouplens(grouplens_zip(tmp_path / "ml-100k.zip"), source="fixture")
    assert (d.n_users, d.n_items, len(d)) == (3, 4, 7)
    assert d.source == "fixture"
    np.testing.assert_array_equal(d.meta["raw_user_ids"], [3, 7, 12])
    np.testing.assert_array_equal(d.meta["raw_item_ids"], [5, 9, 40, 41])
    # (7, 40) -> (1, 2); (3, 5) -> (0, 0); ...
    np.testing.assert_array_equal(d.user, [1, 0, 2, 0, 2, 1, 0])
    np.testing.assert_array_equal(d.item, [2, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(d.rating, [4, 3, 1, 5, 2, 4, 2])
    assert d.rating.dtype == np.float32 and d.timestamp.dtype == np.int64
    assert d.timestamp[0] == 881250949
    np.testing.assert_array_equal(d.user_features["age"], [24, 53, 23])
    np.testing.assert_array_equal(d.user_features["gender"], ["M", "F", "M"])
    np.testing.assert_array_equal(d.user_features["occupation"], ["technician", "other", "writer"])
    np.testing.assert_array_equal(d.user_features["zip_code"], ["85711", "94043", "32067"])
    # primary genre = first listed genre; no flag at all -> "unknown"
    np.testing.assert_array_equal(d.item_features["genre"], ["Animation", "Action", "Drama", "unknown"])
    np.testing.assert_array_equal(d.item_features["release_year"], ["1995", "1995", "1996", ""])
    np.testing.assert_array_equal(d.item_features["title"],
                                  ["Toy Story", "GoldenEye", "Twelve Monkeys", "Mystery Film"])


def test_recbole_reader_matches_grouplens(tmp_path):
    a = read_ml100k_grouplens(grouplens_zip(tmp_path / "ml-100k.zip"))
    b = read_ml100k_recbole(recbole_files(tmp_path / "rb"))
    assert_same_interactions(a, b)


def test_grouplens_reader_rejects_garbage(tmp_path):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\tthree\t4\n")
        z.writestr("ml-100k/u.user", "")
        z.writestr("ml-100k/u.item", "")
    with pytest.raises(CorruptFile, match="u.data"):
        read_ml100k_grouplens(path)


def test_ml1m_reader(tmp_path):
    path = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n\n"
                                        "6::1193::4::978301968\n")
    d = read_ml1m(path, "fixture")
    assert (d.name, d.n_users, d.n_items, len(d)) == ("ml-1m", 2, 2, 3)
    np.testing.assert_array_equal(d.user, [0, 0, 1])
    np.testing.assert_array_equal(d.item, [1, 0, 1])
    np.testing.assert_array_equal(d.rating, [5, 3, 4])
    np.testing.assert_array_equal(d.timestamp, [978300760, 978302109, 978301968])
    np.testing.assert_array_equal(d.meta["raw_item_ids"], [661, 1193])


def lightgcn_files(folder: Path, train: str = "0 1 2 3\n1 0 4\n\n2 1\n", test: str = "0 5\n1 2\n2 3 4\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text(train)
    (folder / "test.txt").write_text(test)
    return folder


def test_lightgcn_reader(tmp_path):
    d = read_lightgcn(lightgcn_files(tmp_path), "tiny", check_sizes=True)
    assert (d.n_users, d.n_items, len(d)) == (3, 6, 10)
    np.testing.assert_array_equal(d.user, [0, 0, 0, 1, 1, 2, 0, 1, 2, 2])
    np.testing.assert_array_equal(d.item, [1, 2, 3, 0, 4, 1, 5, 2, 3, 4])
    np.testing.assert_array_equal(d.given_test, [False] * 6 + [True] * 4)
    pairs_train = set(zip(d.user[~d.given_test].tolist(), d.item[~d.given_test].tolist()))
    pairs_test = set(zip(d.user[d.given_test].tolist(), d.item[d.given_test].tolist()))
    assert pairs_train == {(0, 1), (0, 2), (0, 3), (1, 0), (1, 4), (2, 1)}
    assert pairs_test == {(0, 5), (1, 2), (2, 3), (2, 4)}
    assert d.given_test.sum() == 4 and d.rating is None


def test_lightgcn_reader_errors(tmp_path):
    with pytest.raises(CorruptFile, match="test.txt:2"):
        read_lightgcn(lightgcn_files(tmp_path / "a", test="0 5\n1 x 2\n"), "tiny")
    with pytest.raises(CorruptFile, match="empty"):
        read_lightgcn(lightgcn_files(tmp_path / "b", train="\n"), "tiny")
    # a published name checks the published sizes (this fixture is far too small for gowalla)
    with pytest.raises(CorruptFile, match="published sizes"):
        read_lightgcn(lightgcn_files(tmp_path / "c"), "gowalla", check_sizes=True)
    read_lightgcn(lightgcn_files(tmp_path / "d"), "gowalla", check_sizes=False)


# ---------------------------------------------------------------- fetch() without a network

@pytest.fixture
def no_network(monkeypatch):
    """Every network source fails like a machine without network; calls are recorded."""
    calls = []

    def download(url, dest, algorithm, digest, timeout):
        calls.append(url)
        raise OSError("network is unreachable")

    def pip_download(folder, timeout):
        calls.append("pip")
        raise OSError("pip: network is unreachable")

    monkeypatch.setattr(sources, "_download", download)
    monkeypatch.setattr(sources, "_pip_download_recbole", pip_download)
    return calls


def test_cache_dir_follows_env(private_cache):
    assert cache_dir() == private_cache


def test_fetch_lists_every_source_tried(no_network):
    with pytest.raises(DatasetUnavailable) as e:
        fetch("ml-100k", verbose=False)
    msg = str(e.value)
    folder = cache_dir() / "ml-100k"
    assert "local cache: no valid" in msg and "ml-100k.zip" in msg
    assert "RecBole atomic files" in msg
    assert "official archive https://files.grouplens.org" in msg and "network is unreachable" in msg
    assert "PyPI recbole==1.2.1 wheel: OSError" in msg
    assert "Fix:" in msg and str(folder) in msg
    assert sources.OFFICIAL["ml-100k"][2] in msg  # the MD5 to check a manual download against
    assert len(no_network) == 2  # the official archive, then PyPI


def test_fetch_offline_never_touches_the_network(no_network):
    with pytest.raises(DatasetUnavailable) as e:
        fetch("ml-100k", offline=True, verbose=False)
    msg = str(e.value)
    assert "offline" in msg and "Fix:" in msg and str(cache_dir() / "ml-100k") in msg
    assert no_network == []
    with pytest.raises(DatasetUnavailable, match="Fix:"):
        fetch("ml-1m", offline=True, verbose=False)
    with pytest.raises(DatasetUnavailable, match="train.txt and test.txt"):
        fetch("yelp2018", offline=True, verbose=False)


def test_users_corrupt_archive_is_left_alone(no_network):
    """A zip the user put into the cache is read, never moved: a wrong one stops fetch with the fix."""
    folder = cache_dir() / "ml-100k"
    folder.mkdir(parents=True)
    (folder / "ml-100k.zip").write_bytes(b"not the real archive")
    with pytest.raises(CorruptFile) as e:
        fetch("ml-100k", offline=True, verbose=False)
    assert (folder / "ml-100k.zip").read_bytes() == b"not the real archive"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.zip"]
    msg = str(e.value)
    assert str(folder / "ml-100k.zip") in msg and "not the official ml-100k.zip" in msg
    assert "delete it; recsize will then download it" in msg and "\n" not in msg


def test_cached_archive_is_served(tmp_path, monkeypatch, no_network, capsys):
    folder = cache_dir() / "ml-100k"
    folder.mkdir(parents=True)
    archive = grouplens_zip(folder / "ml-100k.zip")
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k", (sources.OFFICIAL["ml-100k"][0], "md5", md5(archive)))
    got = fetch("ml-100k", verbose=True)
    assert got.layout == "grouplens-zip" and got.path == folder
    assert got.source.startswith("local cache")
    assert "served by local cache" in capsys.readouterr().err
    assert no_network == []
    data = load("ml-100k", verbose=False)
    assert_same_interactions(data, read_ml100k_grouplens(grouplens_zip(tmp_path / "ref.zip")))
    assert data.source.startswith("local cache")


def test_cached_recbole_files_are_served(tmp_path, monkeypatch, no_network):
    folder = recbole_files(cache_dir() / "ml-100k")
    for member in sources.RECBOLE_MEMBERS:
        monkeypatch.setitem(sources.RECBOLE_MEMBERS, member, sha256(folder / member))
    got = fetch("ml-100k", offline=True, verbose=False)
    assert got.layout == "recbole-atomic" and got.source.startswith("local cache")
    data = load("ml-100k", offline=True, verbose=False)
    assert_same_interactions(data, read_ml100k_grouplens(grouplens_zip(tmp_path / "ref.zip")))
    # a member the user changed is not used, and not moved either: fetch stops and names it
    with open(folder / "ml-100k.inter", "a") as f:
        f.write("3\t41\t5\t1\n")
    tampered = (folder / "ml-100k.inter").read_bytes()
    with pytest.raises(CorruptFile, match="ml-100k.inter is not RecBole's ml-100k.inter"):
        fetch("ml-100k", offline=True, verbose=False)
    assert (folder / "ml-100k.inter").read_bytes() == tampered
    assert not list(folder.glob("*.corrupt*"))


def test_official_download_is_verified(tmp_path, monkeypatch):
    """The real _download with a fake urlopen: a right checksum is served, a wrong one is rejected."""
    payload = grouplens_zip(tmp_path / "payload.zip").read_bytes()
    opened = []

    def urlopen(url, timeout):
        opened.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sources, "_pip_download_recbole",
                        lambda folder, timeout: (_ for _ in ()).throw(OSError("no pip")))
    folder = cache_dir() / "ml-100k"
    url = sources.OFFICIAL["ml-100k"][0]
    # the real checksum does not match the fixture: rejected, nothing left behind
    with pytest.raises(DatasetUnavailable, match="CorruptFile"):
        fetch("ml-100k", verbose=False)
    assert opened == [url]
    assert not folder.exists() or not any(folder.iterdir())  # no .part, no unverified archive
    # with the fixture's checksum it is downloaded, verified and served
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k", (url, "md5", hashlib.md5(payload).hexdigest()))
    got = fetch("ml-100k", verbose=False)
    assert got.source.startswith("official archive") and got.layout == "grouplens-zip"
    assert (folder / "ml-100k.zip").read_bytes() == payload
    assert not list(folder.glob("*.part"))


def test_users_lightgcn_files_of_the_wrong_size_are_left_alone(no_network):
    folder = lightgcn_files(cache_dir() / "gowalla")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(CorruptFile, match="published sizes are 29,858 users"):
        fetch("gowalla", offline=True, verbose=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert no_network == []


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(f"recbole/dataset_example/ml-100k/{name}", data)
    return path


def test_extract_recbole_wheel(tmp_path, monkeypatch):
    blobs = {m: (recbole_files(tmp_path / "rb") / m).read_bytes() for m in sources.RECBOLE_MEMBERS}
    wheel = fake_wheel(tmp_path / sources.RECBOLE_WHEEL, blobs)
    out = tmp_path / "out"
    # the real wheel checksum does not match: rejected, nothing written
    with pytest.raises(CorruptFile, match="sha256"):
        extract_recbole_wheel(wheel, out)
    assert not out.exists() or not any(out.iterdir())
    monkeypatch.setattr(sources, "RECBOLE_WHEEL_SHA256", sha256(wheel))
    # right wheel, but one member fails its own checksum: still nothing written
    with pytest.raises(CorruptFile, match="ml-100k.inter"):
        extract_recbole_wheel(wheel, out)
    assert not out.exists() or not any(out.iterdir())
    for m, data in blobs.items():
        monkeypatch.setitem(sources.RECBOLE_MEMBERS, m, hashlib.sha256(data).hexdigest())
    extract_recbole_wheel(wheel, out)
    assert sorted(p.name for p in out.iterdir()) == sorted([*blobs, manifest.MANIFEST])
    for m, data in blobs.items():
        assert (out / m).read_bytes() == data
        assert manifest.is_own(out / m)  # recorded as recsize's own download


def test_atomic_write_bytes(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"first"  # the old content survives
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]  # no .part left behind


def test_unknown_names():
    with pytest.raises(ValueError, match="ml-100k.*ml-1m.*gowalla"):
        load("ml-10m")
    with pytest.raises(ValueError, match="unknown dataset"):
        fetch("ml-10m")
    with pytest.raises(ValueError, match="generated"):
        fetch("synthetic")
    with pytest.raises(ValueError, match="CTR view"):
        prepare("ml-1m-ctr")


def test_load_synthetic_and_kwargs():
    d = load("synthetic", n_users=20, n_items=30, mean_per_user=5, d_true=4, seed=1)
    assert (d.n_users, d.n_items) == (20, 30) and d.name == "synthetic"
    with pytest.raises(TypeError, match="foo"):
        load("ml-100k", foo=1)


def test_prepare_ctr_view_from_cache(monkeypatch, no_network):
    folder = cache_dir() / "ml-100k"
    folder.mkdir(parents=True)
    archive = grouplens_zip(folder / "ml-100k.zip")
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k", (sources.OFFICIAL["ml-100k"][0], "md5", md5(archive)))
    with pytest.raises(ValueError, match="ml-100k-ctr: 7 samples split 0.8:0.1:0.1 .* at least 18 samples"):
        prepare("ml-100k-ctr", offline=True)  # too few for every part to hold both labels
    data = ctr_view(load("ml-100k", offline=True))
    assert data.n_fields == 8 and len(data) == len(RATINGS)
    np.testing.assert_array_equal(data.y, [r >= 4 for _, _, r, _ in RATINGS])


def test_interactions_validates_ids():
    with pytest.raises(ValueError, match="user ids"):
        Interactions("x", 2, 2, [0, 2], [0, 1])
    with pytest.raises(ValueError, match="item ids"):
        Interactions("x", 2, 2, [0, 1], [0, -1])
    with pytest.raises(ValueError, match="differ in length"):
        Interactions("x", 2, 2, [0, 1], [0])

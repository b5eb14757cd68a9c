"""Data readers name the file and the line and say what they found (issue 29): a bad CTR file, a
hand-placed ml-1m ratings.dat, too few CTR rows for a split, repeated pairs in LightGCN-format files and a
$RECSIZE_DATA that is not a folder. Each ends in one line on stderr and exit code 2 before any model is
built, with no traceback, and leaves the user's files byte for byte as they were; no test needs a network."""
from __future__ import annotations

import gzip
import os
import zipfile

import numpy as np
import pytest

import recsize.data.sources as sources
from recsize.cli import main
from recsize.data import CorruptFile, cache_dir, load, read_lightgcn, read_ml1m, split_ctr
from recsize.data.ctr import encode_fields, min_split_samples, split_sizes
from recsize.data.ctr_files import read_avazu, read_criteo

from conftest import one_line_error
from test_data import lightgcn_files
from test_data_safety import GOOD_TEST, GOOD_TRAIN, assert_one_line_error, network, run_cli, snapshot  # noqa: F401
from test_data_safety import tiny_gowalla  # noqa: F401

# ------------------------------------------------------------------ CTR files: the file, the line, the fix


def criteo_text(n: int = 50, seed: int = 0) -> str:
    """``n`` Criteo lines, labels alternating 0 1 0 ..., a few values per field."""
    rng = np.random.default_rng(seed)
    rows = ["\t".join([str(k % 2)] + [str(rng.integers(0, 9)) for _ in range(13)]
                      + [f"c{rng.integers(0, 5)}" for _ in range(26)]) for k in range(n)]
    return "\n".join(rows) + "\n"


def ihas(path, *extra) -> list[str]:
    """An iHAS search on a CTR file small enough to train, were the data good."""
    return ["search", "--method", "ihas", "--backbone", "fm", "--ctr-file", str(path), "--budget", "0.5",
            "--clusters", "1", "--charge", "embeddings", "--dim", "16", "--gate-blocks", "2", "--route-dim", "1",
            "--epochs", "1", "--search-epochs", "1", "--quiet", *extra]


def with_line(text: str, n: int, edit) -> str:
    lines = text.split("\n")
    fields = lines[n - 1].split("\t")
    lines[n - 1] = "\t".join(edit(fields))
    return "\n".join(lines)


@pytest.mark.parametrize("value", ["1.5", "seven", "1_000", "\u0663"])  # \u0663: an Arabic-Indic three
def test_criteo_non_integer_names_file_line_and_column(value, tmp_path, no_model, capsys):
    f = tmp_path / "train.txt"
    f.write_text(with_line(criteo_text(), 5, lambda p: p[:3] + [value] + p[4:]), encoding="utf-8")
    before = f.read_bytes()
    line = one_line_error(capsys, main(ihas(f, "--ctr-format", "criteo")), f"{f}, line 5", "I3", repr(value),
                          "fix or delete line 5")
    assert "--ctr-format avazu" in line  # an Avazu file read as Criteo lands here too
    assert f.read_bytes() == before


def test_criteo_non_utf8_bytes_name_the_line(tmp_path, no_model, capsys):
    f = tmp_path / "train.txt"
    text = criteo_text().encode()
    cut = text.index(b"\n", text.index(b"\n") + 1) + 5  # inside line 3
    f.write_bytes(text[:cut] + b"\xff\xfe" + text[cut:])
    before = f.read_bytes()
    one_line_error(capsys, main(ihas(f, "--ctr-format", "criteo")), f"{f}, line 3", "0xff", "not UTF-8",
                   "fix or delete line 3")
    assert f.read_bytes() == before


def test_avazu_non_utf8_bytes_name_the_line(tmp_path, no_model, capsys):
    f = tmp_path / "train.csv"
    f.write_bytes(b"id,click,hour,C1\n1,0,14102100,a\n2,1,14102101,\xe9t\xe9\n")
    one_line_error(capsys, main(ihas(f, "--ctr-format", "avazu")), f"{f}, line 3", "0xe9", "not UTF-8")
    assert f.read_bytes() == b"id,click,hour,C1\n1,0,14102100,a\n2,1,14102101,\xe9t\xe9\n"


@pytest.mark.parametrize("fmt", ["criteo", "avazu"])
def test_a_compressed_ctr_file_is_named_as_such(fmt, tmp_path, no_model, capsys):
    f = tmp_path / "train.txt.gz"
    f.write_bytes(gzip.compress(criteo_text().encode(), mtime=0))
    before = f.read_bytes()
    one_line_error(capsys, main(ihas(f, "--ctr-format", fmt)), str(f), "gzip-compressed", "gunzip")
    assert f.read_bytes() == before


def test_lines_past_max_rows_are_not_read(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(criteo_text(4).encode() + b"\xff broken tail\n")
    assert len(read_criteo(f, max_rows=4)) == 4
    with pytest.raises(CorruptFile, match="line 5: byte 0xff at column 1 is not UTF-8"):
        read_criteo(f, max_rows=5)
    a = tmp_path / "a.csv"
    a.write_bytes(b"id,click,hour,C1\n1,0,14102100,a\n2,1,14102101,b\n\xff\n")
    assert len(read_avazu(a, max_rows=2)) == 2
    with pytest.raises(CorruptFile, match="line 4: byte 0xff"):
        read_avazu(a)


def test_an_unclosed_quote_in_avazu_is_named(tmp_path, no_model, capsys):
    f = tmp_path / "a.csv"
    f.write_text('id,click,hour,C1\n1,0,14102100,"a\n' + "2,1,14102101,b\n" * 20000)  # runs on to the end
    one_line_error(capsys, main(ihas(f, "--ctr-format", "avazu")), f"{f}, line 2: field larger than field limit",
                   "a quote opened on line 2 is never closed", "fix or delete line 2")


def test_avazu_line_numbers_count_physical_lines(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text('id,click,hour,C1\n1,0,14102100,"two\nlines"\n2,1,14102101\n')  # record 2 is on line 4
    with pytest.raises(CorruptFile, match=rf"{f}, line 4: 3 columns, the header has 4") as e:
        read_avazu(f)
    assert e.value.line == 4 and e.value.path == f


def test_good_criteo_and_avazu_files_still_read(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text(criteo_text(20))
    d = read_criteo(f, min_count=2)
    assert d.X.shape == (20, 39) and d.y.tolist() == [0.0, 1.0] * 10
    a = tmp_path / "a.csv"
    a.write_bytes(b'id,click,hour,C1\n1,0,14102100,"x,y"\r\n2,1,14102101,caf\xc3\xa9\r\n')
    d = read_avazu(a)
    assert d.y.tolist() == [0.0, 1.0] and sorted(d.vocab[1]) == ["caf\u00e9", "x,y"]


# ------------------------------------------------------------------ too few CTR rows for a split

@pytest.mark.parametrize("rows, needles", [
    ("3", ["3 samples", "0 valid", "at least 18 samples", "--max-rows"]),  # an empty part: torch.cat() before
    ("8", ["8 samples", "1 valid", "all have label", "at least 18"]),  # one label: AUC after training
])
def test_too_few_rows_for_a_split_are_refused_before_training(rows, needles, tmp_path, no_model, capsys):
    f = tmp_path / "train.txt"
    f.write_text(criteo_text())
    before = f.read_bytes()
    one_line_error(capsys, main(ihas(f, "--ctr-format", "criteo", "--max-rows", rows)), *needles)
    assert f.read_bytes() == before


def test_min_count_that_leaves_nothing_is_refused(tmp_path, no_model, capsys):
    f = tmp_path / "train.txt"
    f.write_text(criteo_text())
    line = one_line_error(capsys, main(ihas(f, "--ctr-format", "criteo", "--min-count", "1000")),
                          str(f), "--min-count 1000", "50 rows read", "every one of the 39 fields")
    # the largest --min-count that still leaves some field two values: the most common value of a field
    data = read_criteo(f)
    top = max(np.bincount(data.X[:, j]).max() for j in range(39) if len(np.unique(data.X[:, j])) > 1)
    assert f"use --min-count {top} or less" in line
    assert read_criteo(f, min_count=int(top)).n_features > 39  # and that value does leave something


def test_min_split_samples():
    assert min_split_samples((0.8, 0.1, 0.1)) == 18
    assert min_split_samples((0.5, 0.25, 0.25)) == 8
    for ratios in [(0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.7, 0.2, 0.1), (0.9, 0.0, 0.1)]:
        n = min_split_samples(ratios)
        assert all(k >= 2 for k, r in zip(split_sizes(n, ratios), ratios) if r > 0)
        assert any(k < 2 for k, r in zip(split_sizes(n - 1, ratios), ratios) if r > 0)
        assert sum(split_sizes(n, ratios)) == n


def test_a_split_that_fits_is_made_as_before():
    n = min_split_samples((0.8, 0.1, 0.1))
    y = np.array([0, 1] * n)[:n]
    data = encode_fields([np.arange(n) % 3], ("f",), y, "tiny")
    for seed in range(40):  # some seeds put one label alone into a part: those are refused, the others split
        try:
            s = split_ctr(data, seed=seed)
        except ValueError as e:
            assert f"{n} samples" in str(e) and "all have label" in str(e)
            continue
        assert (len(s.train), len(s.valid), len(s.test)) == split_sizes(n, (0.8, 0.1, 0.1)) == (14, 2, 2)
        assert all(len(np.unique(data.y[p])) == 2 for p in (s.train, s.valid, s.test))


# ------------------------------------------------------------------ repeated pairs in LightGCN-format files

DUP_TRAIN = "0 1 2 2\n1 0 4\n2 1\n"  # (0, 2) twice, (0, 3) gone: still 6 pairs
OVERLAP_TEST = "0 5\n1 2\n2 3 1\n"   # (2, 1) is also a training pair: still 4 pairs


def test_repeated_and_overlapping_pairs_are_counted_in_one_warning(tiny_gowalla, network, capsys):
    folder = lightgcn_files(tiny_gowalla, train=DUP_TRAIN, test=OVERLAP_TEST)  # the published 3, 6, 10
    before = snapshot(folder)
    rc, _, err = run_cli(["data", "info", "gowalla", "--protocol", "given"], capsys)
    assert rc == 0, err
    warnings = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warnings) == 1, err
    w = warnings[0]
    assert "train.txt repeats 1 (user, item) pair" in w and "test.txt repeats none" in w
    assert "1 pair of test.txt is also in train.txt" in w and "can never be recalled" in w
    assert str(folder) in w and "Traceback" not in err
    assert snapshot(folder) == before and network[0] == []


def test_clean_lightgcn_files_give_no_warning(tiny_gowalla, network, capsys):
    lightgcn_files(tiny_gowalla, train=GOOD_TRAIN, test=GOOD_TEST)
    rc, _, err = run_cli(["data", "info", "gowalla", "--protocol", "given"], capsys)
    assert rc == 0 and "warning" not in err


def test_repeats_are_named_when_the_sizes_do_not_hold(tiny_gowalla, network, capsys):
    folder = lightgcn_files(tiny_gowalla, train=GOOD_TRAIN * 2, test=GOOD_TEST)  # train.txt pasted twice
    before = snapshot(folder)
    rc, _, err = run_cli(["data", "info", "gowalla"], capsys)
    assert rc == 2
    line = assert_one_line_error(err)
    assert "16 interactions" in line and "published sizes" in line
    assert "train.txt repeats 6 (user, item) pairs" in line
    assert snapshot(folder) == before and network[0] == []


def test_a_test_user_without_items_is_read(tmp_path):
    # the published amazon-book test.txt has four such lines ("13647 "); LightGCN's loader skips them
    d = read_lightgcn(lightgcn_files(tmp_path, test="0 5\n1 \n2 3 4\n"), "tiny")
    assert d.given_test.sum() == 3 and 1 not in d.user[d.given_test]
    with pytest.raises(CorruptFile, match="train.txt:2: user 1 has no items"):  # a training user needs items
        read_lightgcn(lightgcn_files(tmp_path / "b", train="0 1\n1\n2 3\n"), "tiny")


# ------------------------------------------------------------------ a hand-placed ml-1m ratings.dat

RATINGS_DAT = "1::1193::5::978300760\n1::661::3::978302109\n\n6::1193::4::978301968\n"


@pytest.fixture
def tiny_ml1m(monkeypatch):
    """ml-1m's published sizes set to those of RATINGS_DAT (2 users, 2 items, 3 ratings)."""
    monkeypatch.setattr(sources, "ML1M_SIZES", (2, 2, 3))
    folder = cache_dir() / "ml-1m"
    folder.mkdir(parents=True)
    return folder


def test_a_hand_placed_ratings_dat_is_read(tiny_ml1m, network, capsys, tmp_path):
    (tiny_ml1m / "ratings.dat").write_bytes(RATINGS_DAT.encode("latin-1"))
    before = snapshot(tiny_ml1m)
    got = load("ml-1m", offline=True, verbose=True)
    assert "ratings.dat" in capsys.readouterr().err
    z = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("ml-1m/ratings.dat", RATINGS_DAT)
    want = read_ml1m(z)
    assert (got.n_users, got.n_items, len(got)) == (2, 2, 3)
    for a in ("user", "item", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(got, a), getattr(want, a))
    rc, out, err = run_cli(["data", "fetch", "ml-1m"], capsys)
    assert rc == 0 and "ratings.dat" in out
    assert snapshot(tiny_ml1m) == before and network[0] == []  # nothing downloaded, added or moved


@pytest.mark.parametrize("content, line, problem", [
    (b"1::1193::5::978300760\n1::661::x::978302109\n", 2, "field 3 is 'x', not a number"),
    (b"1::1193::5::978300760\n\n1::661::3\n", 3, "3 field(s), expected 4"),
    (b"1::1193::5::97830\xe90760\n", 1, "field 4 is '97830\xe90760', not a number"),  # latin-1: any byte reads
])
@pytest.mark.parametrize("command", [["data", "info", "ml-1m"], ["data", "fetch", "ml-1m"]])
def test_a_bad_line_of_ratings_dat_is_named(content, line, problem, command, tiny_ml1m, network, capsys):
    path = tiny_ml1m / "ratings.dat"
    path.write_bytes(content)
    before = snapshot(tiny_ml1m)
    rc, _, err = run_cli(command, capsys)
    assert rc == 2
    msg = assert_one_line_error(err)
    assert f"{path}:{line}: {problem}" in msg
    assert f"fix line {line} of ratings.dat, or delete it" in msg and "did not download ratings.dat" in msg
    assert snapshot(tiny_ml1m) == before and network[0] == []


def test_a_ratings_dat_of_the_wrong_size_is_refused(network, capsys):
    folder = cache_dir() / "ml-1m"
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_text(RATINGS_DAT)  # the real published sizes: far off
    before = snapshot(folder)
    rc, _, err = run_cli(["data", "info", "ml-1m"], capsys)
    assert rc == 2
    msg = assert_one_line_error(err)
    assert "3 ratings" in msg and "1,000,209 ratings" in msg and "ml-1m.zip" in msg
    assert snapshot(folder) == before and network[0] == []


def test_without_ratings_dat_the_help_names_it(network, capsys):
    rc, _, err = run_cli(["data", "fetch", "ml-1m", "--offline"], capsys)
    assert rc == 2 and "ratings.dat" in err


# ------------------------------------------------------------------ $RECSIZE_DATA is not a folder

@pytest.mark.parametrize("make, needle", [
    (lambda p: os.symlink(p.name, p), "is a symlink loop"),
    (lambda p: os.symlink(p.parent / "nowhere", p), "is a symlink to"),
    (lambda p: p.write_text("notes"), "is a file, not a folder"),
])
@pytest.mark.parametrize("command", [["data", "info", "ml-100k"], ["data", "fetch", "gowalla"],
                                     ["train", "--dataset", "ml-100k", "--backbone", "mf", "--quiet"]])
def test_a_cache_root_that_is_not_a_folder(make, needle, command, tmp_path, monkeypatch, network, capsys):
    root = tmp_path / "loop"
    make(root)
    monkeypatch.setenv("RECSIZE_DATA", str(root))
    rc = main(command)
    line = one_line_error(capsys, rc, f"{root} {needle}", "$RECSIZE_DATA")
    assert "File exists" not in line and network[0] == []
    assert not (tmp_path / "nowhere").exists()  # nothing created behind the link


def test_a_dataset_folder_that_is_a_symlink_loop(network, capsys):
    link = cache_dir() / "ml-100k"
    os.symlink("ml-100k", link)
    line = one_line_error(capsys, main(["data", "info", "ml-100k"]), f"{link} is a symlink loop")
    assert "point the link at a folder, or set $RECSIZE_DATA to a folder" in line
    assert os.path.islink(link) and network[0] == []

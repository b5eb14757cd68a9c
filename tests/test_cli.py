"""The command line, called in-process."""
from __future__ import annotations

import json

import pytest

import recsize.data.sources as sources
from recsize import __version__
from recsize.cli import main


def test_train_writes_json(tmp_path, capsys):
    out = tmp_path / "res" / "mf.json"
    ckpt = tmp_path / "mf.pt"
    rc = main(["train", "--backbone", "mf", "--dataset", "synthetic", "--epochs", "2", "--dim", "8",
               "--quiet", "--out", str(out), "--checkpoint", str(ckpt), "--lr", "0.01"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["backbone"] == "mf" and res["dataset"] == "synthetic" and res["dim"] == 8
    assert res["protocol"] == "random-811"
    assert 0.0 <= res["test"]["recall@20"] <= 1.0 and "ndcg@20" in res["valid"]
    assert len(res["history"]) == 2 and res["config"]["lr"] == 0.01
    assert ckpt.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["mf.json"]
    printed = capsys.readouterr()
    assert "recall@20" in printed.out and "best epoch" in printed.out
    assert "[recsize]" not in printed.err  # --quiet


def test_train_shows_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """A long run in a log or a pipe is not silent: one plain line (no carriage return) per 30 s; none
    with --quiet."""
    args = ["train", "--backbone", "mf", "--dataset", "synthetic", "--epochs", "2", "--dim", "8"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "train MF:" in err and "\r" not in err
    assert main([*args, "--quiet"]) == 0
    assert "train MF" not in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--dim", "0"], "positive integer"),
    (["--dim", "x"], "positive integer"),
    (["--epochs", "-3"], "positive integer"),
    (["--lr", "0"], "positive number"),
    (["--reg", "-1"], ">= 0"),
    (["--patience", "-1"], "patience"),
    (["--backbone", "foo"], "invalid choice: 'foo'"),
    (["--dataset", "foo"], "invalid choice: 'foo'"),
    (["--protocol", "foo"], "invalid choice: 'foo'"),
])
def test_bad_arguments_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "synthetic", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "see recsize train --help" in err and "usage:" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_command_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_ctr_backbone_on_topk_data(capsys):
    rc = main(["train", "--backbone", "fm", "--dataset", "synthetic", "--epochs", "1", "--dim", "8", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "recsize train: error:" in err and "CTR" in err


def test_data_info_synthetic(capsys):
    assert main(["data", "info", "synthetic", "--protocol", "ciess-50-25-25", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "synthetic: 600 users, 1,000 items" in out
    assert "split ciess-50-25-25 of synthetic, seed 3" in out
    assert "train:" in out and "valid:" in out and "test :" in out


def test_data_fetch_offline_with_empty_cache(private_cache, capsys):
    assert main(["data", "fetch", "ml-100k", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "recsize data: error:" in err
    assert "local cache" in err and "offline" in err and "Fix:" in err
    assert str(private_cache / "ml-100k") in err


def test_train_without_data_or_network(monkeypatch, capsys):
    def no_net(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(sources, "_download", no_net)
    monkeypatch.setattr(sources, "_pip_download_recbole", no_net)
    assert main(["train", "--backbone", "fm", "--dataset", "ml-100k-ctr", "--quiet", "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "not available" in err and "official archive" in err and "PyPI" in err


def test_data_fetch_serves_the_cache(private_cache, monkeypatch, capsys):
    from test_data import grouplens_zip, md5
    folder = private_cache / "ml-100k"
    folder.mkdir()
    archive = grouplens_zip(folder / "ml-100k.zip")
    monkeypatch.setitem(sources.OFFICIAL, "ml-100k", (sources.OFFICIAL["ml-100k"][0], "md5", md5(archive)))
    assert main(["data", "fetch", "ml-100k", "--offline"]) == 0
    assert "served by local cache" in capsys.readouterr().out
    assert main(["data", "info", "ml-100k", "--protocol", "temporal-loo"]) == 0
    assert "split temporal-loo of ml-100k" in capsys.readouterr().out

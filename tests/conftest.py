"""Shared fixtures: a private data cache for every test and tiny synthetic splits."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recsize.backbones
import recsize.data
import recsize.data.ctr_files
from recsize.data import Interactions, Split, encode_fields, make_split, make_synthetic, split_ctr

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    """Point $RECSIZE_DATA at an empty temporary folder: tests never touch ~/.cache/recsize."""
    folder = tmp_path_factory.mktemp("recsize-cache")
    monkeypatch.setenv("RECSIZE_DATA", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_data() -> Interactions:
    return make_synthetic(n_users=60, n_items=80, mean_per_user=10, d_true=8, seed=0)


@pytest.fixture(scope="session")
def tiny_split(tiny_data) -> Split:
    return make_split(tiny_data, "random-811", seed=0)


@pytest.fixture(scope="session")
def topk_split(tiny_split) -> Split:
    """The tiny top-k split under the name the search and embedding tests use."""
    return tiny_split


def tiny_ctr_split(n: int = 400):
    """A tiny CTR split whose label depends on one field (genre), so a model has something to learn."""
    rng = np.random.default_rng(0)
    user, item, genre = rng.integers(0, 20, n), rng.integers(0, 30, n), rng.integers(0, 4, n)
    y = (genre < 2).astype(np.float32)
    return split_ctr(encode_fields([user, item, genre], ("user", "item", "genre"), y, "tiny-ctr"), seed=0)


@pytest.fixture(scope="session")
def ctr_split():
    return tiny_ctr_split(400)


def csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    """A binary CSR matrix with the given item lists as rows."""
    u = np.repeat(np.arange(len(rows)), [len(r) for r in rows])
    i = np.asarray([x for r in rows for x in r], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(len(rows), n_items))
    m.sort_indices()
    return m


def features_data(n_users: int = 30, n_items: int = 40, n: int = 600, seed: int = 0) -> Interactions:
    """A small Interactions with ml-100k-like side features and ratings."""
    rng = np.random.default_rng(seed)
    user = np.arange(n) % n_users
    item = rng.integers(0, n_items, n)
    item[:n_items] = np.arange(n_items)  # every item occurs
    genres = np.array(["Action", "Comedy", "Drama", "Horror"])
    item_genre = genres[np.arange(n_items) % 4]
    # labels depend on the genre so that a CTR model has something to learn
    rating = np.where(np.isin(item_genre[item], ["Action", "Drama"]), 5.0, 2.0).astype(np.float32)
    flip = rng.random(n) < 0.1
    rating[flip] = 6.0 - rating[flip] + 1.0
    return Interactions(
        "tiny-features", n_users, n_items, user, item, rating, np.arange(n, dtype=np.int64),
        user_features={"age": rng.integers(10, 70, n_users),
                       "gender": np.array(["M", "F"])[np.arange(n_users) % 2],
                       "occupation": np.array(["student", "writer", "other"])[np.arange(n_users) % 3],
                       "zip_code": np.array([f"{z:05d}" for z in rng.integers(0, 99999, n_users)])},
        item_features={"genre": item_genre,
                       "release_year": np.array([str(1990 + i % 7) for i in range(n_items)]),
                       "title": np.array([f"Movie {i}" for i in range(n_items)])})


@pytest.fixture(scope="session")
def torchrec():
    """TorchRec, imported (Appendix A): skipped without the torchrec extra, a failure where CI requires it
    (.ci/run sets RECSIZE_REQUIRE_TORCHREC=1)."""
    from recsize.torchrec_export import TorchRecMissing, require_torchrec
    try:
        return require_torchrec()
    except TorchRecMissing as e:
        if os.environ.get("RECSIZE_REQUIRE_TORCHREC") == "1":
            pytest.fail(f"RECSIZE_REQUIRE_TORCHREC=1 but {e}", pytrace=False)
        pytest.skip(str(e))


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if any data is loaded or any model is built (bad input must be caught first)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the input was checked")
    monkeypatch.setattr(recsize.data, "prepare", forbidden)
    monkeypatch.setattr(recsize.data.ctr_files, "read_ctr_file", forbidden)
    monkeypatch.setattr(recsize.backbones, "build_backbone", forbidden)


@pytest.fixture
def no_model(monkeypatch):
    """Data may load, but no model may be built."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a model was built before the input was checked")
    monkeypatch.setattr(recsize.backbones, "build_backbone", forbidden)


def one_line_error(capsys, rc: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def untimed(ciess_dict: dict) -> dict:
    """A CIESS result's JSON without its wall times, to compare two runs for determinism."""
    d = json.loads(json.dumps(ciess_dict))
    d.pop("seconds")
    d["reference"].pop("seconds")
    for row in d["history"]:
        row.pop("seconds")
    for budget in d["budgets"].values():
        for c in [budget["best"], *budget["candidates"]]:
            c.pop("seconds")
    return d


def reference_neumf_scorer(self):
    """NeuMF's full-ranking scorer as it was written before the blocked form (issue 14): the reference
    that tests/test_backbones.py and tests/test_train.py compare the fast path with, bit for bit."""
    items, items_mlp = self.item.table(), self.item_mlp.table()
    first = self.mlp[1]
    w_user, w_item = first.weight[:, :self.dim], first.weight[:, self.dim:]
    item_part = items_mlp @ w_item.T + first.bias
    w_gmf = self.predict.weight[0, :self.dim]
    w_mlp, b = self.predict.weight[0, self.dim:], self.predict.bias
    rest = self.mlp[2:]

    def score_all(users, chunk: int = 128):
        out = []
        for s in range(0, len(users), chunk):
            us = users[s:s + chunk]
            gmf = (self.user(us) * w_gmf) @ items.T
            h = rest((self.user_mlp(us) @ w_user.T)[:, None, :] + item_part[None])
            out.append(gmf + h @ w_mlp + b)
        return torch.cat(out)
    return score_all

"""Bucket tables sharded over 2 and 3 processes (gloo on CPU, loopback only) by TorchRec's planner and
DistributedModelParallel, against one process and against recsize's own ranking (Appendix A).

One torchrun of ``python -m recsize.torchrec_shard --check`` (bounded by a timeout) per world size does
everything: importing TorchRec once per process dominates its time. Users need not split evenly: 61
users over 3 ranks are shares of 21, 20 and 20 users, more than the 15 items, so the ranks' batches
differ (and are padded to one size for TorchRec's collectives)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from recsize.backbones import build_backbone
from recsize.data import make_split, make_synthetic
from recsize.embedding import compact_factory
from recsize.torchrec_export import export_tables
from recsize.torchrec_shard import main, rank_share

TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(tmp_path, n_users: int, n_items: int, top: int):
    """An MF model with random compact widths (users of width 0 included), its export, and recsize's own
    top-``top`` of every user."""
    split = make_split(make_synthetic(n_users=n_users, n_items=n_items, mean_per_user=4, d_true=4, seed=0),
                       "random-811", seed=0)
    rng = np.random.default_rng(0)
    d_max = 16
    sizes = {"user": rng.integers(0, d_max + 1, split.n_users), "item": rng.integers(1, d_max + 1, split.n_items)}
    torch.manual_seed(0)
    model = build_backbone("mf", split, d_max, embedding=compact_factory(sizes, d_max))
    export_tables(model.embedding_tables()).save(tmp_path / "export.pt")
    with torch.no_grad():
        return model.score_all(torch.arange(split.n_users)).topk(top, dim=1).indices


@pytest.mark.parametrize("world,n_users,n_items,top", [(2, 60, 80, 20), (3, 61, 15, 10)],
                         ids=["2-ranks-even", "3-ranks-uneven"])
def test_ranks_match_one_process(torchrec, tmp_path, world, n_users, n_items, top):
    want = _export(tmp_path, n_users, n_items, top)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(world),
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "recsize.torchrec_shard", str(tmp_path / "export.pt"), "--top", str(top),
               "--out", str(tmp_path / "ranks"), "--check"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "table_wise" in done.stdout or "row_wise" in done.stdout  # the planner's plan was printed
    assert f"{n_users} users ranked over {world} ranks" in done.stdout

    shares = np.array_split(np.arange(n_users), world)
    for rank in range(world):
        report = json.loads((tmp_path / "ranks" / f"rank{rank}.json").read_text())
        assert report["world"] == world and report["users"] == shares[rank].tolist()
        assert report["forward_equal"] is True             # sharded forward == one process, bit for bit
        assert report["step_max_diff"] < 1e-6              # one fused SGD step == one process's step
        assert torch.equal(torch.tensor(report["top"]), want[report["users"]])  # recsize's own top-k
    gathered = json.loads((tmp_path / "ranks" / "top.json").read_text())    # rank 0's gathered ranking
    assert gathered["users"] == n_users and torch.equal(torch.tensor(gathered["top"]), want)
    assert not [p.name for p in (tmp_path / "ranks").iterdir() if not p.name.endswith(".json")]


@pytest.mark.parametrize("n,world", [(943, 2), (943, 3), (61, 3), (2, 3), (5, 5)])
def test_rank_shares_cover_every_user_once(n, world):
    shares = [rank_share(n, rank, world) for rank in range(world)]
    assert torch.equal(torch.cat(shares), torch.arange(n))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def _bad(argv, capsys) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert not out and err.count("\n") == 1 and err.startswith("python -m recsize.torchrec_shard: error: ")
    return err


def test_bad_input_is_one_line_before_any_work(torchrec, tmp_path, capsys, monkeypatch):
    import torch.distributed as dist
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("work started"))
    _export(tmp_path, 20, 30, 5)
    export = str(tmp_path / "export.pt")
    assert "no such file" in _bad([str(tmp_path / "missing.pt")], capsys)
    (tmp_path / "junk.pt").write_text("not an export")
    assert "junk.pt is not a readable TorchRec export" in _bad([str(tmp_path / "junk.pt")], capsys)
    assert "--top must be between 1 and the 30 items" in _bad([export, "--top", "0"], capsys)
    assert "--top must be between 1 and the 30 items" in _bad([export, "--top", "31"], capsys)
    (tmp_path / "file").write_text("")
    assert "--out" in _bad([export, "--out", str(tmp_path / "file")], capsys)
    from recsize.embedding import CompactEmbedding
    export_tables({"user": CompactEmbedding(np.array([0, 3, 8]), 8)}).save(tmp_path / "users.pt")
    assert "needs an export with 'user' and 'item' tables" in _bad([str(tmp_path / "users.pt")], capsys)

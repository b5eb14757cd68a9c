"""Bucket tables sharded over 2 processes (gloo on CPU, loopback only) by TorchRec's planner and
DistributedModelParallel, against one process and against recsize's own ranking (Appendix A).

One torchrun of ``python -m recsize.torchrec_shard --check`` (bounded by a timeout) does everything:
importing TorchRec twice dominates its time."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import torch

from recsize.backbones import build_backbone
from recsize.embedding import compact_factory
from recsize.torchrec_export import export_tables

TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(torchrec, tiny_split, tmp_path):
    rng = np.random.default_rng(0)
    d_max = 16
    sizes = {"user": rng.integers(0, d_max + 1, tiny_split.n_users),
             "item": rng.integers(1, d_max + 1, tiny_split.n_items)}
    torch.manual_seed(0)
    model = build_backbone("mf", tiny_split, d_max, embedding=compact_factory(sizes, d_max))
    export_tables(model.embedding_tables()).save(tmp_path / "export.pt")
    with torch.no_grad():
        want = model.score_all(torch.arange(tiny_split.n_users)).topk(20, dim=1).indices

    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               "-m", "recsize.torchrec_shard", str(tmp_path / "export.pt"), "--top", "20",
               "--out", str(tmp_path / "ranks"), "--check"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "table_wise" in done.stdout or "row_wise" in done.stdout  # the planner's plan was printed

    seen = set()
    for rank in (0, 1):
        report = json.loads((tmp_path / "ranks" / f"rank{rank}.json").read_text())
        assert report["world"] == 2
        assert report["forward_equal"] is True             # sharded forward == one process, bit for bit
        assert report["step_max_diff"] < 1e-6              # one fused SGD step == one process's step
        users = report["users"]
        seen.update(users)
        assert torch.equal(torch.tensor(report["top"]), want[users])  # recsize's own top-20
    assert seen == set(range(tiny_split.n_users))

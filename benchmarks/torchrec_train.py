"""MF with searched widths trained through sharded TorchRec tables, against one process (Appendix A).

Run under torchrun (gloo on CPU)::

    torchrun --nproc-per-node 2 benchmarks/torchrec_train.py --seeds 0 1 --out benchmarks/out/torchrec_train.json

For every seed: MF on ml-100k (random 8:1:1, d_max = 64) with MDE widths at density 0.1 (c = 90 %),
recsize's initial weights, recsize's BPR batches (its sampler, seed by seed, 2,048 a batch), its L2
weight on the batch rows (1e-2) and early stopping on validation NDCG@20 (patience 10). FBGEMM's CPU
kernels fuse SGD and Adagrad into the backward, not Adam, so the tables train with Adagrad (lr
``--lr``): sharded (the planner's plan, every batch split over the ranks) and, on rank 0, the same loop
in one process with ``torch.optim.Adagrad`` on the unsharded collection. For context rank 0 also runs
recsize's own trainer (Adam, lr 2e-3, the MF default). Test Recall@20 / NDCG@20 at the best validation
epoch are printed side by side.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from common import machine
from recsize.backbones import build_backbone, defaults_for
from recsize.data import prepare
from recsize.data.sampler import BPRSampler
from recsize.embedding import compact_factory
from recsize.evaluate import evaluate_topk
from recsize.files import write_json
from recsize.search.baselines import baseline_sizes, role_counts
from recsize.torchrec_export import export_tables
from recsize.torchrec_lookup import BucketLookup, DotScorer
from recsize.torchrec_shard import shard
from recsize.train import TrainConfig, seed_everything, train

D_MAX, DENSITY, BATCH = 64, 0.1, 2048


def mf_with_widths(split, seed: int):
    sizes = {role: baseline_sizes("mde", counts, D_MAX, DENSITY, seed=seed + i)
             for i, (role, counts) in enumerate(role_counts(split).items()) if role in ("user", "item")}
    seed_everything(seed)
    model_kwargs = defaults_for("mf")[0]
    return build_backbone("mf", split, D_MAX, embedding=compact_factory(sizes, D_MAX), **model_kwargs)


def run(lookup, split, seed: int, epochs: int, patience: int, reg: float, step, rank: int, world: int) -> dict:
    """Train ``lookup`` (sharded or not) on this rank's share of every batch; ``step()`` after each
    backward (a no-op where the optimizer is fused). The loss is the mean over the ranks' shares."""
    torch.manual_seed(seed)
    sampler = BPRSampler(split.train, seed=seed)  # recsize's batches, on every rank alike
    scorer = DotScorer(lookup, split.n_items)
    best, best_epoch, test, history, start = -1.0, 0, None, [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        for users, pos, neg in sampler.epoch(BATCH):
            n = len(users) // 2 * 2  # equal shares over 2 ranks (or the same n rows in one process)
            u, p, q = (x[rank:n:world] for x in (users, pos, neg))
            rows = lookup({"user": u, "item": torch.cat([p, q])})
            eu, (ep, eq) = rows["user"], rows["item"].split(len(p))
            loss = -F.logsigmoid((eu * ep).sum(-1) - (eu * eq).sum(-1)).mean()
            loss = loss + reg * (eu.pow(2).sum() + ep.pow(2).sum() + eq.pow(2).sum()) / (2 * len(u))
            loss.backward()
            step()
        valid = evaluate_topk(scorer, split, "valid", ks=(20,), device="cpu")["ndcg@20"]
        history.append({"epoch": epoch, "ndcg@20": valid, "seconds": time.perf_counter() - start})
        if valid > best:
            best, best_epoch = valid, epoch
            test = evaluate_topk(scorer, split, "test", ks=(20,), device="cpu")
        elif epoch - best_epoch > patience:
            break
    return {"best_epoch": best_epoch, "valid_ndcg@20": best, "recall@20": test["recall@20"],
            "ndcg@20": test["ndcg@20"], "history": history, "seconds": time.perf_counter() - start}


def sharded_run(split, seed: int, epochs: int, patience: int, lr: float) -> dict:
    model = mf_with_widths(split, seed)
    dmp, _ = shard(BucketLookup(export_tables(model.embedding_tables())), dist.group.WORLD,
                   optimizer=torch.optim.Adagrad, optimizer_kwargs={"lr": lr, "eps": 1e-10})
    return run(dmp, split, seed, epochs, patience, model.reg, lambda: None, dist.get_rank(), dist.get_world_size())


def single_run(split, seed: int, epochs: int, patience: int, lr: float) -> dict:
    model = mf_with_widths(split, seed)
    lookup = BucketLookup(export_tables(model.embedding_tables()))
    optimizer = torch.optim.Adagrad(lookup.parameters(), lr=lr, eps=1e-10)

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return run(lookup, split, seed, epochs, patience, model.reg, step, 0, 1)


def recsize_run(split, seed: int, epochs: int, patience: int) -> dict:
    model = mf_with_widths(split, seed)
    train_kwargs = defaults_for("mf")[1]
    config = TrainConfig(epochs=epochs, patience=patience, seed=seed, progress=False, ks=(20,), **train_kwargs)
    result = train(model, split, config)
    return {"best_epoch": result.best_epoch, "valid_ndcg@20": result.valid["ndcg@20"],
            "recall@20": result.test["recall@20"], "ndcg@20": result.test["ndcg@20"],
            "seconds": result.seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.1,
                   help="Adagrad learning rate (default 0.1, the best validation NDCG@20 of 0.02 / 0.05 / 0.1, seed 0)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    split = prepare("ml-100k", "random-811", seed=0)
    rows = []
    for seed in args.seeds:
        sharded = sharded_run(split, seed, args.epochs, args.patience, args.lr)
        dist.barrier()
        if rank == 0:
            single = single_run(split, seed, args.epochs, args.patience, args.lr)
            own = recsize_run(split, seed, args.epochs, args.patience)
            rows.append({"seed": seed, "sharded": sharded, "single": single, "recsize_adam": own})
            for name, r in (("sharded Adagrad", sharded), ("1 process Adagrad", single),
                            ("recsize trainer, Adam", own)):
                print(f"seed {seed} {name:22s} best epoch {r['best_epoch']:3d}  test Recall@20 "
                      f"{r['recall@20']:.4f}  NDCG@20 {r['ndcg@20']:.4f}  ({r['seconds']:.0f} s)", flush=True)
        dist.barrier()
    if rank == 0 and args.out:
        write_json({"machine": machine(), "world_size": world, "d_max": D_MAX, "density": DENSITY,
                    "batch": BATCH, "adagrad_lr": args.lr, "epochs": args.epochs, "patience": args.patience,
                    "runs": rows}, args.out)
        print(f"written to {args.out}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Bucket tables sharded across processes: TorchRec's planner and ``DistributedModelParallel``.

Explained in Appendix A. :func:`make_plan` asks TorchRec's planner where every bucket table goes (on the
meta device it plans tables of 100 million rows without allocating them; :func:`rank_bytes` reads the
per-rank weight bytes off the plan); :func:`shard` wraps a :class:`~recsize.torchrec_lookup.BucketLookup`
in ``DistributedModelParallel`` with a planner-made plan, its weights copied into the shards and,
optionally, an optimizer fused into the backward pass (FBGEMM's kernels).

Run as a program under ``torchrun`` it serves a saved export (``recsize export --format torchrec``) with
the tables sharded over the processes and prints each rank's share of a full ranking (top-k models with
``user`` and ``item`` tables: score = <e_u, e_i>); any number of users over any number of ranks
(:func:`rank_share`), rank 0 gathering the whole ranking::

    torchrun --nproc-per-node 2 -m recsize.torchrec_shard EXPORT.pt --top 20 --out DIR
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from .torchrec_export import BucketExport, require_torchrec
from .torchrec_lookup import BucketLookup

MODEL_PARALLEL = ("table_wise", "row_wise")  # every table in one copy; no replicated (data-parallel) table


def _planner(world_size: int, compute_device: str, tables, sharding_types, local_world_size=None,
             hbm_cap: int | None = None):
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    constraints = None if sharding_types is None else {
        t.name: ParameterConstraints(sharding_types=list(sharding_types)) for t in tables}
    topology = Topology(world_size=world_size, compute_device=compute_device,
                        local_world_size=local_world_size, hbm_cap=hbm_cap)
    return EmbeddingShardingPlanner(topology=topology, constraints=constraints)


def _configs(module) -> list:
    return [c for m in module.modules() if hasattr(m, "embedding_bag_configs") for c in m.embedding_bag_configs()]


def make_plan(module, world_size: int, compute_device: str = "cpu", sharding_types=MODEL_PARALLEL, pg=None,
              local_world_size: int | None = None, hbm_cap: int | None = None):
    """TorchRec's sharding plan of the collection(s) in ``module`` for ``world_size`` ranks (``pg``: agree on it
    across the process group; without: plan here, e.g. on the meta device). ``sharding_types=None``
    lets the planner choose any, data-parallel included. Explained in Appendix A."""
    require_torchrec()
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    sharders = [EmbeddingBagCollectionSharder()]
    planner = _planner(world_size, compute_device, _configs(module), sharding_types, local_world_size, hbm_cap)
    return planner.collective_plan(module, sharders, pg) if pg is not None else planner.plan(module, sharders)


def rank_bytes(plan, module, world_size: int, bytes_per_value: int = 4) -> list[int]:
    """Weight bytes every rank stores under ``plan`` (a data-parallel table counts on every rank;
    optimizer state and caches are not included). Explained in Appendix A."""
    dims = {c.name: (c.num_embeddings, c.embedding_dim) for c in _configs(module)}
    per_rank = [0] * world_size
    for module_plan in plan.plan.values():
        for name, ps in module_plan.items():
            if ps.sharding_spec is None:  # replicated
                rows, dim = dims[name]
                per_rank = [b + rows * dim * bytes_per_value for b in per_rank]
                continue
            for shard in ps.sharding_spec.shards:
                rank = int(str(shard.placement).split("rank:")[1].split("/")[0])
                per_rank[rank] += shard.shard_sizes[0] * shard.shard_sizes[1] * bytes_per_value
    return per_rank


def shard(lookup: BucketLookup, pg, sharding_types=MODEL_PARALLEL, optimizer=None, optimizer_kwargs=None):
    """``DistributedModelParallel`` over process group ``pg`` (gloo on CPU, NCCL on GPUs) of ``lookup``
    with the planner's plan and the lookup's weights. ``optimizer`` (``torch.optim.SGD`` or
    ``torch.optim.Adagrad`` on CPU; Adam too on GPUs) with ``optimizer_kwargs`` (e.g. ``{"lr": 0.1}``) is
    fused into the backward pass: ``loss.backward()`` updates the shards. Explained in Appendix A."""
    require_torchrec()
    import torch.distributed as dist
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.types import ShardingEnv
    from torchrec.optim import apply_optimizer_in_backward
    state = {k: v.detach().clone() for k, v in lookup.collection.state_dict().items()}
    if optimizer is not None:
        kwargs = optimizer_kwargs or {"lr": 0.1}
        apply_optimizer_in_backward(optimizer, lookup.collection.parameters(), kwargs)
    gloo = dist.get_backend(pg) == "gloo"
    device = torch.device("cpu") if gloo else torch.device("cuda", torch.cuda.current_device())
    plan = make_plan(lookup, dist.get_world_size(pg), device.type, sharding_types, pg)
    dmp = DistributedModelParallel(lookup, env=ShardingEnv.from_process_group(pg), device=device, plan=plan,
                                   sharders=[EmbeddingBagCollectionSharder()])
    dmp.load_state_dict({f"collection.{k}": v for k, v in state.items()}, strict=False)
    return dmp, plan


def local_weights(dmp) -> dict[str, list[tuple[int, int, torch.Tensor]]]:
    """This rank's pieces of every table of a sharded module: ``{name: [(row offset, column offset,
    tensor), ...]}`` (a replicated table is one piece at (0, 0)). Explained in Appendix A."""
    out = {}
    for key, value in dmp.state_dict().items():
        if not key.endswith(".weight"):
            continue
        name = key.split(".")[-2]
        if hasattr(value, "local_shards"):  # ShardedTensor
            out[name] = [(s.metadata.shard_offsets[0], s.metadata.shard_offsets[1], s.tensor)
                         for s in value.local_shards()]
        else:
            out[name] = [(0, 0, value)]
    return out


def rank_share(n_users: int, rank: int, world: int) -> torch.Tensor:
    """This rank's users: the ``rank``-th of ``world`` contiguous shares of ``range(n_users)``, as
    ``np.array_split`` cuts them (the first ``n_users % world`` ranks one user more; a rank may get none
    when there are fewer users than ranks). Explained in Appendix A."""
    return torch.from_numpy(np.array_split(np.arange(n_users), world)[rank])


def _served_rows(dmp, users: torch.Tensor, n_items: int, n_users: int, world: int) -> dict[str, torch.Tensor]:
    """The sharded tables' rows of ``users`` and of every item. The users are padded (with user 0) to
    the largest share, so that every rank sends TorchRec's collectives the same batch (what they expect
    unless told about variable batches; on the CPU, where tables are sharded table-wise, unequal batches
    happen to work too), and the padding's rows are dropped again."""
    padded = torch.cat([users, users.new_zeros(-(-n_users // world) - len(users))])
    with torch.no_grad():
        rows = dmp({"user": padded, "item": torch.arange(n_items)})
    return {"user": rows["user"][: len(users)], "item": rows["item"]}


def rank_users(dmp, n_users: int, n_items: int, top: int, rank: int, world: int):
    """This rank's users (:func:`rank_share`: any number of users over any number of ranks) and their
    ``top`` items by <e_u, e_i> through the sharded tables (each rank asks for every item). Explained in
    Appendix A."""
    users = rank_share(n_users, rank, world)
    rows = _served_rows(dmp, users, n_items, n_users, world)
    return users, (rows["user"] @ rows["item"].T).topk(top, dim=1).indices


def check_step(export: BucketExport, pg, lr: float = 0.5, batch: int = 32, seed: int = 0) -> float:
    """One SGD step of the sharded tables (fused into the backward) on every rank's batch against the
    same step in one process on all the batches: the largest difference of this rank's updated weights.
    TorchRec averages the tables' gradients over the ranks, as DDP does: the single-process loss is the
    mean of the ranks' losses. Explained in Appendix A."""
    import torch.distributed as dist
    rank, world = dist.get_rank(pg), dist.get_world_size(pg)
    g = torch.Generator().manual_seed(seed)
    batches = [{r: torch.randint(0, len(export.sizes[r]), (batch,), generator=g) for r in export.tables_of}
               for _ in range(world)]
    weights = {r: torch.randn(batch, export.d_max[r], generator=g) for r in export.tables_of}

    def loss(rows):
        return sum((rows[r] * weights[r]).sum() for r in rows)

    dmp, _ = shard(BucketLookup(export), pg, optimizer=torch.optim.SGD, optimizer_kwargs={"lr": lr})
    loss(dmp(batches[rank])).backward()
    single = BucketLookup(export)
    optimizer = torch.optim.SGD(single.parameters(), lr=lr)
    (sum(loss(single(b)) for b in batches) / world).backward()
    optimizer.step()
    reference = {k.split(".")[-2]: v for k, v in single.collection.state_dict().items()}
    worst = 0.0
    for name, pieces in local_weights(dmp).items():
        for r0, c0, piece in pieces:
            want = reference[name][r0:r0 + piece.shape[0], c0:c0 + piece.shape[1]]
            worst = max(worst, float((want - piece).abs().max()))
    return worst


PROG = "python -m recsize.torchrec_shard"
STEP_TOLERANCE = 1e-5  # --check: the largest weight difference one SGD step may leave (summation order)


def _prepare(args) -> BucketExport:
    """Everything checked before a process group starts: TorchRec, ``--out``, the export and ``--top``;
    ``ValueError`` naming the problem and the fix."""
    from .files import check_output_dir
    require_torchrec()
    if args.out is not None:
        check_output_dir(args.out, "--out")
    made = "give a file written by recsize export --format torchrec"
    try:
        export = BucketExport.load(args.export)
    except FileNotFoundError:
        raise ValueError(f"{args.export}: no such file; {made}") from None
    except (ValueError, OSError) as e:
        reason = str(e).strip().splitlines()[0]
        raise ValueError(f"{reason if len(reason) <= 160 else reason.split(' (')[0]}; {made}") from None
    if {"user", "item"} - set(export.tables_of):
        raise ValueError(f"a full ranking needs an export with 'user' and 'item' tables, {args.export} has "
                         f"{sorted(export.tables_of)}; export both: recsize export --format torchrec "
                         f"--out FILE user=USER.pt item=ITEM.pt")
    n_items = len(export.sizes["item"])
    if not 1 <= args.top <= n_items:
        raise ValueError(f"--top must be between 1 and the {n_items} items of the export, got {args.top}")
    return export


def _serve(args, export: BucketExport) -> int:
    """Shard, rank this rank's users, report; rank 0 gathers every rank's ranking. 0, or 1 where
    ``--check`` found a difference."""
    import torch.distributed as dist
    from .files import write_json
    rank, world = dist.get_rank(), dist.get_world_size()
    n_users, n_items = len(export.sizes["user"]), len(export.sizes["item"])
    dmp, plan = shard(BucketLookup(export), dist.group.WORLD)
    if rank == 0:
        print(plan, flush=True)
    users, top = rank_users(dmp, n_users, n_items, args.top, rank, world)
    report = {"rank": rank, "world": world, "users": users.tolist(), "top": top.tolist()}
    first = f"user {int(users[0])}: {top[0, :5].tolist()} ..." if len(users) else "no users here"
    print(f"rank {rank}/{world}: top-{args.top} of {len(users)} users; {first}", flush=True)
    ok = True
    if args.check:
        sharded = _served_rows(dmp, users, n_items, n_users, world)
        with torch.no_grad():
            alone = BucketLookup(export)({"user": users, "item": torch.arange(n_items)})
        report["forward_equal"] = all(torch.equal(sharded[r], alone[r]) for r in sharded)
        report["step_max_diff"] = check_step(export, dist.group.WORLD)
        ok = report["forward_equal"] and report["step_max_diff"] <= STEP_TOLERANCE
        print(f"rank {rank}: sharded forward equals one process: {report['forward_equal']}; one SGD step, "
              f"largest weight difference {report['step_max_diff']:.3g}", flush=True)
    if args.out:
        write_json(report, args.out / f"rank{rank}.json")
    reports = [None] * world if rank == 0 else None
    dist.gather_object(report, reports, dst=0)
    device = torch.device("cpu") if dist.get_backend() == "gloo" else torch.device("cuda")
    passed = torch.tensor([int(ok)], device=device)
    dist.all_reduce(passed, op=dist.ReduceOp.MIN)
    if rank == 0:
        full = [None] * n_users
        for r in reports:
            for user, items in zip(r["users"], r["top"]):
                full[user] = items
        assert all(items is not None for items in full), "a user was ranked by no rank"
        verdict = ("" if not args.check else "; --check: every rank equals one process" if passed.item()
                   else "; --check FAILED: a rank differs from one process (see its line above)")
        print(f"{n_users} users ranked over {world} ranks (shares "
              f"{', '.join(str(len(r['users'])) for r in reports)}){verdict}", flush=True)
        if args.out:
            write_json({"users": n_users, "items": n_items, "top_k": args.top, "top": full},
                       args.out / "top.json")
    return 0 if passed.item() else 1


def main(argv=None) -> int:
    """``torchrun --nproc-per-node N -m recsize.torchrec_shard EXPORT.pt``: shard, rank, report; any
    number of users over any number of ranks (:func:`rank_share`), rank 0 gathering the full ranking
    (``--out DIR``: ``rankR.json`` from every rank, ``top.json`` from rank 0). ``--check`` also compares
    the sharded forward and one training step with one process (exit 1 where they differ). Bad input
    ends in one line on stderr (from rank 0) and exit 2 before a process group starts. Explained in
    Appendix A."""
    p = argparse.ArgumentParser(prog=PROG)
    p.add_argument("export", type=Path)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--out", type=Path, help="write each rank's users and top items (rankR.json) and rank 0's "
                   "gathered ranking (top.json) here as JSON")
    p.add_argument("--check", action="store_true", help="compare forward and one SGD step with one process")
    args = p.parse_args(argv)
    try:
        export = _prepare(args)
    except ValueError as e:
        if os.environ.get("RANK", "0") == "0":  # one line for the whole run, not one per rank
            print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    import torch.distributed as dist
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("gloo" if not torch.cuda.is_available() else "nccl")
    try:
        return _serve(args, export)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())

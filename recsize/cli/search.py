"""``recsize search``: the runs of every method (es / mr / mde, DNIS, CIESS, iHAS, MagPrune, PEP) after
the checks, and the tables they print. Explained in Chapter 4 (es, mr, mde, MagPrune, PEP), Chapter 5
(DNIS), Chapter 6 (CIESS) and Chapter 7 (iHAS)."""
from __future__ import annotations

from ..files import write_json
from .checks import _check_exact_index_floor, _check_memory
from .report import _metric_keys, _progress, _settings, metrics_table


def _cmd_ciess(args, split) -> int:
    from ..budget import format_bytes
    from ..search.ciess import CIESSConfig, run_ciess
    densities = args.ciess_densities
    overrides = {k: getattr(args, k) for k in ("episodes", "iterations", "training", "epochs_per_iteration",
                                               "iteration_batches", "top_l", "patience")
                 if getattr(args, k) is not None}
    if args.epochs is not None:
        overrides.update(full_epochs=args.epochs, retrain_epochs=args.epochs)
    train_overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay")
                       if getattr(args, k) is not None}
    config = CIESSConfig.schedule(args.schedule, budgets=tuple(densities), reward=args.reward, lam=args.lam,
                                  d_max=args.dim, selection=args.selection, exploration=args.exploration,
                                  noise=args.noise, rescale=not args.no_rescale, state=args.state,
                                  pace=args.pace, random_walk=not args.no_random_walk, seed=args.seed,
                                  device=args.device, progress=_progress(args),
                                  train_overrides=train_overrides, **overrides)
    model_kwargs = {"reg": args.reg} if args.reg is not None else {}
    result = run_ciess(args.backbone, split, config, args.checkpoint_dir, args.resume, model_kwargs)
    c = config
    t = result.config["resolved"]["iteration_training"]
    per_iteration = (f"{t['epochs']} epochs" if t["training"] == "epochs"
                     else f"{t['batches']} batches of {t['batch_size']}")
    print(f"CIESS on {args.backbone}, {args.dataset} ({args.protocol}, seed {args.seed}), d_max = {args.dim}, "
          f"reward {c.reward}, lambda = {c.lam}: {c.episodes} episodes x {c.iterations} iterations x "
          f"{per_iteration}, {'random walk' if c.random_walk else 'no walk'}, {c.exploration} {c.noise} noise, "
          f"{c.state} state, {c.pace} TD3 pace, {c.selection} selection; {result.seconds['total']:.0f} s")
    print(f"{'budget':14s}{'Recall@20':>10s}{'NDCG@20':>10s}{'parameters':>12s}{'density':>9s}"
          f"{'compact':>12s}{'dense':>12s}")
    for b in result.budgets.values():
        best = b["best"]
        print(f"{'c = %.1f %%' % (100 * b['sparsity']):14s}{best['test']['recall@20']:>10.4f}"
              f"{best['test']['ndcg@20']:>10.4f}{best['parameters']:>12,}{best['density']:>9.3f}"
              f"{format_bytes(best['compact_bytes']):>12s}{format_bytes(best['dense_bytes']):>12s}"
              f"{'  (projected)' if best['projected'] else ''}")
    print("(test split, best retrained mask per budget chosen on validation; compact: bytes of the compact "
          "tables; projected: no searched mask met the budget, the thinnest one was scaled down to it)")
    if args.out:
        write_json({"dataset": args.dataset, "protocol": args.protocol, **result.to_dict()}, args.out, "result")
        print(f"search, sizes, metrics and memory written to {args.out}")
    return 0


def _cmd_ihas(args) -> int:
    from ..budget import format_bytes
    from ..data import prepare, split_ctr
    from ..data.ctr_files import read_ctr_file
    from ..search.ihas import IHASConfig, run_ihas
    from ..train import TrainConfig
    model_kwargs, train_kwargs = _settings(args)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device,
                         progress=_progress(args), **train_kwargs)
    ihas = IHASConfig(clusters=args.clusters, n_blocks=args.gate_blocks, route_dim=args.route_dim,
                      search_epochs=20 if args.search_epochs is None else args.search_epochs,
                      sparsity_weight=args.sparsity_weight,
                      dual_lr=args.dual_lr, polarisation_weight=args.polarisation_weight,
                      lr=train_kwargs.get("lr", 1e-3), batch_size=train_kwargs.get("batch_size", 2048),
                      cluster_init=args.cluster_init, charge=args.charge, layout=args.layout)
    if args.ctr_file:
        data = read_ctr_file(args.ctr_file, args.ctr_format, args.max_rows, args.min_count)
        split = split_ctr(data, seed=args.seed)
        dataset = f"{args.ctr_file} ({args.ctr_format})"
        if not args.quiet:
            print(split.data)
    else:
        split, dataset = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet), args.dataset
    _check_memory(args, split, model_kwargs, train_kwargs, copies=args.clusters + 1)
    run = run_ihas(args.backbone, split, args.density, args.dim, ihas, config, seed=args.seed,
                   progress=_progress(args), **model_kwargs)
    b = run.budget
    shared, K = args.layout == "shared", len(run.sizes)
    print(f"iHAS, K = {args.clusters} ({K} used), density {run.density:.3f} (sparsity c = "
          f"{100 * (1 - run.density):.1f} %), d_max = {args.dim}: {args.backbone} on {dataset} "
          f"(random 8:1:1 over samples, seed {args.seed})")
    print(metrics_table({"valid": run.valid, "test": run.test}, ["auc", "logloss"]))
    print("(every sample routed to its cluster's " + ("widths of the shared table)" if shared else "model)"))
    print(f"\n{'cluster':10s}{'train':>9s}{'test':>8s}{'parameters':>12s}{'compact':>12s}   mean width per field")
    widths = run.field_sizes()
    for k in range(K):
        print(f"{k:<10d}{run.cluster_sizes['train'][k]:>9,}{run.cluster_sizes['test'][k]:>8,}"
              f"{b['cluster_parameters'][k]:>12,}"
              f"{'(reads)' if shared else format_bytes(b['cluster_bytes'][k]):>12s}   "
              + " ".join(f"{w:.0f}" for w in widths[k]))
    if shared:
        print(f"{'shared':10s}{'':17s}{b['stored_parameters']:>12,}{format_bytes(b['cluster_bytes'][0]):>12s}   "
              "one table, every row as wide as its widest cluster")
    r = b["routing_parameters"]
    free = " (not charged)"
    print(f"{'routing':10s}{'':17s}{r['total']:>12,}{format_bytes(b['routing_bytes']):>12s}   "
          f"router table {r['router_table']:,}, gate network {r['gate_network']:,}, centroids {r['centroids']:,}"
          + (f", cluster widths {r['cluster_widths']:,}" if shared else "")
          + ("" if b["charge"] != "embeddings" else free))
    print(f"{'1st order':10s}{'':17s}{r['first_order']:>12,}{format_bytes(b['first_order_bytes']):>12s}   "
          + ("one model, one first-order table (as ES)" if shared
             else f"first-order weights of the {len(run.models) - 1} cluster models beyond one")
          + ("" if b["charge"] == "routing+linear" or shared else free))
    print(f"{'total':10s}{'':17s}{b['total_parameters']:>12,}{format_bytes(b['total_bytes']):>12s}   "
          f"= the budget's {b['target_parameters']:,} (non-embedding parameters, "
          f"{'one copy' if shared else 'K copies'}: {b['non_embedding_parameters']:,})")
    if args.out:
        write_json({"backbone": args.backbone, "dataset": dataset, **run.to_dict()}, args.out, "result")
        print(f"sizes, metrics and budget written to {args.out}")
    return 0


def _cmd_search(args) -> int:
    from ..budget import format_bytes
    from ..data import prepare
    from ..search import run_baseline
    from ..train import TrainConfig
    if args.method == "ciess":
        split = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet)
        model_kwargs, train_kwargs = _settings(args)
        _check_memory(args, split, model_kwargs, train_kwargs, copies=2)  # reference + candidate
        return _cmd_ciess(args, split)
    args.epochs = 300 if args.epochs is None else args.epochs
    args.patience = 10 if args.patience is None else args.patience
    if args.method == "ihas":
        return _cmd_ihas(args)
    model_kwargs, train_kwargs = _settings(args)
    config = TrainConfig(epochs=args.epochs, patience=args.patience, seed=args.seed, device=args.device,
                         progress=_progress(args), **train_kwargs)
    split = prepare(args.dataset, args.protocol, seed=args.seed, verbose=not args.quiet)
    if args.method in ("magprune", "pep", "magprune-tois"):
        return _cmd_prune(args, split, config, model_kwargs, train_kwargs)
    _check_memory(args, split, model_kwargs, train_kwargs, copies=2 if args.method == "dnis" else 1)
    if args.method == "dnis":
        if args.derive == "in-place":
            _check_exact_index_floor(args, split, args.prune_split)
        dnis = _run_dnis(args, split, model_kwargs)
        run = dnis.run
        if args.derive == "in-place":
            return _report_element_run(args, run, f"DNIS in place, by {args.prune_by}, {args.prune_split} split",
                                       _dnis_stages(dnis), dnis)
    else:
        run = run_baseline(args.backbone, split, args.method, args.density, args.dim, config, seed=args.seed,
                           alpha=args.alpha, **model_kwargs)
    result = run.result
    protocol = "random-811 over samples" if args.dataset.endswith("-ctr") else args.protocol
    out = {"backbone": args.backbone, "dataset": args.dataset, "protocol": protocol,
           **(dnis.to_dict() if args.method == "dnis" else run.to_dict())}
    keys = _metric_keys(result.valid)
    print(f"{args.method} sizes, density {run.density:.3f} (sparsity c = {100 * (1 - run.density):.1f} %), "
          f"d_max = {args.dim}: {args.backbone} on {args.dataset} ({protocol}, seed {args.seed}): "
          f"best epoch {result.best_epoch}, {result.seconds:.1f} s")
    print(metrics_table({"valid": result.valid, "test": result.test, "compact": run.test_compact}, keys))
    print("(compact: the test split again, with the trained tables converted to compact storage)")
    print(f"\n{'table':10s}{'rows':>9s}{'parameters':>12s}{'mean width':>11s}"
          f"{'dense':>12s}{'masked':>12s}{'compact':>12s}{'compact/dense':>15s}")
    for role, m in run.memory.items():
        print(f"{role:10s}{m['rows']:>9,}{m['parameters']:>12,}{m['density'] * args.dim:>11.1f}"
              f"{format_bytes(m['dense']):>12s}{format_bytes(m['masked']):>12s}{format_bytes(m['compact']):>12s}"
              f"{m['compact'] / m['dense']:>15.3f}")
    if args.method == "dnis":
        print(f"\n{_dnis_stages(dnis)}")
    if args.out:
        write_json(out, args.out, "result")
        print(f"sizes, metrics and memory written to {args.out}")
        if args.method == "dnis":
            dnis.save_arrays(args.out.with_suffix(".npz"))
            print(f"alpha, frequency blocks and widths written to {args.out.with_suffix('.npz')}")
    return 0


def _cmd_prune(args, split, config, model_kwargs: dict, train_kwargs: dict) -> int:
    """magprune / pep after the data loaded: the exact CSR-index floor (in the user's unit), the memory
    estimate, the run, its table and JSON."""
    from ..search.pep import PEPConfig, run_pep
    from ..search.prune import run_magprune
    prune_split = {"magprune": args.prune_split, "magprune-tois": "per-table"}.get(args.method, "global")
    _check_exact_index_floor(args, split, prune_split)
    _check_memory(args, split, model_kwargs, train_kwargs, copies=2)  # dense + masked; PEP: V and thresholds
    if args.method == "magprune":
        run = run_magprune(args.backbone, split, args.density, args.dim, config, prune_split, **model_kwargs)
        stages = (f"dense best epoch {run.info['dense']['best_epoch']} ({run.seconds['dense']:.1f} s), fine-tuning "
                  f"best epoch {run.result.best_epoch} ({run.seconds['finetune']:.1f} s)")
        what = f"{prune_split} split"
    elif args.method == "magprune-tois":
        from ..search.magprune_tois import run_magprune_tois, tois_stages
        run = run_magprune_tois(args.backbone, split, args.density, args.dim, config, "bytes",
                                args.min_item_search, **model_kwargs)
        stages, what = tois_stages(run), "per table, each row's min_item largest entries kept"
    else:
        pep = PEPConfig(granularity=args.pep_granularity, threshold_init=args.pep_init, scale=args.pep_scale,
                        search_epochs=args.pep_epochs)
        run = run_pep(args.backbone, split, args.density, args.dim, config, pep, **model_kwargs)
        snap = run.info["snapshot"]
        stages = (f"PEP training {run.info['search']['epochs']} epochs ({run.seconds['search']:.1f} s), mask at "
                  f"epoch {snap['epoch']} step {snap['step']}"
                  + ("" if snap["reached"] else " (budget NOT reached: the last state was cut to it by magnitude; "
                     "raise --pep-epochs, --pep-init or --pep-scale)")
                  + f", retraining best epoch {run.result.best_epoch} ({run.seconds['retrain']:.1f} s)")
        what = f"thresholds per {args.pep_granularity}"
    return _report_element_run(args, run, what, stages)


def _dnis_stages(dnis) -> str:
    searched = dnis.search
    return (f"DNIS search {dnis.seconds['search']:.1f} s (warm start {searched.warm['epochs'] if searched.warm else 0} "
            f"epochs, {searched.seconds['warm']:.1f} s; {len(searched.history)} alternating epochs, best "
            f"{searched.best_epoch}), {'fine-tuning' if dnis.derivation['derive'] == 'in-place' else 'retraining'} "
            f"best epoch {dnis.run.result.best_epoch} ({dnis.seconds['retrain']:.1f} s)")


def _report_element_run(args, run, what: str, stages: str, dnis=None) -> int:
    """The table and JSON of an element-wise run (magprune, pep, dnis in place): metrics, CSR bytes."""
    from ..budget import format_bytes
    result = run.result
    protocol = "random-811 over samples" if args.dataset.endswith("-ctr") else args.protocol
    keys = _metric_keys(result.valid)
    print(f"{args.method} ({what}), {args.density:g} of the dense bytes "
          f"(sparsity c = {100 * (1 - args.density):.1f} %), d_max = {args.dim}: {args.backbone} on {args.dataset} "
          f"({protocol}, seed {args.seed}): {stages}")
    print(metrics_table({"valid": result.valid, "test": result.test, "csr": run.test_compact}, keys))
    print("(csr: the test split again, with the trained tables converted to CSR storage)")
    print(f"\n{'table':10s}{'rows':>9s}{'kept':>10s}{'density':>9s}{'dense':>12s}{'budget':>12s}{'CSR':>12s}"
          f"{'int32 CSR':>12s}{'CSR/dense':>11s}")
    for role, m in run.memory.items():
        print(f"{role:10s}{m['rows']:>9,}{m['parameters']:>10,}{m['density']:>9.3f}{format_bytes(m['dense']):>12s}"
              f"{format_bytes(m['budget_bytes']):>12s}{format_bytes(m['csr']):>12s}"
              f"{format_bytes(m['csr_int32']):>12s}{m['csr'] / m['dense']:>11.3f}")
    print(f"(kept: entries kept, {run.memory['total']['parameters']:,} = what the budget's "
          f"{run.budget['budget_bytes']:,.0f} B hold in CSR form; CSR: {run.memory['total']['csr']:,} B exactly, "
          f"measured {run.memory['total']['csr_measured']:,} B; int32 CSR: the VLDB'24 accounting)")
    if args.out:
        write_json({"backbone": args.backbone, "dataset": args.dataset, "protocol": protocol,
                    **(dnis.to_dict() if dnis is not None else run.to_dict())}, args.out, "result")
        print(f"sizes, metrics and memory written to {args.out}")
        if dnis is not None:
            dnis.save_arrays(args.out.with_suffix(".npz"))
            print(f"alpha, frequency blocks, masks and kept entries written to {args.out.with_suffix('.npz')}")
    return 0


def _run_dnis(args, split, model_kwargs):
    from ..search.dnis import DNISConfig, run_dnis
    train_overrides = {k: getattr(args, k) for k in ("batch_size", "lr", "weight_decay")
                       if getattr(args, k) is not None}
    config = DNISConfig(d_max=args.dim, blocks=args.blocks, warm_epochs=args.warm_epochs,
                        search_epochs=300 if args.search_epochs is None else args.search_epochs,
                        alpha_lr=args.alpha_lr, l1=args.l1, second_order=args.second_order,
                        min_size=args.min_size, granularity=args.granularity, derive=args.derive,
                        prune_by=args.prune_by, budget_split=args.prune_split, alternation=args.alternation,
                        lr_decay=args.lr_decay, retrain_epochs=args.epochs,
                        patience=args.patience, seed=args.seed, device=args.device,
                        progress=_progress(args), train_overrides=train_overrides)
    return run_dnis(args.backbone, split, args.density, config, **model_kwargs)

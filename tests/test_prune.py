"""Element-wise pruning under a memory budget (Chapter 4): MagPrune and PEP, their budgets in bytes, the fixed
masks, the CSR conversion, and `recsize search --method magprune|pep`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import recsize.backbones
import recsize.data
from recsize.budget import csr_bytes, dense_bytes, entries_for_bytes
from recsize.cli import main
from recsize.embedding import CSREmbedding, ElementMaskedEmbedding, compact_tables
from recsize.search import (BudgetSnapshots, PEPConfig, PEPEmbedding, element_budget, index_floor, magnitude_masks,
                            masked_model, pep_search, run_magprune, run_pep, shared_dimensions, table_shapes,
                            ticket_model, top_entries, train_dense)
from recsize.search.pep import soft_threshold
from recsize.train import default_config, seed_everything, train

from conftest import one_line_error

DIM = 16


def cfg(backbone: str, epochs: int = 2, **kw):
    return default_config(backbone, epochs=epochs, patience=1, progress=False, **kw)


def random_tables(shapes: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {r: torch.randn(n, d, generator=g) for r, (n, d) in shapes.items()}


def csr_total(masks: dict, d_max: int) -> int:
    return sum(csr_bytes(m.sum(1).numpy(), d_max) for m in masks.values())


# ------------------------------------------------------------------------------------------ budgets in bytes
@pytest.mark.parametrize("density", [0.13, 0.2, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("d_max", [8, 16, 64])
def test_global_threshold_hits_the_budget_exactly(density, d_max):
    shapes = {"user": (60, d_max), "item": (80, d_max)}
    if density < index_floor(d_max, shapes):
        with pytest.raises(ValueError, match="cannot hold the CSR index"):
            element_budget(shapes, density)
        return
    budget = element_budget(shapes, density)
    tables = random_tables(shapes)
    masks, thresholds = magnitude_masks(tables, budget)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == budget["entries"]
    used = csr_total(masks, d_max)
    per_entry = 4 + 1  # float32 value + uint8 column index
    assert used <= budget["budget_bytes"] and (kept == 140 * d_max or budget["budget_bytes"] < used + per_entry)
    # one threshold over both tables: every kept magnitude is at least every pruned one
    kept_mags = torch.cat([tables[r].abs()[masks[r]] for r in tables])
    pruned_mags = torch.cat([tables[r].abs()[~masks[r]] for r in tables])
    if len(kept_mags) and len(pruned_mags):
        assert kept_mags.min() >= pruned_mags.max()
        assert kept_mags.min() == thresholds["global"]


def test_budget_is_a_fraction_of_the_dense_bytes_with_the_index():
    shapes = {"user": (943, 64), "item": (1682, 64)}
    budget = element_budget(shapes, 0.1)
    dense = dense_bytes(943, 64) + dense_bytes(1682, 64)
    assert budget["dense_bytes"] == dense and budget["budget_bytes"] == pytest.approx(0.1 * dense)
    index = (943 + 1) * 8 + (1682 + 1) * 8
    assert budget["entries"] == int((0.1 * dense - index) // 5)
    assert budget["entries"] / (2625 * 64) < 0.1  # the index costs memory: fewer entries than the density


def test_per_table_split_gives_every_table_the_same_fraction():
    shapes = {"user": (60, DIM), "item": (80, DIM)}
    tables = random_tables(shapes)
    tables["item"] *= 10  # the items are much larger: a global threshold keeps mostly items
    per = element_budget(shapes, 0.4, "per-table")
    glob = element_budget(shapes, 0.4, "global")
    masks_per, thr_per = magnitude_masks(tables, per)
    masks_glob, _ = magnitude_masks(tables, glob)
    for role, (n, d) in shapes.items():
        assert int(masks_per[role].sum()) == per["per_table"][role] == entries_for_bytes(0.4 * dense_bytes(n, d), n, d)
        assert csr_bytes(masks_per[role].sum(1).numpy(), d) <= 0.4 * dense_bytes(n, d)
        assert set(thr_per) == set(shapes)
    assert glob["per_table"] is None
    assert sum(int(m.sum()) for m in masks_glob.values()) == glob["entries"]
    assert int(masks_glob["item"].sum()) > per["per_table"]["item"]
    assert int(masks_glob["user"].sum()) < per["per_table"]["user"]
    assert masks_glob["user"].sum() == 0 or tables["user"].abs()[masks_glob["user"]].min() >= \
        tables["item"].abs()[~masks_glob["item"]].max()


def test_ties_are_broken_by_table_row_column():
    scores = {"a": torch.ones(2, 3), "b": torch.ones(2, 3)}
    masks, t = top_entries(scores, 4)
    assert masks["a"].tolist() == [[True] * 3, [True, False, False]] and not masks["b"].any() and t == 1.0
    masks, t = top_entries(scores, 0)
    assert not any(m.any() for m in masks.values()) and t == float("inf")
    with pytest.raises(ValueError):
        top_entries(scores, 13)


def test_index_floor_and_every_row_may_keep_zero():
    shapes = {"user": (60, DIM), "item": (80, DIM)}
    floor = index_floor(DIM, shapes)
    assert floor == pytest.approx(((60 + 1) + (80 + 1)) * 8 / (140 * DIM * 4))
    assert index_floor(DIM) == 8 / (4 * DIM) < floor
    budget = element_budget(shapes, floor * (1 + 1e-9))
    assert budget["entries"] == 0
    with pytest.raises(ValueError, match=r"density 0\.1 of the dense bytes .* at least 0\.12"):
        element_budget(shapes, 0.1)


def test_table_shapes_match_the_built_models(tiny_split, ctr_split):
    for backbone, split in [("mf", tiny_split), ("neumf", tiny_split), ("lightgcn", tiny_split),
                            ("ngcf", tiny_split), ("fm", ctr_split), ("deepfm", ctr_split)]:
        model = recsize.backbones.build_backbone(backbone, split, DIM)
        assert table_shapes(backbone, split, DIM) == {r: tuple(t.weight.shape)
                                                      for r, t in model.embedding_tables().items()}
    with pytest.raises(ValueError, match="CTR backbone"):
        table_shapes("fm", tiny_split, DIM)


# ------------------------------------------------------------------------------------------ MagPrune
@pytest.mark.parametrize("backbone, split_name", [("mf", "tiny_split"), ("lightgcn", "tiny_split"),
                                                  ("neumf", "tiny_split"), ("ngcf", "tiny_split"),
                                                  ("fm", "ctr_split"), ("deepfm", "ctr_split")])
def test_magprune_end_to_end(backbone, split_name, request):
    split = request.getfixturevalue(split_name)
    run = run_magprune(backbone, split, 0.4, DIM, cfg(backbone))
    budget = element_budget(table_shapes(backbone, split, DIM), 0.4)
    assert run.budget["entries"] == budget["entries"] == run.memory["total"]["parameters"]
    assert sum(int(s.sum()) for s in run.sizes.values()) == budget["entries"]
    assert run.memory["total"]["csr"] == run.memory["total"]["csr_measured"] <= budget["budget_bytes"]
    for role, table in run.model.embedding_tables().items():
        assert isinstance(table, CSREmbedding)
        assert np.array_equal(table.sizes.numpy(), run.sizes[role])
        assert table.num_bytes() == run.memory[role]["csr"]
    assert run.test_compact == run.result.test  # the CSR tables score exactly like the masked ones
    d = run.to_dict()
    assert d["method"] == "magprune" and d["prune"]["split"] == "global" and d["prune"]["dense"]["best_epoch"] >= 1
    json.dumps(d)


def test_pruned_entries_stay_zero_through_finetuning(tiny_split):
    dense = train_dense("mf", tiny_split, DIM, cfg("mf"))
    tables = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    masks, _ = magnitude_masks(tables, element_budget(table_shapes("mf", tiny_split, DIM), 0.4))
    state = {k: v.clone() for k, v in dense.model.state_dict().items()}
    model = masked_model("mf", tiny_split, DIM, masks, state)
    for role, table in model.embedding_tables().items():
        assert isinstance(table, ElementMaskedEmbedding)
        assert torch.equal(table.keep, masks[role])
        assert (table.weight[~masks[role]] == 0).all()
        assert torch.equal(table.weight[masks[role]], state[f"{role}.weight"][masks[role]])
    # weight decay and momentum would move masked entries that were not 0; at 0 they have nothing to move
    train(model, tiny_split, cfg("mf", epochs=3, weight_decay=1e-2))
    for role, table in model.embedding_tables().items():
        assert (table.weight[~masks[role]] == 0).all()
        assert not torch.equal(table.weight[masks[role]], state[f"{role}.weight"][masks[role]])


@pytest.mark.parametrize("backbone, split_name", [("lightgcn", "tiny_split"), ("neumf", "tiny_split"),
                                                  ("deepfm", "ctr_split")])
def test_csr_scores_equal_the_masked_scores(backbone, split_name, request):
    split = request.getfixturevalue(split_name)
    dense = train_dense(backbone, split, DIM, cfg(backbone))
    tables = {r: t.table().detach() for r, t in dense.model.embedding_tables().items()}
    masks, _ = magnitude_masks(tables, element_budget(table_shapes(backbone, split, DIM), 0.3))
    model = masked_model(backbone, split, DIM, masks, dense.model.state_dict())
    train(model, split, cfg(backbone))
    model.eval()

    def scores():
        with torch.no_grad():
            if model.task == "topk":
                return model.scorer()(torch.arange(split.n_users))
            return model.score(torch.from_numpy(split.data.X))
    masked = scores()
    compact_tables(model)  # in place (LightGCN's sparse adjacency cannot be deep-copied)
    assert all(isinstance(t, CSREmbedding) for t in model.embedding_tables().values())
    assert torch.equal(masked, scores())


def test_magprune_reuses_one_dense_model_and_is_deterministic(tiny_split):
    dense = train_dense("lightgcn", tiny_split, DIM, cfg("lightgcn"))
    a = run_magprune("lightgcn", tiny_split, 0.5, DIM, cfg("lightgcn"), dense=dense)
    b = run_magprune("lightgcn", tiny_split, 0.5, DIM, cfg("lightgcn"))
    assert all(torch.equal(a.masks[r], b.masks[r]) for r in a.masks)
    assert a.result.test == b.result.test and a.result.history[0]["loss"] == b.result.history[0]["loss"]
    c = run_magprune("lightgcn", tiny_split, 0.3, DIM, cfg("lightgcn"), dense=dense, prune_split="per-table")
    assert c.info["split"] == "per-table" and set(c.info["thresholds"]) == {"user", "item"}
    assert c.memory["total"]["parameters"] < a.memory["total"]["parameters"]


# ------------------------------------------------------------------------------------------ PEP
@pytest.mark.parametrize("granularity, shape", [("feature_dim", (5, 4)), ("feature", (5, 1)),
                                                ("dimension", (1, 4)), ("global", (1, 1))])
def test_pep_embedding_soft_threshold(granularity, shape):
    torch.manual_seed(0)
    table = PEPEmbedding(5, 4, granularity, threshold_init=-1.0, scale=0.5)
    assert table.threshold.shape == shape
    with torch.no_grad():
        table.threshold.normal_()
    t = torch.sigmoid(table.threshold) * 0.5
    expected = torch.sign(table.weight) * torch.relu(table.weight.abs() - t)
    assert torch.equal(table.table(), expected)
    ids = torch.tensor([[3, 0], [4, 4]])
    assert torch.equal(table(ids), expected[ids])
    assert torch.equal(table.margin() > 0, table.table() != 0)
    assert table.num_parameters() == int((expected != 0).sum())
    table(torch.arange(5)).sum().backward()
    assert torch.equal(table.weight.grad, (expected != 0).float())  # gradient 1 on kept entries, 0 on pruned


def test_soft_threshold_default_init_prunes_nothing():
    table = PEPEmbedding(50, 8)
    assert table.threshold.shape == (50, 8) and float(table.threshold.detach()[0, 0]) == -15.0
    assert table.num_parameters() == 400
    assert torch.equal(soft_threshold(torch.tensor([-2.0, 0.5, 1.0]), torch.tensor(1.0)), torch.tensor([-1.0, 0, 0]))


def margins_with(kept: int, total: int = 10) -> dict[str, torch.Tensor]:
    """Margins of two tables: ``kept`` positive entries (the highest first), the rest negative."""
    m = -torch.arange(1, total + 1, dtype=torch.float32)
    m[:kept] = torch.arange(kept, 0, -1, dtype=torch.float32)
    return {"user": m[:4].view(2, 2), "item": m[4:].view(3, 2)}


def test_snapshots_are_taken_when_the_count_first_reaches_each_budget():
    watcher = BudgetSnapshots({0.7: 7, 0.5: 5, 0.3: 3, 0.1: 1})
    for step, kept in enumerate([10, 8, 5, 5, 2]):   # step 2 reaches 5 exactly; step 4 jumps past 3
        watcher.observe(margins_with(kept), step, epoch=step // 2)
    s = watcher.taken
    assert set(s) == {0.7, 0.5, 0.3}
    assert (s[0.7].step, s[0.7].kept_at_snapshot, s[0.7].adjusted) == (1, 8, 1)  # the last state >= 7, cut to 7
    assert (s[0.5].step, s[0.5].kept_at_snapshot, s[0.5].adjusted) == (2, 5, 0)  # first reached exactly
    assert (s[0.3].step, s[0.3].kept_at_snapshot, s[0.3].adjusted) == (3, 5, 2)  # the state before the jump
    assert s[0.7].epoch == 0 and all(x.reached for x in s.values())
    watcher.finish(margins_with(2), 4, 2)
    assert not watcher.taken[0.1].reached and watcher.taken[0.1].kept_at_snapshot == 2 and watcher.done
    for density, snap in watcher.taken.items():
        flat = torch.cat([snap.masks["user"].reshape(-1), snap.masks["item"].reshape(-1)])
        assert int(flat.sum()) == snap.target                            # exact after the fix-up
        assert flat[:snap.target].all() and not flat[snap.target:].any()  # the largest margins, kept ones first


def test_snapshot_at_the_start_and_several_budgets_in_one_step():
    watcher = BudgetSnapshots({1.0: 10, 0.9: 9})
    watcher.observe(margins_with(8), 0, 0)     # already below both at the first look: that state is the snapshot
    assert watcher.done and watcher.taken[0.9].kept_at_snapshot == 8 and watcher.taken[0.9].adjusted == -1
    assert all(int(sum(m.sum() for m in s.masks.values())) == s.target for s in watcher.taken.values())
    watcher = BudgetSnapshots({0.6: 6, 0.4: 4})
    watcher.observe(margins_with(9), 0, 0)
    watcher.observe(margins_with(3), 1, 0)      # one step passes both budgets: both cut from the state before
    assert watcher.taken[0.6].step == watcher.taken[0.4].step == 0 and watcher.done


def quick_pep(**kw) -> PEPConfig:
    """PEP that prunes within a few epochs of the tiny data: thresholds start near the weights' magnitude, may
    rise to 5 / 2 and are pulled up hard."""
    return PEPConfig(**{"threshold_init": -4.0, "scale": 5.0, "threshold_decay": 1e-2, "search_epochs": 30, **kw})


def test_pep_search_reaches_every_budget_exactly(tiny_split):
    config = cfg("mf", lr=0.05, batch_size=64)
    searched = pep_search("mf", tiny_split, [0.6, 0.4, 0.3], DIM, config, quick_pep())
    snaps = searched.snapshots
    assert all(s.reached for s in snaps.values())
    assert snaps[0.6].step <= snaps[0.4].step <= snaps[0.3].step
    for density, snap in snaps.items():
        assert snap.target == element_budget(table_shapes("mf", tiny_split, DIM), density)["entries"]
        assert sum(int(m.sum()) for m in snap.masks.values()) == snap.target
        assert snap.kept_at_snapshot >= snap.target
    kept = [h["kept"] for h in searched.history]
    assert kept == sorted(kept, reverse=True) or kept[-1] < kept[0]  # the thresholds rise
    assert searched.history[-1]["threshold"] > 5 * torch.sigmoid(torch.tensor(-4.0)).item()
    assert searched.steps == snaps[0.3].step + (snaps[0.3].kept_at_snapshot > snaps[0.3].target)  # stops there


def test_pep_retrains_from_the_initial_weights(tiny_split):
    config = cfg("neumf", lr=0.05, batch_size=64)
    searched = pep_search("neumf", tiny_split, [0.4], DIM, config, quick_pep())
    # the saved state is the model before any step: a fresh PEP model with the same seed
    from recsize.search.pep import pep_factory
    seed_everything(config.seed)
    fresh = recsize.backbones.build_backbone("neumf", tiny_split, DIM, embedding=pep_factory(quick_pep()),
                                             **recsize.backbones.defaults_for("neumf")[0])
    assert all(torch.equal(v, searched.initial_state[k]) for k, v in fresh.state_dict().items())
    ticket = ticket_model(searched, tiny_split, 0.4)
    masks = searched.snapshots[0.4].masks
    for key, value in ticket.state_dict().items():
        role = key.split(".")[0]
        if key.endswith(".weight") and role in masks:
            assert torch.equal(value, searched.initial_state[key] * masks[role])
        elif key.endswith((".keep", ".sizes")):
            continue
        else:
            assert torch.equal(value, searched.initial_state[key]), key
    run = run_pep("neumf", tiny_split, 0.4, DIM, config, searched=searched)
    assert run.memory["total"]["parameters"] == searched.snapshots[0.4].target
    assert run.test_compact == run.result.test
    with pytest.raises(ValueError, match="no mask for density 0.3"):
        ticket_model(searched, tiny_split, 0.3)


@pytest.mark.parametrize("backbone, split_name", [("mf", "tiny_split"), ("lightgcn", "tiny_split"),
                                                  ("neumf", "tiny_split"), ("fm", "ctr_split"),
                                                  ("deepfm", "ctr_split")])
def test_pep_end_to_end(backbone, split_name, request):
    split = request.getfixturevalue(split_name)
    run = run_pep(backbone, split, 0.5, DIM, cfg(backbone, lr=0.05, batch_size=64),
                  quick_pep(search_epochs=5, granularity="dimension"))
    budget = element_budget(table_shapes(backbone, split, DIM), 0.5)
    assert run.memory["total"]["parameters"] == budget["entries"]
    assert run.memory["total"]["csr"] == run.memory["total"]["csr_measured"] <= budget["budget_bytes"]
    assert all(isinstance(t, CSREmbedding) for t in run.model.embedding_tables().values())
    assert run.test_compact == run.result.test
    d = run.to_dict()
    assert d["method"] == "pep" and d["prune"]["snapshot"]["target"] == budget["entries"]
    json.dumps(d)


def test_pep_is_deterministic(tiny_split):
    config = cfg("lightgcn", lr=0.05, batch_size=64)
    a = run_pep("lightgcn", tiny_split, 0.4, DIM, config, quick_pep(search_epochs=10))
    b = run_pep("lightgcn", tiny_split, 0.4, DIM, config, quick_pep(search_epochs=10))
    assert a.info["snapshot"] == b.info["snapshot"]
    assert all(torch.equal(a.masks[r], b.masks[r]) for r in a.masks)
    assert a.result.test == b.result.test and a.result.valid == b.result.valid

    def no_clock(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
    assert no_clock(a.info["search"]["history"]) == no_clock(b.info["search"]["history"])
    assert no_clock(a.result.history) == no_clock(b.result.history)


# ------------------------------------------------------------------------------------------ command line
TINY = ["search", "--dataset", "synthetic", "--backbone", "mf", "--dim", "8", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("method, extra", [("magprune", ["--prune-split", "per-table"]),
                                           ("pep", ["--pep-init", "-3", "--pep-epochs", "2", "--pep-scale", "2",
                                                    "--pep-granularity", "feature"])])
def test_cli_end_to_end(method, extra, tmp_path, capsys):
    out = tmp_path / f"{method}.json"
    assert main([*TINY, "--method", method, "--sparsity", "0.5", *extra, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CSR" in printed and "int32 CSR" in printed and str(out) in printed
    data = json.loads(out.read_text())
    assert data["method"] == method and data["density"] == 0.5 and data["backbone"] == "mf"
    assert set(data["sizes"]) == {"user", "item"} and {"valid", "test", "test_compact", "best_epoch"} <= set(data)
    kept = sum(sum(s) for s in data["sizes"].values())
    assert kept == data["memory"]["total"]["parameters"] == data["budget"]["entries"]
    assert data["memory"]["total"]["csr"] == data["memory"]["total"]["csr_measured"] <= data["budget"]["budget_bytes"]
    assert data["test"] == data["test_compact"] and data["seconds"]["total"] > 0
    if method == "magprune":
        assert data["budget"]["split"] == "per-table" and data["prune"]["dense"]["best_epoch"] == 1
    else:
        assert data["prune"]["granularity"] == "feature" and data["prune"]["pep"]["threshold_init"] == -3
        assert data["prune"]["pep"]["scale"] == 2 and data["prune"]["snapshot"]["target"] == kept




@pytest.mark.parametrize("method, args, needles", [
    ("magprune", ["--budget", "0.2"], ["--budget 0.2", "CSR index", "use --budget >= 0.2501"]),
    ("pep", ["--budget", "0.25"], ["--budget 0.25", "use --budget >= 0.2501"]),
    ("magprune", ["--sparsity", "0.8"], ["--sparsity 0.8", "use --sparsity <= 0.7499"]),
    ("pep", ["--budget", "0.5", "--prune-split", "per-table"], ["--prune-split is for --method dnis or magprune"]),
    ("magprune", ["--budget", "0.5", "--pep-init", "-3"], ["--pep-init is for --method pep"]),
    ("magprune", ["--budget", "0.5", "--pep-granularity", "global"], ["--pep-granularity is for --method pep"]),
    ("magprune", ["--budget", "0.5", "--pep-scale", "3"], ["--pep-scale is for --method pep"]),
    ("magprune", ["--budget", "0.5", "--alpha", "0.5"], ["--alpha is for --method mde"]),
    ("pep", ["--budget", "0.5", "--min-size", "2"], ["--min-size is for --method dnis"]),
    ("es", ["--budget", "0.5", "--prune-split", "per-table"], ["--prune-split is for --method dnis or magprune"]),
    ("dnis", ["--budget", "0.5", "--pep-epochs", "5"], ["--pep-epochs is for --method pep"]),
])
def test_bad_input_before_the_data(method, args, needles, no_work, capsys):
    one_line_error(capsys, main([*TINY, "--method", method, *args]), *needles)


def test_the_exact_index_floor_after_the_data_loads(no_model, capsys):
    # 0.2501 passes the bound for many rows (0.25 at --dim 8) but not the 600 + 1000 rows of the data
    one_line_error(capsys, main([*TINY, "--method", "magprune", "--budget", "0.2501"]),
                   "--budget 0.2501", "use --budget >= 0.2504")
    one_line_error(capsys, main([*TINY, "--method", "magprune", "--budget", "0.2502", "--prune-split", "per-table"]),
                   "--budget 0.2502", "use --budget >= 0.2505")


def test_top_k_backbone_on_ctr_data_is_one_line(no_model, capsys):
    one_line_error(capsys, main(["search", "--method", "magprune", "--dataset", "synthetic-ctr", "--backbone", "mf",
                                 "--budget", "0.5", "--quiet", "--epochs", "1"]), "top-k backbone")


def test_pep_table_init_xavier_uniform_is_the_authors(tiny_split):
    """``table_init="xavier_uniform"`` initialises V as the authors' pep_embedding.py (uniform within
    sqrt(6 / (rows + d))); the default keeps the backbone's normal initialisation; the ticket rewinds to
    whichever V the training started from."""
    import math
    from recsize.search.pep import pep_factory
    uniform = PEPEmbedding(500, 16, init="xavier_uniform").weight.detach()
    bound = math.sqrt(6 / (500 + 16))
    assert uniform.abs().max() <= bound and uniform.abs().max() > 0.9 * bound
    assert abs(uniform.std().item() - bound / math.sqrt(3)) < 0.05 * bound   # uniform, not normal
    normal = PEPEmbedding(500, 16, init="normal").weight.detach()
    assert normal.abs().max() > 0.3                                          # N(0, 0.1): tails past 0.3
    config = cfg("lightgcn", lr=0.05, batch_size=64)
    searched = pep_search("lightgcn", tiny_split, [0.4], DIM, config, quick_pep(table_init="xavier_uniform"))
    table = searched.initial_state["user.weight"]
    assert table.abs().max() <= math.sqrt(6 / (table.shape[0] + DIM))
    default = pep_search("lightgcn", tiny_split, [0.4], DIM, config, quick_pep())
    assert default.initial_state["user.weight"].abs().max() > math.sqrt(6 / (table.shape[0] + DIM))
    ticket = ticket_model(searched, tiny_split, 0.4)
    mask = searched.snapshots[0.4].masks["user"]
    assert torch.equal(ticket.state_dict()["user.weight"], table * mask)
    with pytest.raises(ValueError, match="table_init must be one of"):
        PEPConfig(table_init="xavier_normal")
    assert pep_factory(PEPConfig(table_init="xavier_uniform"), "normal")("user", 4, 2).weight.abs().max() \
        <= math.sqrt(6 / 6)


def test_pep_settings_are_checked():
    for bad in ({"granularity": "row"}, {"threshold_init": float("nan")}, {"scale": 0}, {"threshold_decay": -1},
                {"search_epochs": 0}):
        with pytest.raises(ValueError):
            PEPConfig(**bad)
    with pytest.raises(ValueError, match="granularity"):
        PEPEmbedding(3, 2, "field")


# --- benchmarks/prune.py: the methods of issue 14 on tiny data (prepare() patched: no download) -----

def _bench_script(monkeypatch, name: str, split):
    """The benchmark script ``benchmarks/NAME.py``, freshly imported, its ``prepare`` giving ``split``."""
    import importlib
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop(name, None)
    script = importlib.import_module(name)
    monkeypatch.setattr(script, "prepare", lambda *a, **k: split)
    return script


def _prune_script(monkeypatch, split):
    return _bench_script(monkeypatch, "prune", split)


def _cells(path):
    runs = json.loads(path.read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


def test_prune_script_dnis_joint_runs_its_own_search(tiny_split, monkeypatch, tmp_path, capsys):
    """``dnis-joint`` (the authors' joint user + item blocks) gets its own search per seed, beside the
    per-table search that ``dnis`` shares with the other derivations; same warm start, other blocks."""
    prune = _prune_script(monkeypatch, tiny_split)
    out = tmp_path / "j.json"
    assert prune.main(["--quick", "--backbone", "mf", "--methods", "dnis", "dnis-joint", "--sparsities", "0.8",
                       "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "DNIS (per-table blocks)" in printed and "DNIS (joint blocks)" in printed
    runs = {r["method"]: r for r in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"dnis", "dnis-joint"}
    assert runs["dnis"]["seconds"]["warm_epochs"] == runs["dnis-joint"]["seconds"]["warm_epochs"]
    assert runs["dnis"]["kept"] == runs["dnis-joint"]["kept"]          # the same byte budget


def test_prune_script_mr_and_ciess_are_resumable_and_deterministic(tiny_split, monkeypatch, tmp_path, capsys):
    prune = _prune_script(monkeypatch, tiny_split)
    args = ["--quick", "--backbone", "mf", "--methods", "es-bytes", "mr-bytes", "ciess", "ihas"]
    for name in ("a.json", "b.json"):
        assert prune.main([*args, "--out", str(tmp_path / name)]) == 0
    assert "ihas: skipped, it applies to CTR backbones only" in capsys.readouterr().out
    a = _cells(tmp_path / "a.json")
    assert a == _cells(tmp_path / "b.json")                          # same seed, same values
    by = {r["method"]: r for r in a}
    assert sorted(by) == ["ciess", "es-bytes", "mr-bytes"]
    for m in ("mr-bytes", "ciess"):
        r = by[m]
        assert r["form"] == "compact" and r["bytes"] <= 1.01 * r["budget_bytes"]
        assert {"recall@20", "ndcg@20", "kept", "best_epoch", "epochs"} <= set(r)
    assert by["mr-bytes"]["kept"] == by["es-bytes"]["kept"]           # the same density as es-bytes
    assert by["ciess"]["kept"] <= by["es-bytes"]["kept"] + 1
    raw = {r["method"]: r for r in json.loads((tmp_path / "a.json").read_text())["runs"]}
    assert set(raw["ciess"]["seconds"]) == {"reference", "search", "retrain"} and "train" in raw["mr-bytes"]["seconds"]
    prune.main([*args, "--out", str(tmp_path / "a.json")])           # resumed: nothing left to run
    assert _cells(tmp_path / "a.json") == a and "c = 90 %" not in capsys.readouterr().out.split("\n\n")[0]
    with pytest.raises(SystemExit, match="dim"):                     # other settings: refused
        prune.main([*args, "--dim", "8", "--out", str(tmp_path / "a.json")])
    assert prune.main([*args, "--ihas-charge", "embeddings", "--out", str(tmp_path / "a.json")]) == 0  # no iHAS cell
    assert _cells(tmp_path / "a.json") == a
    settings = json.loads((tmp_path / "a.json").read_text())["settings"]
    with pytest.raises(SystemExit, match="ciess_top_l"):             # a method's own setting, where it has cells
        prune.load(tmp_path / "a.json", {**settings, "ciess_top_l": 5})
    assert len(prune.load(tmp_path / "a.json", {**settings, "pep_init": -3.0})) == len(a)   # no PEP cell
    assert settings["ciess_reward"] == "code" and settings["ciess_lam"] is None
    with pytest.raises(SystemExit, match="ciess_reward"):           # the paper's reward: another protocol
        prune.main([*args, "--ciess-reward", "paper", "--ciess-lam", "0.2", "--out", str(tmp_path / "a.json")])
    seen = []
    real = prune.run_ciess
    monkeypatch.setattr(prune, "run_ciess", lambda *a, **k: seen.append(a[2]) or real(*a, **k))
    assert prune.main([*args, "--ciess-reward", "paper", "--ciess-lam", "0.2", "--out", str(tmp_path / "p.json")]) == 0
    assert [(c.reward, c.lam) for c in seen] == [("paper", 0.2)]
    stored = json.loads((tmp_path / "p.json").read_text())["settings"]
    assert (stored["ciess_reward"], stored["ciess_lam"]) == ("paper", 0.2)
    with pytest.raises(SystemExit):
        prune.main([*args, "--ciess-lam", "-1", "--out", str(tmp_path / "x.json")])
    assert "--ciess-lam must be >= 0" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_prune_script_stacked_gives_the_one_by_one_cells(tiny_split, monkeypatch, tmp_path, capsys):
    """--stacked trains a seed's ES / MDE / MR cells in one pass: the same cells as one by one (wall times
    aside), the pass counted once when a grid's seconds are summed; other methods run as before."""
    prune = _prune_script(monkeypatch, tiny_split)
    args = ["--quick", "--backbone", "lightgcn", "--methods", "es", "es-bytes", "mde-bytes", "mr-bytes", "magprune"]
    assert prune.main([*args, "--out", str(tmp_path / "a.json")]) == 0
    assert prune.main([*args, "--stacked", "--out", str(tmp_path / "s.json")]) == 0
    assert "4 ES / MDE / MR models in one stacked pass" in capsys.readouterr().out
    stacked = [{k: v for k, v in r.items() if k != "stacked"} for r in _cells(tmp_path / "s.json")]
    assert stacked == _cells(tmp_path / "a.json")
    raw = {r["method"]: r for r in json.loads((tmp_path / "s.json").read_text())["runs"]}
    assert [raw[m]["stacked"] for m in ("es", "es-bytes", "mde-bytes", "mr-bytes")] == [4] * 4
    assert "stacked" not in raw["magprune"]
    shares = [raw[m]["seconds"]["train"] for m in ("es", "es-bytes", "mde-bytes", "mr-bytes")]
    assert sum(shares) == pytest.approx(raw["es"]["seconds"]["stacked_pass"])
    cpu = [raw[m]["seconds"]["cpu"] for m in ("es", "es-bytes", "mde-bytes", "mr-bytes")]
    assert sum(cpu) == pytest.approx(raw["es"]["seconds"]["stacked_pass_cpu"]) and min(cpu) > 0
    alone = {r["method"]: r for r in json.loads((tmp_path / "a.json").read_text())["runs"]}
    assert alone["es-bytes"]["seconds"]["cpu"] > 0 and "stacked_pass" not in alone["es-bytes"]["seconds"]
    with pytest.raises(SystemExit):
        prune.main(["--quick", "--backbone", "mf", "--stacked", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert "--stacked trains LightGCN models only" in err and not (tmp_path / "x.json").exists()


def test_prune_script_ihas_on_a_ctr_backbone(ctr_split, monkeypatch, tmp_path):
    prune = _prune_script(monkeypatch, ctr_split)
    out = tmp_path / "ihas.json"
    assert prune.main(["--quick", "--backbone", "fm", "--methods", "ihas", "--ihas-clusters", "2",
                       "--ihas-charge", "embeddings", "--out", str(out)]) == 0   # tiny data: routing would not fit
    data = json.loads(out.read_text())
    (r,) = data["runs"]
    assert data["settings"]["ihas_charge"] == "embeddings" and r["charge"] == "embeddings" and r["clusters"] == 2
    assert r["form"] == "ihas" and r["bytes"] == sum(r["cluster_bytes"]) + r["routing_bytes"] + r["first_order_bytes"]
    assert {"auc", "logloss", "best_epoch", "epochs"} <= set(r) and set(r["seconds"]) == {"search", "retrain"}
    assert data["settings"]["ihas_layout"] == "per-cluster"


def test_prune_script_ihas_shared_layout_and_a_budget_the_router_does_not_fit(ctr_split, monkeypatch, tmp_path,
                                                                               capsys):
    prune = _prune_script(monkeypatch, ctr_split)
    out = tmp_path / "ihas.json"
    args = ["--quick", "--backbone", "fm", "--methods", "es-bytes", "ihas", "--ihas-clusters", "2"]
    assert prune.main([*args, "--out", str(out)]) == 0                  # routing + first order: too much here
    assert "ihas: skipped" in capsys.readouterr().out
    assert [r["method"] for r in json.loads(out.read_text())["runs"]] == ["es-bytes"]
    shared = tmp_path / "shared.json"
    assert prune.main([*args, "--ihas-charge", "embeddings", "--ihas-layout", "shared", "--ihas-cluster-init",
                       "search", "--out", str(shared)]) == 0
    data = json.loads(shared.read_text())
    assert (data["settings"]["ihas_layout"], data["settings"]["ihas_cluster_init"]) == ("shared", "search")
    r = next(r for r in data["runs"] if r["method"] == "ihas")
    assert r["first_order_bytes"] == 0 and r["bytes"] == sum(r["cluster_bytes"]) + r["routing_bytes"]


def test_shared_dimensions_counts_the_dimensions_both_rows_keep():
    users = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool)
    items = torch.tensor([[1, 0, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    # pairs (0, 0): dim 0 -> 1; (1, 0): dim 2 -> 1; (1, 1): dims 2, 3 -> 2
    assert shared_dimensions(users, items, [0, 1, 1], [0, 0, 1]) == pytest.approx(4 / 3)
    prefix = torch.arange(4) < torch.tensor([[2], [3]])   # prefix widths 2 and 3 share min(2, 3) = 2
    assert shared_dimensions(prefix, prefix, [0], [1]) == 2.0
    with pytest.raises(ValueError, match="same d_max"):
        shared_dimensions(users, items[:, :3], [0], [0])
    with pytest.raises(ValueError, match="equally long"):
        shared_dimensions(users, items, [0, 1], [0])


def test_pep_levels_script_records_where_the_thresholds_leave_the_kept_fraction(tiny_split, monkeypatch, tmp_path,
                                                                                 capsys):
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("pep_levels", None)
    import pep_levels
    monkeypatch.setattr(pep_levels, "prepare", lambda *a, **k: tiny_split)
    out = tmp_path / "levels.json"
    args = ["--backbones", "mf", "--scales", "1", "50", "--epochs", "3", "--out", str(out)]
    assert pep_levels.main(args) == 0
    data = json.loads(out.read_text())
    assert [r["scale"] for r in data["runs"]] == [1.0, 50.0] and out.with_suffix(".png").exists()
    authors, big = data["runs"]
    assert len(authors["history"]) == 3 and authors["final_density"] == 1.0   # s0 = -15: nothing pruned yet
    assert big["final_density"] < authors["final_density"]                   # a larger scale prunes sooner
    assert list(authors["budgets"]) == ["0.5", "0.8", "0.9", "0.95"]
    fractions = list(authors["budgets"].values())
    assert fractions == sorted(fractions, reverse=True) and fractions[0] < 0.5          # the CSR index costs
    assert all(e is None for e in authors["reached"].values())
    first = out.read_text()
    assert pep_levels.main(args) == 0 and out.read_text() == first                    # resumed: nothing to redo
    with pytest.raises(SystemExit, match="other settings"):
        pep_levels.main([*args[:-3], "2", "--out", str(out)])
    with pytest.raises(SystemExit):
        pep_levels.main(["--epochs", "0", "--out", str(tmp_path / "x.json")])
    assert "--epochs must be >= 1" in capsys.readouterr().err


def test_verdict_script_runs_one_resumable_prune_per_grid_and_seed(monkeypatch, tmp_path, capsys):
    import sys
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("verdict", None)
    import verdict
    cmds = verdict.commands(["lightgcn20", "deepfm"], [0, 1], "cpu", tmp_path)
    assert [Path(c[c.index("--out") + 1]).name for c in cmds] == [
        "prune_lightgcn20_verdict_s0.json", "prune_lightgcn20_verdict_s1.json",
        "prune_deepfm_verdict_s0.json", "prune_deepfm_verdict_s1.json"]
    light, deep = cmds[0], cmds[2]
    assert "ciess" in light and "ihas" not in light and "ihas" in deep and "ciess" not in deep
    assert light[light.index("--patience") + 1] == "20" and "--patience" not in deep
    assert "--stacked" in light and "--stacked" not in deep     # LightGCN's free baselines in one pass
    prune = _prune_script(monkeypatch, None)
    for cmd in cmds:                                  # every method is one of prune.py's
        rest = cmd[cmd.index("--methods") + 1:]
        methods = rest[:next(i for i, a in enumerate(rest) if a.startswith("--"))]
        assert len(methods) >= 8 and set(methods) <= set(prune.METHODS)
    assert verdict.main(["--dry-run", "--grids", "neumf", "--seeds", "2"]) == 0
    assert "--backbone neumf" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        verdict.main(["--jobs", "0"])
    assert "--jobs must be >= 1" in capsys.readouterr().err
    ok = [sys.executable, "-c", "print('fine')", "--out", str(tmp_path / "a.json")]
    bad = [sys.executable, "-c", "raise SystemExit(3)", "--out", str(tmp_path / "b.json")]
    assert verdict.run_all([ok, bad, ok], 2, tmp_path / "logs") == 1
    assert (tmp_path / "logs" / "a.log").read_text() == "fine\n"
    times = json.loads((tmp_path / "logs" / "times.json").read_text())
    assert set(times) == {"a", "b"} and times["b"]["returncode"] == 3 and times["a"]["returncode"] == 0
    assert all(t["cpu_seconds"] > 0 and t["wall_seconds"] >= 0 for t in times.values())
    assert "finished a: " in capsys.readouterr().out


def test_where_time_goes_script_profiles_a_grid_cell(tiny_split, monkeypatch, tmp_path, capsys):
    wtg = _bench_script(monkeypatch, "where_time_goes", tiny_split)
    out = tmp_path / "w.json"
    assert wtg.main(["--backbones", "lightgcn", "--epochs", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    imports = data["imports"]
    assert imports["total"] > 0 and "torch" in imports["packages"]
    assert abs(sum(imports["packages"].values()) - imports["total"]) < 1e-6
    cell = data["cells"][0]
    assert cell["backbone"] == "lightgcn" and cell["epochs"] == 2
    stages = cell["stages"]
    assert set(wtg.STAGES) | {"compaction and test", "other"} == set(stages)
    assert stages["forward: propagation"] > 0 and stages["backward: sparse product"] > 0
    assert stages["validation"] > 0 and stages["batches"] > 0
    assert sum(stages.values()) == pytest.approx(cell["seconds_profiled"])
    assert cell["ops_one_epoch"] and all(0 < op["share"] <= 1 for op in cell["ops_one_epoch"])
    assert "forward: propagation" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        wtg.main(["--epochs", "0", "--out", str(tmp_path / "x.json")])
    assert "--epochs must be >= 1" in capsys.readouterr().err and not (tmp_path / "x.json").exists()

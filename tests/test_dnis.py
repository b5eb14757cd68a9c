"""DNIS (Chapter 5): frequency blocks, the soft selection layer, the alternating steps, widths that meet a
budget exactly, determinism, bad inputs, end to end and `recsize search --method dnis`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recsize.backbones import build_backbone
from recsize.budget import target_parameters
from recsize.cli import main
from recsize.embedding import CompactEmbedding, CSREmbedding, masked_factory
from recsize.search.prune import element_budget, masked_model, table_shapes
from recsize.search.baselines import role_counts
from recsize.search.dnis import (DNISConfig, alpha_step, attach_soft_selection, block_fractions, budget_sizes,
                                 clamp_alpha_, derive_sizes, folded_state, frequency_blocks, in_place_masks, kept_sizes,
                                 normalise_per_block, run_dnis, search, threshold_for_density, unique_alphas)
from recsize.search.dnis_train import ValidationTriples, embedding_parameters, embedding_step


TINY = dict(d_max=8, blocks=4, warm_epochs=1, search_epochs=2, retrain_epochs=2, progress=False,
            train_overrides={"batch_size": 128, "lr": 1e-2})


def soft_model(name, split, d_max=8, blocks=4, seed=0):
    torch.manual_seed(seed)
    model = build_backbone(name, split, d_max, embedding=masked_factory(None, d_max))
    counts = {r: c for r, c in role_counts(split).items() if r in model.embedding_tables()}
    return model, attach_soft_selection(model, counts, blocks), counts


# --- frequency blocks ------------------------------------------------------------------------------

def test_frequency_blocks_rank_rows_by_frequency():
    counts = np.array([5, 50, 1, 20, 20, 0, 7, 3, 9, 2])
    blocks = frequency_blocks(counts, 5)
    # ranks: 1 (50), 3 (20), 4 (20, higher id), 8 (9), 6 (7), 0 (5), 7 (3), 9 (2), 2 (1), 5 (0)
    assert blocks.tolist() == [2, 0, 4, 0, 1, 4, 2, 3, 1, 3]
    uneven = frequency_blocks(counts, (0.1, 0.2, 0.7))
    assert np.bincount(uneven).tolist() == [1, 2, 7] and uneven[1] == 0
    assert frequency_blocks(counts, 1).tolist() == [0] * 10
    assert block_fractions(4).tolist() == [0.25] * 4


@pytest.mark.parametrize("blocks, match", [(0, "blocks must be >= 1"), (-3, "blocks must be >= 1"),
                                           ((0.5, 0.6), "sum to 1"), ((1.2, -0.2), "positive"),
                                           (True, "number of blocks"), (11, "fewer blocks")])
def test_bad_blocks(blocks, match):
    with pytest.raises(ValueError, match=match):
        frequency_blocks(np.arange(10), blocks)


# --- the soft selection layer ------------------------------------------------------------------------

def test_layer_starts_at_one_and_scales_lookups(topk_split):
    model, alphas, counts = soft_model("mf", topk_split)
    assert set(alphas) == {"user", "item"}
    for role, alpha in alphas.items():
        table = model.embedding_tables()[role]
        assert alpha.shape == (4, 8) and torch.equal(alpha.detach(), torch.ones(4, 8))
        assert table.soft_weights is alpha          # the core's soft-weight hook holds the very parameter
        assert np.array_equal(table.row_block.numpy(), frequency_blocks(counts[role], 4))
    ids = torch.arange(10)
    plain = model.user.weight[ids].detach()
    assert torch.equal(model.user(ids).detach(), plain)                  # alpha = 1: the plain rows
    with torch.no_grad():
        alphas["user"].mul_(torch.linspace(0, 1, 8))
    expected = plain * alphas["user"].detach()[model.user.row_block[ids]]
    assert torch.allclose(model.user(ids).detach(), expected)
    assert torch.allclose(model.user.table().detach()[ids], expected)


def test_joint_ranking_blocks_users_and_items_together_with_one_alpha(topk_split):
    """The authors' blocks (data/dataset.py, model/nas.py): users and items ranked by frequency as one
    list, cut into K blocks, one alpha per block shared by the users and the items in it."""
    model = build_backbone("mf", topk_split, 8, embedding=masked_factory(None, 8))
    counts = {r: c for r, c in role_counts(topk_split).items() if r in model.embedding_tables()}
    alphas = attach_soft_selection(model, counts, 4, ranking="joint")
    assert alphas["user"] is alphas["item"] and unique_alphas(alphas) == [alphas["user"]]
    assert alphas["user"].shape == (4, 8)
    joint = frequency_blocks(np.concatenate([counts["user"], counts["item"]]), 4)
    n_users = len(counts["user"])
    assert np.array_equal(model.user.row_block.numpy(), joint[:n_users])
    assert np.array_equal(model.item.row_block.numpy(), joint[n_users:])
    assert model.user.soft_weights is model.item.soft_weights
    # a block's frequencies are above the next block's, across users and items alike
    both = np.concatenate([counts["user"], counts["item"]])
    for b in range(3):
        assert both[joint == b].min() >= both[joint == b + 1].max()
    # unlike the per-table ranking: on ml-100k-like data items outnumber users and are rarer
    per_table = frequency_blocks(counts["item"], 4)
    assert not np.array_equal(per_table, joint[n_users:])
    with torch.no_grad():                        # scaling block 0 scales the users AND items in it
        alphas["user"][0].mul_(0.5)
    u = int(np.flatnonzero(joint[:n_users] == 0)[0])
    i = int(np.flatnonzero(joint[n_users:] == 0)[0])
    assert torch.allclose(model.user(torch.tensor([u])), 0.5 * model.user.weight[[u]])
    assert torch.allclose(model.item(torch.tensor([i])), 0.5 * model.item.weight[[i]])
    with pytest.raises(ValueError, match="ranking must be one of"):
        attach_soft_selection(model, counts, 4, ranking="both")


def test_joint_alpha_steps_once_and_searches_deterministically(topk_split):
    """A joint search keeps one alpha for users and items, is deterministic for a seed, blocks the items
    differently from the per-table ranking, and derives an in-place model within the byte budget."""
    config = DNISConfig(**{**TINY, "block_ranking": "joint"})
    first = search("mf", topk_split, config)
    assert np.array_equal(first.alphas["user"], first.alphas["item"])
    assert not np.allclose(first.alphas["user"], 1.0)        # alpha moved
    again = search("mf", topk_split, config)
    assert np.array_equal(first.alphas["user"], again.alphas["user"])
    per_table = search("mf", topk_split, DNISConfig(**TINY))
    assert not np.array_equal(per_table.row_blocks["item"], first.row_blocks["item"])
    run = run_dnis("mf", topk_split, 0.3, config, searched=first)
    assert run.run.memory["total"]["csr"] <= element_budget(table_shapes("mf", topk_split, 8), 0.3,
                                                           "global")["budget_bytes"]
    with pytest.raises(ValueError, match="block_ranking must be one of"):
        DNISConfig(block_ranking="both")


def test_clamp_keeps_alpha_in_the_unit_interval():
    alpha = torch.nn.Parameter(torch.tensor([[-0.5, 0.3, 1.7], [2.0, -1e-3, 1.0]]))
    clamp_alpha_([alpha])
    assert alpha.detach().tolist() == [[0.0, pytest.approx(0.3), 1.0], [1.0, 0.0, 1.0]]


def test_gradient_normalised_per_block():
    g = torch.tensor([[1.0, -3.0, 2.0], [1e-4, 0.0, -2e-4], [0.0, 0.0, 0.0]])
    n = normalise_per_block(g)
    assert n[:2].abs().mean(1).tolist() == [pytest.approx(1.0), pytest.approx(1.0, rel=1e-3)]
    assert torch.equal(n[2], torch.zeros(3))                              # no gradient: no move
    assert torch.equal(torch.sign(n), torch.sign(g))


def test_layer_needs_masked_tables(topk_split):
    model = build_backbone("mf", topk_split, 8)
    with pytest.raises(TypeError, match="MaskedEmbedding"):
        attach_soft_selection(model, role_counts(topk_split))


# --- the alternating steps ---------------------------------------------------------------------------

def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before, model):
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p.detach())}


@pytest.mark.parametrize("backbone", ["neumf", "lightgcn"])
def test_embedding_step_moves_only_the_embeddings(backbone, topk_split):
    model, alphas, _ = soft_model(backbone, topk_split)
    params = embedding_parameters(model)
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    batch = next(iter(ValidationTriples(topk_split, seed=0).epoch(64)))  # any triples will do
    before = snapshot(model)
    embedding_step(model, batch, params, optimizer)
    assert changed(before, model) == set(params)                       # tables moved; alpha, MLP did not
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("backbone, second_order", [("mf", False), ("neumf", False), ("neumf", True),
                                                    ("lightgcn", True)])
def test_alpha_step_moves_only_alpha(backbone, second_order, topk_split):
    model, alphas, _ = soft_model(backbone, topk_split)
    alpha_list = list(alphas.values())
    params = embedding_parameters(model)
    optimizer = torch.optim.Adam(params.values(), lr=1e-2)
    train_batch = next(iter(ValidationTriples(topk_split, seed=1).epoch(64)))
    val_batch = next(iter(ValidationTriples(topk_split, seed=2).epoch(64)))
    weights_before = {n: p.detach().clone() for n, p in params.items()}
    embedding_step(model, train_batch, params, optimizer)
    before = snapshot(model)
    config = DNISConfig(d_max=8, alpha_lr=0.05, second_order=second_order)
    unrolled = (train_batch, weights_before, 1e-2) if second_order else None
    loss = alpha_step(model, val_batch, alpha_list, config, params, unrolled)
    assert np.isfinite(loss)
    assert changed(before, model) == {f"{role}.soft_weights" for role in alphas}   # frozen weights stay frozen
    for alpha in alpha_list:
        assert alpha.min() >= 0 and alpha.max() <= 1                  # clamped after the step
        assert (alpha < 1).any()                                      # and it did move
    assert all(p.grad is None for p in model.parameters())


def test_second_order_changes_the_alpha_step(topk_split):
    results = []
    for second_order in (False, True):
        model, alphas, _ = soft_model("mf", topk_split)
        params = embedding_parameters(model)
        train_batch = next(iter(ValidationTriples(topk_split, seed=1).epoch(64)))
        before = {n: p.detach().clone() for n, p in params.items()}
        embedding_step(model, train_batch, params, torch.optim.SGD(params.values(), lr=0.5))
        config = DNISConfig(d_max=8, grad_norm=False, alpha_lr=1.0, second_order=second_order)
        alpha_step(model, next(iter(ValidationTriples(topk_split, seed=2).epoch(64))), list(alphas.values()),
                   config, params, (train_batch, before, 0.5) if second_order else None)
        results.append(torch.cat([a.detach().ravel() for a in alphas.values()]))
    assert not torch.allclose(results[0], results[1])


def test_validation_triples_avoid_train_and_valid_positives(topk_split):
    sampler = ValidationTriples(topk_split, seed=0)
    users, pos, neg = (t.numpy().copy() for t in next(iter(sampler.epoch(10_000))))
    seen = (topk_split.train + topk_split.valid).tocsr()
    assert len(users) == topk_split.valid.nnz
    assert (topk_split.valid[users, pos] == 1).all()
    assert (seen[users, neg] == 0).all()


def test_ctr_search_updates_first_order_weights(ctr_split):
    model, alphas, _ = soft_model("deepfm", ctr_split)
    params = embedding_parameters(model)
    assert set(params) == {"feature.weight", "linear.weight"}
    X, y = ctr_split.part("train")
    before = snapshot(model)
    embedding_step(model, (torch.from_numpy(X[:64]), torch.from_numpy(y[:64])), params,
                   torch.optim.Adam(params.values(), lr=1e-2))
    assert changed(before, model) == set(params)                      # the MLP and global bias stay frozen


# --- widths that meet a budget exactly ----------------------------------------------------------------

@pytest.mark.parametrize("density", [0.02, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0])
def test_derived_widths_meet_the_budget(density):
    scores = np.abs(np.random.default_rng(0).standard_normal((500, 64))) * np.linspace(2, 0.1, 500)[:, None]
    threshold, kept = threshold_for_density(scores, density, min_size=1, tolerance=1e-3)
    assert abs(kept - density) <= 1e-3                                   # the binary search
    assert kept_sizes(scores, threshold, 1).sum() / scores.size == pytest.approx(kept)
    sizes, info = derive_sizes(scores, density, min_size=1)
    assert sizes.sum() == target_parameters(density, 500, 64) == info["target"]   # exact after rounding
    assert sizes.min() >= 1 and sizes.max() <= 64 and sizes.dtype == np.int64
    assert info["adjusted"] <= 1e-3 * scores.size + 1
    assert sizes[:250].sum() >= sizes[250:].sum()                        # larger magnitudes, wider rows


def exact_top(scores, total, min_size):
    """Brute force: every row's top min_size entries, then the globally best of the rest."""
    ranked = -np.sort(-scores, axis=1)
    rest = ranked[:, min_size:].ravel()
    rows = np.repeat(np.arange(len(scores)), scores.shape[1] - min_size)
    pick = np.argsort(-rest, kind="stable")[: total - min_size * len(scores)]
    return min_size + np.bincount(rows[pick], minlength=len(scores))


@settings(max_examples=60, deadline=None, database=None)
@given(n=st.integers(1, 40), d_max=st.integers(1, 16), density=st.floats(0.0, 1.0, exclude_min=True),
       min_size=st.integers(0, 2), seed=st.integers(0, 1000), ties=st.booleans())
def test_derive_sizes_is_exact_and_optimal(n, d_max, density, min_size, seed, ties):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 3, (n, d_max)).astype(float) if ties else rng.random((n, d_max))
    total = target_parameters(density, n, d_max)
    if min_size > d_max or total < n * min_size:
        with pytest.raises(ValueError):
            derive_sizes(scores, density, min_size=min_size)
        return
    sizes, _ = derive_sizes(scores, density, min_size=min_size)
    assert sizes.sum() == total and sizes.min() >= min_size and sizes.max() <= d_max
    ranked = -np.sort(-scores, axis=1)
    kept_score = sum(ranked[i, :s].sum() for i, s in enumerate(sizes))
    best = exact_top(scores, total, min_size)
    assert kept_score == pytest.approx(sum(ranked[i, :s].sum() for i, s in enumerate(best)))


def test_ties_go_to_the_row_first_in_order():
    scores = np.ones((4, 4))
    sizes, _ = derive_sizes(scores, 0.375, min_size=1, order=[2, 0, 3, 1])   # 6 of 16: two extra
    assert sizes.tolist() == [2, 1, 2, 1]                                    # rows 2 and 0, one each
    sizes, _ = derive_sizes(scores, 0.625, min_size=1, order=[2, 0, 3, 1])   # 10 of 16: six extra
    assert sizes.tolist() == [3, 2, 3, 2]


@pytest.mark.parametrize("kwargs, match", [({"density": 0}, "density"), ({"density": 1.5}, "density"),
                                           ({"density": 0.01}, "min_size"), ({"density": 0.5, "min_size": 9},
                                                                              "min_size")])
def test_derive_sizes_rejects_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        derive_sizes(np.ones((10, 8)), **kwargs)


def test_derive_sizes_rejects_bad_scores():
    with pytest.raises(ValueError, match="non-negative"):
        derive_sizes(-np.ones((3, 4)), 0.5)
    with pytest.raises(ValueError, match="matrix"):
        derive_sizes(np.ones(4), 0.5)


# --- the search end to end ---------------------------------------------------------------------------

def test_search_is_deterministic_for_a_seed(topk_split):
    a = search("lightgcn", topk_split, DNISConfig(**TINY, seed=3))
    b = search("lightgcn", topk_split, DNISConfig(**TINY, seed=3))
    c = search("lightgcn", topk_split, DNISConfig(**TINY, seed=4))
    for role in ("user", "item"):
        assert np.array_equal(a.alphas[role], b.alphas[role])
        assert not np.array_equal(a.alphas[role], c.alphas[role])
        assert (a.alphas[role] < 1).any() and a.alphas[role].min() >= 0     # alpha learned something
    assert [h["ndcg@20"] for h in a.history] == [h["ndcg@20"] for h in b.history]
    assert len(a.history) == 2 and a.warm["epochs"] == 1
    sa, sb = budget_sizes(a, 0.25)[0], budget_sizes(b, 0.25)[0]
    assert all(np.array_equal(sa[r], sb[r]) for r in sa)


def test_block_granularity_gives_one_width_per_block(topk_split):
    searched = search("mf", topk_split, DNISConfig(**TINY))
    block, _ = budget_sizes(searched, 0.25, granularity="block", budget_split="per-table")
    row, _ = budget_sizes(searched, 0.25, granularity="row", budget_split="per-table")
    for role, sizes in block.items():
        blocks = searched.row_blocks[role]
        assert sizes.sum() == row[role].sum() == target_parameters(0.25, len(sizes), 8)
        for k in np.unique(blocks):                       # one width per block, up to the rounding (+-1)
            assert np.ptp(sizes[blocks == k]) <= 1
        scores = searched.importance("block")[role]
        assert all(len(np.unique(scores[blocks == k], axis=0)) == 1 for k in np.unique(blocks))
    with pytest.raises(ValueError, match="granularity"):
        searched.importance("field")
    with pytest.raises(ValueError, match="granularity"):
        DNISConfig(granularity="field")


PREFIX = {**TINY, "derive": "prefix-retrain"}


@pytest.mark.parametrize("backbone", ["mf", "neumf", "lightgcn"])
def test_run_dnis_prefix_retrain(backbone, topk_split, tmp_path):
    run = run_dnis(backbone, topk_split, 0.25, DNISConfig(**PREFIX, budget_split="per-table"))
    tables = run.run.model.embedding_tables()
    assert set(run.sizes) == set(tables) == set(run.search.alphas)
    for role, table in tables.items():
        assert isinstance(table, CompactEmbedding)
        assert table.num_parameters() == target_parameters(0.25, table.num_rows, 8)
        assert np.array_equal(table.sizes.numpy(), run.sizes[role])
    total = run.run.memory["total"]
    assert total["density"] == pytest.approx(0.25, abs=1e-3) and total["compact"] < total["masked"]
    assert run.run.test_compact == run.run.result.test                 # compact storage changes no score
    out = json.loads(json.dumps(run.to_dict()))
    assert out["method"] == "dnis" and out["sparsity"] == pytest.approx(0.75)
    assert out["derivation"]["derive"] == "prefix-retrain" and out["derivation"]["split"] == "per-table"
    assert out["seconds"]["search"] > 0 and out["seconds"]["retrain"] > 0
    path = tmp_path / "arrays" / "dnis.npz"
    run.save_arrays(path)
    saved = np.load(path)
    assert np.array_equal(saved["sizes_item"], run.sizes["item"])
    assert saved["alpha_user"].shape == (4, 8) and not list(path.parent.glob(".*part"))


@pytest.mark.parametrize("backbone", ["mf", "neumf", "lightgcn", "ngcf"])
def test_run_dnis_in_place(backbone, topk_split, tmp_path):
    """The authors' derivation: the trained tables pruned to the byte budget (CSR, index included), one
    global threshold over all tables, fine-tuned with the masks fixed, stored as CSR."""
    config = DNISConfig(**{**TINY, "d_max": 16})
    run = run_dnis(backbone, topk_split, 0.3, config)
    shapes = table_shapes(backbone, topk_split, 16)
    budget = element_budget(shapes, 0.3, "global")
    tables = run.run.model.embedding_tables()
    assert all(isinstance(t, CSREmbedding) for t in tables.values())
    assert sum(t.num_parameters() for t in tables.values()) == budget["entries"]
    assert run.run.memory["total"]["csr"] <= budget["budget_bytes"]
    assert run.run.memory["total"]["csr_measured"] == run.run.memory["total"]["csr"]
    for role, table in tables.items():                      # what is stored is exactly the mask
        assert np.array_equal(run.sizes[role], run.run.masks[role].sum(1).numpy())
    assert run.run.test_compact == run.run.result.test
    out = json.loads(json.dumps(run.to_dict()))
    assert out["derivation"]["derive"] == "in-place" and out["derivation"]["prune_by"] == "weight"
    assert out["derivation"]["entries"] == budget["entries"] and list(out["prune"]["thresholds"]) == ["global"]
    path = tmp_path / "dnis.npz"
    run.save_arrays(path)
    assert np.array_equal(np.load(path)["mask_item"], run.run.masks["item"].numpy())


def test_in_place_keeps_the_largest_entries_under_one_threshold(topk_split):
    searched = search("mf", topk_split, DNISConfig(**{**TINY, "d_max": 16}))
    for prune_by in ("weight", "alpha-weight"):
        scores = searched.importance(prune_by=prune_by)
        masks, budget, thresholds = in_place_masks(searched, 0.3, prune_by=prune_by)
        kept = np.concatenate([scores[r][masks[r].numpy()] for r in scores])
        dropped = np.concatenate([scores[r][~masks[r].numpy()] for r in scores])
        assert len(kept) == budget["entries"] and kept.min() >= dropped.max()
        assert kept.min() == pytest.approx(thresholds["global"])
    per_table, budget, thresholds = in_place_masks(searched, 0.3, budget_split="per-table")
    assert set(thresholds) == {"user", "item"}
    assert {r: int(m.sum()) for r, m in per_table.items()} == budget["per_table"]


def test_prune_by_weight_or_alpha_weight(topk_split):
    searched = search("mf", topk_split, DNISConfig(**TINY))
    for role, table in searched.model.embedding_tables().items():
        weight = table.weight.detach().abs().numpy()
        alpha = searched.alphas[role][searched.row_blocks[role]]
        assert np.allclose(searched.importance(prune_by="weight")[role], weight)
        assert np.allclose(searched.importance(prune_by="alpha-weight")[role], np.abs(weight * alpha), atol=1e-7)
        assert (alpha < 1).any()          # so the two differ
    with pytest.raises(ValueError, match="prune_by"):
        searched.importance(prune_by="gradient")


def test_folded_alpha_gives_the_same_predictions(topk_split):
    """Folding alpha into the weights changes no prediction: the fine-tuning starts where the search ended."""
    searched = search("lightgcn", topk_split, DNISConfig(**{**TINY, "d_max": 16}))
    ones = {r: torch.ones(t.num_rows, 16, dtype=torch.bool) for r, t in searched.model.embedding_tables().items()}
    folded = masked_model("lightgcn", topk_split, 16, ones, folded_state(searched))
    users = torch.arange(10)
    searched.model.eval(), folded.eval()
    with torch.no_grad():
        assert torch.allclose(searched.model.score_all(users), folded.score_all(users), atol=1e-5)


def test_global_and_per_table_prefix_budgets_are_exact(topk_split):
    searched = search("neumf", topk_split, DNISConfig(**TINY))
    rows = {r: t.num_rows for r, t in searched.model.embedding_tables().items()}
    glob, info = budget_sizes(searched, 0.25, budget_split="global")
    assert sum(int(s.sum()) for s in glob.values()) == target_parameters(0.25, sum(rows.values()), 8)
    assert all(i["split"] == "global" for i in info.values())
    shares = {r: int(s.sum()) / (rows[r] * 8) for r, s in glob.items()}
    assert len({round(v, 3) for v in shares.values()}) > 1            # one threshold: the tables differ
    per, _ = budget_sizes(searched, 0.25, budget_split="per-table")
    assert all(int(per[r].sum()) == target_parameters(0.25, rows[r], 8) for r in rows)
    with pytest.raises(ValueError, match="budget_split"):
        budget_sizes(searched, 0.25, budget_split="joint")


@pytest.mark.parametrize("backbone", ["fm", "deepfm"])
@pytest.mark.parametrize("derive", ["in-place", "prefix-retrain"])
def test_run_dnis_ctr(backbone, derive, ctr_split):
    config = DNISConfig(**{**TINY, "train_overrides": {"batch_size": 64, "lr": 1e-2}, "blocks": (0.2, 0.3, 0.5),
                           "derive": derive})
    run = run_dnis(backbone, ctr_split, 0.5, config)
    assert set(run.sizes) == {"feature"} and run.search.alphas["feature"].shape == (3, 8)
    if derive == "prefix-retrain":
        assert run.sizes["feature"].sum() == target_parameters(0.5, ctr_split.data.n_features, 8)
    else:
        budget = element_budget({"feature": (ctr_split.data.n_features, 8)}, 0.5)
        assert run.sizes["feature"].sum() == budget["entries"]
    assert "auc" in run.run.test_compact and run.run.test_compact == run.run.result.test


def test_in_place_run_is_deterministic(topk_split):
    config = DNISConfig(**{**TINY, "d_max": 16, "seed": 2})
    a, b = run_dnis("mf", topk_split, 0.3, config), run_dnis("mf", topk_split, 0.3, config)
    assert a.run.result.test == b.run.result.test
    assert all(torch.equal(a.run.masks[r], b.run.masks[r]) for r in a.run.masks)


def test_zipped_alternation_takes_one_alpha_step_per_validation_batch(topk_split, monkeypatch):
    import recsize.search.dnis as dnis
    calls = []
    real = dnis.alpha_step
    monkeypatch.setattr(dnis, "alpha_step", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = build_backbone("mf", topk_split, 8)
    for alternation in ("zip", "every-batch"):
        calls.clear()
        search("mf", topk_split, DNISConfig(**{**TINY, "search_epochs": 1, "alternation": alternation}))
        train = dnis.n_train_batches(model, topk_split, 128)
        valid = dnis.n_valid_batches(model, topk_split, 128)
        assert len(calls) == (min(train, valid) if alternation == "zip" else train)
    assert valid < train                                  # the zip really is shorter here


def test_search_decays_the_learning_rate_and_stops(topk_split):
    """ReduceLROnPlateau in the search (the authors' patience 1): the lr falls by lr_decay after plateaus and
    the search stops once it reaches search_min_lr, long before the epoch cap."""
    config = DNISConfig(**{**TINY, "search_epochs": 300, "patience": 300, "lr_decay": 0.1, "search_lr_patience": 0,
                           "search_min_lr": 1e-4})
    searched = search("mf", topk_split, config)
    lrs = [h["lr"] for h in searched.history]
    assert len(lrs) < 300 and lrs[0] == pytest.approx(1e-2)
    assert all(b <= a for a, b in zip(lrs, lrs[1:])) and min(lrs) == pytest.approx(1e-3)


def test_one_search_serves_several_budgets(topk_split):
    searched = search("mf", topk_split, DNISConfig(**PREFIX))
    low = run_dnis("mf", topk_split, 0.125, searched=searched)
    high = run_dnis("mf", topk_split, 0.5, searched=searched)
    assert low.search is high.search is searched
    assert low.run.memory["total"]["parameters"] * 4 == pytest.approx(high.run.memory["total"]["parameters"], abs=2)
    with pytest.raises(ValueError, match="was run for mf"):
        run_dnis("lightgcn", topk_split, 0.5, searched=searched)


@pytest.mark.parametrize("call, match", [
    (lambda s: run_dnis("mf", s, 0.0, DNISConfig(**TINY)), "density"),
    (lambda s: run_dnis("mf", s, 1.5, DNISConfig(**TINY)), "density"),
    (lambda s: run_dnis("transformer", s, 0.1, DNISConfig(**TINY)), "unknown backbone"),
    (lambda s: search("fm", s, DNISConfig(**TINY)), "CTR backbone"),
    (lambda s: DNISConfig(blocks=0), "blocks must be >= 1"),
    (lambda s: DNISConfig(blocks=(0.3, 0.3)), "sum to 1"),
    (lambda s: DNISConfig(alpha_lr=0), "alpha_lr"),
    (lambda s: DNISConfig(l1=-1), "l1"),
    (lambda s: DNISConfig(train_overrides={"momentum": 0.9}), "train_overrides"),
    (lambda s: DNISConfig(derive="retrain"), "derive must be one of in-place, prefix-retrain"),
    (lambda s: DNISConfig(prune_by="alpha"), "prune_by must be one of weight, alpha-weight"),
    (lambda s: DNISConfig(budget_split="joint"), "budget_split must be one of global, per-table"),
    (lambda s: DNISConfig(alternation="both"), "alternation must be one of zip, every-batch"),
    (lambda s: DNISConfig(lr_decay=0), "lr_decay"),
    (lambda s: DNISConfig(lr_decay=1.5), "lr_decay"),
    (lambda s: DNISConfig(search_lr_patience=-1), "search_lr_patience"),
    (lambda s: run_dnis("mf", s, 0.2, DNISConfig(**TINY)), "CSR index"),
    (lambda s: search("mf", s, DNISConfig(**{**TINY, "blocks": 100})), "fewer blocks")])
def test_bad_inputs_raise(call, match, topk_split):
    with pytest.raises(ValueError, match=match):
        call(topk_split)


# --- the command line -----------------------------------------------------------------------------------

def test_cli_search_dnis_in_place(tmp_path, capsys):
    out = tmp_path / "runs" / "dnis.json"
    code = main(["search", "--method", "dnis", "--budget", "0.4", "--backbone", "mf", "--dataset", "synthetic",
                 "--dim", "16", "--epochs", "1", "--warm-epochs", "1", "--search-epochs", "1", "--blocks", "5",
                 "--prune-by", "alpha-weight", "--prune-split", "per-table", "--alternation", "every-batch",
                 "--lr-decay", "0.5", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "DNIS in place, by alpha-weight, per-table split" in printed and "CSR" in printed
    saved = json.loads(out.read_text())
    config = saved["search"]["config"]
    assert saved["method"] == "dnis" and saved["derivation"]["derive"] == "in-place"
    assert (config["prune_by"], config["budget_split"], config["alternation"], config["lr_decay"]) == \
        ("alpha-weight", "per-table", "every-batch", 0.5)
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["mask_item"].sum() == saved["memory"]["item"]["parameters"] == sum(saved["sizes"]["item"])


def test_cli_dnis_in_place_budget_must_hold_the_index(capsys):
    assert main(["search", "--method", "dnis", "--budget", "0.02", "--dim", "64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "CSR index" in err and "Traceback" not in err
    assert main(["search", "--method", "magprune", "--budget", "0.5", "--derive", "prefix-retrain"]) == 2
    assert "--derive is for --method dnis" in capsys.readouterr().err


def test_cli_search_dnis(tmp_path, capsys):
    out = tmp_path / "runs" / "dnis.json"
    code = main(["search", "--method", "dnis", "--budget", "0.25", "--backbone", "mf", "--dataset", "synthetic",
                 "--dim", "8", "--epochs", "1", "--warm-epochs", "1", "--search-epochs", "1", "--blocks", "5",
                 "--derive", "prefix-retrain", "--prune-split", "per-table",
                 "--alpha-lr", "0.02", "--l1", "1e-4", "--granularity", "block", "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "dnis sizes" in printed and "compact" in printed and "search" in printed
    saved = json.loads(out.read_text())
    assert saved["method"] == "dnis" and saved["search"]["config"]["blocks"] == 5
    assert saved["search"]["config"]["alpha_lr"] == 0.02 and saved["search"]["config"]["l1"] == 1e-4
    assert saved["search"]["config"]["granularity"] == "block"
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["alpha_item"].shape == (5, 8)
    assert arrays["sizes_item"].sum() == target_parameters(0.25, len(arrays["sizes_item"]), 8)
    assert list(arrays["sizes_item"]) == saved["sizes"]["item"]


@pytest.mark.parametrize("args, match", [(["--blocks", "0"], "positive integer"),
                                         (["--alpha-lr", "0"], "positive"), (["--l1", "-1"], ">= 0"),
                                         (["--warm-epochs", "-1"], ">= 0"), (["--derive", "x"], "invalid choice"),
                                         (["--lr-decay", "0"], "positive")])
def test_cli_dnis_rejects_bad_settings(args, match, capsys):
    with pytest.raises(SystemExit) as e:
        main(["search", "--method", "dnis", "--budget", "0.1", *args])
    assert e.value.code == 2
    assert match in capsys.readouterr().err

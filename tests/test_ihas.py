"""iHAS (Chapter 7): gates and regularisers, clustering and routing, budget accounting across clusters,
determinism, bad inputs; the CTR file readers and the synthetic CTR data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recsize.backbones import FM, DeepFM
from recsize.budget import compact_bytes, target_parameters
from recsize.data import make_synthetic_ctr, split_ctr
from recsize.data.ctr_files import read_avazu, read_criteo, read_ctr_file
from recsize.embedding import masked_factory
from recsize.search.ihas import (GateNetwork, IHASConfig, polarisation_penalty, routing_parameters, run_ihas,
                                 sparsity_penalty)
from recsize.search.ihas_clusters import (SharedClusterModel, allocate_sizes, cluster_patterns, cluster_widths,
                                          present_rows, route, shared_widths, with_clusters)
from recsize.train import TrainConfig


@pytest.fixture(scope="module")
def ctr_split():
    return split_ctr(make_synthetic_ctr(1500, 5, 2, seed=0, cardinality=12), seed=0)


def small_config(**kw):
    return IHASConfig(**{"clusters": 2, "n_blocks": 2, "route_dim": 1, "hidden": 4, "search_epochs": 2,
                         "batch_size": 256, "n_init": 2, **kw})


TRAIN = TrainConfig(epochs=2, batch_size=256, lr=1e-2, patience=1, progress=False)


# ------------------------------------------------------------------------------------------- gates
def test_gates_stochastic_hard_deterministic_threshold():
    torch.manual_seed(0)
    net = GateNetwork(n_fields=3, d_max=8, n_blocks=4, route_dim=2, hidden=5)
    v = torch.randn(50, 3, 8)
    z, mu = net(v, stochastic=True)
    assert z.shape == mu.shape == (50, 3, 4)
    assert ((mu >= 0) & (mu <= 1)).all()
    assert set(torch.unique(z.detach()).tolist()) <= {0.0, 1.0}           # hard in the forward pass
    zd, mud = net(v, stochastic=False)
    assert torch.equal(zd, (mud > 0.5).float())                           # tau = 0.5 before calibration
    assert torch.equal(net(v, stochastic=False)[0], zd)                   # deterministic: same twice
    torch.manual_seed(1)
    draws = torch.stack([net(v, stochastic=True)[0].detach() for _ in range(400)]).mean(0)
    assert torch.allclose(draws, mu.detach(), atol=0.12)                  # E[z] = mu
    assert net.expand(zd).shape == (50, 3, 8)
    assert torch.equal(net.expand(zd)[..., 0], zd[..., 0]) and torch.equal(net.expand(zd)[..., 1], zd[..., 0])


def test_straight_through_gradient_reaches_mu_and_input_is_detached():
    net = GateNetwork(2, 4, 2, route_dim=4, hidden=3)
    v = torch.randn(6, 2, 4, requires_grad=True)
    z, mu = net(v, stochastic=True)
    (z * torch.arange(1.0, 5.0)[:2]).sum().backward()
    assert net.mlp[0].weight.grad is not None and net.mlp[0].weight.grad.abs().sum() > 0
    assert v.grad is None  # the gate network reads detached embeddings


def test_calibrate_opens_target_fraction():
    net = GateNetwork(2, 4, 2)
    mu = np.linspace(0, 1, 1000)
    tau = net.calibrate(mu, 0.2)
    assert abs((mu > tau).mean() - 0.2) < 0.01
    with pytest.raises(ValueError, match="at least one"):
        net.calibrate(np.array([]), 0.2)


def test_regulariser_gradients_have_the_right_sign():
    mu = torch.tensor([0.1, 0.4, 0.6, 0.9], requires_grad=True)
    sparsity_penalty(mu, 0.25).backward()
    assert (mu.grad > 0).all()                          # descent closes gates
    assert float(sparsity_penalty(mu.detach(), 0.25)) == pytest.approx(0.25)
    mu.grad = None
    polarisation_penalty(mu).backward()
    g = mu.grad
    assert g[0] > 0 and g[1] > 0 and g[2] < 0 and g[3] < 0   # pushed away from 0.5, towards the nearer end
    assert float(polarisation_penalty(torch.tensor([0.0, 1.0]))) == 0.0
    # weighted by rows per field: the open fraction of stored parameters
    mu = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])          # 1 sample, field 0 open, field 1 closed
    assert float(sparsity_penalty(mu, 0.0, torch.tensor([3.0, 1.0]))) == pytest.approx(0.75)
    assert float(sparsity_penalty(mu, 0.0)) == pytest.approx(0.5)


def test_backbones_pass_gates_through_the_hook():
    torch.manual_seed(0)
    for cls in (FM, DeepFM):
        m = cls(20, 3, 4, embedding=masked_factory(None, 4)).eval()
        x = torch.tensor([[0, 5, 10], [1, 6, 12]])
        assert torch.allclose(m.score(x), m.score(x, gates=torch.ones(2, 3, 4)))
        closed = m.score(x, gates=torch.zeros(2, 3, 4))
        first = m.linear(x).sum((1, 2)) + m.bias
        if cls is FM:
            assert torch.allclose(closed, first)   # all gates shut: only the first-order term is left
        y = torch.tensor([1.0, 0.0])
        assert torch.isfinite(m.loss(x, y, gates=torch.rand(2, 3, 4)))


# -------------------------------------------------------------------------------- clustering, routing
def test_route_nearest_centroid_and_cluster_deterministic():
    rng = np.random.default_rng(0)
    pats = np.vstack([np.tile([1, 1, 0, 0], (30, 1)), np.tile([0, 0, 1, 1], (30, 1)), np.tile([1, 0, 1, 0], (5, 1))])
    pats = pats + 0.0 * rng.random(pats.shape)
    c1 = cluster_patterns(pats, 3, seed=0, n_init=3)
    c2 = cluster_patterns(pats, 3, seed=0, n_init=3)
    assert np.array_equal(c1, c2)
    labels = route(c1, pats)
    d = ((pats[:, None] - c1[None]) ** 2).sum(-1)
    assert np.array_equal(labels, d.argmin(1))
    assert len(np.unique(labels[:30])) == 1 and labels[0] != labels[30]
    # fewer distinct patterns than K: only centroids that win a pattern are kept
    assert len(cluster_patterns(np.tile([1.0, 0.0], (10, 1)), 3, seed=0, n_init=2)) == 1
    with pytest.raises(ValueError, match="K"):
        cluster_patterns(pats, 0)


def test_cluster_widths_and_present_rows_by_hand():
    # 2 fields x 2 blocks of width 4; cluster 0 opens field 0 fully and half of field 1's block 0
    pats = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=float)
    w = cluster_widths(pats, np.array([0, 0, 1]), 2, n_fields=2, n_blocks=2, block=4)
    assert np.allclose(w, [[8, 2], [0, 8]])
    X = np.array([[0, 3], [1, 3], [2, 4]])
    p = present_rows(X, np.array([0, 0, 1]), 2, 5)
    assert p.tolist() == [[True, True, False, True, False], [False, False, True, False, True]]


def test_allocate_sizes_exact_total_and_absent_rows():
    widths = np.array([[8.0, 0.0], [2.0, 6.0]])
    fof = np.array([0, 0, 1, 1])
    present = np.array([[True, True, True, False], [True, False, True, True]])
    sizes = allocate_sizes(widths, fof, present, total=20, d_max=8)
    assert sizes.sum() == 20
    assert sizes[0, 3] == 0 and sizes[1, 1] == 0                   # absent rows store nothing
    assert sizes[0, 2] == 0                                       # closed field stays closed
    assert sizes[1, 2] >= sizes[1, 0]                             # width follows the gates
    assert (sizes <= 8).all()
    with pytest.raises(ValueError, match="cannot hold"):
        allocate_sizes(widths, fof, present, total=100, d_max=8)


def test_routing_parameters_by_hand():
    net = GateNetwork(3, 8, 2, route_dim=2, hidden=4)   # (6*4 + 4) + (4*6 + 6) = 58
    r = routing_parameters(100, 3, 2, net, clusters=4, n_blocks=2)
    assert r == {"router_table": 200, "gate_network": 58, "centroids": 24, "total": 282}


# ----------------------------------------------------------------------------------- the whole run
def test_run_ihas_budget_accounting_and_determinism(ctr_split):
    d_max, density = 8, 0.5
    run = run_ihas("fm", ctr_split, density, d_max, small_config(charge="routing+linear"), TRAIN, seed=0)
    data = ctr_split.data
    b = run.budget
    assert b["target_parameters"] == target_parameters(density, data.n_features, d_max)
    assert b["total_parameters"] == b["target_parameters"]                 # exactly the uniform baseline's
    assert b["models_parameters"] == int(run.sizes.sum()) == sum(b["cluster_parameters"])
    r = b["routing_parameters"]                                          # routing and K - 1 first-order tables
    assert r["first_order"] == (len(run.models) - 1) * data.n_features and b["charge"] == "routing+linear"
    assert r["total"] + r["first_order"] == r["charged"] == b["target_parameters"] - b["models_parameters"]
    assert b["cluster_bytes"] == [compact_bytes(s, d_max) for s in run.sizes]
    assert b["total_bytes"] == sum(b["cluster_bytes"]) + b["routing_bytes"] + 4 * r["first_order"]
    for k, model in enumerate(run.models):                               # what the modules really store
        assert model.feature.num_parameters() == b["cluster_parameters"][k]
    assert sum(run.cluster_sizes["train"]) == len(ctr_split.train)
    assert 0.3 < run.test["auc"] <= 1 and run.test["logloss"] > 0
    X = data.X[ctr_split.test]
    assert np.array_equal(run.route(X), run.labels["test"])              # inference routing = evaluation's
    assert np.allclose(run.predict(X), run.predict(X, run.labels["test"]))
    again = run_ihas("fm", ctr_split, density, d_max, small_config(charge="routing+linear"), TRAIN, seed=0)
    assert again.test == run.test and np.array_equal(again.sizes, run.sizes)
    d = run.to_dict()
    assert d["method"] == "ihas" and len(d["sizes_per_cluster_field"]) == len(run.models)


def test_run_ihas_single_cluster_needs_no_routing(ctr_split):
    run = run_ihas("deepfm", ctr_split, 0.25, 8, small_config(clusters=1), TRAIN, seed=0)
    assert run.budget["routing_parameters"]["total"] == 0 and run.centroids is None
    assert run.budget["total_parameters"] == run.budget["target_parameters"]
    assert (run.route(ctr_split.data.X[:5]) == 0).all()


def test_the_default_charges_the_router_and_the_extra_first_order_tables(ctr_split):
    b = run_ihas("fm", ctr_split, 0.5, 8, small_config(), TRAIN, seed=0).budget
    r = b["routing_parameters"]
    assert b["charge"] == "routing+linear" and r["charged"] == r["total"] + r["first_order"] and r["first_order"] > 0
    assert b["models_parameters"] + r["charged"] == b["target_parameters"] == b["total_parameters"]


def test_charging_the_router_only_is_kept_to_compare(ctr_split):
    b = run_ihas("fm", ctr_split, 0.5, 8, small_config(charge="routing"), TRAIN, seed=0).budget
    r = b["routing_parameters"]
    assert b["charge"] == "routing" and r["charged"] == r["total"] > 0 and r["first_order"] > 0
    assert b["models_parameters"] + r["total"] == b["target_parameters"] == b["total_parameters"]


def test_charging_nothing_gives_the_cluster_tables_the_whole_budget(ctr_split):
    run = run_ihas("fm", ctr_split, 0.5, 8, small_config(charge="embeddings"), TRAIN, seed=0)
    b = run.budget
    assert b["models_parameters"] == b["target_parameters"] == b["total_parameters"]
    assert b["routing_parameters"]["charged"] == 0 and b["routing_parameters"]["total"] > 0   # stored, not charged
    assert b["total_bytes"] > sum(b["cluster_bytes"])


def test_cluster_models_warm_started_from_the_search_model(ctr_split):
    from recsize.embedding import masked_factory
    from recsize.search.ihas import search, warm_start
    model, _, _ = search("fm", ctr_split, 0.5, 8, small_config(), seed=0)
    sizes = np.random.default_rng(0).integers(0, 9, ctr_split.data.n_features)
    warm = warm_start("fm", ctr_split, 8, masked_factory({"feature": sizes}, 8), model, seed=1)
    keep = np.arange(8)[None, :] < sizes[:, None]
    got, source = warm.feature.weight.detach().numpy(), model.feature.weight.detach().numpy()
    assert np.array_equal(got[keep], source[keep]) and not got[~keep].any()
    assert torch.equal(warm.linear.weight, model.linear.weight) and torch.equal(warm.bias, model.bias)
    scratch = run_ihas("fm", ctr_split, 0.5, 8, small_config(), TRAIN, seed=0)
    warmed = run_ihas("fm", ctr_split, 0.5, 8, small_config(cluster_init="search"), TRAIN, seed=0)
    assert np.array_equal(scratch.sizes, warmed.sizes) and scratch.test != warmed.test   # same widths, other start
    again = run_ihas("fm", ctr_split, 0.5, 8, small_config(cluster_init="search"), TRAIN, seed=0)
    assert again.test == warmed.test


# ------------------------------------------------------------------- one shared table (no data split)
def test_shared_widths_by_hand():
    widths = np.array([[4.0, 0.0, 2.0],
                       [2.0, 0.0, 8.0]])          # (K = 2, fields = 3)
    fof = np.array([0, 0, 1, 2, 2, 2])
    stored, per = shared_widths(widths, fof, total=24, d_max=8)
    assert stored.sum() == 24 and (stored <= 8).all()
    assert stored[2] == 0                          # every cluster closed field 1
    assert np.array_equal(per.max(0), stored)      # the widest cluster reads the whole row
    assert (per <= stored[None]).all()
    # field 0: cluster 1 reads half of what cluster 0 does; field 2: cluster 0 a quarter of cluster 1
    assert np.array_equal(per[1, :2], np.rint(stored[:2] / 2)) and np.array_equal(per[0, 3:], np.rint(stored[3:] / 4))


def test_shared_model_masks_every_sample_to_its_clusters_prefix():
    torch.manual_seed(0)
    fm = FM(10, 2, 8, embedding=masked_factory({"feature": np.full(10, 8)}, 8))
    widths = np.random.default_rng(0).integers(0, 9, (3, 10))
    shared = SharedClusterModel(fm, widths, 8)
    X = np.array([[0, 5], [3, 9], [3, 9], [1, 6]])
    labels = np.array([0, 1, 2, 2])
    got = shared.score(torch.from_numpy(with_clusters(X, labels))).detach()
    for i, (x, k) in enumerate(zip(X, labels)):    # the same FM with cluster k's widths as its own mask
        own = FM(10, 2, 8, embedding=masked_factory({"feature": widths[k]}, 8))
        own.load_state_dict({**fm.state_dict(), "feature.sizes": torch.as_tensor(widths[k])})
        want = own.score(torch.from_numpy(x[None])).detach()
        assert torch.allclose(got[i], want[0], atol=1e-6)


def test_run_ihas_shared_layout_budget_and_determinism(ctr_split):
    d_max, density = 8, 0.5
    data = ctr_split.data
    run = run_ihas("fm", ctr_split, density, d_max, small_config(layout="shared"), TRAIN, seed=0)
    b = run.budget
    r = b["routing_parameters"]
    assert len(run.models) == 1 and b["layout"] == "shared" and r["first_order"] == 0
    assert r["cluster_widths"] == run.sizes.shape[0] * data.n_fields
    assert b["total_parameters"] == b["target_parameters"] == b["stored_parameters"] + r["charged"]
    assert run.models[0].model.feature.num_parameters() == b["stored_parameters"]   # compact, really stored
    assert b["total_bytes"] == b["cluster_bytes"][0] + b["routing_bytes"]
    assert (run.sizes <= run.models[0].model.feature.sizes.numpy()[None]).all()
    X = data.X[ctr_split.test]
    assert np.allclose(run.predict(X), run.predict(X, run.labels["test"]))
    assert 0.3 < run.test["auc"] <= 1
    again = run_ihas("fm", ctr_split, density, d_max, small_config(layout="shared"), TRAIN, seed=0)
    assert again.test == run.test and np.array_equal(again.sizes, run.sizes)
    warm = run_ihas("deepfm", ctr_split, density, d_max, small_config(layout="shared", cluster_init="search"),
                    TRAIN, seed=0)
    assert warm.budget["total_parameters"] == warm.budget["target_parameters"]


def test_bad_inputs(ctr_split, tiny_split):
    with pytest.raises(ValueError, match="clusters"):
        IHASConfig(clusters=0)
    with pytest.raises(ValueError, match="cluster_init"):
        IHASConfig(cluster_init="pretrained")
    with pytest.raises(ValueError, match="charge"):
        IHASConfig(charge="all")
    with pytest.raises(ValueError, match="layout"):
        IHASConfig(layout="one")
    with pytest.raises(ValueError, match="budget"):
        run_ihas("fm", ctr_split, 1.5, 8, small_config(), TRAIN)
    with pytest.raises(ValueError, match="budget"):
        run_ihas("fm", ctr_split, 0.0, 8, small_config(), TRAIN)
    with pytest.raises(ValueError, match="CTR model"):
        run_ihas("mf", ctr_split, 0.5, 8, small_config(), TRAIN)
    with pytest.raises(ValueError, match="CTR split"):
        run_ihas("fm", tiny_split, 0.5, 8, small_config(), TRAIN)
    with pytest.raises(ValueError, match="divide"):
        run_ihas("fm", ctr_split, 0.5, 6, small_config(n_blocks=4), TRAIN)
    with pytest.raises(ValueError, match="routing"):
        run_ihas("fm", ctr_split, 0.01, 8, small_config(route_dim=4), TRAIN)
    with pytest.raises(ValueError, match="divide"):
        GateNetwork(3, 8, 3)


# ------------------------------------------------------------------------------------ data sources
def test_synthetic_ctr_segments_and_determinism():
    a, b = make_synthetic_ctr(400, 5, 2, seed=3), make_synthetic_ctr(400, 5, 2, seed=3)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    assert a.fields[0] == "segment" and a.n_fields == 5 and len(np.unique(a.X[:, 0])) == 2
    assert not np.array_equal(a.y, make_synthetic_ctr(400, 5, 2, seed=4).y)
    with pytest.raises(ValueError, match="n_fields"):
        make_synthetic_ctr(400, 1, 2)


def test_read_criteo(tmp_path):
    ints = ["1", "", "7", "-1", "0", "3", "1000", "", "", "2", "5", "1", "0"]
    line1 = "\t".join(["1", *ints, *[f"a{j}" for j in range(26)]])
    line2 = "\t".join(["0", *["2"] * 13, *["" if j == 0 else f"b{j}" for j in range(26)]])
    p = tmp_path / "criteo.txt"
    p.write_text(line1 + "\n" + line2 + "\n" + line1 + "\n")
    d = read_criteo(p)
    assert d.X.shape == (3, 39) and d.y.tolist() == [1.0, 0.0, 1.0]
    assert d.fields[0] == "I1" and d.fields[-1] == "C26"
    assert sorted(d.vocab[2]) == ["1", "3"]            # log2(1 + 7) = 3, log2(1 + 2) = 1.58 -> 1
    assert "neg" in d.vocab[3] and "" in d.vocab[1]    # negative and empty values are values
    assert read_criteo(p, max_rows=2).X.shape == (2, 39)
    rare = read_ctr_file(p, "criteo", min_count=2)
    assert "<rare>" in rare.vocab[13]                  # b0 is empty, so C2 holds a1 (twice) and b1 (once)
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match="40 tab-separated"):
        read_criteo(bad)
    with pytest.raises(FileNotFoundError):
        read_criteo(tmp_path / "missing.txt")


def test_read_avazu(tmp_path):
    p = tmp_path / "avazu.csv"
    p.write_text("id,click,hour,C1,banner_pos,site_id\n"
                 "1,0,14102100,1005,0,1fbe01fe\n2,1,14102101,1005,1,1fbe01fe\n3,0,14102201,1002,0,85f751fd\n")
    d = read_avazu(p)
    assert d.fields == ("hour", "C1", "banner_pos", "site_id") and d.y.tolist() == [0.0, 1.0, 0.0]
    assert sorted(d.vocab[0]) == ["00", "01"]         # hour of the day
    assert d.X[0, 0] == d.X[1, 0] - 1 and d.X[2, 0] == d.X[1, 0]
    assert read_ctr_file(p, "avazu", max_rows=1).X.shape == (1, 4)
    with pytest.raises(ValueError, match="3 samples split 0.8:0.1:0.1 .* 0 valid"):  # too few to split
        split_ctr(d, seed=0)
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,0\n")
    with pytest.raises(ValueError, match="header"):
        read_avazu(bad)
    with pytest.raises(ValueError, match="format"):
        read_ctr_file(p, "parquet")


def test_cli_search_ihas_on_a_ctr_file(tmp_path, capsys):
    from recsize.cli import main
    rng = np.random.default_rng(0)
    lines = ["id,click,hour,C1,banner_pos,site_id"]
    for i in range(600):
        b, s = rng.integers(0, 3), rng.integers(0, 20)
        lines.append(f"{i},{int(rng.random() < (0.7 if (b + s) % 3 == 0 else 0.2))},141021{rng.integers(0, 24):02d},"
                     f"100{rng.integers(0, 4)},{b},s{s}")
    path = tmp_path / "avazu.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ihas.json"
    argv = ["search", "--method", "ihas", "--backbone", "fm", "--ctr-file", str(path), "--ctr-format", "avazu",
            "--budget", "1", "--dim", "16", "--gate-blocks", "2", "--route-dim", "1", "--clusters", "2",
            "--epochs", "2", "--search-epochs", "1", "--batch-size", "128", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    import json
    got = json.loads(out.read_text())
    assert got["method"] == "ihas" and got["budget"]["total_parameters"] == got["budget"]["target_parameters"]
    assert "routing" in capsys.readouterr().out
    assert main(["search", "--method", "ihas", "--backbone", "mf", "--budget", "0.2", "--quiet"]) == 2
    assert "CTR model" in capsys.readouterr().err


def test_cli_ihas_on_the_synthetic_segment_data(tmp_path, capsys):
    """``synthetic-ctr`` is a dataset of the CLI: the segment data of Chapter 7 and benchmarks/ihas.py."""
    from recsize.cli import main
    out = tmp_path / "ihas.json"
    assert main(["search", "--method", "ihas", "--backbone", "fm", "--dataset", "synthetic-ctr", "--budget", "0.2",
                 "--clusters", "2", "--dim", "32", "--epochs", "1", "--search-epochs", "1", "--quiet",
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["dataset"] == "synthetic-ctr" and 0.0 < res["test"]["auc"] < 1.0
    capsys.readouterr()
    assert main(["search", "--method", "ihas", "--backbone", "fm", "--dataset", "synthetic-ctr", "--budget", "0.2",
                 "--clusters", "2", "--dim", "32", "--epochs", "1", "--search-epochs", "1", "--quiet",
                 "--layout", "shared", "--out", str(out)]) == 0
    res, printed = json.loads(out.read_text()), capsys.readouterr().out
    assert res["config"]["layout"] == "shared" and res["budget"]["layout"] == "shared"
    assert "shared table" in printed and "one table, every row as wide as its widest cluster" in printed


def test_search_resolves_the_device_itself(ctr_split):
    """Called from the library with ``device="auto"`` (or a device this machine lacks), the search resolves
    it as the trainer does instead of failing inside torch."""
    from recsize.search.ihas import search
    model, gates, _ = search("fm", ctr_split, 0.5, 8, small_config(search_epochs=1), seed=0, device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.parameters()).device.type == expected == next(gates.parameters()).device.type
    with pytest.raises(ValueError, match="not a device name"):
        search("fm", ctr_split, 0.5, 8, small_config(search_epochs=1), seed=0, device="gpu0")

"""The package is device-agnostic: with ``device="cuda"`` every backbone trains and evaluates, the core's
tables convert, look up and back-propagate on the GPU exactly as on the CPU, and every search method
(baselines, DNIS, CIESS, iHAS) runs end to end. Skipped where there is no GPU (CI has none); run with
``pytest tests/test_cuda.py`` on a machine with one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_ctr_split

from recsize.data import make_synthetic_ctr, split_ctr
from recsize.embedding import CompactEmbedding, MaskedEmbedding
from recsize.search import run_baseline
from recsize.search.ciess import CIESS, CIESSConfig
from recsize.search.dnis import DNISConfig, run_dnis
from recsize.search.ihas import IHASConfig, run_ihas
from recsize.train import TrainConfig, default_config, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

QUIET = dict(progress=False, device="cuda")


@pytest.fixture(scope="module")
def ctr_split():
    return tiny_ctr_split(600)


def on_cuda(model) -> bool:
    return all(p.device.type == "cuda" for p in model.parameters())


@pytest.mark.parametrize("backbone", ["mf", "neumf", "ngcf", "lightgcn"])
def test_topk_backbones_train_on_cuda(backbone, topk_split):
    result = fit(backbone, topk_split, dim=8, config=default_config(backbone, epochs=2, **QUIET))
    assert on_cuda(result.model)
    assert np.isfinite(result.history[-1]["loss"])
    assert 0.0 <= result.test["recall@20"] <= 1.0


@pytest.mark.parametrize("backbone", ["fm", "deepfm"])
def test_ctr_backbones_train_on_cuda(backbone, ctr_split):
    result = fit(backbone, ctr_split, dim=8, config=default_config(backbone, epochs=2, **QUIET))
    assert on_cuda(result.model)
    assert 0.0 <= result.test["auc"] <= 1.0 and np.isfinite(result.test["logloss"])


def test_core_lookups_match_the_cpu_bit_for_bit():
    torch.manual_seed(0)
    sizes = torch.randint(0, 17, (300,))
    masked = MaskedEmbedding(300, 16, sizes)
    compact = CompactEmbedding.from_masked(masked)
    ids = torch.randint(0, 300, (50, 7))
    want = compact(ids)
    gpu = compact.to("cuda")
    assert torch.equal(gpu(ids.cuda()).cpu(), want)
    assert torch.equal(CompactEmbedding.from_masked(masked.to("cuda"))(ids.cuda()).cpu(), want)
    assert torch.equal(gpu.to_masked()(ids.cuda()).cpu(), want)
    buckets = gpu.export_buckets(round_to=4)
    assert torch.equal(buckets.lookup(ids.cuda()).cpu(), want)
    # the gradient of the compact values: the same on both devices (up to summation order)
    grad = torch.randn(50, 7, 16)
    cpu_values = compact.values.detach().clone().requires_grad_()
    compact.values = torch.nn.Parameter(cpu_values.detach().clone())
    (compact(ids) * grad).sum().backward()
    (gpu(ids.cuda()) * grad.cuda()).sum().backward()
    assert torch.allclose(gpu.values.grad.cpu(), compact.values.grad, atol=1e-5)


def test_baseline_search_on_cuda(topk_split):
    config = default_config("lightgcn", epochs=2, **QUIET)
    run = run_baseline("lightgcn", topk_split, "mde", 0.2, 8, config, seed=0)
    assert on_cuda(run.model)
    assert run.memory["total"]["compact"] < run.memory["total"]["dense"]
    assert run.test_compact["recall@20"] == pytest.approx(run.result.test["recall@20"], abs=1e-6)


@pytest.mark.parametrize("backbone,split", [("lightgcn", "topk_split"), ("deepfm", "ctr_split")])
def test_dnis_on_cuda(backbone, split, request):
    split = request.getfixturevalue(split)
    config = DNISConfig(d_max=8, blocks=4, warm_epochs=1, search_epochs=2, retrain_epochs=2, device="cuda",
                        progress=False, train_overrides={"batch_size": 128, "lr": 1e-2})
    run = run_dnis(backbone, split, 0.25, config)
    assert on_cuda(run.run.model)
    kept = sum(int(s.sum()) for s in run.sizes.values())
    total = sum(len(s) for s in run.sizes.values()) * 8
    assert abs(kept / total - 0.25) <= 1e-3 + 8 / total


def test_ciess_on_cuda(topk_split):
    config = CIESSConfig(d_max=8, episodes=1, iterations=2, epochs_per_iteration=1, top_l=1, hidden=16,
                         agent_batch_size=16, updates_per_iteration=2, full_epochs=2, retrain_epochs=2,
                         patience=1, budgets=(0.5,), sigma=2.0, walk_t=2, walk_length=2, progress=False,
                         device="cuda")
    result = CIESS("lightgcn", topk_split, config).run()
    best = result.to_dict()["budgets"]["0.5"]["best"]
    assert best["density"] <= 0.5 + 1e-9 and 0.0 <= best["test"]["recall@20"] <= 1.0


def test_ihas_on_cuda():
    split = split_ctr(make_synthetic_ctr(1500, 5, 2, seed=0, cardinality=12), seed=0)
    config = IHASConfig(clusters=2, n_blocks=2, route_dim=1, hidden=4, search_epochs=2, batch_size=256, n_init=2)
    run = run_ihas("fm", split, 0.5, 8, config,
                   TrainConfig(epochs=2, batch_size=256, lr=1e-2, patience=1, **QUIET), seed=0)
    assert all(on_cuda(m) for m in run.models)
    assert 0.0 <= run.test["auc"] <= 1.0
    assert run.route(split.data.X[split.test][:20]).shape == (20,)

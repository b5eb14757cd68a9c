"""Row-wise quantised tables (Chapter 8, section 8.9): the arithmetic and packing by hand, lookups against
the dequantised reference, bytes, compact tables, post-training quantisation of backbones and QAT."""
from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch

import recsize.quantize as quantize
from recsize.backbones import build_backbone
from recsize.embedding import CompactEmbedding, Embedding, MaskedEmbedding, compact_factory, prefix_mask
from recsize.evaluate import evaluate_ctr, evaluate_topk
from recsize.quantize import (FakeQuantEmbedding, QuantizedCompactEmbedding, QuantizedEmbedding, dequantize_rows,
                              fake_quant_factory, quantize_model, quantize_rows, quantized_bytes,
                              quantized_compact_bytes, window_bytes)

BITS = (8, 4, 2)
CHAPTER = "Explained in Chapter 8 (section 8.9, quantised and hashed tables)"


def random_ids(num_rows: int, n: int = 50, seed: int = 0) -> torch.Tensor:
    ids = torch.from_numpy(np.random.default_rng(seed).integers(0, num_rows, n))
    ids[:3] = torch.tensor([0, num_rows - 1, 0])   # the ends and a repeat
    return ids


# ------------------------------------------------------------------------------------------ arithmetic
def test_packing_and_codes_by_hand():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    packed, scale, bias = quantize_rows(w, 2)   # scale 3 / 3 = 1, bias 0: codes 0, 1, 2, 3 in one byte
    assert packed.tolist() == [[0 | 1 << 2 | 2 << 4 | 3 << 6]] and scale.item() == 1 and bias.item() == 0
    packed, scale, bias = quantize_rows(w, 4)   # scale 3 / 15 = 0.2 (float16), codes 0, 5, 10, 15
    assert packed.tolist() == [[0 | 5 << 4, 10 | 15 << 4]]
    assert scale.dtype == torch.float16 and scale.item() == torch.tensor(0.2).half().item()
    packed, _, _ = quantize_rows(w, 8)          # scale 3 / 255, codes 0, 85, 170, 255
    assert packed.tolist() == [[0, 85, 170, 255]]
    assert dequantize_rows(packed, *quantize_rows(w, 8)[1:], 8, 4)[0, -1] == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize("bits", BITS)
def test_error_within_half_a_step_and_codes_padded(bits):
    torch.manual_seed(1)
    w = torch.randn(9, 7) * 3
    packed, scale, bias = quantize_rows(w, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (9, -(-7 * bits // 8))
    back = dequantize_rows(packed, scale, bias, bits, 7)
    step = scale.float()[:, None]
    assert ((back - w).abs() <= step / 2 + 1e-3 * step + 1e-6).all()
    assert torch.equal(back.amin(1), bias.float())                    # the row's minimum is code 0
    assert (back.amax(1) - w.amax(1)).abs().max() <= step.max()       # its maximum within a step


def test_constant_and_bad_rows():
    w = torch.tensor([[0.5, 0.5, 0.5], [1.0, -1.0, 0.0]])
    packed, scale, bias = quantize_rows(w, 4)
    assert scale[0] == 1 and torch.equal(dequantize_rows(packed, scale, bias, 4, 3)[0], w[0])
    with pytest.raises(ValueError, match="bits must be one of 8, 4, 2"):
        quantize_rows(w, 3)
    with pytest.raises(ValueError, match="float16"):
        quantize_rows(torch.tensor([[-1e6, 0.0]]), 8)   # bias -1e6: beyond float16
    with pytest.raises(ValueError, match="float16"):
        quantize_rows(torch.tensor([[float("nan"), 0.0]]), 8)
    with pytest.raises(ValueError, match="bytes per row"):
        dequantize_rows(packed, scale, bias, 4, 5)


# ------------------------------------------------------------------------------------------ full-width tables
@pytest.mark.parametrize("bits", BITS)
def test_lookup_equals_dequantised_reference(bits):
    torch.manual_seed(2)
    w = torch.randn(31, 13)
    table = QuantizedEmbedding.from_float(w, bits)
    reference = dequantize_rows(*quantize_rows(w, bits), bits, 13)
    ids = random_ids(31)
    assert torch.equal(table(ids), reference[ids])
    assert torch.equal(table(ids.view(5, 10)), reference[ids].view(5, 10, 13))
    empty = table(torch.empty(0, dtype=torch.int64))
    assert empty.shape == (0, 13) and empty.dtype == torch.float32
    assert torch.equal(table.table(), reference)
    assert not torch.equal(reference, w)   # quantisation did change the values


def test_bytes_by_hand():
    w = torch.randn(3, 5)
    # 3 rows x (packed codes + 2 B scale + 2 B bias): 5 codes of 8 bits = 5 B, of 4 bits = 3 B, of 2 bits = 2 B
    for bits, expected in ((8, 3 * (5 + 4)), (4, 3 * (3 + 4)), (2, 3 * (2 + 4))):
        table = QuantizedEmbedding.from_float(w, bits)
        assert table.num_bytes() == table.stored_bytes == quantized_bytes(3, 5, bits) == expected
    assert quantized_bytes(1000, 64, 8) * 4 < 1000 * 64 * 4 * 1.1  # int8 is about a quarter of float32


# ------------------------------------------------------------------------------------------ compact tables
def compact_table(sizes, d_max: int, seed: int = 3) -> CompactEmbedding:
    torch.manual_seed(seed)
    return CompactEmbedding(np.asarray(sizes), d_max)


@pytest.mark.parametrize("bits", BITS)
def test_compact_lookup_equals_each_row_quantised_alone(bits):
    sizes = np.random.default_rng(4).integers(0, 10, 40)
    sizes[:3] = [0, 9, 1]
    compact = compact_table(sizes, 9)
    table = QuantizedCompactEmbedding.from_compact(compact, bits)
    rows = compact.table().detach()
    reference = torch.zeros(40, 9)
    for n, d in enumerate(sizes):
        if d:
            reference[n, :d] = dequantize_rows(*quantize_rows(rows[n:n + 1, :d], bits), bits, int(d))[0]
    ids = random_ids(40)
    assert torch.equal(table(ids), reference[ids])
    assert torch.equal(table(ids.view(10, 5)), reference[ids].view(10, 5, 9))
    assert table(torch.empty(0, dtype=torch.int64)).shape == (0, 9)
    assert torch.equal(table.table(), reference)
    assert torch.equal(table.sizes, compact.sizes) and table.num_parameters() == int(sizes.sum())


def test_compact_bytes_by_hand():
    compact = compact_table([0, 5, 1, 3], 5)
    # 9 values; the stream padded so that a window reaches d_max = 5 codes from the byte holding the last
    # value: 8 bits, 9 + 5 B; 4 bits, 4 + 3 B (2 codes a byte, from either half); 2 bits, 2 + 2 B.
    # Then 4 x 4 B of scale and bias, 5 int64 offsets = 40 B
    for bits, codes, window in ((8, 9, 5), (4, 4, 3), (2, 2, 2)):
        table = QuantizedCompactEmbedding.from_compact(compact, bits)
        assert window_bytes(5, bits) == window and table.codes.numel() == codes + window
        assert table.num_bytes() == table.stored_bytes == codes + window + 16 + 40
        assert quantized_compact_bytes([0, 5, 1, 3], 5, bits) == codes + window + 16 + 40
    empty = QuantizedCompactEmbedding.from_compact(compact_table([0, 0], 4), 4)
    assert empty.num_bytes() == 0 + 3 + 8 + 24 and torch.equal(empty(torch.tensor([1, 0, 1])), torch.zeros(3, 4))


def test_full_width_compact_equals_full_width_table():
    torch.manual_seed(5)
    compact = compact_table(np.full(12, 6), 6)
    ids = random_ids(12)
    for bits in BITS:
        assert torch.equal(QuantizedCompactEmbedding.from_compact(compact, bits)(ids),
                           QuantizedEmbedding.from_float(compact.table().detach(), bits)(ids))


# ------------------------------------------------------------------------------------------ QAT
@pytest.mark.parametrize("bits", BITS)
def test_fake_quant_forward_and_straight_through_gradient(bits):
    torch.manual_seed(6)
    fake = FakeQuantEmbedding(20, 6, bits)
    ids = random_ids(20, 30)
    out = fake(ids)
    reference = dequantize_rows(*quantize_rows(fake.weight, bits), bits, 6)
    assert torch.equal(out, reference[ids]) and torch.equal(fake.table(), reference)
    assert torch.equal(fake.export()(ids), out)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    expected = torch.zeros(20, 6).index_add_(0, ids, g)   # the plain table's gradient, untouched by rounding
    assert torch.equal(fake.weight.grad, expected) and fake.weight.grad.abs().sum() > 0


def test_fake_quant_is_deterministic():
    torch.manual_seed(7)
    a = FakeQuantEmbedding(10, 4, 4)
    torch.manual_seed(7)
    b = FakeQuantEmbedding(10, 4, 4)
    assert torch.equal(a.table(), b.table())
    with pytest.raises(ValueError, match="bits"):
        fake_quant_factory(16)


# ------------------------------------------------------------------------------------------ backbones
BACKBONES = ("lightgcn", "neumf", "deepfm")


def backbone(name, topk_split, ctr_split, embedding=None, dim=8):
    split = ctr_split if name == "deepfm" else topk_split
    torch.manual_seed(8)
    return build_backbone(name, split, dim=dim, embedding=embedding), split


def scores(model, split):
    model.eval()
    with torch.no_grad():
        if model.task == "ctr":
            return model.score(torch.from_numpy(split.part("valid")[0][:64]))
        return model.scorer()(torch.arange(10))


@pytest.mark.parametrize("name", BACKBONES)
def test_quantize_model_swaps_tables_and_evaluates(name, topk_split, ctr_split):
    model, split = backbone(name, topk_split, ctr_split)
    before = {k: t.table().detach().clone() for k, t in model.embedding_tables().items()}
    quantized, stored = quantize_model(model, 8)
    tables = quantized.embedding_tables()
    assert all(isinstance(t, QuantizedEmbedding) for t in tables.values()) and set(tables) == set(before)
    assert all(isinstance(t, Embedding) for t in model.embedding_tables().values())   # the original is kept
    assert stored == sum(quantized_bytes(t.num_rows, t.dim, 8) for t in tables.values())
    for k, t in tables.items():
        assert torch.equal(t.table(), dequantize_rows(*quantize_rows(before[k], 8), 8, t.dim))
    # the evaluators find the device themselves, also in LightGCN, whose only tables are quantised
    metrics = evaluate_ctr(quantized, split) if name == "deepfm" else evaluate_topk(quantized, split)
    assert all(np.isfinite(v) for v in metrics.values())
    assert torch.allclose(scores(quantized, split), scores(model, split), atol=0.05)


def test_trained_model_quantised_keeps_its_quality(topk_split):
    torch.manual_seed(9)
    model = build_backbone("lightgcn", topk_split, dim=8)
    untrained = evaluate_topk(model, topk_split, "test")["ndcg@20"]
    users, items = topk_split.train.nonzero()
    rng = np.random.default_rng(9)
    for _ in range(30):   # plain gradient steps on BPR (torch.optim's first import alone takes seconds)
        pick = torch.from_numpy(rng.integers(0, len(users), 256))
        loss = model.loss(torch.from_numpy(users)[pick], torch.from_numpy(items)[pick],
                          torch.from_numpy(rng.integers(0, topk_split.n_items, 256)))
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 30.0 * p.grad   # BPR's mean over the batch at std 0.1: small gradients
    quantized, stored = quantize_model(model, 8)
    assert stored == (60 + 80) * (8 + 4) < sum(t.num_bytes() for t in model.embedding_tables().values()) / 2
    float_ndcg = evaluate_topk(model, topk_split, "test")["ndcg@20"]
    assert float_ndcg > untrained + 0.05   # it learned something
    assert evaluate_topk(quantized, topk_split, "test")["ndcg@20"] == pytest.approx(float_ndcg, abs=0.02)


@pytest.mark.parametrize("name", BACKBONES)
def test_quantize_compact_backbone(name, topk_split, ctr_split):
    def sizes(role, num_rows, dim):
        return np.random.default_rng(len(role)).integers(0, dim + 1, num_rows)
    probe, split = backbone(name, topk_split, ctr_split)
    roles = {r: sizes(r, t.num_rows, t.dim) for r, t in probe.embedding_tables().items()}
    model, _ = backbone(name, topk_split, ctr_split, embedding=compact_factory(roles))
    quantized, stored = quantize_model(model, 4)
    tables = quantized.embedding_tables()
    assert all(isinstance(t, QuantizedCompactEmbedding) for t in tables.values())
    assert stored == sum(quantized_compact_bytes(roles[r], 8, 4) for r in tables)
    for r, t in tables.items():   # 4 bits: within half a step of the float values, zeros beyond the widths
        float_rows = model.embedding_tables()[r].table().detach()
        assert ((t.table() - float_rows).abs() <= t.scale.float()[:, None] / 2 + 1e-4).all()
        assert (t.table()[prefix_mask(t.sizes, t.dim) == 0] == 0).all()
    assert torch.isfinite(scores(quantized, split)).all()


def test_quantize_masked_and_refuse_others():
    masked = MaskedEmbedding(6, 4, [0, 1, 4, 2, 3, 4])
    table = quantize.quantized_table(masked, 8)
    assert isinstance(table, QuantizedCompactEmbedding) and torch.equal(table.sizes, masked.sizes)
    with pytest.raises(ValueError, match="no quantised form"):
        quantize.quantized_table(table, 8)


@pytest.mark.parametrize("name", BACKBONES)
def test_qat_int4_trains_and_exports_exactly(name, topk_split, ctr_split):
    model, split = backbone(name, topk_split, ctr_split, embedding=fake_quant_factory(4))
    assert all(isinstance(t, FakeQuantEmbedding) for t in model.embedding_tables().values())
    model.train()
    if name == "deepfm":
        x, y = split.part("train")
        loss = model.loss(torch.from_numpy(x[:32]), torch.from_numpy(y[:32]))
    else:
        loss = model.loss(torch.arange(8), torch.arange(8), torch.arange(8, 16))
    loss.backward()
    assert all(t.weight.grad is not None and t.weight.grad.abs().sum() > 0 for t in model.embedding_tables().values())
    exported, stored = quantize_model(model, 4)
    assert stored == sum(quantized_bytes(t.num_rows, t.dim, 4) for t in exported.embedding_tables().values())
    assert torch.equal(scores(exported, split), scores(model, split))   # serving = what QAT trained against


# ------------------------------------------------------------------------------------------ house rules
def test_docstrings_name_the_chapter_and_module_is_short():
    source = inspect.getsource(quantize)
    assert len(source.splitlines()) < 500
    assert_chapter_everywhere(source, 15)


def assert_chapter_everywhere(source: str, at_least: int) -> None:
    """The module and every public function, class and public method (but the table interface's, which
    Chapter 4 explains) name Chapter 8's section in their docstrings, on one line (grep finds it)."""
    tree = ast.parse(source)
    assert CHAPTER in ast.get_docstring(tree)
    interface = ("forward", "table", "num_parameters", "num_bytes", "extra_repr", "d_max", "sizes")
    public = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
    public += [m for c in public if isinstance(c, ast.ClassDef) for m in c.body
               if isinstance(m, ast.FunctionDef) and not m.name.startswith("_") and m.name not in interface]
    assert len(public) >= at_least
    for node in public:
        assert CHAPTER in (ast.get_docstring(node) or ""), node.name

"""Searched widths as TorchRec bucket tables, in one process (Appendix A): exact lookups, exact training
steps, saving, quantised serving, and a clear message without TorchRec."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from recsize.backbones import build_backbone
from recsize.embedding import CompactEmbedding, CSREmbedding, compact_factory
from conftest import one_line_error
from recsize.cli import main
from recsize.torchrec_export import (INSTALL, BucketExport, TorchRecMissing, bucket_configs, bucket_widths,
                                     export_tables, has_torchrec, require_torchrec)


def sizes_for(rows: int, d_max: int, seed: int) -> np.ndarray:
    sizes = np.random.default_rng(seed).integers(0, d_max + 1, rows)
    sizes[:2] = (0, d_max)  # a width-0 row and a full row in every table
    return sizes


def model_with_widths(name: str, split, d_max: int):
    if name in ("fm", "deepfm"):
        roles = {"feature": split.data.n_features}
    else:
        roles = {"user": split.n_users, "item": split.n_items}
    sizes = {role: sizes_for(n, d_max, seed) for seed, (role, n) in enumerate(roles.items())}
    torch.manual_seed(0)
    return build_backbone(name, split, d_max, embedding=compact_factory(sizes, d_max))


def test_bucket_widths_are_multiples_of_four():
    assert bucket_widths([0, 1, 4, 5, 10], 10).tolist() == [0, 4, 4, 8, 12]  # d_max 10 -> 12-wide table
    assert bucket_widths([3, 9], 16, round_to=8).tolist() == [8, 16]
    with pytest.raises(ValueError, match="multiple of 4"):
        bucket_widths([1], 8, round_to=6)


@pytest.mark.parametrize("name", ["mf", "lightgcn", "fm", "deepfm"])
def test_every_row_is_bit_exact(torchrec, name, tiny_split, ctr_split):
    """Every row of every table through the collection equals the compact lookup, bit for bit."""
    from recsize.torchrec_lookup import BucketLookup
    split = ctr_split if name in ("fm", "deepfm") else tiny_split
    model = model_with_widths(name, split, d_max=10)  # not a multiple of 4: the widest table pads to 12
    tables = model.embedding_tables()
    export = export_tables(tables)
    assert all(w.shape[1] % 4 == 0 for w in export.weights.values())
    planned = bucket_configs({r: t.sizes for r, t in tables.items()}, {r: t.dim for r, t in tables.items()})
    assert [(c.name, c.num_embeddings, c.embedding_dim) for c in planned] == \
        [(c.name, c.num_embeddings, c.embedding_dim) for c in export.configs()]
    lookup = BucketLookup(export)
    with torch.no_grad():
        every = {role: torch.arange(t.num_rows) for role, t in tables.items()}
        got = lookup(every)
        for role, table in tables.items():
            assert torch.equal(got[role], table(every[role])), role
        if name in ("fm", "deepfm"):  # samples x fields, as the CTR backbones look them up
            x = torch.as_tensor(split.part("test")[0][:7])
            assert torch.equal(lookup({"feature": x})["feature"], tables["feature"](x))


def test_one_sgd_step_equals_the_compact_step(torchrec):
    """Training through the buckets moves the kept entries exactly as training the compact table does;
    the rounding's padding stays zero."""
    from recsize.torchrec_lookup import BucketLookup
    torch.manual_seed(0)
    table = CompactEmbedding(sizes_for(40, 10, 3), 10)
    lookup = BucketLookup(export_tables({"item": table}))
    ids = torch.randperm(40)[:16]
    weights = torch.randn(16, 10)
    for params, rows in ((table.parameters(), lambda: table(ids)),
                         (lookup.parameters(), lambda: lookup({"item": ids})["item"])):
        optimizer = torch.optim.SGD(params, lr=0.5)
        (rows() * weights).sum().backward()
        optimizer.step()
    after = export_tables({"item": table}).weights
    for name, weight in lookup.collection.state_dict().items():
        assert torch.equal(weight, after[name.split(".")[-2]]), name


def test_save_and_load(tmp_path, tiny_split):
    export = export_tables(model_with_widths("mf", tiny_split, 8).embedding_tables())
    export.save(tmp_path / "export.pt")
    back = BucketExport.load(tmp_path / "export.pt")
    assert back.tables_of == export.tables_of and back.d_max == export.d_max
    assert all(torch.equal(back.weights[n], w) for n, w in export.weights.items())
    assert all(torch.equal(back.row[r], export.row[r]) for r in export.row)
    blob = torch.load(tmp_path / "export.pt", weights_only=True)
    blob["row"]["item"][3] = 10**6  # an index past its table
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="corrupt TorchRec export"):
        BucketExport.load(tmp_path / "bad.pt")
    CompactEmbedding([1, 2], 4).save(tmp_path / "compact.pt")
    with pytest.raises(ValueError, match="not a TorchRec export"):
        BucketExport.load(tmp_path / "compact.pt")


def test_element_masks_are_refused():
    csr = CSREmbedding.from_mask(torch.tensor([[True, False, True], [False, True, False]]))
    with pytest.raises(ValueError, match="element mask"):
        export_tables({"item": csr})


def test_quantised_serving(torchrec):
    """FP16 and INT8 copies: smaller, close to the float lookups; per-table types leave the rest float."""
    from recsize.torchrec_lookup import BucketLookup, quantise, stored_bytes
    torch.manual_seed(0)
    table = CompactEmbedding(sizes_for(200, 32, 4), 32)
    lookup = BucketLookup(export_tables({"item": table}))
    ids = torch.arange(200)
    exact = table(ids).detach()
    errors, sizes = {}, {}
    for dtype in (torch.float16, torch.qint8):
        served = quantise(lookup, dtype)
        with torch.no_grad():
            got = served({"item": ids})["item"]
        errors[dtype] = float((got - exact).abs().max())
        sizes[dtype] = stored_bytes(served)
        assert torch.equal(got == 0, exact == 0)  # the zero padding stays exact
    scale = float(exact.abs().max())
    assert errors[torch.float16] < 1e-3 * scale and errors[torch.qint8] < 2e-2 * scale
    assert 0 < errors[torch.float16] < errors[torch.qint8]
    assert stored_bytes(lookup) > sizes[torch.float16] > sizes[torch.qint8]
    widest = lookup.tables_of["item"][-1]
    mixed = quantise(lookup, {widest: torch.qint8})
    types = {c.name: c.data_type.name for c in mixed.collection.embedding_bag_configs()}
    assert types[widest] == "INT8" and {t for n, t in types.items() if n != widest} == {"FP32"}


def test_missing_torchrec_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchrec", None)  # import torchrec now raises ImportError
    with pytest.raises(TorchRecMissing) as e:
        require_torchrec()
    assert INSTALL in str(e.value) and "\n" not in str(e.value)


def saved_tables(folder, d_max: int = 10) -> list[str]:
    torch.manual_seed(0)
    specs = []
    for seed, (role, rows) in enumerate((("user", 12), ("item", 20))):
        CompactEmbedding(sizes_for(rows, d_max, seed), d_max).save(folder / f"{role}.pt")
        specs.append(f"{role}={folder / f'{role}.pt'}")
    return specs


def test_cli_export(torchrec, tmp_path, capsys):
    specs = saved_tables(tmp_path)
    assert main(["export", "--format", "torchrec", "--out", str(tmp_path / "out" / "export.pt"), *specs]) == 0
    printed = capsys.readouterr().out
    assert "item_w12" in printed and "every row equals the compact lookup" in printed
    export = BucketExport.load(tmp_path / "out" / "export.pt")
    assert set(export.tables_of) == {"user", "item"}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["export.pt"]  # no temporary file left


@pytest.mark.parametrize("case, needle", [("exists", "does not overwrite"), ("spec", "ROLE=FILE"),
                                          ("missing", "nowhere.pt"), ("round", "multiple of 4"),
                                          ("foreign", "is not a compact embedding file")])
def test_cli_export_bad_input(tmp_path, capsys, case, needle):
    specs = saved_tables(tmp_path)
    out, extra = tmp_path / "export.pt", []
    if case == "exists":
        out.write_text("my notes")
    elif case == "spec":
        specs = [str(tmp_path / "user.pt")]
    elif case == "missing":
        specs = [f"user={tmp_path / 'nowhere.pt'}"]
    elif case == "round":
        extra = ["--round-to", "6"]
    else:
        (tmp_path / "notes.pt").write_text("not a table")
        specs = [f"user={tmp_path / 'notes.pt'}"]
    if case in ("missing", "foreign") and not has_torchrec():
        pytest.skip("the inputs are read after TorchRec is found")
    rc = main(["export", "--format", "torchrec", "--out", str(out), *extra, *specs])
    one_line_error(capsys, rc, needle)
    assert case != "exists" or out.read_text() == "my notes"
    assert case == "exists" or not out.exists()


def test_cli_export_without_torchrec(tmp_path, capsys, monkeypatch):
    specs = saved_tables(tmp_path)
    monkeypatch.setitem(sys.modules, "torchrec", None)
    rc = main(["export", "--format", "torchrec", "--out", str(tmp_path / "export.pt"), *specs])
    one_line_error(capsys, rc, "pip install --no-deps torchrec==1.8.0")
    assert not (tmp_path / "export.pt").exists()


def test_served_tables_evaluate_like_the_model(torchrec, tiny_split):
    from recsize.evaluate import evaluate_topk
    from recsize.torchrec_lookup import BucketLookup, DotScorer
    model = model_with_widths("mf", tiny_split, 8)
    served = DotScorer(BucketLookup(export_tables(model.embedding_tables())), tiny_split.n_items)
    assert evaluate_topk(served, tiny_split, "test", device="cpu") == evaluate_topk(model, tiny_split, "test")

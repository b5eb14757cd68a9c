"""The README's result tables are generated from the benchmark outputs (benchmarks/report.py)."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import report  # noqa: E402

# The full tables (benchmarks/README.md) and the front README's headlines; each a generated block.
REQUIRED = {"benchmarks/README.md": ("backbones", "embedding", "prune_lightgcn20", "prune_lightgcn", "ciess", "ihas", "head_to_head",
                                     "torchrec_serving", "torchrec_planning", "torchrec_train", "where_time_goes",
                                     "stacked"),
            "README.md": ("headline_embedding", "headline_prune", "torchrec_serving", "torchrec_planning")}


@pytest.mark.parametrize("readme", sorted(REQUIRED))
def test_readme_tables_are_generated_from_the_benchmark_outputs(readme):
    text = (ROOT / readme).read_text()
    for name in REQUIRED[readme]:
        assert report.BEGIN.format(name=name) in text, f"{readme} has no generated {name} table"
    assert report.update(text) == text, f"{readme} is out of date: run python benchmarks/report.py"


def test_the_front_readme_is_short_and_links_the_full_tables():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 300 and "(benchmarks/README.md)" in text
    assert (ROOT / "benchmarks" / "README.md").resolve() in [p.resolve() for p in report.READMES]


@pytest.mark.parametrize("readme", sorted(REQUIRED))
def test_every_generated_table_names_the_machine(readme):
    text = (ROOT / readme).read_text()
    names = dict.fromkeys(m.group(2) for m in report.MARKER.finditer(text))
    assert names
    for name in names:
        assert "Machine: " in report.render(name), name


def test_every_table_that_quotes_a_grid_reads_the_store_and_names_its_experiment():
    """The converged grids are read from the evidence store (evidence/NAME.jsonl), never from benchmarks/out,
    and every generated table quoting one names its experiment."""
    from recsize.experiments import EXPERIMENTS
    grids = [name for name in report.MERGED if name in EXPERIMENTS]
    assert grids and not list(report.OUT.glob("prune_lightgcn20_*.json"))
    for name in grids:
        assert report.render(name).startswith(f"Experiment {name}: "), name
    head = report.render("headline_prune")
    assert all(f"(experiment {name})" in head for name in report.HEADLINE_PRUNE)
    assert "the stored cells of experiment prune_lightgcn20" in report.render("stackedgrid_lightgcn20")
    verdict = report.render("verdict_runs")
    assert verdict.startswith("| experiment |") and "| prune_lightgcn20 | 0 |" in verdict


def test_a_changed_figure_changes_the_table(tmp_path):
    data = json.loads((report.OUT / "backbones.json").read_text())
    before = report.render_backbones(data)
    changed = copy.deepcopy(data)
    name = next(iter(changed["summary"]))
    changed["summary"][name]["recall@20"][0] += 0.01
    after = report.render_backbones(changed)
    assert before != after
    (tmp_path / "backbones.json").write_text(json.dumps(changed))
    readme = f"intro\n{report.BEGIN.format(name='backbones')}\nstale\n{report.END.format(name='backbones')}\nend\n"
    updated = report.update(readme, out=tmp_path)
    assert after in updated and "stale" not in updated and updated.startswith("intro\n") and updated.endswith("end\n")
    assert report.update(updated, out=tmp_path) == updated


def test_bad_markers_and_missing_outputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="markers of 'backbones'"):
        report.update(f"{report.BEGIN.format(name='backbones')}\nno end\n", out=tmp_path)
    with pytest.raises(FileNotFoundError, match="python benchmarks/ciess.py"):
        report.render("ciess", out=tmp_path)
    with pytest.raises(KeyError, match="unknown table"):
        report.render("nonsense", out=tmp_path)


def test_check_mode_reports_a_stale_readme(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.BEGIN.format(name='embedding')}\nold\n{report.END.format(name='embedding')}\n")
    assert report.main(["--check", "--readme", str(readme)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert report.main(["--readme", str(readme)]) == 0
    assert report.main(["--check", "--readme", str(readme)]) == 0


def test_prune_table_pairs_seeds_against_es_at_equal_bytes():
    def cell(method, c, seed, recall):
        return {"method": method, "sparsity": c, "seed": seed, "recall@20": recall, "kept": 100, "bytes": 2048,
                "best_epoch": 10, "seconds": {"retrain": 5.0}}
    runs = [cell("magprune", 0.9, s, r) for s, r in ((0, 0.32), (1, 0.33), (2, 0.31))]
    runs += [cell("es-bytes", 0.9, s, r) for s, r in ((0, 0.30), (1, 0.30), (2, 0.30))]
    runs += [cell("dnis", 0.9, 0, 0.25)]
    settings = [{"backbone": "lightgcn", "dataset": "ml-100k", "dim": 64, "epochs": 300, "patience": 10,
                 "machine": "test machine"}]
    text = report.render_prune(runs, settings)
    magprune = next(line for line in text.splitlines() if "MagPrune" in line)
    assert "**0.3200**" in magprune and "+0.0200 [" in magprune and "(n = 3)" in magprune
    dnis = next(line for line in text.splitlines() if "DNIS in place" in line)
    assert "-0.0500 (n = 1)" in dnis and "\\|E\\|" in dnis            # one pair: no interval; pipes escaped
    assert "Machine: test machine" in text


def test_prune_table_of_a_ctr_backbone_reads_auc():
    def cell(method, seed, auc):
        return {"method": method, "sparsity": 0.8, "seed": seed, "auc": auc, "logloss": 0.5, "kept": 10,
                "bytes": 1024, "best_epoch": 3, "seconds": {"train": 1.0}}
    runs = [cell("es-bytes", s, 0.78) for s in (0, 1)] + [cell("mde-bytes", s, 0.77) for s in (0, 1)]
    settings = [{"backbone": "deepfm", "dataset": "ml-100k-ctr", "dim": 64, "epochs": 300, "patience": 10,
                 "machine": "test machine"}]
    text = report.render_prune(runs, settings)
    assert "Test AUC" in text and "over samples" in text
    mde = next(line for line in text.splitlines() if "MDE, equal bytes" in line)
    assert "0.7700" in mde and "-0.0100 [" in mde
    assert "**0.7800**" in next(line for line in text.splitlines() if "| ES, equal bytes |" in line)


def _grid(name: str) -> tuple[list[dict], list[dict]]:
    """The cells and settings of a stored experiment (``evidence/NAME.jsonl``, ``recsize.experiments.load_grids``)."""
    from recsize.experiments import load_grids
    grid = load_grids([name])[name]
    return grid.runs, grid.settings


def _prose(chapter: str) -> str:
    """The markdown of a chapter's text form, as one line per paragraph (numbers split over lines join)."""
    lines = (ROOT / "notebooks" / f"{chapter}.py").read_text().splitlines()
    return " ".join(line[2:] if line.startswith("# ") else line for line in lines)


def test_appendix_a_quotes_the_stored_torchrec_runs():
    """Every number Appendix A's prose quotes about quantisation and sharded training is the stored run's
    (benchmarks/out/torchrec_serving.json, torchrec_train.json), rounded as quoted."""
    import numpy as np
    text = _prose("chA1_serving")
    serving = json.loads((ROOT / "benchmarks" / "out" / "torchrec_serving.json").read_text())
    groups = {}
    for r in serving["quantisation"]:
        groups.setdefault((r["widths"], r["dtype"]), []).append(r)
    mean = {k: {m: np.mean([r[m] for r in v]) for m in ("tables", "recall@20")} for k, v in groups.items()}
    full = mean["full", "fp32"]["tables"]
    quoted = [(("full", "fp16"), "0.50"), (("MDE 0.5", "fp32"), "0.52"), (("full", "int8"), "0.31"),
              (("MDE 0.25", "fp32"), "0.27"), (("MDE 0.5", "int8"), "0.17"), (("MDE 0.25", "fp16"), "0.15"),
              (("MDE 0.1", "fp32"), "0.12")]
    for key, share in quoted:
        assert f"{mean[key]['tables'] / full:.2f}" == share, key
        recall = f"{mean[key]['recall@20']:.3f}"
        assert recall in text, f"Appendix A should quote {key}'s mean Recall@20 {recall}"
    assert all(abs(np.mean([r["recall@20"] for r in groups[w, "int8"]])
                   - np.mean([r["recall@20"] for r in groups[w, "fp32"]])) <= 0.002
               for w in {k[0] for k in groups}), "INT8 moves Recall@20 by at most 0.002"
    train = json.loads((ROOT / "benchmarks" / "out" / "torchrec_train.json").read_text())
    for run in train["runs"]:
        assert run["sharded"]["recall@20"] == run["single"]["recall@20"]
        for kind in ("sharded", "recsize_adam"):
            assert f"{run[kind]['recall@20']:.4f}" in text
        assert f"{run['sharded']['best_epoch']}" in text


def test_chapter_5_quotes_the_stored_neumf_mf_and_overlap_runs():
    """The numbers of Chapter 5's NeuMF / MF bullet are the stored runs' (experiment prune_neumf's means over
    seeds, benchmarks/out/prune_mf_seed0.json, overlap.json), rounded as quoted."""
    import numpy as np
    from recsize.search.compare import paired_summary
    text = _prose("ch05_dnis")
    out = ROOT / "benchmarks" / "out"
    runs, _ = _grid("prune_neumf")
    mean = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es-bytes", "recall@20")}
    for method, c in (("magprune", 0.8), ("dnis", 0.8), ("es-bytes", 0.8), ("magprune", 0.95), ("dnis", 0.95),
                      ("es-bytes", 0.95), ("magprune-table", 0.8)):
        row = mean[method, c]
        assert len(row["cells"]) == 3, f"three seeds of {method} at {c}"
        assert f"{row['mean']:.3f}" in text, f"Chapter 5 should quote {method} at {c}: {row['mean']:.3f}"
    assert mean["magprune", 0.8]["delta"]["high"] < 0 and mean["dnis", 0.8]["delta"]["high"] < 0
    mf = {r["method"]: r["recall@20"] for r in json.loads((out / "prune_mf_seed0.json").read_text())["runs"]
          if r["sparsity"] == 0.8}
    assert f"{mf['magprune']:.3f} against {mf['es-bytes']:.3f} at 80 %" in text
    rows = json.loads((out / "overlap.json").read_text())["rows"]

    def shared(backbone, rule, key="shared", c=0.8):
        return np.mean([r[key] for r in rows if (r["backbone"], r["split"], r["sparsity"]) == (backbone, rule, c)])
    assert f"{shared('neumf', 'global', 'es_shared'):.1f} at 80 %" in text
    assert f"{shared('neumf', 'global'):.1f} on NeuMF ({shared('neumf', 'per-table'):.1f} per table)" in text
    assert f"{shared('mf', 'global'):.1f} on MF" in text
    assert f"fewer, {shared('lightgcn', 'global'):.1f} at 80 %" in text
    assert f"({shared('lightgcn', 'global', 'propagated_shared'):.1f} shared)" in text
    assert all(r["kept"]["user_mlp"] <= 2e-4 and r["kept"]["item_mlp"] <= 2e-4 for r in rows
               if r["backbone"] == "neumf" and r["split"] == "global" and r["sparsity"] >= 0.8)


def test_chapter_6_quotes_the_stored_official_ciess_run():
    """Chapter 6's bullet on CIESS at the authors' settings quotes ciess_official200.json (and the ES
    baselines of ciess.json), rounded as quoted: means, paired differences and the projected cells."""
    from recsize.search.compare import paired_summary
    text = _prose("ch06_ciess")
    out = ROOT / "benchmarks" / "out"
    data = json.loads((out / "ciess_official200.json").read_text())
    base = [r for r in json.loads((out / "ciess.json").read_text())["runs"] if r["method"] == "es"]
    runs = [r for r in data["runs"] + base if r["backbone"] == "lightgcn"]
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es", "recall@20")}
    cs = (0.8, 0.9, 0.95)
    assert " / ".join(f"{rows['official-200', c]['mean']:.3f}" for c in cs) in text
    assert " / ".join(f"{rows['es', c]['mean']:.3f}" for c in cs) in text
    deltas = [rows["official-200", c]["delta"] for c in cs]
    assert all(len(rows["official-200", c]["cells"]) == 3 for c in cs)
    assert f"{deltas[0]['mean']:+.3f}, {deltas[1]['mean']:+.3f} and {deltas[2]['mean']:+.3f}" in text
    assert all(d["low"] < 0 < d["high"] for d in deltas), "every interval spans 0"
    projected = sum(bool(r["projected"]) for r in data["runs"] if r["backbone"] == "lightgcn")
    assert f"{projected} of the {len(cs) * 3} cells" in text
    neumf = json.loads((out / "ciess_official200_neumf.json").read_text())["runs"]
    base = [r for r in json.loads((out / "ciess_neumf.json").read_text())["runs"] if r["method"] == "es"]
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(neumf + base, "es", "recall@20")}
    assert " / ".join(f"{rows['official-200', c]['mean']:.3f}" for c in cs) in text
    assert " / ".join(f"{rows['es', c]['mean']:.3f}" for c in cs) in text
    deltas = [rows["official-200", c]["delta"] for c in cs]
    assert f"{deltas[0]['mean']:+.3f}, {deltas[1]['mean']:+.3f} and {deltas[2]['mean']:+.3f}" in text
    assert all(d["low"] < 0 < d["high"] for d in deltas), "every interval spans 0"


def test_prune_block_and_headline_carry_the_aukc(tmp_path):
    """MR at 1.1 x ES's Recall@20 at both budgets: AUKC 1.1 in the block's AUKC table and the headline, which
    reads the evidence store and names the experiment."""
    from recsize.experiments import Cell, get, store

    def cell(method, c, seed, recall):
        return {"method": method, "sparsity": c, "seed": seed, "recall@20": recall, "kept": 100, "bytes": 2048,
                "dense_bytes": 4096, "best_epoch": 10, "seconds": {"train": 5.0}}
    runs = [cell("es-bytes", c, s, v) for s in (0, 1) for c, v in ((0.5, 0.3), (0.8, 0.2))]
    runs += [cell("mr-bytes", c, s, 1.1 * v) for s in (0, 1) for c, v in ((0.5, 0.3), (0.8, 0.2))]
    settings = {"backbone": "lightgcn", "dataset": "ml-100k", "dim": 64, "epochs": 300, "patience": 20}
    text = report.render_prune(runs, [{**settings, "machine": "test machine"}])
    row = next(line for line in text.splitlines() if line.startswith("| MR, equal bytes | 1.100"))
    assert "1.100 [1.100, 1.100] (n = 2) | 50 %, 80 % |" in row
    store.write("prune_lightgcn20", [Cell.from_prune_run(r, {"machine": "test machine"}, "prune_lightgcn20")
                                     for r in runs], tmp_path)
    head = report.render_headline_prune(tmp_path)
    assert "| c | ES (AUKC 1.000) | MR (AUKC 1.100) |" in head and "AUKC:" in head
    assert "**lightgcn** on ml-100k (experiment prune_lightgcn20), test Recall@20, patience 20" in head
    assert "Machine: test machine." in head and "neumf" not in head            # only what the store holds
    with pytest.raises(FileNotFoundError, match="recsize experiment run"):
        report.render_headline_prune(tmp_path / "empty")
    assert get("prune_lightgcn20").patience == settings["patience"]


def test_ihas_breakdown_merges_the_seed_files_and_pairs_them_with_es(tmp_path):
    """benchmarks/out/ihas_breakdown_s*.json: one file per seed, one table, paired differences to ES."""
    args = {"backbone": "deepfm", "density": 0.2, "dim": 64, "epochs": 300, "patience": 10, "search_epochs": 15,
            "seeds": [0], "out": "x"}

    def write(seed, es, ihas, **changed):
        rows = {"ES": {"auc": es, "logloss": 0.5, "parameters": 10},
                "iHAS K=4 (shared)": {"auc": ihas, "logloss": 0.5, "parameters": 10, "total_bytes": 2048}}
        data = {"machine": "test box", "args": {**args, "seeds": [seed], **changed}, "seconds": 1.0,
                "results": {"ml-100k-ctr": {"per_seed": {str(seed): rows}, "summary": {}}}}
        (tmp_path / f"ihas_breakdown_s{seed}.json").write_text(json.dumps(data))

    with pytest.raises(FileNotFoundError, match="benchmarks/ihas.py"):
        report.render("ihas_breakdown", out=tmp_path)
    write(0, 0.78, 0.77)
    write(1, 0.79, 0.77)
    table = report.render("ihas_breakdown", out=tmp_path)
    assert "Machine: test box" in table
    line = next(x for x in table.splitlines() if "iHAS K=4 (shared)" in x)
    assert "0.7700 0.7700" in line and "-0.0150 [" in line and "| 2.0 |" in line
    write(2, 0.80, 0.79, patience=5)
    with pytest.raises(ValueError, match="other settings"):
        report.render("ihas_breakdown", out=tmp_path)


def test_chapter_5_quotes_the_stored_joint_block_run():
    """Chapter 5.8's joint-ranking paragraph quotes the LightGCN grid's dnis-joint and dnis cells (three
    seeds each, paired), rounded as quoted, and every paired interval spans 0 as the text says."""
    from recsize.search.compare import paired_summary
    text = " ".join(_prose("ch05_dnis").split())
    runs, _ = _grid("prune_lightgcn20")
    cs = (0.5, 0.8, 0.9, 0.95)
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "dnis", "recall@20")}
    assert all(len(rows["dnis-joint", c]["cells"]) == 3 for c in cs)
    quoted = " / ".join(f"{rows['dnis-joint', c]['mean']:.4f}" for c in cs) + " against " + \
        " / ".join(f"{rows['dnis', c]['mean']:.4f}" for c in cs)
    assert quoted in text
    deltas = [rows["dnis-joint", c]["delta"] for c in cs]
    assert all(d["low"] < 0 < d["high"] for d in deltas), "every interval spans 0"
    a, b, c, d = (f"{d['mean']:+.4f}" for d in deltas)
    assert f"paired differences {a}, {b}, {c} and {d}" in text
    es = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es-bytes", "recall@20")}
    d = es["dnis-joint", 0.8]["delta"]
    assert f"behind at 80 %, {d['mean']:.3f} [{d['low']:.3f}, {d['high']:.3f}]" in text
    assert d["high"] < 0 and all(es["dnis-joint", c]["delta"]["low"] < 0 < es["dnis-joint", c]["delta"]["high"]
                                 for c in (0.5, 0.9, 0.95))
    # Chapter 8's verdict quotes the same comparison
    assert max(abs(d["mean"]) for d in deltas) < 0.002
    ch8 = " ".join(_prose("ch08_head_to_head").split())
    assert "every paired difference within 0.002 Recall@20, Chapter 5.8" in ch8


def test_chapter_5_quotes_the_stored_pep_deepfm_and_alpha_runs():
    """Chapter 5's PEP, DeepFM and alpha bullets quote the stored experiments (three seeds), rounded as quoted."""
    from recsize.search.compare import paired_difference, paired_summary
    text = " ".join(_prose("ch05_dnis").split())

    def means(name, metric):
        runs, _ = _grid(name)
        rows = paired_summary(runs, "es-bytes", metric)
        assert all(len(r["cells"]) == 3 for r in rows if r["method"] in ("pep", "magprune", "es-bytes"))
        return runs, {(r["method"], r["sparsity"]): r for r in rows}

    _, lgcn = means("prune_lightgcn20", "recall@20")
    for method in ("pep", "magprune"):
        quoted = " / ".join(f"{lgcn[method, c]['mean']:.3f}" for c in (0.5, 0.8, 0.9, 0.95))
        assert quoted in text, (method, quoted)
    _, neumf = means("prune_neumf", "recall@20")
    assert f"({neumf['pep', 0.8]['mean']:.3f} at 80 %)" in text
    assert f"({neumf['dnis-prefix', 0.8]['mean']:.3f} at 80 %" in text
    runs, deepfm = means("prune_deepfm", "auc")
    assert max(abs(deepfm["pep", c]["delta"]["mean"]) for c in (0.5, 0.8, 0.9, 0.95)) < 0.005
    assert (f"({deepfm['pep', 0.9]['mean']:.3f} and {deepfm['pep', 0.95]['mean']:.3f} against "
            f"{deepfm['magprune', 0.9]['mean']:.3f} and {deepfm['magprune', 0.95]['mean']:.3f})") in text
    trail = " / ".join(f"{-deepfm['magprune', c]['delta']['mean']:.3f}" for c in (0.8, 0.9, 0.95))
    assert f"MagPrune trails ES by {trail} at 80 / 90 / 95 %" in text
    by = {(r["method"], r["sparsity"], r["seed"]): r["auc"] for r in runs}
    alpha = paired_difference([by["dnis-alpha", 0.9, s] for s in range(3)], [by["dnis", 0.9, s] for s in range(3)])
    assert f"(+{alpha['mean']:.3f} at 90 %, interval above 0)" in text and alpha["low"] > 0


def test_chapter_4_quotes_the_stored_pep_levels_and_prune_runs():
    """Chapter 4's PEP paragraph quotes benchmarks/out/pep_levels.json (kept fractions at the authors'
    scale, the 50 % budget's fraction) and the LightGCN patience-20 grid (three seeds), rounded as quoted."""
    from recsize.search.compare import paired_summary
    text = " ".join(_prose("ch04_variable_size").split())
    out = ROOT / "benchmarks" / "out"
    levels = {r["backbone"]: r for r in json.loads((out / "pep_levels.json").read_text())["runs"] if r["scale"] == 1}
    assert (f"still keeps {levels['lightgcn']['final_density']:.1%} of its entries, NeuMF (lr 0.002) "
            f"{levels['neumf']['final_density']:.1%} and DeepFM (lr 0.001) {levels['deepfm']['final_density']:.1%}"
            ).replace("%", " %") in text
    assert all(e is None for r in levels.values() for e in r["reached"].values())   # "reach no budget"
    assert f"allows {levels['lightgcn']['budgets']['0.5']:.1%}".replace("%", " %") in text
    assert abs(levels["lightgcn"]["final_threshold"] - 0.5) < 0.01                  # "stops at sigma(0) = 0.5"
    # NeuMF's and DeepFM's thresholds "still climbing, at 0.009 and 0.016": they ran out of steps
    quoted = f"{levels['neumf']['final_threshold']:.3f} and {levels['deepfm']['final_threshold']:.3f}"
    assert f"climbing, at {quoted}" in text and f"still near {quoted} after 300 epochs" in text
    assert all(levels[b]["final_threshold"] < 0.05 for b in ("neumf", "deepfm"))
    runs, _ = _grid("prune_lightgcn20")
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es-bytes", "recall@20")}
    for method in ("pep", "magprune", "es-bytes"):
        assert " / ".join(f"{rows[method, c]['mean']:.3f}" for c in (0.5, 0.8, 0.9, 0.95)) in text, method


def test_chapter_8_verdict_counts_come_from_the_stored_grids():
    """Chapter 8's "what to use when" counts (best free baseline per cell, the other within the noise) are
    what ``within_noise`` reads off the stored three-seed grids."""
    from recsize.search.compare import grid_metric, within_noise
    text = " ".join(_prose("ch08_head_to_head").split())
    fair = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "magprune-tois", "pep", "dnis", "dnis-alpha",
            "ciess", "ihas")
    cells = free_best = other_tied = 0
    for name in ("lightgcn20", "neumf", "deepfm"):
        runs, settings = _grid(f"prune_{name}")
        metric = grid_metric(settings)
        for row in within_noise(runs, metric, fair):
            cells += 1
            if row["best"] in ("es-bytes", "mde-bytes"):
                free_best += 1
                other = "mde-bytes" if row["best"] == "es-bytes" else "es-bytes"
                other_tied += next(r["tied"] for r in row["rows"] if r["method"] == other)
    assert f"the best mean at {free_best} of the {cells} (backbone, budget) cells" in text
    assert f"within the noise in {other_tied} of those {free_best}" in text


def test_chapter_8_quotes_the_stored_grid_costs_and_the_stacked_speedups():
    """Chapter 8's cost paragraph: the grids' hours of one core as Section 8.6 computes them from the stored
    runs (grid_records, the methods it shows), and benchmarks/out/stacked.json's speed-ups, as quoted."""
    from recsize.search.compare import grid_records
    text = " ".join(_prose("ch08_head_to_head").split())
    out = ROOT / "benchmarks" / "out"
    shown = ("es-bytes", "mde-bytes", "mr-bytes", "magprune", "pep", "dnis", "dnis-alpha", "ciess", "ihas")
    hours, minutes = [], []
    for name in ("lightgcn20", "neumf", "deepfm"):
        records = [r for r in grid_records(*_grid(f"prune_{name}")) if r["method"] in shown]
        seconds = sum(r["search_seconds"] + r["retrain_seconds"] for r in records)
        hours.append(seconds / 3600)
        minutes.append(seconds / 60 / len({r["seed"] for r in records}))
    assert f"took {min(hours):.1f} to {max(hours):.1f} hours of one core each" in text
    assert f"({min(minutes):.0f} to {max(minutes):.0f} minutes per seed), about {sum(hours):.0f} hours in all" in text
    runs = json.loads((out / "stacked.json").read_text())["runs"]
    speed = {v: [r[v]["speedup"]["cpu"] for r in runs] for v in ("one_by_one_live", "stacked", "trimmed")}
    span = {v: f"{min(x):.2f}-{max(x):.2f}" for v, x in speed.items()}
    ks = [r["k"] for r in runs]
    assert f"{span['one_by_one_live']} times faster in CPU time for K = {min(ks)} to {max(ks)} models" in text
    assert f"one pass, {span['trimmed']} times faster than one by one with every column" in text
    assert f"(stacked without trimming: {span['stacked']})" in text
    assert all(r[v]["bit_identical"] for r in runs for v in speed)
    wtg = {c["backbone"]: c for c in json.loads((out / "where_time_goes.json").read_text())["cells"]}
    imports = json.loads((out / "where_time_goes.json").read_text())["imports"]["total"]
    light = wtg["lightgcn"]
    sparse = (light["stages"]["forward: propagation"] + light["stages"]["backward: sparse product"]) \
        / light["seconds_profiled"]
    dropout = next(o["share"] for o in wtg["neumf"]["ops_one_epoch"] if o["op"] == "aten::bernoulli_")
    assert f"imports cost {imports:.1f} s per process" in text
    assert f"LightGCN spends about {5 * round(20 * sparse):.0f} % of it in the sparse product" in text
    assert f"NeuMF {100 * dropout:.0f} % of its operator time drawing dropout masks" in text
    stacked = json.loads((out / "stackedgrid_lightgcn20_s0.json").read_text())["runs"]
    alone = json.loads((out / "stackedgrid_onebyone_lightgcn20_s0.json").read_text())["runs"]
    key = lambda r: (r["method"], r["sparsity"])   # noqa: E731
    grid, _ = _grid("prune_lightgcn20")
    stored = sum(r["seconds"]["train"] for r in grid if r["seed"] == 0 and key(r) in {key(x) for x in stacked})
    assert f"trains seed 0's {len(stacked)} ES / MDE / MR LightGCN cells in " \
           f"{stacked[0]['seconds']['stacked_pass_cpu'] / 60:.1f} minutes of CPU against " \
           f"{sum(r['seconds']['cpu'] for r in alone) / 60:.1f} one by one" in text
    assert f"the stored grid records {stored / 60:.0f} minutes for the same cells" in text
    assert [(key(r), r["recall@20"], r["best_epoch"]) for r in stacked] == \
        [(key(r), r["recall@20"], r["best_epoch"]) for r in alone]


def test_benchmarks_readme_quotes_where_the_time_goes():
    """The cost section's reading of benchmarks/out/where_time_goes.json: LightGCN's share in the sparse
    product (forward and backward) and NeuMF's in drawing dropout masks, as quoted."""
    text = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    cells = {c["backbone"]: c for c in json.loads((ROOT / "benchmarks" / "out" / "where_time_goes.json")
                                                  .read_text())["cells"]}
    light = cells["lightgcn"]
    sparse = (light["stages"]["forward: propagation"] + light["stages"]["backward: sparse product"]) \
        / light["seconds_profiled"]
    assert f"LightGCN spends about {5 * round(20 * sparse):.0f} % in the sparse product" in text
    dropout = next(o["share"] for o in cells["neumf"]["ops_one_epoch"] if o["op"] == "aten::bernoulli_")
    assert f"NeuMF spends {100 * dropout:.0f} % of its operator time drawing dropout masks" in text


def test_chapter_8_and_the_benchmarks_readme_quote_ciess_on_the_planted_data():
    """CIESS in the planted-truth grid (experiment prune_planted_lightgcn): its Spearman with the truth, AUKC and its
    90 % cell against ES, as Chapter 8.8 and benchmarks/README.md quote them."""
    import numpy as np
    from recsize.search.compare import aukc, paired_summary
    runs, _ = _grid("prune_planted_lightgcn")
    ciess = [r for r in runs if r["method"] == "ciess"]
    assert len(ciess) == 12 and {r["seed"] for r in ciess} == {0, 1, 2}
    users = np.nanmean([r["spearman"]["truth"]["user"] for r in ciess])   # NaN: one width for every row
    items = np.nanmean([r["spearman"]["truth"]["item"] for r in ciess])
    a = aukc(runs, "ciess")["ratio"]
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es-bytes", "recall@20", ("ciess", "es-bytes"))}
    at90 = rows["ciess", 0.9]
    assert at90["mean"] == max(r["mean"] for r in paired_summary(runs, "es-bytes", "recall@20") if r["sparsity"] == 0.9)
    d = at90["delta"]
    chapter = " ".join(_prose("ch08_head_to_head").split())
    assert (f"(mean Spearman with the truth {users:+.2f} over users and {items:+.2f} over items) and is level with ES "
            f"at every budget (AUKC {a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]; at 90 % its mean "
            f"{at90['mean']:.3f} is the best of the cell, {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}])") in chapter
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    assert f"(AUKC {a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]; its 90 % mean is the best of that cell" in readme
    assert round(users, 1) == -0.1 and round(items, 1) == 0
    plateau = sorted(r["best_epoch"] for r in ciess if r["sparsity"] == 0.95 and r["best_epoch"] < 10)
    assert f"(best epochs {plateau[1]} and {plateau[0]})" in readme


def test_the_planted_1m_probe_is_quoted_as_stored():
    """benchmarks/README.md and Chapter 8.8 quote experiment prune_planted1m (one seed, c = 90 %) as stored."""
    runs = {r["method"]: r for r in _grid("prune_planted1m")[0]}
    mag, es, mde = runs["magprune"], runs["es-bytes"], runs["mde-bytes"]
    rho = mag["spearman"]["truth"]
    assert all(abs(r["spearman"]["truth"][t]) < 0.1 for r in (es, mde) for t in ("user", "item"))
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    assert (f"(Spearman {rho['user']:+.2f} over users and {rho['item']:+.2f} over items; ES and MDE about 0) and is "
            f"level with ES at equal bytes ({mag['recall@20']:.4f} against {es['recall@20']:.4f}; MDE "
            f"{mde['recall@20']:.4f})") in readme
    assert f"the full-width training alone took {mag['seconds']['dense'] / 60:.0f} minutes of one core" in readme
    chapter = " ".join(_prose("ch08_head_to_head").split())
    assert (f"MagPrune's widths still follow the planted ones (Spearman {rho['user']:+.2f} over users, "
            f"{rho['item']:+.2f} over items) and it scores {mag['recall@20']:.4f} against ES's "
            f"{es['recall@20']:.4f} and MDE's {mde['recall@20']:.4f}") in chapter


def test_the_timed_verdict_seeds_are_quoted_as_stored():
    """benchmarks/README.md's reading of out/verdictrun_*.json: CPU minutes per seed, the LightGCN seed equal
    to the stored grid, the DeepFM differences as quoted."""
    out = ROOT / "benchmarks" / "out"
    runs = {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("verdictrun_*.json"))}
    cpu = [d["process"]["cpu_seconds"] / 60 for d in runs.values()]
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    assert f"costs about {round(sum(cpu) / len(cpu)):.0f} minutes of CPU when it has a core to itself" in readme
    assert all(abs(c - sum(cpu) / len(cpu)) < 1.5 for c in cpu)
    chapter = " ".join(_prose("ch08_head_to_head").split())
    hours = 9 * sum(cpu) / len(cpu) / 60
    assert f"grid costs about {round(sum(cpu) / len(cpu)):.0f} minutes of CPU (`benchmarks/README.md`), and the three " \
           f"grids' nine seeds would be about {hours / 2:.1f} hours on both cores" in chapter
    assert f"are about {hours:.1f} hours of CPU, about {hours / 2:.1f} hours on both cores" in readme
    key = lambda r: (r["method"], r["sparsity"], r["seed"])   # noqa: E731
    light = runs["verdictrun_lightgcn20_s0"]["runs"]
    stored = {key(r): r for r in _grid("prune_lightgcn20")[0]}
    assert all(stored[key(r)]["recall@20"] == r["recall@20"] for r in light if key(r) in stored)
    assert sorted({r["method"] for r in light if key(r) not in stored}) == ["dnis-alpha"]
    deep = {key(r): r for r in runs["verdictrun_deepfm_s0"]["runs"]}
    stored = {key(r): r for r in _grid("prune_deepfm")[0]}
    gaps = {k: abs(stored[k]["auc"] - r["auc"]) for k, r in deep.items()}
    assert all(g == 0 for k, g in gaps.items() if not k[0].startswith("dnis"))
    worst = max(gaps, key=gaps.get)
    assert f"its DNIS cells differ by up to {gaps[worst]:.4f} AUC ({100 * worst[1]:.0f} %: best epoch " \
           f"{deep[worst]['best_epoch']} against {stored[worst]['best_epoch']})" in readme


def test_the_capped_cells_quote_their_1000_epoch_reruns():
    """Every cell of the LightGCN patience-20 grid that ran to the 300-epoch cap was rerun with a cap of 1,000
    (experiment prune_cap1000_lightgcn): each stopped by patience below 1,000, and the CIESS one as quoted."""
    from recsize.experiments import load_grids
    grid, settings = _grid("prune_lightgcn20")
    capped = {(r["method"], r["sparsity"], r["seed"]) for r in grid if r["epochs"] >= settings[0]["epochs"]}
    rerun = load_grids(["prune_cap1000_lightgcn"])["prune_cap1000_lightgcn"]
    assert (rerun.experiment.epochs, rerun.experiment.patience) == (1000, 20)
    assert all((s["epochs"], s["patience"]) == (1000, 20) for s in rerun.settings)
    reruns = {(r["method"], r["sparsity"], r["seed"]): r for r in rerun.runs}
    assert capped and capped <= set(reruns)
    assert all(r["epochs"] < 1000 and r["epochs"] - r["best_epoch"] > 20 - 1 for r in reruns.values())
    ciess = reruns["ciess", 0.8, 0]
    before = next(r for r in grid if (r["method"], r["sparsity"], r["seed"]) == ("ciess", 0.8, 0))
    assert ciess["recall@20"] == before["recall@20"] and ciess["best_epoch"] == before["best_epoch"] == 289
    text = " ".join(_prose("ch06_ciess").split())
    assert (f"stops by patience at epoch {ciess['epochs']} with the same best epoch and the same "
            f"{ciess['recall@20']:.4f}") in text
    readme = " ".join((ROOT / "benchmarks" / "README.md").read_text().split())
    assert (f"CIESS {before['recall@20']:.4f} unchanged (best epoch {ciess['best_epoch']} again, stopped by patience "
            f"at {ciess['epochs']})") in readme


def _ciess_runs(out, pattern):
    """Rows and timings of benchmarks/ciess.py outputs matching ``pattern``."""
    runs, timings = [], []
    for f in sorted(out.glob(pattern)):
        data = json.loads(f.read_text())
        runs += data["runs"]
        timings += data["timings"]
    return runs, timings


def _ciess_against_es(name: str):
    """A stored experiment's cells (``evidence/NAME.jsonl``), CIESS's and ES's rows paired against ES, and their
    means at c = 50 / 80 / 90 / 95 % as quoted ("a / b / c / d")."""
    from recsize.search.compare import paired_summary
    runs, _ = _grid(name)
    rows = {(r["method"], r["sparsity"]): r for r in paired_summary(runs, "es-bytes", "recall@20", ("ciess", "es-bytes"))}
    quote = lambda m: " / ".join(f"{rows[m, c]['mean']:.3f}" for c in (0.5, 0.8, 0.9, 0.95))   # noqa: E731
    return runs, rows, quote("ciess"), quote("es-bytes")


def test_chapter_6_quotes_the_stored_search_experiments():
    """Chapter 6.8's numbers on where CIESS's search settles (issue 16, experiments 2 and 3) are the stored
    runs' (benchmarks/out/ciess_lam_paper*, ciess_official200, ciess_perentity_*, ciess_bisect_*), rounded as
    quoted: the mean density of each search's last episode, the bisection's trace, the per-entity means."""
    import numpy as np
    text = " ".join(_prose("ch06_ciess").split())
    out = ROOT / "benchmarks" / "out"

    def settled(pattern, label):
        _, timings = _ciess_runs(out, pattern)
        return {t["seed"]: float(np.mean(t["search_density"][-5:])) for t in timings if t["label"] == label}

    lams = ("0.05", "0.1", "0.2", "0.4")
    seed0 = [settled(f"ciess_lam_paper{lam}_s0.json", f"paper-lam{lam}")[0] for lam in lams]
    assert f"at {' / '.join(f'{v:.3f}' for v in seed0)} for $\\lambda$ = 0.05 / 0.1 / 0.2 / 0.4" in text
    code = settled("ciess_official200.json", "official-200")
    by = {lam: settled(f"ciess_lam_paper{lam}_s*.json", f"paper-lam{lam}") for lam in ("0.2", "0.4")}
    assert f"Seed 1 ends at {by['0.2'][1]:.3f} / {by['0.4'][1]:.3f} for" in text
    assert f"at {code[1]:.3f} with the code's reward; seed 2 at {by['0.2'][2]:.3f} / {by['0.4'][2]:.3f} and {code[2]:.3f}." in text
    _, timings = _ciess_runs(out, "ciess_lam_paper*_s0.json")
    firsts = {tuple(round(float(np.mean(t["search_density"][5 * e:5 * e + 5])), 3) for e in range(4)) for t in timings}
    assert {f[1:3] for f in firsts} == {(0.41, 0.292)} and {f[0] for f in firsts} <= {0.416, 0.417}
    assert {f[3] for f in firsts} <= {0.196, 0.197}                     # the same first four episodes
    for c in ("0.95", "0.9"):
        (row,) = _ciess_runs(out, f"ciess_bisect_s0_c{c}.json")[0]
        assert [round(t["lam"], 3) for t in row["trace"]] == [0.8, 3.2, 6.4] and not row["in_band"]
        assert [f"{t['settled_density']:.3f}" for t in row["trace"]] == ["0.114", "0.114", "0.319"]
    (row,) = _ciess_runs(out, "ciess_bisect_s1_c0.8.json")[0]
    trace = [(t["lam"], f"{t['settled_density']:.3f}") for t in row["trace"]]
    assert trace == [(0.8, "0.228"), (3.2, "0.067"), (1.6, "0.228")] and not row["in_band"]
    assert "it settled at 0.228 with $\\lambda$ = 0.8 and 1.6 and at 0.067 with 3.2" in text
    per = settled("ciess_perentity_s*.json", "official-200-per-entity")
    assert f"settles at {' / '.join(f'{per[s]:.3f}' for s in (0, 1, 2))} on seeds 0 / 1 / 2 (official: " \
           f"{' / '.join(f'{code[s]:.3f}' for s in (0, 1, 2))})" in text
    runs, _ = _ciess_runs(out, "ciess_perentity_s*.json")
    official, _ = _ciess_runs(out, "ciess_official200.json")
    mean = lambda rs, d: np.mean([r["recall@20"] for r in rs if r["density"] == d])   # noqa: E731
    assert f"scores {' / '.join(f'{mean(runs, d):.3f}' for d in (0.2, 0.1, 0.05))} Recall@20" in text
    assert f"exploration's {' / '.join(f'{mean(official, d):.3f}' for d in (0.2, 0.1, 0.05))}." in text
    found = [r for r in runs if not r["projected"]]
    assert len(found) == 1 and f"(coefficient of variation {found[0]['width_cv']['item']:.2f}," in text


def test_chapter_6_quotes_the_stored_allocation_training_and_grid_runs():
    """Chapter 6.8's experiment 1 (ciess_allocation.json), the 2,000-batch run (ciess_official2000_s0.json
    against ciess_official200.json) and the converged equal-bytes grid (experiment prune_lightgcn20: CIESS against
    ES, paired, AUKC, budgets met), rounded as quoted."""
    import numpy as np
    from recsize.search.compare import aukc
    text = " ".join(_prose("ch06_ciess").split())
    out = ROOT / "benchmarks" / "out"
    masks = {}
    for r in json.loads((out / "ciess_allocation.json").read_text())["runs"]:
        masks.setdefault((r["seed"], -r["density"]), {})[r["method"].split("/")[1]] = r
    for (seed, minus), got in sorted(masks.items()):
        found, equal = got["as-found"]["recall@20"], got["es-at-mask"]["recall@20"]
        quoted = f"{found - equal:+.3f} ({found:.3f} against {equal:.3f}; seed {seed}, {100 * (1 + minus):.0f} %)"
        assert quoted in text, quoted
        assert abs(got["scaled"]["recall@20"] - found) < 0.01
    long, _ = _ciess_runs(out, "ciess_official2000_s0.json")
    _, long_t = _ciess_runs(out, "ciess_official2000_s0.json")
    short, short_t = _ciess_runs(out, "ciess_official200.json")
    episodes = lambda t: " / ".join(f"{np.mean(t['search_density'][5 * e:5 * e + 5]):.3f}" for e in range(6))  # noqa: E731
    assert f"through {episodes(long_t[0])} per episode, against {episodes(short_t[0])} with 200" in text
    assert f"{long_t[0]['whole_seconds'] / 60:.1f} minutes against {short_t[0]['whole_seconds'] / 60:.1f}" in text
    cells = lambda rs: " / ".join(f"{r['recall@20']:.3f}" for r in sorted(rs, key=lambda r: -r["density"]))  # noqa: E731
    assert f"scores {cells(long)} Recall@20 at 80 / 90 / 95 % against {cells([r for r in short if r['seed'] == 0])}." in text
    runs, rows, ciess, es = _ciess_against_es("prune_lightgcn20")
    cs = (0.5, 0.8, 0.9, 0.95)
    assert f"CIESS scores {ciess} Recall@20 at $c$ = 50 / 80 / 90 / 95 % against ES's {es}" in text
    deltas = [rows["ciess", c]["delta"] for c in cs]
    assert all(d["n"] == 3 and d["low"] < 0 < d["high"] for d in deltas)
    quoted = [f"{d['mean']:+.3f}".replace("-0.000", "0.000").replace("+0.000", "0.000") for d in deltas]
    assert f"(paired differences {quoted[0]}, {quoted[1]}, {quoted[2]} and {quoted[3]}," in text
    a = aukc(runs, "ciess")["ratio"]
    assert f"AUKC {a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]" in text
    met = sum(not r["projected"] for r in runs if r["method"] == "ciess")
    assert f"Its search met {met} of the {sum(r['method'] == 'ciess' for r in runs)} budgets" in text
    capped = [r for r in runs if r["method"] == "ciess" and r["epochs"] >= 300]
    assert [(r["seed"], r["sparsity"]) for r in capped] == [(0, 0.8)] and "(seed 0, 80 %) ran to the 300-epoch cap" in text


def test_chapter_8_quotes_the_stored_ciess_and_ihas_grid_cells():
    """Chapter 8's "no search beats them" bullet: CIESS and iHAS in the converged grids (experiments
    prune_lightgcn20, prune_deepfm), paired against ES at equal bytes, rounded as quoted."""
    import numpy as np
    from recsize.search.compare import paired_summary
    text = " ".join(_prose("ch08_head_to_head").split())
    _, rows, ciess, es = _ciess_against_es("prune_lightgcn20")
    cs = (0.5, 0.8, 0.9, 0.95)
    assert f"equal bytes ({ciess} against {es} at 50 / 80 / 90 / 95 %, every interval spanning 0" in text
    assert all(rows["ciess", c]["delta"]["low"] < 0 < rows["ciess", c]["delta"]["high"] for c in cs)
    runs, _ = _grid("prune_deepfm")
    ihas = {r["sparsity"]: r for r in paired_summary(runs, "es-bytes", "auc", ("ihas",))}
    assert sorted(ihas) == [0.5, 0.8] and all(r["delta"]["high"] < 0 for r in ihas.values())
    assert f"it trails by {-ihas[0.5]['delta']['mean']:.3f} AUC at 50 % and {-ihas[0.8]['delta']['mean']:.3f} at 80 %" in text
    ratio = [np.mean([c["bytes"] / c["budget_bytes"] for c in ihas[c]["cells"].values()]) for c in (0.5, 0.8)]
    assert f"storing {ratio[0]:.1f} and {ratio[1]:.1f} times the bytes" in text


def test_chapter_6_quotes_the_stored_run_at_the_papers_protocol():
    """Chapter 6.8's bullet on the paper's protocol (d_max 128, 50/25/25) quotes ciess_paper_settings_s0.json."""
    text = " ".join(_prose("ch06_ciess").split())
    data = json.loads((ROOT / "benchmarks" / "out" / "ciess_paper_settings_s0.json").read_text())
    assert data["dim"] == 128 and data["protocol"] == "ciess-50-25-25"
    by = {(r["method"], r["density"]): r["recall@20"] for r in data["runs"]}
    q = lambda m: " / ".join(f"{by[m, d]:.3f}" for d in (0.2, 0.1, 0.05))   # noqa: E731
    assert f"CIESS scores {q('official-200-d128')} Recall@20 at 80 / 90 / 95 % against ES's {q('es')}, MDE's " \
           f"{q('mde')} and MR's {q('mr')}" in text
    gaps = [by["es", d] - by["official-200-d128", d] for d in (0.2, 0.1, 0.05)]
    assert f"behind equal widths by {min(gaps):.3f} to {max(gaps):.3f}" in text
    assert all(r["projected"] for r in data["runs"] if r["method"] == "official-200-d128")


def test_chapter_6_quotes_the_stored_neumf_grid_cells():
    """Chapter 6.8's NeuMF bullet: CIESS against ES at equal bytes in experiment prune_neumf (three seeds)."""
    from recsize.search.compare import aukc
    text = " ".join(_prose("ch06_ciess").split())
    runs, rows, ciess, es = _ciess_against_es("prune_neumf")
    cs = (0.5, 0.8, 0.9, 0.95)
    assert f"scores {ciess} Recall@20 at $c$ = 50 / 80 / 90 / 95 % against ES's {es}" in text
    deltas = [rows["ciess", c]["delta"] for c in cs]
    assert all(d["n"] == 3 and d["low"] < 0 < d["high"] and d["mean"] < 0 for d in deltas)
    assert f"(paired differences {deltas[0]['mean']:+.3f}, {deltas[1]['mean']:+.3f}, {deltas[2]['mean']:+.3f} and " \
           f"{deltas[3]['mean']:+.3f}, every interval spanning 0" in text
    a = aukc(runs, "ciess")["ratio"]
    assert f"AUKC {a['mean']:.3f} [{a['low']:.3f}, {a['high']:.3f}]" in text and f"and {a['mean']:.3f} on NeuMF" in text


def test_chapter_6_quotes_the_stored_paper_schedule_run():
    """Chapter 6.8's bullet on the paper's 30 x 10 iterations quotes ciess_paperschedule200_s0.json."""
    import numpy as np
    text = " ".join(_prose("ch06_ciess").split())
    out = ROOT / "benchmarks" / "out"
    data = json.loads((out / "ciess_paperschedule200_s0.json").read_text())
    assert (data["schedule"]["episodes"], data["schedule"]["iterations"], data["schedule"]["top_l"]) == (30, 10, 3)
    (t,) = data["timings"]
    episodes = [float(np.mean(t["search_density"][10 * e:10 * e + 10])) for e in range(30)]
    assert f"{t['whole_seconds'] / 60:.1f} minutes) drop from {episodes[0]:.3f} in the first" in text
    assert f"between {min(episodes[1:]):.2f} and {max(episodes[1:]):.2f} and hover there" in text
    assert f"ending at {episodes[-1]:.3f}" in text
    rows = sorted(data["runs"], key=lambda r: -r["density"])
    assert [r["projected"] for r in rows] == [False, True, True] and "met the 80 % band only" in text
    recall = " / ".join(f"{r['recall@20']:.3f}" for r in rows)
    assert f"scores {recall} Recall@20 at 80 / 90 / 95 %" in text
    es = {r["density"]: r["recall@20"] for r in json.loads((out / "ciess.json").read_text())["runs"]
          if (r["backbone"], r["method"], r["seed"]) == ("lightgcn", "es", 0)}
    assert f"against ES's {' / '.join(f'{es[d]:.3f}' for d in (0.2, 0.1, 0.05))} (retraining" in text


def _magprune_cells(name: str) -> tuple[dict, str]:
    """Mean test metric per (method, sparsity) and the per-seed cells of experiment prune_NAME (Chapter 4.8)."""
    from recsize.search.compare import grid_metric, paired_summary
    runs, settings = _grid(f"prune_{name}")
    metric = grid_metric(settings)
    rows = paired_summary(runs, "es-bytes", metric)
    return {(r["method"], r["sparsity"]): r for r in rows}, metric


def test_chapter_4_magprune_tois_claims_hold_on_the_stored_grids():
    """Chapter 4.8's reading of the two MagPrunes: the benchmark's (magprune-tois, no fine-tuning) is behind
    recsize's fine-tuned one on LightGCN and DeepFM from 80 % on, ahead on NeuMF at 90 and 95 % and behind
    ES there; on LightGCN the bytes leave a floor of at most 3 at 90 % (where the search stops at 0) and
    none at 95 %; equal parameters keep more entries and score higher than equal bytes."""
    text = " ".join(_prose("ch04_variable_size").split())
    grids = {name: _magprune_cells(name)[0] for name in ("lightgcn20", "neumf", "deepfm")}
    for name in ("lightgcn20", "deepfm"):
        for c in (0.8, 0.9, 0.95):
            assert grids[name]["magprune-tois", c]["mean"] < grids[name]["magprune", c]["mean"], (name, c)
    neumf = grids["neumf"]
    for c in (0.9, 0.95):
        assert neumf["magprune", c]["mean"] < neumf["magprune-tois", c]["mean"] < neumf["es-bytes", c]["mean"]
        assert neumf["magprune-tois", c]["delta"]["high"] < 0                     # "far behind ES"
    lgcn = grids["lightgcn20"]
    assert {r["max_min_item"] for r in lgcn["magprune-tois", 0.9]["cells"].values()} == {3}
    assert {r["max_min_item"] for r in lgcn["magprune-tois", 0.95]["cells"].values()} == {0}
    for r in lgcn["magprune-tois", 0.9]["cells"].values():
        tried = r["min_item_values"]
        assert r["min_item"] == 0 and tried["0"] > tried["1"] and set(tried) == {"0", "1"}
    assert "a floor of at most 3 entries per row at 90 % and none at 95 %" in text
    for grid in grids.values():
        for c in (0.5, 0.8, 0.9, 0.95):
            assert grid["magprune-tois-params", c]["mean"] > grid["magprune-tois", c]["mean"]
            params = list(grid["magprune-tois-params", c]["cells"].values())
            assert all(p["kept"] > b["kept"] and p["bytes"] > b["bytes"]
                       for p, b in zip(params, grid["magprune-tois", c]["cells"].values()))
            if ("magprune-params", c) in grid:
                assert all(p["kept"] > b["kept"] for p, b in zip(grid["magprune-params", c]["cells"].values(),
                                                                 grid["magprune", c]["cells"].values()))
                assert grid["magprune-params", c]["mean"] > grid["magprune", c]["mean"], c


def test_chapter_8_magprune_accounting_claims_hold_on_the_stored_grids():
    """Chapter 8.7's MagPrune sentences: magprune-tois behind ES at equal bytes (interval below 0) at every
    budget of the three grids, ahead of recsize's MagPrune on NeuMF at 90 and 95 % and below it everywhere
    else, below ES in mean even at equal parameters; the
    quoted ranges of entries and bytes at equal parameters over ES's at equal bytes."""
    text = " ".join(_prose("ch08_head_to_head").split())
    kept, size = [], []
    for name in ("lightgcn20", "neumf", "deepfm"):
        grid, _ = _magprune_cells(name)
        for c in (0.5, 0.8, 0.9, 0.95):
            tois = grid["magprune-tois", c]
            assert tois["delta"]["high"] < 0, (name, c)
            if name != "neumf" or c < 0.9:
                assert tois["mean"] < grid["magprune", c]["mean"], (name, c)
            assert grid["magprune-tois-params", c]["delta"]["mean"] < 0, (name, c)
            es = grid["es-bytes", c]["cells"]
            for method in ("magprune-params", "magprune-tois-params"):
                for seed, r in grid.get((method, c), {"cells": {}})["cells"].items():
                    kept.append(r["kept"] / es[seed]["kept"])
                    size.append(r["bytes"] / es[seed]["bytes"])
        if name == "neumf":
            assert all(grid["magprune-tois", c]["mean"] > grid["magprune", c]["mean"] for c in (0.9, 0.95))
    # recsize's MagPrune at equal parameters: ahead of ES (interval above 0) on LightGCN at 90 and 95 %,
    # level (interval spans 0) at 50 and 80 % and on DeepFM, behind in mean on NeuMF from 80 % on
    lgcn, deepfm, neumf = (_magprune_cells(n)[0] for n in ("lightgcn20", "deepfm", "neumf"))
    assert all(lgcn["magprune-params", c]["delta"]["low"] > 0 for c in (0.9, 0.95))
    level = [lgcn["magprune-params", c]["delta"] for c in (0.5, 0.8)] + \
        [deepfm["magprune-params", c]["delta"] for c in (0.5, 0.8, 0.9, 0.95)]
    assert all(d["low"] <= 0 <= d["high"] for d in level)
    assert all(neumf["magprune-params", c]["delta"]["mean"] < -0.05 for c in (0.8, 0.9, 0.95))
    assert f"keep {min(kept):.2f} to {max(kept):.2f} times the entries ES keeps at equal bytes" in text
    assert f"store {min(size):.2f} to {max(size):.2f} times its bytes" in text


def test_the_readme_headline_on_quantised_tables_quotes_the_store():
    """The README's two sentences on the quantised and hashed families (issue 31) quote evidence/*.jsonl."""
    from recsize.experiments import load_grids
    from recsize.search.compare import paired_summary
    readme = (ROOT / "README.md").read_text()
    text = " ".join(readme.split())
    chapter = (ROOT / "notebooks" / "ch08_head_to_head.py").read_text()
    chapter = " ".join(line.lstrip("# ") for line in chapter.splitlines())
    chapter = " ".join(chapter.split())
    grids = load_grids(["prune_lightgcn20", "prune_neumf", "prune_deepfm"])

    def delta(name, method, c):
        g = grids[name]
        row = next(r for r in paired_summary(g.runs, "es-bytes", g.metric, ("es-bytes", method))
                   if (r["method"], r["sparsity"]) == (method, c))
        return row["delta"]

    for name, shown in (("prune_lightgcn20", "+0.015 Recall@20 [+0.003, +0.026]"),
                        ("prune_neumf", "+0.011 [+0.002, +0.021]")):
        d = delta(name, "int4", 0.8)
        assert d["n"] == 3 and shown.startswith(f"{d['mean']:+.3f}") and f"[{d['low']:+.3f}, {d['high']:+.3f}]" in shown
        assert shown in text and shown in chapter     # Chapter 8.7 says the same
    for method in ("int8", "int4", "qat-int4"):
        for c in (0.5, 0.8):
            if method == "int8" and c == 0.8:
                continue                      # below int8's floor
            assert abs(delta("prune_deepfm", method, c)["mean"]) <= 0.002
    for name, method, shown in (("prune_deepfm", "qr", "QR -0.005"), ("prune_deepfm", "hash", "plain hashing -0.012"),
                                ("prune_neumf", "qr", "QR -0.167"), ("prune_neumf", "hash", "plain hashing -0.276")):
        d = delta(name, method, 0.8)
        assert d["n"] == 1 and shown.endswith(f"{d['mean']:+.3f}") and shown in text


def test_chapter_4_quotes_the_stored_storage_benchmark_and_its_run():
    """Chapter 4.7's speed ranges at 10 % density are the stored benchmark's (benchmarks/out/embedding.txt),
    and 4.8's byte comparison is what the published run printed."""
    import nbformat
    text = " ".join(" ".join(line.lstrip("# ") for line in
                             (ROOT / "notebooks" / "ch04_variable_size.py").read_text().splitlines()).split())
    stored = (ROOT / "benchmarks" / "out" / "embedding.txt").read_text().splitlines()

    def span(prefix):
        line = next(x for x in stored if x.startswith(prefix))
        values = [float(v.rstrip("x")) for v in line.split(":", 1)[1].replace(",", " ").split()]
        return f"{min(values):.2f} to {max(values):.2f}"

    assert f"({span('compact (PyTorch path) / best dense baseline at 10 % density, fwd:')} times at 10 % density)" in text
    assert f"runs at {span('compact / best dense baseline at 10 % density, fwd:')} times the best dense speed" in text
    assert f"runs at {span('compact / best dense baseline at 10 % density, fwd+bwd:')} times the best dense" in text
    run = nbformat.read(ROOT / "book" / "published" / "ch04_variable_size.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in run.cells if c.cell_type == "code" for o in c.get("outputs", []))
    line = next(x for x in printed.splitlines() if x.startswith("c= 80% MagPrune"))
    csr, compact = (float(x.split(" KiB")[0].split("(")[-1]) for x in line.split("|"))
    assert f"below: {csr:.0f} against {compact:.0f} KiB at $c$ = 80 %" in text

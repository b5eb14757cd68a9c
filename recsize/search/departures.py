"""Where recsize follows each method's paper and its authors' code, and where it departs: one list per
method, the single source of the departures tables of Chapters 4 (PEP, MagPrune, MagPrune as the TOIS'25
benchmark runs it), 5 (DNIS), 6 (CIESS)
and 7 (iHAS). The module docstrings of :mod:`.dnis`, :mod:`.prune`, :mod:`.ciess` and :mod:`.ihas`
explain the methods and point here instead of repeating the list.

Every row is one design point: what the paper says, what the authors' code does (with the file it was
read in, or ``None`` where the authors published no code), recsize's default, and the verdict. The
verdict is ``"as the authors"`` only where recsize's default does exactly what the named file does;
everything else is ``"ours"``, and the ``why`` says what differs and why. The code was read in
``SJTU-DMTai/AutoSrh`` (DNIS), ``ssui-liu/learnable-embed-sizes-for-RecSys`` (PEP),
``yorkequ98/CIESS`` (CIESS), ``chenxing1999/recsys-benchmark`` (the TOIS'25 benchmark's MagPrune and
PEP) and ``Hsword/Hetu`` (``tools/EmbeddingMemoryCompression``, the VLDB'24 benchmark's DNIS); iHAS has
no public code. A test checks that every method has a list, that every row is complete, and that the
chapters render their tables from here.
"""
from __future__ import annotations

from dataclasses import dataclass

AS_THE_AUTHORS = "as the authors"
OURS = "ours"
VERDICTS = (AS_THE_AUTHORS, OURS)
NO_PUBLIC_CODE = "no public code"


@dataclass(frozen=True)
class Departure:
    """One design point of a method: the paper's text, the authors' code and the ``file`` it was read
    in (``None``: no public code), recsize's default, the verdict (``"as the authors"`` or ``"ours"``)
    and why. Explained in Chapters 4-7."""

    point: str
    paper: str
    code: str
    file: str | None
    recsize: str
    verdict: str
    why: str = ""

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.verdict == AS_THE_AUTHORS and not self.file:
            raise ValueError(f"{self.point!r}: 'as the authors' must name the authors' file")
        if self.verdict == OURS and not self.why:
            raise ValueError(f"{self.point!r}: a departure must say why")
        if self.file is None and self.code != NO_PUBLIC_CODE:
            raise ValueError(f"{self.point!r}: without a file, the code cell must say {NO_PUBLIC_CODE!r}")


D = Departure
A, O = AS_THE_AUTHORS, OURS

# ---------------------------------------------------------------------------------------------------
# DNIS (Chapter 5): SJTU-DMTai/AutoSrh, files under AutoSrh-main/AutoSrh/
# ---------------------------------------------------------------------------------------------------
DNIS = [
    D("frequency blocks", "K blocks by frequency",
      "users and items ranked JOINTLY (one table), 10 blocks of 10 %", "data/dataset.py",
      "ranked per table, 10 of 10 % each; `block_ranking=\"joint\"` ranks jointly", O,
      "joint is level (LightGCN, 3 seeds: Recall@20 -0.0009 / +0.0010 / +0.0012 / +0.0016 at "
      "c = 50-95 %, every interval spans 0); the stored grids' `dnis` cells are per table"),
    D("alpha", "one per (block, dim), in [0, 1], init 1",
      "one K x d matrix shared by users and items of a block; clamp after each step",
      "model/nas.py, main_nas.py", "one per table (joint: shared); init 1, clamped", O,
      "follows from the blocks: one alpha per table's block unless `block_ranking=\"joint\"`"),
    D("alpha step", "SGD, lr 0.01", "SGD, `--lr_a 0.01` (default 1e-3)", "DNIS-CF.sh",
      "SGD, lr 0.01", A),
    D("L1 on alpha", "lambda sum|alpha|", "`--l1 1e-5`", "main_nas.py", "1e-5", A),
    D("gradient norm", "per block", "grad / mean|grad| per block", "main_nas.py", "per block", A),
    D("hypergradient", "1st or 2nd order", "1st (2nd: unrolls its Adam step, normalises 1st part)",
      "main_nas.py", "1st (2nd: one SGD step, whole hypergradient normalised)", A,
      "first order as the authors; `second_order=True` is ours"),
    D("alternation", "batch by batch", "zip(train, valid): one alpha step per pair", "main_nas.py",
      "`alternation=\"zip\"`", A),
    D("embedding lr", "not stated", "Adam, `--lr_w 0.001`", "DNIS-CF.sh",
      "the backbone's (LightGCN 1e-2, NeuMF 2e-3, DeepFM 1e-3)", O,
      "every method trains the backbone as Chapter 3 tuned it; `train_overrides={'lr': 1e-3}`"),
    D("epochs", "not stated", "warm start 20, search 50 (`--num_epochs`)", "DNIS-CF.sh, main_nas.py",
      "cap 300 each, early stopping (patience 10)", O,
      "ml-100k's epochs are 20-40 batches: LightGCN's warm start needs ~100 (96-122 in the grid)"),
    D("lr schedule", "not stated", "plateau x0.1, patience 0 (warm) / 1 (search)", "main_nas.py",
      "x0.1, patience 5", O,
      "patience 0 decayed LightGCN's warm start at its first noisy dip (stopped at epoch 9)"),
    D("lr stop", "not stated", "lr <= 1e-6 in both (the message says 1e-5)", "main_nas.py",
      "1e-6 warm start, 1e-5 search (`search_min_lr`)", O,
      "1e-5 was read from the code's message; it binds (LightGCN grid: searches of 20-27 epochs, "
      "patience 20), so 1e-6 would change every stored DNIS cell"),
    D("best state", "not stated", "best validation loss", "main_nas.py", "best validation NDCG@20 / AUC",
      O, "the book ranks models by NDCG@20 / AUC everywhere"),
    D("pruning score", "magnitude", "|E|, alpha product commented out (Hetu: |alpha E|)",
      "pruning_Avazu.ipynb", "|E| (`prune_by=\"alpha-weight\"`: Hetu's)", A),
    D("budget split", "one joint table", "one threshold over the joint table", "pruning_Avazu.ipynb",
      "one threshold over all tables (`budget_split=\"global\"`)", A),
    D("after pruning", "not stated", "evaluated as pruned, no training (optional 2 epochs before)",
      "pruning_Avazu.ipynb", "fine-tuned with the mask fixed (cap 300, patience 10)", O,
      "ours, as MagPrune: the same in-place pruning, so the two differ only by alpha"),
    D("storage", "not stated", "dense table times alpha; saves no memory", "model/nas.py",
      "CSR, 1-byte columns, index counted in the budget", O, "memory really shrinks (Chapter 4.8)"),
]

# ---------------------------------------------------------------------------------------------------
# PEP (Chapter 4.8): ssui-liu/learnable-embed-sizes-for-RecSys
# ---------------------------------------------------------------------------------------------------
PEP = [
    D("soft threshold", "sign(v) relu(|v| - g(s))", "the same, g = sigmoid, gk = 1",
      "models/pep_embedding.py", "the same (`PEPEmbedding`)", A),
    D("threshold", "learnable, several granularities", "`feature_dim`, init -15", "train_ml-1m.py",
      "`feature_dim`, s0 = -15, scale 1", A),
    D("table init", "not stated", "xavier_uniform over the whole table", "models/pep_embedding.py",
      "the backbone's (LightGCN N(0, 0.1); NeuMF, DeepFM xavier_normal)", O,
      "every method starts from the backbone's table; `table_init=\"xavier_uniform\"` is the authors'"),
    D("weight decay", "not stated", "Adam, L2 1e-5 on every parameter", "train_ml-1m.py",
      "1e-5 on the thresholds only", O,
      "the rest of the model trains as the backbone does for every method"),
    D("training length", "not stated", "~580 steps an epoch on ML-1M (batch 1,024), early stop 40",
      "train_ml-1m.py", "cap 300 epochs: 20 (LightGCN) to 40 (DeepFM) steps an epoch", O,
      "capped by epochs, ~10x fewer steps: NeuMF's, DeepFM's thresholds ran out of steps"),
    D("CTR features", "ML-1M fields", "no user or item ID fields (`data.iloc[:, 3:]`)",
      "data_loader/movielens.py", "ml-100k-ctr with user and item ID fields", O,
      "IDs are what the other chapters size"),
    D("mask snapshot", "when the count reaches the target", "count checked every step (`log_interval=1`), kept as is",
      "train_ml-1m.py", "every step, cut to the exact count", O,
      "every method meets the budget exactly"),
    D("budget not reached", "not discussed", "no mask saved", "train_ml-1m.py",
      "last state cut by magnitude, `reached = False`", O,
      "at s0 = -15 on ml-100k no budget is reached (Chapter 4.8)"),
    D("retraining", "lottery ticket: initial weights x mask", "reloads the saved initial table",
      "models/pep_embedding.py", "rewinds every weight; early stopping on validation", O,
      "the code stops on the test AUC"),
    D("tuned thresholds", "not discussed", "TOIS'25: Optuna per dataset: s0 -20 / -30, decay 0.1, L2",
      "configs/gowalla/pep_find_mask08.yaml", "s0 = -15, decay 1e-5, no search", O,
      "the authors' defaults; the TOIS values are tuned per dataset (Chapter 4.8)"),
    D("storage", "not stated", "dense table times a mask", "models/pep_embedding.py",
      "CSR, 1-byte columns, index counted", O, "memory really shrinks"),
]

# ---------------------------------------------------------------------------------------------------
# MagPrune (Chapter 4.8): recsize's own recipe (`magprune`) against the TOIS'25 benchmark's code,
# chenxing1999/recsys-benchmark (files under scripts/ and src/); the benchmark's procedure itself is
# `magprune-tois` (MAGPRUNE_TOIS below)
# ---------------------------------------------------------------------------------------------------
MAGPRUNE = [
    D("threshold", "magnitude, per table", "each table pruned separately", "src/utils.py",
      "one threshold over all tables (`prune_split=\"global\"`)", O,
      "recsize's own, the classic recipe; `magprune-table` is the per-table ablation, `magprune-tois` the "
      "benchmark's procedure"),
    D("protected entries", "not stated", "each row's top `min_item` kept (searched on validation)",
      "scripts/lightgcn/run_mag_prune.py", "none: a row may keep 0 entries", O,
      "one budget, no second search; `magprune-tois` keeps the floor"),
    D("after pruning", "not stated", "evaluated as pruned, no fine-tuning", "scripts/lightgcn/run_mag_prune.py",
      "fine-tuned with the mask fixed (cap 300, early stopping)", O,
      "the classic recipe; settings the backbone's; `magprune-tois` does not fine-tune"),
    D("budget", "50 / 80 / 95 % compression of the parameters", "p of each table's entries pruned, index not counted",
      "src/utils.py", "1 - c of the dense bytes, CSR index included; `magprune-params`: 1 - c of the entries",
      O, "a deployment pays bytes; both accountings are in the grids (Chapters 4.8, 8.7)"),
]

# ---------------------------------------------------------------------------------------------------
# MagPrune as the TOIS'25 benchmark runs it (`magprune-tois`, Chapter 4.8): recsize.search.magprune_tois
# ---------------------------------------------------------------------------------------------------
MAGPRUNE_TOIS = [
    D("threshold", "magnitude, per table", "each table on its own: the int(p * entries) smallest |E| pruned",
      "src/utils.py", "per table (`tois_budget`, `floor_masks`)", A),
    D("protected entries", "not stated", "each row's top `min_item` |E| set to +inf before the sort",
      "src/utils.py", "the same (`floor_masks`)", A),
    D("min_item search", "not stated",
      "binary search over 0 .. int(d (1 - p)) on validation NDCG, towards a rising neighbour; 0 if it runs out",
      "scripts/lightgcn/run_mag_prune.py", "`search=\"binary\"` (`search_min_item`); `\"all\"`: every value",
      A),
    D("after pruning", "not stated", "evaluated as pruned, no fine-tuning", "scripts/lightgcn/run_mag_prune.py",
      "the same", A),
    D("budget", "50 / 80 / 95 % compression of the parameters", "p of each table's entries pruned, index not counted",
      "src/utils.py", "1 - c of every table's bytes, CSR index included (`accounting=\"bytes\"`); "
      "`\"params\"`: the code's count", O,
      "the grids compare every method at equal bytes; min_item's bound becomes the kept entries per row"),
    D("min_item bound", "not stated", "int(hidden_size * (1 - p)), hidden_size hard-coded (NeuMF: 32)",
      "scripts/cf_train/run_mag_prune.py", "the model's d_max (or the kept entries per row, in bytes)", O,
      "the hard-coded width is not the model's at d_max = 64"),
    D("CTR models", "not stated", "`min_item` given by hand (`--num_min_item`), no search",
      "scripts/deepfm/run_l2_benchmark.py", "searched on validation AUC, the trainer's metric", O,
      "one procedure for every backbone"),
    D("ties", "not stated", "`topk` / `argsort`: order unspecified", "src/utils.py",
      "stable: the earlier column in a row, then the earlier row", O, "same seed, same numbers"),
]

# ---------------------------------------------------------------------------------------------------
# CIESS (Chapter 6): yorkequ98/CIESS
# ---------------------------------------------------------------------------------------------------
CIESS = [
    D("exploration", "actor + N(0, 6), then the random walk",
      "one N(0, 6) scalar per iteration for all, after the critic's pick", "CIESS.py",
      "`exploration=\"official\"`", A),
    D("noise at d_max != 128", "sigma 6, t 5 at d_max 128", "the same", "Graph.py, Configurations.py",
      "`rescale=True`: sigma, t, target noise x d_max / 128", O, "the book's d_max is 64"),
    D("training per iteration", "a fresh model, a few epochs",
      "2,000 batches of 10,000 (LightGCN), lr 0.03 x0.9 / 200", "RecSysEnv.py", "`training=\"official\"`",
      A),
    D("reward", "q - 0.4 (d / d_max)^2 (ML-1M)", "raw eval - 0.01 ((d - 1) / 128)^2",
      "RecSysEnv.py, main", "`reward=\"code\"`", A, "paper and code disagree; the code made the masks"),
    D("state", "(frequency, width, quality)", "each in [-1, 1]; quality 0 at an episode's start",
      "RecSysEnv.py, Buffer.py", "`state=\"official\"`", A),
    D("TD3 pace", "not stated", "1 step of 4,096 an iteration, critic lr 3e-3, clip 0.01", "Buffer.py",
      "`pace=\"official\"`", A),
    D("selection", "top-l by mean q under the budget", "top-3 by raw user quality, per density band",
      "main", "`selection=\"official\"`", A),
    D("episodes x iterations", "30 x 10", "30 x 11", "Configurations.py", "30 x 10", O,
      "the paper, where the two disagree by one iteration"),
    D("reference model", "full width, trained once", "rounds of 3,000 batches, patience 2", "CIESS.py",
      "recsize's trainer, early stopping on NDCG@20", O, "it only sets the denominators of q"),
    D("LightGCN init", "not stated", "N(0, 0.01)", "base_models/LightGCN.py", "N(0, 0.1)", O,
      "the backbone as Chapter 3 tuned it on ml-100k"),
    D("LightGCN L2", "not stated", "1e-4 sum ||e||^2 / B", "base_models/LightGCN.py",
      "1e-3 sum ||e||^2 / 2B", O, "the backbone as Chapter 3 tuned it (5x the authors')"),
    D("NeuMF loss", "BPR", "BPR (`create_bpr_loss`), L2 1e-2, xavier_uniform", "base_models/NCF.py",
      "BCE on one positive and one negative, no L2", O, "NeuMF as Chapter 3 trains it"),
    D("NeuMF tables", "not discussed", "only the MLP tables masked", "base_models/NCF.py",
      "GMF and MLP tables share a side's widths", O, "every table's bytes shrink"),
    D("retraining", "selected masks from scratch", "merges validation into training",
      "dataset_util/ImplicitCF.py", "training split only, best on validation", O,
      "validation picks the model (the code's retrain is missing)"),
    D("budget nobody met", "not discussed", "not handled", "main",
      "thinnest mask scaled down, flagged `projected`", O, "fills a gap, said in every table"),
    D("no validation positives", "not discussed", "eval 0", "RecSysEnv.py", "raw eval 0; q = 1", O,
      "nothing measurable to lose"),
    D("storage", "not discussed", "dense table times a 0/1 mask", "base_models/LightGCN.py",
      "compact tables, bytes measured", O, "memory really shrinks"),
]

# ---------------------------------------------------------------------------------------------------
# iHAS (Chapter 7): no public code
# ---------------------------------------------------------------------------------------------------
_IHAS_OURS = "the paper does not say"
IHAS = [
    D("gate unit", "Bernoulli gates on field embeddings", NO_PUBLIC_CODE, None,
      "one gate per (instance, field, dimension block)", O, _IHAS_OURS),
    D("gate network", "instance-dependent", NO_PUBLIC_CODE, None,
      "MLP over the detached first `route_dim` dims", O, _IHAS_OURS),
    D("stochastic gates", "stochastic selection", NO_PUBLIC_CODE, None, "straight-through Bernoulli", O,
      "the relaxed clip(mu + sigma eps) failed (7.2)"),
    D("sparsity", "a sparsity regulariser", NO_PUBLIC_CODE, None,
      "constraint, dual-ascent multiplier", O, "a fixed weight lost to polarisation"),
    D("polarisation", "bi-polarising regulariser", NO_PUBLIC_CODE, None,
      "mean mu (1 - mu), ramped weight", O, _IHAS_OURS),
    D("deterministic mode", "a deterministic mode", NO_PUBLIC_CODE, None,
      "threshold tau calibrated to the budget", O, "else every instance gets one pattern"),
    D("cluster widths", "from the cluster's gates", NO_PUBLIC_CODE, None,
      "mean open widths, scaled to the budget", O, "hits the budget exactly"),
    D("routing cost", "not stated", NO_PUBLIC_CODE, None,
      "router, centroids, extra tables charged", O, "everything stored is charged (`charge`)"),
    D("unseen rows", "not stated", NO_PUBLIC_CODE, None, "width 0 in a cluster that never saw them", O,
      "an unseen row stays at its initialisation anyway"),
    D("cluster models", "one per cluster, retrained", NO_PUBLIC_CODE, None,
      "from scratch on own samples (`cluster_init`)", O, _IHAS_OURS),
    D("layout", "one model per cluster", NO_PUBLIC_CODE, None,
      "per cluster (`layout=\"shared\"`: one table, the ablation)", O, _IHAS_OURS),
]

del D, A, O

DEPARTURES: dict[str, list[Departure]] = {
    "dnis": DNIS, "pep": PEP, "magprune": MAGPRUNE, "magprune-tois": MAGPRUNE_TOIS, "ciess": CIESS, "ihas": IHAS,
}


def departures(method: str) -> list[Departure]:
    """The design points of ``method`` (dnis, pep, magprune, magprune-tois, ciess, ihas), each with the paper, the
    authors' code, recsize's default and the verdict. Explained in Chapters 4-7."""
    key = str(method).lower()
    if key not in DEPARTURES:
        raise ValueError(f"unknown method {method!r}: choose one of {', '.join(DEPARTURES)}")
    return DEPARTURES[key]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def departures_table(method: str) -> str:
    """``method``'s design points as a Markdown table (point, paper, authors' code with its file,
    recsize's default, departs?), the table Chapters 4-7 render. Explained in Chapters 4-7."""
    lines = ["| design point | paper | authors' code | recsize default | departs? why |",
             "|---|---|---|---|---|"]
    for row in departures(method):
        code = row.code if row.file is None else f"{row.code} (`{row.file}`)"
        verdict = ("no: as the authors" if row.verdict == AS_THE_AUTHORS else "yes: ours")
        if row.why:
            verdict += f"; {row.why}"
        lines.append("| " + " | ".join(_cell(c) for c in (row.point, row.paper, code, row.recsize,
                                                             verdict)) + " |")
    return "\n".join(lines) + "\n"

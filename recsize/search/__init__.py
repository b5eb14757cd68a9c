"""Embedding-size search: budget-matched baselines (Chapter 4) and the search methods (DNIS: Chapter 5;
CIESS: Chapter 6; iHAS: Chapter 7), and all of them head to head (Chapter 8).

Every method produces one integer width per embedding row under a budget (see :mod:`recsize.budget`)
and trains with the variable-size tables of :mod:`recsize.embedding`. The element-wise pruning methods
MagPrune and PEP (Chapter 4, :mod:`recsize.search.prune` and :mod:`recsize.search.pep`; MagPrune as the TOIS'25
benchmark runs it: :mod:`recsize.search.magprune_tois`) keep a set of entries per row instead, under a
budget in bytes, and store it in CSR form.
"""
from .baselines import (METHODS, BaselineRun, baseline_sizes, es_sizes, fit_to_total, mde_sizes, mr_sizes,
                        role_counts, round_to_total, run_baseline, run_baselines_stacked)
from .ciess import CIESS, CIESSConfig, CIESSResult, run_ciess
from .compare import (HeadToHeadConfig, head_to_head, pareto_front, pareto_plot, search_costs,
                      summary_table)
from .dnis import DNISConfig, DNISRun, DNISSearch, run_dnis
from .ihas import IHASConfig, IHASRun, run_ihas
from .magprune_tois import floor_masks, params_budget, run_magprune_tois, search_min_item, tois_budget
from .pep import (PEP_GRANULARITIES, BudgetSnapshots, PEPConfig, PEPEmbedding, PEPSearch, Snapshot, pep_factory,
                  pep_search, run_pep, ticket_model)
from .prune import (PRUNE_METHODS, PRUNE_SPLITS, PruneRun, element_budget, element_factory, element_memory_report,
                    index_floor, magnitude_masks, masked_model, run_magprune, shared_dimensions, table_shapes,
                    top_entries, train_dense)

__all__ = ["METHODS", "BaselineRun", "baseline_sizes", "es_sizes", "fit_to_total", "mde_sizes", "mr_sizes",
           "role_counts", "round_to_total", "run_baseline", "run_baselines_stacked", "CIESS", "CIESSConfig", "CIESSResult", "run_ciess",
           "DNISConfig", "DNISRun", "DNISSearch", "run_dnis",
           "IHASConfig", "IHASRun", "run_ihas",
           "floor_masks", "params_budget", "run_magprune_tois", "search_min_item", "tois_budget",
           "PEP_GRANULARITIES", "PRUNE_METHODS", "PRUNE_SPLITS", "BudgetSnapshots", "PEPConfig", "PEPEmbedding",
           "PEPSearch", "PruneRun", "Snapshot", "element_budget", "element_factory", "element_memory_report",
           "index_floor", "magnitude_masks", "masked_model", "pep_factory", "pep_search", "run_magprune", "run_pep",
           "shared_dimensions", "table_shapes", "ticket_model", "top_entries", "train_dense",
           "HeadToHeadConfig", "head_to_head", "pareto_front", "pareto_plot", "search_costs", "summary_table"]

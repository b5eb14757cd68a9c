"""How the commands of ``recsize`` show their work: progress (bars, log lines or nothing) and the small
metrics tables they print, and the trainer settings their flags give. Explained in Chapter 3 (the command
line)."""
from __future__ import annotations

import sys


def _progress(args):
    """How a command shows progress: bars on a terminal, plain lines every 30 s when stderr is a log or a
    pipe (a long run is never silent), nothing with --quiet (:func:`recsize.train.progress_bar`)."""
    return False if args.quiet else (None if sys.stderr.isatty() else "log")


def metrics_table(rows: dict[str, dict], keys=None) -> str:
    """A small fixed-width table: one line per row name, one column per metric."""
    keys = keys or sorted({k for r in rows.values() for k in r if isinstance(r[k], float)})
    head = f"{'':10s}" + "".join(f"{k:>12s}" for k in keys)
    lines = [head]
    for name, r in rows.items():
        lines.append(f"{name:10s}" + "".join(f"{r[k]:12.4f}" if k in r else f"{'-':>12s}" for k in keys))
    return "\n".join(lines)


def _settings(args) -> tuple[dict, dict]:
    """The backbone's model and trainer defaults with what the flags override (--batch-size, --lr,
    --weight-decay, --reg): ``(model_kwargs, train_kwargs)``."""
    from ..backbones import defaults_for
    model_kwargs, train_kwargs = defaults_for(args.backbone)
    for key in ("batch_size", "lr", "weight_decay"):
        if getattr(args, key) is not None:
            train_kwargs[key] = getattr(args, key)
    if args.reg is not None:
        model_kwargs["reg"] = args.reg
    return model_kwargs, train_kwargs


def _metric_keys(valid: dict) -> list[str]:
    """The metrics a run's table shows: top-k (Recall and NDCG at 20 and 5) or CTR (AUC, log loss)."""
    return ["recall@20", "ndcg@20", "recall@5", "ndcg@5"] if "ndcg@20" in valid else ["auc", "logloss"]

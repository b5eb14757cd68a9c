"""Readers for CTR files in the Criteo and Avazu formats, into a :class:`~recsize.data.CTRData`.

Explained in Chapter 7 (iHAS runs on any CTR data). recsize downloads neither dataset (their licences
ask for a manual download); give the path of a file you have, or a sample of it:

* **Criteo** (the Display Advertising Challenge ``train.txt``): tab-separated, no header; a 0/1 label,
  13 integer features I1..I13 and 26 categorical features C1..C26 (hashed hex strings); any feature may
  be empty. Integers are bucketised as floor(log2(1 + v)) for v >= 0 (a common choice; negative values
  get their own bucket), so every field is categorical.
* **Avazu** (``train`` of the Kaggle challenge): a CSV with a header ``id,click,hour,C1,banner_pos,...``;
  the label is ``click``, ``id`` is dropped, ``hour`` (YYMMDDHH) becomes the hour of the day, every other
  column is categorical.

In both, values seen fewer than ``min_count`` times in the file share one "rare" value per field, and
empty values are a value of their own.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .ctr import CTRData, encode_fields

CRITEO_FIELDS = tuple(f"I{j}" for j in range(1, 14)) + tuple(f"C{j}" for j in range(1, 27))
RARE = "<rare>"


def _bucket(text: str) -> str:
    if text == "":
        return ""
    try:
        v = int(text)
    except ValueError:
        raise ValueError(f"a Criteo integer feature must be an integer or empty, got {text!r}") from None
    return "neg" if v < 0 else str(int(math.floor(math.log2(1 + v))))


def _rare_to_one(columns: list[list[str]], min_count: int) -> list[np.ndarray]:
    out = []
    for col in columns:
        col = np.asarray(col, dtype=object).astype(str)
        if min_count > 1:
            uniq, inv, counts = np.unique(col, return_inverse=True, return_counts=True)
            col = np.where(counts[inv] < min_count, RARE, col)
        out.append(col)
    return out


def _check(path, max_rows, min_count) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CTR file at {path}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1 or None, got {max_rows}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    return path


def _label(text: str, where: str) -> float:
    if text not in ("0", "1"):
        raise ValueError(f"{where}: the label must be 0 or 1, got {text!r}")
    return float(text)


def read_criteo(path, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """Read a Criteo-format file (first ``max_rows`` lines). Explained in Chapter 7."""
    path = _check(path, max_rows, min_count)
    labels, columns = [], [[] for _ in CRITEO_FIELDS]
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if max_rows is not None and n > max_rows:
                break
            parts = line.rstrip("\n").rstrip("\r").split("\t")
            if len(parts) != 1 + len(CRITEO_FIELDS):
                raise ValueError(f"{path}, line {n}: a Criteo line has 40 tab-separated columns (label, "
                                 f"13 integers, 26 categories), got {len(parts)}")
            labels.append(_label(parts[0], f"{path}, line {n}"))
            for j, v in enumerate(parts[1:]):
                columns[j].append(_bucket(v) if j < 13 else v)
    if not labels:
        raise ValueError(f"{path} holds no samples")
    return encode_fields(_rare_to_one(columns, min_count), CRITEO_FIELDS, np.asarray(labels), "criteo")


def read_avazu(path, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """Read an Avazu-format CSV (first ``max_rows`` samples). Explained in Chapter 7."""
    path = _check(path, max_rows, min_count)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or "click" not in header or "hour" not in header:
            raise ValueError(f"{path}: an Avazu file starts with a header naming 'click' and 'hour', "
                             f"got {header!r}")
        names = [h for h in header if h not in ("id", "click")]
        where = {h: i for i, h in enumerate(header)}
        labels, columns = [], [[] for _ in names]
        for n, row in enumerate(reader, 2):
            if max_rows is not None and len(labels) >= max_rows:
                break
            if len(row) != len(header):
                raise ValueError(f"{path}, line {n}: {len(row)} columns, the header has {len(header)}")
            labels.append(_label(row[where["click"]], f"{path}, line {n}"))
            for j, h in enumerate(names):
                v = row[where[h]]
                columns[j].append(v[-2:] if h == "hour" else v)  # YYMMDDHH -> HH
    if not labels:
        raise ValueError(f"{path} holds no samples")
    return encode_fields(_rare_to_one(columns, min_count), tuple(names), np.asarray(labels), "avazu")


def read_ctr_file(path, fmt: str, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """``fmt`` is ``"criteo"`` or ``"avazu"``. Explained in Chapter 7."""
    if fmt == "criteo":
        return read_criteo(path, max_rows, min_count)
    if fmt == "avazu":
        return read_avazu(path, max_rows, min_count)
    raise ValueError(f"unknown CTR file format {fmt!r}: use 'criteo' or 'avazu'")

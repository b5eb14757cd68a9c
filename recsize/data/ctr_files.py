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
empty values are a value of their own. A line that breaks the format (a value that is not an integer, bytes
that are not UTF-8, too few columns) raises :class:`~recsize.data.CorruptFile` naming the file, the line
and the fix; so does a compressed file, and a ``min_count`` that leaves no field more than one value.
The file is only read.
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .ctr import CTRData, encode_fields
from .formats import CorruptFile

CRITEO_FIELDS = tuple(f"I{j}" for j in range(1, 14)) + tuple(f"C{j}" for j in range(1, 27))
RARE = "<rare>"
_INTEGER = re.compile(r"-?[0-9]+")  # int() would also take "1_000", " 7" and other scripts' digits
COMPRESSED = {b"\x1f\x8b": ("gzip-compressed", "gunzip -k"), b"PK\x03\x04": ("a zip archive", "unzip"),
              b"BZh": ("bzip2-compressed", "bunzip2 -k"), b"\xfd7zXZ": ("xz-compressed", "unxz -k")}


def _bucket(text: str, path: Path, n: int, j: int) -> str:
    if text == "":
        return ""
    if not _INTEGER.fullmatch(text):
        raise CorruptFile(f"{path}, line {n}: column {j + 2} ({CRITEO_FIELDS[j]}) is {text[:40]!r}, not an "
                          f"integer: Criteo's I1..I13 are whole numbers or empty; fix or delete line {n}, or, if "
                          f"this is an Avazu CSV, give --ctr-format avazu", path, n)
    v = int(text)
    return "neg" if v < 0 else str(int(math.floor(math.log2(1 + v))))


def _lines(path: Path, limit: int | None = None) -> Iterator[str]:
    """The first ``limit`` (default: all) lines of a CTR file as text, decoded one by one, so that bytes that
    are not UTF-8 are reported with their line; a compressed file is named as such before any is read."""
    with open(path, "rb") as f:
        head = f.read(6)
        for magic, (what, tool) in COMPRESSED.items():
            if head.startswith(magic):
                raise CorruptFile(f"{path} is {what}, not a text file: decompress it first ({tool} "
                                  f"{path.name}) and give the file it holds", path)
        f.seek(0)
        for n, raw in enumerate(f, 1):
            if limit is not None and n > limit:
                return
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptFile(f"{path}, line {n}: byte {raw[e.start]:#04x} at column {e.start + 1} is not "
                                  f"UTF-8 text: fix or delete line {n}, or take the file again (it may be "
                                  f"damaged)", path, n) from None


def _rare_to_one(columns: list[list[str]], min_count: int, names: tuple[str, ...], path: Path) -> list[np.ndarray]:
    """Values seen fewer than ``min_count`` times become :data:`RARE`; refuses a ``min_count`` that leaves
    every field a single value (nothing to learn from), saying which ``min_count`` would not."""
    out, keeps, left = [], [], 0  # keeps: per field with two values, the largest min_count keeping two
    for col in columns:
        col = np.asarray(col, dtype=object).astype(str)
        if min_count > 1:
            uniq, inv, counts = np.unique(col, return_inverse=True, return_counts=True)
            rare = counts < min_count
            left += int((~rare).sum() + rare.any()) > 1  # the values kept, and one for the rare ones
            if len(uniq) > 1:
                keeps.append(int(counts.max()))
            col = np.where(rare[inv], RARE, col)
        out.append(col)
    if min_count > 1 and not left:
        n = len(out[0]) if out else 0
        fix = (f"use --min-count {max(keeps)} or less" if keeps
               else "every field holds one value even without it: read more rows (--max-rows)")
        raise ValueError(f"{path}: --min-count {min_count} leaves every one of the {len(names)} fields a single "
                         f"value in the {n:,} rows read (values seen fewer than {min_count} times become one "
                         f"{RARE!r} value), so nothing is left to learn from; {fix}")
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


def _label(text: str, path: Path, n: int) -> float:
    if text not in ("0", "1"):
        raise CorruptFile(f"{path}, line {n}: the label must be 0 or 1, got {text[:40]!r}: fix or delete line {n}",
                          path, n)
    return float(text)


def read_criteo(path, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """Read a Criteo-format file (first ``max_rows`` lines). Explained in Chapter 7."""
    path = _check(path, max_rows, min_count)
    labels, columns = [], [[] for _ in CRITEO_FIELDS]
    for n, line in enumerate(_lines(path, max_rows), 1):
        parts = line.rstrip("\n").rstrip("\r").split("\t")
        if len(parts) != 1 + len(CRITEO_FIELDS):
            raise CorruptFile(f"{path}, line {n}: a Criteo line has 40 tab-separated columns (label, 13 integers, "
                              f"26 categories), got {len(parts)}: fix or delete line {n}, or, if this is an Avazu "
                              f"CSV, give --ctr-format avazu", path, n)
        labels.append(_label(parts[0], path, n))
        for j, v in enumerate(parts[1:]):
            columns[j].append(_bucket(v, path, n, j) if j < 13 else v)
    if not labels:
        raise CorruptFile(f"{path} holds no samples", path)
    columns = _rare_to_one(columns, min_count, CRITEO_FIELDS, path)
    return encode_fields(columns, CRITEO_FIELDS, np.asarray(labels), "criteo")


def _next_row(reader, path: Path) -> list[str] | None:
    """The next row of a CSV ``reader`` (None at the end); the csv module's own errors (a field over its
    size limit, as an unclosed quote makes) become :class:`CorruptFile` naming the line."""
    n = reader.line_num + 1  # where the row starts
    try:
        return next(reader, None)
    except csv.Error as e:
        raise CorruptFile(f"{path}, line {n}: {e} by line {reader.line_num} (a quote opened on line {n} is never "
                          f"closed?): fix or delete line {n}", path, n) from None


def read_avazu(path, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """Read an Avazu-format CSV (first ``max_rows`` samples). Explained in Chapter 7."""
    path = _check(path, max_rows, min_count)
    reader = csv.reader(_lines(path))  # each item ends with its newline, as csv wants (newline="")
    header = _next_row(reader, path)
    if not header or "click" not in header or "hour" not in header:
        raise CorruptFile(f"{path}: an Avazu file starts with a header naming 'click' and 'hour', got "
                          f"{str(header)[:80]}: give the Kaggle 'train' CSV, or --ctr-format criteo for a "
                          f"Criteo file", path, 1)
    names = [h for h in header if h not in ("id", "click")]
    where = {h: i for i, h in enumerate(header)}
    labels, columns = [], [[] for _ in names]
    while max_rows is None or len(labels) < max_rows:  # a row past max_rows is never read
        row = _next_row(reader, path)
        if row is None:
            break
        n = reader.line_num  # the row's last physical line
        if len(row) != len(header):
            raise CorruptFile(f"{path}, line {n}: {len(row)} columns, the header has {len(header)}: fix or delete "
                              f"line {n}", path, n)
        labels.append(_label(row[where["click"]], path, n))
        for j, h in enumerate(names):
            v = row[where[h]]
            columns[j].append(v[-2:] if h == "hour" else v)  # YYMMDDHH -> HH
    if not labels:
        raise CorruptFile(f"{path} holds no samples", path)
    columns = _rare_to_one(columns, min_count, tuple(names), path)
    return encode_fields(columns, tuple(names), np.asarray(labels), "avazu")


def read_ctr_file(path, fmt: str, max_rows: int | None = None, min_count: int = 1) -> CTRData:
    """``fmt`` is ``"criteo"`` or ``"avazu"``. Explained in Chapter 7."""
    if fmt == "criteo":
        return read_criteo(path, max_rows, min_count)
    if fmt == "avazu":
        return read_avazu(path, max_rows, min_count)
    raise ValueError(f"unknown CTR file format {fmt!r}: use 'criteo' or 'avazu'")

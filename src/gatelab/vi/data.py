"""Train, validation and test splits of the data the VI commands and reproductions read, per rank under torchrun.

The test split is a seeded fraction of all documents (or rows), set aside
before anything else; the validation split is carved from the rest and is what
the fit's history scores; each rank then takes a contiguous part of the
remaining training items. One streaming pass reads what a rank needs.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gatelab import distributed
from gatelab.data.bow import read_docword, read_header
from gatelab.data.splits import validation_split
from gatelab.errors import GatelabError


@dataclass
class Splits:
    """This rank's training shard, the validation and test sets, and their sizes (for the config and report)."""

    train: Any
    val: Any
    test: Any
    sizes: dict


def _indices(n: int, holdout: float, val_size: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rest, test = validation_split(n, holdout, seed)
    if len(rest) < 2:
        raise GatelabError(f"after holding out {holdout} of {n} items for testing, too few are left to train on")
    train, val = validation_split(len(rest), val_size, seed + 1)
    train, val = rest[train], rest[val]
    start, stop = distributed.shard_bounds(len(train))
    if stop <= start:
        raise GatelabError(f"{len(train)} training items cannot give every one of {distributed.world_size()} ranks one")
    return train[start:stop].numpy(), val.numpy(), test.numpy()


def corpus_splits(docword: str | os.PathLike, holdout: float = 0.1, val_size: float = 0.05, seed: int = 0) -> Splits:
    """KOS-style splits of a UCI docword file: ``holdout`` of the documents for the test, ``val_size`` of the
    rest for validation; this rank's training shard is read with them in one pass."""
    n_docs, _, _ = read_header(docword)
    train, val, test = _indices(n_docs, holdout, val_size, seed)
    keep = np.zeros(n_docs, dtype=bool)
    keep[np.concatenate([train, val, test])] = True
    corpus = read_docword(docword, keep=keep)
    position = np.cumsum(keep) - 1  # a document's row in ``corpus``
    parts = [corpus.subset(torch.from_numpy(position[np.sort(ids)])) for ids in (train, val, test)]
    sizes = {"documents": n_docs, "train_shard": len(train), "validation": len(val), "test": len(test)}
    return Splits(*parts, sizes)


def read_numeric_csv(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """The numeric columns of a CSV file (a header row is recognised; all-text columns such as labels are
    dropped). Empty cells and NaN are refused, as is a column mixing numbers and text."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [row for row in csv.reader(fh) if row]
    except UnicodeDecodeError:
        raise GatelabError(f"{path} is not a UTF-8 CSV file") from None
    except csv.Error as exc:
        raise GatelabError(f"{path} is not a readable CSV file ({exc})") from None
    if not rows:
        raise GatelabError(f"{path} is empty; give a CSV file with one point per row")

    def number(cell):
        try:
            return float(cell)
        except ValueError:
            return None

    header = rows[0] if any(number(c) is None for c in rows[0]) else [f"x{i}" for i in range(len(rows[0]))]
    body = rows[1:] if header is rows[0] else rows
    if not body:
        raise GatelabError(f"{path} has a header but no data rows")
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            raise GatelabError(f"{path}: row {i + 2} has {len(row)} fields, the header {width}")
    columns, names = [], []
    for j, name in enumerate(header):
        values = [number(row[j]) for row in body]
        if all(v is None for v in values):
            continue  # a text column (a label): not a feature
        if any(v is None for v in values):
            bad = next(i for i, v in enumerate(values) if v is None)
            raise GatelabError(f"{path}: column {name!r} mixes numbers and text (row {bad + 2}: {body[bad][j]!r})")
        if not all(math.isfinite(v) for v in values):
            raise GatelabError(f"{path}: column {name!r} holds NaN or infinite values; remove or impute them first")
        columns.append(values)
        names.append(name)
    if not columns:
        raise GatelabError(f"{path} has no numeric column")
    return np.array(columns, dtype=np.float64).T, names


def table_splits(path: str | os.PathLike, holdout: float = 0.1, val_size: float = 0.1, seed: int = 0) -> Splits:
    """Row splits of a numeric CSV file (see ``read_numeric_csv``), as ``corpus_splits`` does for documents."""
    x, names = read_numeric_csv(path)
    train, val, test = _indices(len(x), holdout, val_size, seed)
    parts = [torch.from_numpy(x[np.sort(ids)]) for ids in (train, val, test)]
    sizes = {"rows": len(x), "features": names, "train_shard": len(train), "validation": len(val), "test": len(test)}
    return Splits(*parts, sizes)

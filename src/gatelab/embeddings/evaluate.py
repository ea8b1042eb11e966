"""Readers for the standard evaluation files and the correlation statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gatelab.data.store import data_dir
from gatelab.errors import GatelabError

#: The evaluation sets looked for under ``<data>/word-eval``: (name, file, kind).
EVAL_SETS = (
    ("WS-353", "EN-WS-353-ALL.txt", "pairs"),
    ("SimLex-999", "EN-SIMLEX-999.txt", "pairs"),
    ("Google analogies", "questions-words.txt", "analogies"),
)


def read_word_pairs(path: str | os.PathLike, delimiter: str = "\t") -> list[tuple[str, str, float]]:
    """``word1 word2 score`` lines (``#`` comments and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"evaluation file {path} does not exist")
    pairs = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(delimiter) if delimiter in line else line.split()
            try:
                if len(parts) != 3:
                    raise ValueError
                pairs.append((parts[0], parts[1], float(parts[2])))
            except ValueError:
                raise GatelabError(
                    f"{path} line {n}: unknown format; word-pair files hold "
                    f"'word1<TAB>word2<TAB>score' lines, got {line[:60]!r}"
                ) from None
    if not pairs:
        raise GatelabError(f"{path} holds no word pairs")
    return pairs


def read_analogies(path: str | os.PathLike) -> list[tuple[str, list[list[str]]]]:
    """Google-format analogy questions: ``: section`` headers, then ``a b c d`` lines."""
    path = Path(path)
    if not path.is_file():
        raise GatelabError(f"evaluation file {path} does not exist")
    sections: list[tuple[str, list[list[str]]]] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(":"):
                sections.append((line[1:].strip(), []))
                continue
            parts = line.split()
            if len(parts) != 4 or not sections:
                raise GatelabError(
                    f"{path} line {n}: unknown format; analogy files hold ': section' "
                    f"lines followed by 'a b c d' lines, got {line[:60]!r}"
                )
            sections[-1][1].append(parts)
    if not sections:
        raise GatelabError(f"{path} holds no analogy sections")
    return sections


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    start = 0
    while start < len(x):
        end = start + 1
        while end < len(x) and xs[end] == xs[start]:
            end += 1
        ranks[order[start:end]] = (start + end + 1) / 2.0
        start = end
    return ranks


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return pearson(rankdata(a), rankdata(b))


def evaluate_all(kv, root: str | os.PathLike | None = None) -> list[dict]:
    """Run every evaluation set found under ``<data>/word-eval``; one row per set.

    Each row: ``name``, ``kind``, ``score`` (Spearman, or analogy accuracy), ``evaluated`` and
    ``oov`` counts, and the full ``result``. Missing files are skipped (row with ``missing``).
    """
    base = data_dir(root) / "word-eval"
    rows = []
    for name, fname, kind in EVAL_SETS:
        path = base / fname
        if not path.is_file():
            rows.append({"name": name, "kind": kind, "missing": str(path)})
            continue
        if kind == "pairs":
            res = kv.evaluate_word_pairs(path)
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "metric": "spearman",
                    "score": res["spearman"],
                    "evaluated": res["pairs"],
                    "oov": res["oov"],
                    "result": res,
                }
            )
        else:
            res = kv.evaluate_word_analogies(path)
            t = res["total"]
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "metric": "accuracy",
                    "score": t["accuracy"],
                    "evaluated": t["correct"] + t["incorrect"],
                    "oov": t["oov"],
                    "result": res,
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'set':<18} {'metric':<9} {'score':>7} {'evaluated':>9} {'oov':>6}"]
    for r in rows:
        if "missing" in r:
            lines.append(f"{r['name']:<18} (missing: {r['missing']})")
        else:
            lines.append(f"{r['name']:<18} {r['metric']:<9} {r['score']:>7.4f} {r['evaluated']:>9d} {r['oov']:>6d}")
    return "\n".join(lines)

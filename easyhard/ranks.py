"""Ranks and rank correlation, once for every analysis: average ranks with ties (as
scipy.stats.rankdata), from a sort the caller may already hold, and Spearman's rho.

    from easyhard.ranks import rankdata, spearman
    rankdata(np.array([10, 20, 20, 30]))   # [1, 2.5, 2.5, 4]
"""

from __future__ import annotations

import math

import numpy as np


def average_ranks(sorted_values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Ranks 1..n of the values whose ascending sort is `sorted_values` = values[order], tied
    values sharing their mean rank, in one pass over the sort (float64 [n], in the values'
    order)."""
    n = len(sorted_values)
    if n == 0:
        return np.zeros(0)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a float array, ties given their average rank (as scipy.stats.rankdata)."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="stable")
    return average_ranks(a[order], order)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays over the pairs where both are finite (NaN with
    fewer than 3 such pairs or a constant side)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return math.nan
    ra, rb = rankdata(a[ok]), rankdata(b[ok])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan

"""Paired statistics of experiments over seeds: Student's t quantiles and intervals, and the
paired differences of every experiment's rows to its references (the full data, the random
baseline). Pure numpy and math; no torch."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with integer `df` >= 1 degrees of freedom, for
    p in (0.5, 1): bisection on the exact closed form of P(|T| <= t) for integer df
    (Abramowitz & Stegun 26.7.3-4)."""
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"`df` must be a positive integer, got {df!r}")
    if not 0.5 < p < 1:
        raise ValueError(f"`p` must lie in (0.5, 1), got {p!r}")
    df = int(df)

    def central(t: float) -> float:  # P(|T| <= t)
        theta = math.atan(t / math.sqrt(df))
        s, c2 = math.sin(theta), math.cos(theta) ** 2
        if df % 2:  # odd
            if df == 1:
                return 2 * theta / math.pi
            term, total = 1.0, 1.0
            for j in range(1, (df - 3) // 2 + 1):
                term *= c2 * (2 * j) / (2 * j + 1)
                total += term
            return 2 / math.pi * (theta + s * math.cos(theta) * total)
        term, total = 1.0, 1.0
        for j in range(1, (df - 2) // 2 + 1):
            term *= c2 * (2 * j - 1) / (2 * j)
            total += term
        return s * total

    target, lo, hi = 2 * p - 1, 0.0, 1.0
    while central(hi) < target:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if central(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean of `values` with its two-sided `level` t-interval: {"n", "mean", "std", "low",
    "high"}; std, low and high are None for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    n = int(len(v))
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "low": None, "high": None}
    mean = float(v.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "low": None, "high": None}
    std = float(v.std(ddof=1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def paired_summary(
    rows: Sequence[dict],
    group: Sequence[str],
    order_field: str,
    reference: str,
    baseline: str,
    sort_key: Callable[[tuple], Any],
    baselines: Mapping[str, str] | None = None,
) -> list[dict]:
    """One entry per `group` key of results rows (the last field, `order_field`, is what was
    done): test accuracy over seeds (n, mean, std) and the paired differences (same seed) to the
    full data (`vs_full`: the same key with `reference` in `order_field`, and fraction 0) and to
    the `baseline` (`vs_random`: the same key with `baseline` in `order_field`, or with
    `baselines[order]` where it names another control), each a t_interval of the differences.
    A baseline has no `vs_random` of its own."""
    groups: dict[tuple, dict[int, float]] = {}
    kept: dict[tuple, set] = {}
    for r in rows:
        key = tuple(r[f] for f in group)
        groups.setdefault(key, {})[r["seed"]] = r["test_acc"]
        kept.setdefault(key, set()).add(r["kept"])
    where = list(group).index(order_field)
    out = []
    for key in sorted(groups, key=sort_key):
        accs = groups[key]
        entry = {
            **dict(zip(group, key)),
            "seeds": sorted(accs),
            **{f"acc_{k}": v for k, v in t_interval(list(accs.values())).items()},
        }
        entry["kept"] = next(iter(kept[key])) if len(kept[key]) == 1 else None
        order = key[where]
        refs = [
            k
            for k in groups
            if k[where] == reference
            and all(
                k[i] == key[i]
                for i in range(len(key))
                if i != where and group[i] not in ("fraction", "keep")
            )
        ]
        control = (baselines or {}).get(order, baseline)
        for name, other in (
            ("vs_full", refs[0] if refs else None),
            ("vs_random", key[:where] + (control,) + key[where + 1 :]),
        ):
            if order == reference or (name == "vs_random" and order == control):
                continue
            base = groups.get(other, {})
            entry[name] = t_interval([accs[s] - base[s] for s in sorted(accs) if s in base])
        out.append(entry)
    return out

"""What the experiments' tables and figures share: number formats (percentage points,
intervals), error bars, a strategy's line, the full-data reference line and band, accuracy axis
limits."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def pts(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def accuracy(entry: dict) -> str:
    """A summary entry's test accuracy in %: mean ± standard deviation over its seeds."""
    sd = entry["acc_std"]
    return pts(entry["acc_mean"]) + ("" if sd is None else f" ± {pts(sd)}")


def grouped(stats: Sequence[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Summary entries by the values of `keys` (a table or panel each), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for e in stats:
        groups.setdefault(tuple(e[k] for k in keys), []).append(e)
    return groups


def interval(d: dict | None) -> str:
    if not d or not d["n"]:
        return ""
    if d["low"] is None:
        return f"{pts(d['mean'], True)} (n=1, no interval)"
    return f"{pts(d['mean'], True)} [{pts(d['low'], True)}, {pts(d['high'], True)}]"


def error_bars(
    entries: Sequence[dict],
    key_mean: str = "acc_mean",
    key_low: str = "acc_low",
    key_high: str = "acc_high",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Means (%) and matplotlib's asymmetric error bars (%) of statistics entries; no bars when
    an entry has no interval (fewer than two seeds)."""
    y = np.array([100 * e[key_mean] for e in entries])
    err = None
    if all(e[key_low] is not None for e in entries):
        err = np.array(
            [
                [100 * (e[key_mean] - e[key_low]) for e in entries],
                [100 * (e[key_high] - e[key_mean]) for e in entries],
            ]
        )
    return y, err


def draw_line(
    ax,
    entries: Sequence[dict],
    x: Callable[[dict], float],
    *,
    shift: float,
    color: str,
    label: str,
    keys: tuple[str, str, str] = ("acc_mean", "acc_low", "acc_high"),
) -> None:
    """One strategy's line: the entries' means (%, `keys`) against x(entry) (a fraction, drawn
    in %), with 95% error bars, moved sideways by `shift` points so that lines meeting at the
    same x keep their bars apart."""
    if not entries:
        return
    y, err = error_bars(entries, *keys)
    xs = np.array([100 * x(e) for e in entries]) + shift
    ax.errorbar(xs, y, yerr=err, color=color, marker="o", ms=4, capsize=3, label=label)


def draw_full_data(ax, entry: dict) -> None:
    """The full-data reference: a dashed line at its mean accuracy, its 95% interval a band."""
    ax.axhline(
        100 * entry["acc_mean"],
        color="black",
        lw=1.2,
        ls="--",
        label=f"full data (n={entry['acc_n']})",
    )
    if entry["acc_low"] is not None:
        ax.axhspan(100 * entry["acc_low"], 100 * entry["acc_high"], color="black", alpha=0.1)


def accuracy_limits(ax, stats: Sequence[dict]) -> None:
    """Accuracy lies in [0, 100]: an interval of few seeds may reach beyond, the axis does not
    (shared axes follow)."""
    lows = [100 * e[k] for e in stats for k in ("acc_low", "acc_mean") if e[k] is not None]
    highs = [100 * e[k] for e in stats for k in ("acc_high", "acc_mean") if e[k] is not None]
    if lows:
        pad = 0.05 * max(1.0, max(highs) - min(lows))
        ax.set_ylim(max(0.0, min(lows) - pad), min(100.0, max(highs) + pad))

"""Subset selection by difficulty: which examples to keep.

Strategies (each global or class-balanced):

- ``hardest``: keep the hardest, drop the easiest (the paper's compression by easiness);
- ``easiest``: keep the easiest;
- ``random``: a seeded uniform draw (the baseline);
- ``stratified``: coverage-centric selection (Zheng et al., 2023): split the score range into
  equal-width bins and spread the budget over them, smallest bins first, drawing at random (seeded)
  inside each bin.

Examples in ``exclude`` (never presented during scoring: their scores say nothing) take no part
in any of it. ``cut_hardest`` first removes that fraction of the very hardest examples (likely
mislabelled), over the whole set, as Data Diet and coverage-centric selection do. Keep/prune
semantics: ``keep`` as a fraction keeps exactly floor(keep * N + 0.5) of the N examples taking
part, cut or not (coverage-centric selection's budget; more than the cut left is refused);
class-balanced budgets are proportional to the class sizes left after the cut, with
largest-remainder rounding, so they add up exactly; a class the cut emptied is listed in
``info["emptied_classes"]``. Rankings and ties go through easyhard::topk_select (ties broken by
dataset index).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# torch and the ops load inside select(): this module's names (STRATEGIES) serve the command
# line, which must start without importing torch.

STRATEGIES = ("hardest", "easiest", "random", "stratified")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resolve_keep(keep: float | int | str, n: int) -> int:
    """Number of examples to keep: a fraction in (0, 1] (e.g. 0.7 or "70%") or a count ("700").
    A bare 1 is refused: it reads as "all of it" as often as "one example"."""
    text = str(keep).strip()
    if text.isdigit() and int(text) == 1:  # 1, 01, ...
        raise ValueError(
            f"keep {text} is ambiguous: write 1.0 or 100% to keep every example (a count of one "
            "example "
            "is not a subset anyone trains on)"
        )
    if _is_number(text.removesuffix("%")) and float(text.removesuffix("%")) <= 0:
        raise ValueError(
            f"keep must be positive: a fraction in (0, 1] (0.7, 70%) or a count (700), got {text}"
        )
    plain = re.fullmatch(r"\d+|\d*\.\d+|\d+\.|[\d.]+%", text)
    if not isinstance(keep, (int, float)) and not plain and _is_number(text):
        raise ValueError(  # +5, 1e3, inf: numbers, but is it a count or a fraction?
            f"keep {text} is ambiguous: write a count as digits (700) and a fraction with a "
            "decimal point or a percent sign (0.7, 70%)"
        )
    try:
        if text.endswith("%"):
            value, fraction = float(text[:-1]) / 100, True
        elif isinstance(keep, int) or text.isdigit():
            value, fraction = int(text), False
        else:
            value, fraction = float(text), True
    except ValueError:
        raise ValueError(f"keep must be a fraction (0.7, 70%) or a count (700), got {keep!r}")
    if fraction:
        if not 0 < value <= 1:
            raise ValueError(f"keep fraction must be in (0, 1], got {value}")
        return int(math.floor(value * n + 0.5))
    if not 0 < value <= n:
        raise ValueError(
            f"keep count must be between 1 and the {n} examples available, got {value}"
        )
    return int(value)


def class_budgets(
    labels: np.ndarray, k: int, num_classes: int, available: np.ndarray | None = None
) -> np.ndarray:
    """Per-class budgets (int64 [C]) summing to exactly k, proportional to the class sizes, by
    largest-remainder rounding (equal remainders: the smaller class index first). `available`
    (default: the class sizes) caps each budget."""
    sizes = np.bincount(labels, minlength=num_classes).astype(np.int64)
    avail = sizes if available is None else np.asarray(available, dtype=np.int64)
    total = int(avail.sum())
    if not 0 <= k <= total:
        raise ValueError(f"cannot keep {k} of {total} examples")
    quota = k * avail / max(total, 1)
    budgets = np.floor(quota).astype(np.int64)
    remainder = quota - budgets
    short = k - int(budgets.sum())
    order = np.lexsort((np.arange(num_classes), -remainder))
    budgets[order[:short]] += 1
    assert budgets.sum() == k and (budgets <= avail).all()
    return budgets


@dataclass
class Selection:
    """A chosen subset: ascending dataset indices and how it was chosen."""

    indices: np.ndarray  # int64 [k], ascending
    num_samples: int  # N of the source
    kept_per_class: np.ndarray  # int64 [C]
    class_sizes: np.ndarray  # int64 [C]
    info: dict = field(default_factory=dict)  # strategy, score, keep, seed, ...
    fingerprint: str | None = None  # of the data the scores belong to, when known

    @property
    def ratio(self) -> float:
        """Compression ratio: source size / kept size."""
        return self.num_samples / max(len(self.indices), 1)

    def left_out(self) -> str | None:
        """The sentence saying how many examples took no part (never presented), or None."""
        n = int(self.info.get("excluded") or 0)
        if not n:
            return None
        return f"{n} example(s) never presented during scoring were left out (they have no scores)"

    def subset(self, dataset):
        """``torch.utils.data.Subset(dataset, indices)``: the kept examples of `dataset`, the
        data the scores were made on (same size; same fingerprint when both are known)."""
        import torch

        n = len(dataset)
        if n != self.num_samples:
            raise ValueError(
                f"the selection indexes a dataset of {self.num_samples} examples, this one has "
                f"{n}: give the dataset the scores were made on"
            )
        theirs = getattr(dataset, "fingerprint", None)
        if self.fingerprint and isinstance(theirs, str) and theirs and theirs != self.fingerprint:
            raise ValueError(
                f"the scores were made on data of fingerprint {self.fingerprint!r}, this dataset's "
                f"is {theirs!r}: the selection belongs to other data"
            )
        return torch.utils.data.Subset(dataset, self.indices.tolist())


def select(
    scores: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    keep: float | int | str,
    *,
    strategy: str = "hardest",
    balanced: bool = False,
    cut_hardest: float = 0.0,
    seed: int = 0,
    bins: int = 50,
    score_name: str = "hardness",
    exclude: np.ndarray | None = None,
    tie_seed: int | None = None,
) -> Selection:
    """Choose a subset. `scores` are oriented with larger = harder (see scores.hardness).

    `exclude`: bool [N], examples that take no part (e.g. never presented during scoring): never
    selected, not counted by `keep` fractions, `cut_hardest` or class budgets. Refuses a selection
    that would keep nothing.

    `tie_seed`: break ties of the score (hardest/easiest and the cut) in the order of a random
    permutation drawn from this seed, instead of by dataset index; for scores with many ties
    (easiness_plain), where index order would favour low indices."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    h, labels, alive = _checked_inputs(scores, labels, num_classes, exclude)
    N = len(h)
    class_sizes = np.bincount(labels[labels >= 0], minlength=num_classes)
    labels = np.maximum(labels, 0)
    if not 0 <= cut_hardest < 1:
        raise ValueError(f"cut_hardest must be in [0, 1), got {cut_hardest}")
    import torch

    h_t = torch.from_numpy(h)
    top = _top_k(
        labels, None if tie_seed is None else np.random.default_rng(tie_seed).permutation(N)
    )
    participants = alive.copy()  # before the cut
    n_excluded = N - int(alive.sum())
    n_cut = int(math.floor(cut_hardest * (N - n_excluded) + 0.5))
    if n_cut:
        key = h_t.clone()
        key[torch.from_numpy(~alive)] = float("nan")  # NaN ranks last: excluded are not cut
        alive[top(key, n_cut, True)] = False
    available = int(alive.sum())
    if available == 0:
        raise ValueError(
            f"no example is left to select from ({n_excluded} excluded, {n_cut} cut as the hardest)"
        )
    k = resolve_keep(keep, N - n_excluded)  # of every example taking part, cut or not
    if k == 0:
        raise ValueError(
            f"keeping {keep} of {N - n_excluded} examples rounds to 0: the subset would "
            "be empty; keep a larger fraction or a count of at least 1"
        )
    if k > available:
        raise ValueError(
            f"keeping {k} examples ({keep} of {N - n_excluded}) after cutting the {n_cut} "
            f"hardest is more than the {available} left: lower `cut_hardest` or `keep`"
        )
    if strategy == "stratified":
        chosen = _stratified(h, labels, alive, k, num_classes, balanced, bins, seed)
    else:
        if strategy == "random":
            key = torch.from_numpy(np.random.default_rng(seed).random(N))
            largest = True
        else:
            key, largest = h_t.clone(), strategy == "hardest"
        key[torch.from_numpy(~alive)] = float("nan")  # NaN ranks last: cut examples never chosen
        if balanced:
            budgets = class_budgets(
                labels, k, num_classes, np.bincount(labels[alive], minlength=num_classes)
            )
            chosen = top(key, k, largest, budgets)
        else:
            chosen = top(key, k, largest)
    info = {
        "strategy": strategy,
        "balanced": balanced,
        "cut_hardest": cut_hardest,
        "cut": n_cut,
        "excluded": n_excluded,
        "keep": str(keep),
        "kept": int(len(chosen)),
        "seed": seed,
        "score": score_name,
        "tie_seed": tie_seed,
        **({"bins": bins} if strategy == "stratified" else {}),
    }
    kept_per_class = np.bincount(labels[chosen], minlength=num_classes)
    info.update(_emptied(kept_per_class, labels, participants, alive, num_classes))
    return Selection(np.asarray(chosen, dtype=np.int64), N, kept_per_class, class_sizes, info)


def _checked_inputs(scores, labels, num_classes: int, exclude) -> tuple[np.ndarray, ...]:
    """(hardness float64 [N], labels int64 [N], taking part bool [N]) of select's inputs,
    checked for shape, dtype and label range."""
    h = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    N = len(h)
    if h.ndim != 1:
        raise ValueError(f"scores must be 1-D [N], got shape {h.shape}")
    if labels.shape != (N,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"labels must be integers of shape [{N}], got {labels.dtype} {labels.shape}"
        )
    labels = labels.astype(np.int64)
    if exclude is None:
        alive = np.ones(N, dtype=bool)
    else:
        exclude = np.asarray(exclude)
        if exclude.shape != (N,) or exclude.dtype != np.bool_:
            raise ValueError(
                f"exclude must be a bool array of shape [{N}], got {exclude.dtype} {exclude.shape}"
            )
        alive = ~exclude
    # Excluded examples may lack a label (-1: never presented, none recorded).
    unlabelled = alive & (labels == -1)
    if unlabelled.any():
        i = int(np.flatnonzero(unlabelled)[0])
        raise ValueError(
            f"{int(unlabelled.sum())} example(s) taking part have label -1 (the first: index {i}): "
            "never presented to a SampleStats made without labels=, so no label was recorded; "
            "pass exclude= (the never_presented score) or give SampleStats the dataset's labels"
        )
    if N and (labels.min() < -1 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < -1 else int(labels.max())
        raise ValueError(f"labels must be in [0, {num_classes}), got {bad}")
    return h, labels, alive


def _top_k(labels: np.ndarray, perm: np.ndarray | None) -> Callable:
    """top(key, k, largest, budgets=None): ops.topk_select over `key` (per-class `budgets`
    when given), ties broken in `perm` order when a tie seed gave one, else by index."""
    import torch

    from . import ops

    def top(key: torch.Tensor, k: int, largest: bool, budgets=None) -> np.ndarray:
        lab = None if budgets is None else torch.from_numpy(labels)
        bud = None if budgets is None else torch.from_numpy(budgets)
        if perm is None:
            return ops.topk_select(key, k, largest, lab, bud).numpy()
        p = torch.from_numpy(perm)
        picked = ops.topk_select(key[p], k, largest, None if lab is None else lab[p], bud).numpy()
        return np.sort(perm[picked])

    return top


def _emptied(kept_per_class, labels, participants, alive, num_classes: int) -> dict:
    """Classes with examples that keep none: said, not hidden, with why (the cut took them all,
    or the class's share of the budget rounded to nothing)."""
    taking_part = np.bincount(labels[participants], minlength=num_classes)
    left = np.bincount(labels[alive], minlength=num_classes)
    emptied = (kept_per_class == 0) & (taking_part > 0)
    return {
        "emptied_classes": np.flatnonzero(emptied).tolist(),
        "emptied_by_cut": np.flatnonzero(emptied & (left == 0)).tolist(),
    }


def _stratified(h, labels, alive, k, C, balanced, bins, seed) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if balanced:
        budgets = class_budgets(labels, k, C, np.bincount(labels[alive], minlength=C))
        parts = [
            _ccs(np.flatnonzero(alive & (labels == c)), h, int(budgets[c]), bins, rng)
            for c in range(C)
        ]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return np.sort(_ccs(np.flatnonzero(alive), h, k, bins, rng))


def _ccs(members: np.ndarray, h: np.ndarray, budget: int, bins: int, rng) -> np.ndarray:
    """Coverage-centric sampling of `budget` of `members` across equal-width score bins."""
    if budget == 0 or len(members) == 0:
        return np.zeros(0, dtype=np.int64)
    v = h[members]
    finite = np.isfinite(v)
    lo, hi = (v[finite].min(), v[finite].max()) if finite.any() else (0.0, 0.0)
    width = (hi - lo) / bins if hi > lo else 1.0
    b = np.where(finite, np.clip(((v - lo) / width).astype(np.int64), 0, bins - 1), bins)
    groups = [members[b == i] for i in range(bins + 1)]
    groups = sorted((g for g in groups if len(g)), key=len)
    chosen, left = [], budget
    for i, g in enumerate(groups):
        take = min(len(g), left // (len(groups) - i))
        chosen.append(rng.choice(g, size=take, replace=False))
        left -= take
    out = np.concatenate(chosen)
    assert len(out) == budget
    return out

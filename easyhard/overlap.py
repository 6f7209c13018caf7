"""Are easy and hard examples shared across runs? (`easyhard analyze overlap`)

Given several runs' statistics files (or run folders, or an `easyhard score --out` folder), this
compares which examples each run finds easiest and hardest:

- pairwise, for every pair of runs: the Jaccard index of the easiest p and of the hardest p (p in
  1, 5, 10, 20, 30, 50% by default), its chance value p / (2 - p) (two independent random sets of
  size pN) and the ratio to it; Spearman and Kendall (tau-b) rank correlations of the score;
- across all runs at once: the size of the intersection of every run's top-p set against its
  chance value N p^k, and the threshold sets of the paper, examples correct at every observation
  of the window ("always easy") or at none ("never learned" in the window): each run's count and the
  count shared by all;
- grouped by what differs between two runs' configurations (arch, init_seed, data_seed, optimizer,
  batch_size, ...): `group` is the one field that differs ("seed" when only the seeds differ),
  fields joined by "+" when several do; each group is summarised by mean and spread, which is
  how the architecture group compares with the data-order and initialisation groups (the paper's
  "is it SGD?" question);
- per class: the same sets within each class, averaged over pairs (which classes share their easy
  sets).

Ties: scores that tie across a cut are ordered by a seeded random permutation that differs per run
(never by dataset index, which would make tied sets agree by construction); the fraction of each
set decided by that rule is reported as `tied`. Examples never presented in some run take no part
and are counted. Kendall's tau is computed on a fixed random sample of at most `kendall_max`
examples (its standard error there is below 0.002); the sample size is reported.

    from easyhard.overlap import analyze_overlap
    result = analyze_overlap(["runs/fm"], score="easiness", window=2)
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import __version__
from .runfolder import ANY_WINDOW
from .scores import DIRECTION, check_same_window, compute_scores, hardness

if TYPE_CHECKING:
    from .config import OverlapConfig

DEFAULT_PS = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5)
FORMAT = "easyhard.overlap"
MANIFEST, TABLE = "overlap.json", "overlap.txt"  # the manifest and result; the printed table
#: Configuration fields that say nothing about how a run trained (where the data lives, how many
#: threads decode it, which merged window is written): never reported as a difference.
_NOT_TRAINING = {
    "data_dir",
    "file_list",
    "workers",
    "window",
    "seed",
    "runs",
    "archs",
    "device",
    "max_nonfinite_steps",
    "compile",
}


@dataclass
class Run:
    """One run's scores, as loaded for the comparison."""

    file: str
    metadata: dict
    scores: dict[str, np.ndarray]
    labels: np.ndarray
    num_classes: int
    fingerprint: str | None

    def describe(self) -> dict[str, Any]:
        """What the run is: its file, its seed and the fields it can be compared on."""
        return {"file": self.file, "seed": self.metadata.get("seed"), **self.fields()}

    def fields(self) -> dict[str, Any]:
        """Comparable training settings: architecture, effective seeds and the recipe."""
        meta = self.metadata
        ident = meta.get("identity") or {}
        config = dict(ident.get("config") or meta.get("config") or {})
        out = {k: v for k, v in config.items() if k not in _NOT_TRAINING}
        out["arch"] = meta.get("arch", ident.get("arch"))
        seed = meta.get("seed", ident.get("seed"))  # acts only through the two below
        out["init_seed"] = meta.get("init_seed", ident.get("init_seed", seed))
        out["data_seed"] = meta.get("data_seed", ident.get("data_seed", seed))
        out["epochs"] = meta.get("epochs", config.get("epochs"))
        out["view"] = meta.get("view")
        return out


# ---------------------------------------------------------------------------- inputs
def expand_inputs(
    inputs: Sequence[str], view: str = "train", window: Any = ANY_WINDOW
) -> list[str]:
    """Statistics files from INPUTs (runfolder.run_files: files, run folders, score output
    folders or their merged.npz, which must have been merged over `window`; each run once), at
    least two (`window` ANY_WINDOW: merged over any)."""
    from .runfolder import run_files

    files = run_files(inputs, view, window=window)
    if len(files) < 2:
        raise ValueError(
            f"overlap compares runs: give at least two, found {len(files)} "
            f"({', '.join(files) or 'none'})"
        )
    return files


def load_runs(
    files: Sequence[str], window: int | None = None, names: Sequence[str] | None = None
) -> list[Run]:
    """Load and score every run (the scores `names`, default all); refuses files of other data
    or merged files, naming them."""
    from .statsfile import MERGED_FORMAT, read_metadata_block, read_stats_file

    def load(f: str) -> Run:
        if (read_metadata_block(f) or {}).get("format") == MERGED_FORMAT:
            raise ValueError(
                f"{f} is a merged file (means over runs): give the runs' own statistics files "
                "or folders"
            )
        stats = read_stats_file(f)
        return Run(
            os.path.abspath(f),
            stats.metadata,
            compute_scores(stats, window, names),
            stats.labels,
            stats.num_classes,
            stats.fingerprint,
        )

    with ThreadPoolExecutor(max(1, min(len(files), os.cpu_count() or 1))) as pool:
        loaded = list(pool.map(load, files))  # numpy releases the GIL: runs load side by side
    runs: list[Run] = []
    for f, run in zip(files, loaded):
        if runs:
            first = runs[0]
            if run.fingerprint != first.fingerprint:
                raise ValueError(
                    f"{f} was scored on dataset fingerprint {run.fingerprint!r}, "
                    f"{first.file} on {first.fingerprint!r}: runs of different data "
                    "cannot be compared"
                )
            if len(run.labels) != len(first.labels) or not np.array_equal(run.labels, first.labels):
                raise ValueError(f"{f} and {first.file} disagree on the examples or their labels")
        runs.append(run)
    check_same_window([(r.file, int(r.metadata.get("epochs") or 0)) for r in runs], window)
    return runs


# ---------------------------------------------------------------------------- metrics
def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """|A ∩ B| / |A ∪ B| of two boolean membership masks (1.0 for two empty sets)."""
    inter = int(np.count_nonzero(a & b))
    union = int(np.count_nonzero(a | b))
    return inter / union if union else 1.0


def chance_jaccard(p: float) -> float:
    """Expected Jaccard index of two independent random subsets of fraction p: p / (2 - p)."""
    return p / (2 - p)


def set_size(p: float, n: int) -> int:
    """Examples in a top-p set of n: round(p n), at least 1."""
    return max(1, int(np.floor(p * n + 0.5)))


class Ranking:
    """One run's order of the examples (easiest first; ties by a seeded permutation), the
    position of every example in it, globally and within its class."""

    def __init__(self, h: np.ndarray, labels: np.ndarray, num_classes: int, tie_seed: int) -> None:
        n = len(h)
        perm = np.random.default_rng(tie_seed).permutation(n)
        # A stable sort of the permuted scores orders ties by the permutation (two fast sorts
        # instead of one lexsort over three keys).
        self.h = h
        self.order = perm[np.argsort(h[perm], kind="stable")]  # ascending hardness: easiest first
        self.sorted = h[self.order]
        self.pos = np.empty(n, dtype=np.int64)
        self.pos[self.order] = np.arange(n)
        small = labels.astype(np.int16) if num_classes < 2**15 else labels  # radix sort
        by_class = self.order[np.argsort(small[self.order], kind="stable")]
        sizes = np.bincount(labels, minlength=num_classes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.class_pos = np.empty(n, dtype=np.int64)
        self.class_pos[by_class] = np.arange(n) - starts[labels[by_class]]
        self.class_sizes = sizes

    def average_ranks(self) -> np.ndarray:
        """Ranks 1..n of the scores, tied scores sharing their mean rank (as scipy's rankdata),
        from the sort this ranking already holds."""
        from .ranks import average_ranks

        return average_ranks(self.sorted, self.order)

    def easy(self, k: int) -> np.ndarray:
        return self.pos < k

    def hard(self, k: int) -> np.ndarray:
        return self.pos >= len(self.pos) - k

    def class_set(self, which: str, p: float, labels: np.ndarray) -> np.ndarray:
        """Membership of the top p within each class."""
        k = np.maximum(1, np.floor(p * self.class_sizes + 0.5)).astype(np.int64)[labels]
        if which == "easy":
            return self.class_pos < k
        return self.class_pos >= self.class_sizes[labels] - k

    def tied(self, which: str, k: int) -> float:
        """Fraction of the set of size k that the tie rule decided (0 when the cut is clean)."""
        s, n = self.sorted, len(self.sorted)
        if k >= n:
            return 0.0
        if which == "easy":
            boundary = s[k - 1]
            if not s[k] == boundary:
                return 0.0
            return (k - int(np.searchsorted(s, boundary, "left"))) / k
        boundary = s[n - k]
        if not s[n - k - 1] == boundary:
            return 0.0
        return (int(np.searchsorted(s, boundary, "right")) - (n - k)) / k


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Sorted names of the comparable fields on which two runs differ."""
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def group_name(differs: Sequence[str]) -> str:
    """The pair's group: the one differing field ("seed" when just the seeds differ); several
    fields joined by "+" ("arch+seed"); "identical" when nothing differs."""
    fields = set(differs)
    if {"init_seed", "data_seed"} <= fields:
        fields -= {"init_seed", "data_seed"}
        fields.add("seed")
    if not fields:
        return "identical"
    order = ["arch", "seed", "init_seed", "data_seed"]
    return "+".join(sorted(fields, key=lambda f: (order.index(f) if f in order else 9, f)))


def _centred_ranks(ranking: "Ranking") -> tuple[np.ndarray, float]:
    """Average ranks minus their mean, and their norm: Spearman's rho of two runs is then one
    dot product (Pearson's r of the ranks)."""
    r = ranking.average_ranks()
    r -= r.mean()
    return r, float(np.sqrt(np.dot(r, r)))


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(len(v)),
    }


def analyze_overlap(
    inputs: Sequence[str],
    *,
    score: str = "easiness",
    window: int | None = None,
    view: str = "train",
    ps: Sequence[float] = DEFAULT_PS,
    tie_seed: int = 0,
    kendall_max: int = 200_000,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole comparison as one JSON-ready dict (see the module docstring and overlap.json).

    `score`: a score with an easy/hard direction (scores.DIRECTION); `window`: epochs counted by
    easiness; `view`: "train" or "clean" (which statistics file of a run folder); `ps`: set
    fractions
    in (0, 1]; `tie_seed`: seed of the per-run tie-breaking permutations."""
    if DIRECTION.get(score) in (None, "neither"):
        raise ValueError(
            f"`score` must be one of "
            f"{', '.join(n for n, d in DIRECTION.items() if d != 'neither')}, got "
            f"{score!r}"
        )
    if view not in ("train", "clean"):
        raise ValueError(f"`view` must be train or clean, got {view!r}")
    ps = sorted(set(float(p) for p in ps))
    if not ps or not all(0 < p <= 1 for p in ps):
        raise ValueError(f"every `ps` value must be in (0, 1], got {ps}")
    files = expand_inputs(inputs, view, window)
    runs = load_runs(files, window, names=(score, "easiness_plain"))
    first = runs[0]
    absent = np.zeros(len(first.labels), dtype=bool)
    for r in runs:
        absent |= r.scores["never_presented"]
    keep = np.flatnonzero(~absent)
    labels = first.labels[keep]
    n, C = len(keep), first.num_classes
    if n < 2:
        raise ValueError("fewer than two examples were presented in every run: nothing to compare")
    hs = [hardness(score, r.scores[score])[keep] for r in runs]
    with ThreadPoolExecutor(max(1, min(len(runs), os.cpu_count() or 1))) as pool:
        rankings = list(
            pool.map(
                lambda i: Ranking(hs[i], labels, C, tie_seed * 1_000_003 + i), range(len(runs))
            )
        )
        centred = list(pool.map(_centred_ranks, rankings))
    sample = np.sort(np.random.default_rng(tie_seed).permutation(n)[:kendall_max])
    cuts = [(p, which, set_size(p, n)) for p in ps for which in ("easy", "hard")]
    in_set = [
        [rk.easy(k) if which == "easy" else rk.hard(k) for _, which, k in cuts] for rk in rankings
    ]  # [run][cut] membership masks
    pairs = _pairs(runs, rankings, centred, hs, sample, cuts, in_set, n)
    consistency = _consistency(runs, cuts, in_set, keep, n)
    per_class = _per_class(rankings, labels, ps, len(pairs), class_names)
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "easyhard_version": __version__,
        "score": score,
        "direction": DIRECTION[score],
        "window": window,
        "view": view,
        "ps": ps,
        "tie_seed": tie_seed,
        "fingerprint": first.fingerprint,
        "num_examples": int(len(first.labels)),
        "compared": int(n),
        "never_presented": int(absent.sum()),
        "num_classes": int(C),
        "kendall_n": int(len(sample)),
        "runs": [r.describe() for r in runs],
        "pairs": pairs,
        "groups": _groups(pairs),
        "consistency": consistency,
        "per_class": per_class,
    }


def _pairs(runs, rankings, centred, hs, sample, cuts, in_set, n: int) -> list[dict[str, Any]]:
    """Every pair of runs: what differs between them, rank correlations, and per cut (p, set)
    the Jaccard overlap of their sets against chance."""
    import scipy.stats

    fields = [r.fields() for r in runs]
    pairs = []
    for a, b in itertools.combinations(range(len(runs)), 2):
        differs = differing_fields(fields[a], fields[b])
        (ra, na), (rb, nb) = centred[a], centred[b]
        spearman = float(np.dot(ra, rb) / (na * nb)) if na > 0 and nb > 0 else float("nan")
        kendall = float(scipy.stats.kendalltau(hs[a][sample], hs[b][sample]).statistic)
        overlap = []
        for c, (p, which, k) in enumerate(cuts):
            inter = int(np.count_nonzero(in_set[a][c] & in_set[b][c]))
            j = inter / (2 * k - inter)  # both sets hold k examples
            chance = chance_jaccard(k / n)
            overlap.append(
                {
                    "p": p,
                    "set": which,
                    "k": k,
                    "jaccard": j,
                    "chance": chance,
                    "ratio": j / chance,
                    "tied": (rankings[a].tied(which, k) + rankings[b].tied(which, k)) / 2,
                }
            )
        pairs.append(
            {
                "a": a,
                "b": b,
                "differs": differs,
                "group": group_name(differs),
                "spearman": spearman,
                "kendall": kendall,
                "overlap": overlap,
            }
        )
    return pairs


def _groups(pairs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pairs grouped by what differs between their runs: correlations and overlaps."""
    groups: dict[str, dict[str, Any]] = {}
    for name in sorted({pr["group"] for pr in pairs}):
        members = [pr for pr in pairs if pr["group"] == name]
        entry = {
            "pairs": len(members),
            "spearman": _summary([pr["spearman"] for pr in members]),
            "kendall": _summary([pr["kendall"] for pr in members]),
            "overlap": [],
        }
        for i, o in enumerate(members[0]["overlap"]):
            values = [pr["overlap"][i]["jaccard"] for pr in members]
            entry["overlap"].append(
                {
                    "p": o["p"],
                    "set": o["set"],
                    "chance": o["chance"],
                    "jaccard": _summary(values),
                    "ratio": float(np.mean(values)) / o["chance"],
                }
            )
        groups[name] = entry
    return groups


def _consistency(runs, cuts, in_set, keep: np.ndarray, n: int) -> dict[str, Any]:
    """What every run shares: the examples in a set in all runs, against chance, and the
    examples always classified correctly (or never) in all of them."""
    consistency: dict[str, Any] = {"runs": len(runs), "top": [], "threshold": {}}
    for c, (p, which, k) in enumerate(cuts):
        count = int(np.count_nonzero(np.logical_and.reduce([m[c] for m in in_set])))
        expected = n * (k / n) ** len(runs)
        consistency["top"].append(
            {
                "p": p,
                "set": which,
                "k": k,
                "shared": count,
                "chance": expected,
                "ratio": count / expected if expected else float("nan"),
            }
        )
    plain = [r.scores["easiness_plain"][keep] for r in runs]
    for name, test in (("always_easy", lambda v: v == 1.0), ("never_learned", lambda v: v == 0.0)):
        sets = [test(v) for v in plain]
        shared = np.logical_and.reduce(sets)
        consistency["threshold"][name] = {
            "per_run": [int(s.sum()) for s in sets],
            "shared": int(shared.sum()),
            "chance": float(n * np.prod([s.mean() for s in sets])),
        }
    return consistency


def _per_class(rankings, labels, ps, n_pairs: int, class_names) -> list[dict[str, Any]]:
    """Per class, p and set: the mean Jaccard overlap of the class's sets over the pairs."""
    per_class = []
    sizes = rankings[0].class_sizes
    C = len(sizes)
    by_label = np.argsort(labels.astype(np.int16) if C < 2**15 else labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])[sizes > 0]
    present = sizes > 0
    for p in ps:
        kc = np.maximum(1, np.floor(p * sizes + 0.5))
        for which in ("easy", "hard"):
            # membership in label order, so per-class counts are sums over contiguous slices
            sets = [rk.class_set(which, p, labels)[by_label] for rk in rankings]
            jac = np.zeros(C)
            for a, b in itertools.combinations(range(len(rankings)), 2):
                inter = np.zeros(C)
                inter[present] = np.add.reduceat(sets[a] & sets[b], starts, dtype=np.int64)
                jac += inter / np.maximum(2 * kc - inter, 1)  # each class set holds kc
            jac /= n_pairs
            for c in range(C):
                if sizes[c] == 0:
                    continue
                chance = chance_jaccard(kc[c] / sizes[c])
                per_class.append(
                    {
                        "class": c,
                        "name": class_names[c] if class_names else str(c),
                        "p": p,
                        "set": which,
                        "jaccard": float(jac[c]),
                        "chance": chance,
                        "ratio": float(jac[c]) / chance,
                    }
                )
    return per_class


# ---------------------------------------------------------------------------- findings
#: Groups of pairs that differ only in the randomness of SGD, and how a sentence names them.
SEED_GROUPS = {
    "seed": "only in seed (initialisation and data order)",
    "init_seed": "only in initialisation",
    "data_seed": "only in data order",
}
#: The architecture pairs overlap "about as much" as the seed pairs when their Jaccard is within
#: this factor of the seed pairs' (0.9x to 1.1x); below, the architecture changes the sets beyond
#: SGD's own variation; above, SGD's randomness moves them more than the architecture does.
KEPT_LIKE_SEEDS = 0.9


def _cell(group: dict[str, Any], which: str, p: float) -> dict[str, Any]:
    return next(o for o in group["overlap"] if o["set"] == which and o["p"] == p)


def findings(result: dict[str, Any]) -> list[str]:
    """The overlap analysis in sentences, as the report's summary states it: per group of pairs,
    the easiest and hardest sets' Jaccard as multiples of chance (at the p nearest 10%); then one
    sentence comparing the pairs that differ in architecture with those that differ only in seed,
    initialisation or data order (the paper's "is it SGD?" question), judged by the spread over
    pairs when each group has several (one pair in a group has no spread: the sentence gives the
    ratio and withholds the verdict)."""
    groups = result.get("groups") or {}
    ps = result.get("ps") or []
    if not groups or not ps:
        return []
    p = min(ps, key=lambda q: abs(q - 0.1))
    out = []
    for name, g in groups.items():
        easy, hard = _cell(g, "easy", p), _cell(g, "hard", p)
        fields = [{"arch": "architecture"}.get(f, f) for f in name.split("+")]
        what = SEED_GROUPS.get(name, "in " + " and ".join(fields))
        out.append(
            f"Runs that differ {what} share the easiest {p:.0%} at {easy['ratio']:.1f}x "
            f"chance (Jaccard {easy['jaccard']['mean']:.2f}, chance {easy['chance']:.3f}) and "
            f"the hardest {p:.0%} at {hard['ratio']:.1f}x ({hard['jaccard']['mean']:.2f}); "
            f"{g['pairs']} pair{'s' if g['pairs'] != 1 else ''}."
        )
    arch = groups.get("arch")
    seed_name = next((n for n in SEED_GROUPS if n in groups), None)
    if arch is not None and seed_name is not None:
        seed = groups[seed_name]
        rel = {
            w: _cell(arch, w, p)["jaccard"]["mean"]
            / max(_cell(seed, w, p)["jaccard"]["mean"], 1e-12)
            for w in ("easy", "hard")
        }
        if min(rel.values()) >= 1 + (1 - KEPT_LIKE_SEEDS):
            verdict = (
                "easy and hard examples are more shared across architectures trained with one "
                "seed than across seeds of one architecture, so SGD's randomness moves them more "
                "than the architecture does"
            )
        elif min(rel.values()) >= KEPT_LIKE_SEEDS:
            verdict = (
                "easy and hard examples are about as shared across architectures as across SGD "
                "runs of one architecture, so the architecture moves them about as much as SGD's "
                "randomness does"
            )
        else:
            verdict = (
                "the architecture changes which examples are easy and hard beyond the variation "
                "between SGD runs of one architecture"
            )
        if arch["pairs"] > 1 and seed["pairs"] > 1:
            sides = [
                (_cell(arch, w, p)["jaccard"], _cell(seed, w, p)["jaccard"])
                for w in ("easy", "hard")
            ]
            if all(a["max"] < s_["min"] for a, s_ in sides):
                spread = "every architecture pair overlaps less than every seed pair"
            elif all(a["min"] > s_["max"] for a, s_ in sides):
                spread = "every architecture pair overlaps more than every seed pair"
            else:
                spread = "the ranges over pairs overlap"
        else:  # one pair has no spread: the ratio is said, no conclusion drawn from it
            out.append(
                f"Pairs that differ in architecture overlap {rel['easy']:.2f}x (easiest) and "
                f"{rel['hard']:.2f}x (hardest) as much as pairs that differ "
                f"{SEED_GROUPS[seed_name]}; with one pair in a group there is no spread to tell "
                "that from the variation between pairs, so no verdict (more seeds or "
                "architectures give one)."
            )
            return out
        out.append(
            f"Pairs that differ in architecture overlap {rel['easy']:.2f}x (easiest) and "
            f"{rel['hard']:.2f}x (hardest) as much as pairs that differ "
            f"{SEED_GROUPS[seed_name]}: {verdict} ({spread})."
        )
    return out


# ---------------------------------------------------------------------------- outputs
def format_table(result: dict[str, Any], p_shown: Sequence[float] | None = None) -> str:
    """The terminal table: runs, then per group the mean Jaccard (and ratio to chance) of the
    easy and hard sets at each p, and the rank correlations."""
    absent = result["never_presented"]
    left_out = f" ({absent} never presented, left out)" if absent else ""
    lines = [
        f"{len(result['runs'])} runs, {result['compared']} examples compared{left_out}; "
        f"score {result['score']}, window {result['window'] or 'all'}, view {result['view']}"
    ]
    for i, r in enumerate(result["runs"]):
        lines.append(
            f"  [{i}] {r.get('arch')} seed {r.get('seed')} (init {r.get('init_seed')}, "
            f"data {r.get('data_seed')})  {r['file']}"
        )
    ps = list(p_shown or result["ps"])
    width = max([5] + [len(name) for name in result["groups"]])
    head = (
        f"{'group':<{width}} pairs  set  "
        + "".join(f"{f'p={p:g}':>14}" for p in ps)
        + "   spearman  kendall"
    )
    n = result["compared"]
    sizes = ", ".join(f"p={p:g}: {set_size(p, n)}" for p in ps)
    raised = [p for p in ps if p * n < 0.5]  # rounds to no example: the set holds one
    lines += ["", f"examples in each set: {sizes}"]
    if raised:
        lines.append(
            f"  (p={', '.join(f'{p:g}' for p in raised)} of {n} examples rounds to none: "
            "such a set holds the single easiest or hardest example)"
        )
    lines += ["Jaccard of the easiest / hardest p (ratio to chance p/(2-p)):", head]
    for name, g in result["groups"].items():
        for which in ("easy", "hard"):
            cells = []
            for p in ps:
                o = next(o for o in g["overlap"] if o["p"] == p and o["set"] == which)
                cells.append(f"{o['jaccard']['mean']:.3f} ({o['ratio']:4.1f}x)")
            corr = (
                f"   {g['spearman']['mean']:8.3f}  {g['kendall']['mean']:7.3f}"
                if which == "easy"
                else ""
            )
            lines.append(
                f"{name:<{width}} {g['pairs']:>5}  {which:<4} "
                + "".join(f"{c:>14}" for c in cells)
                + corr
            )
    lines.append("")
    lines.append(
        "shared by all runs (consistency): "
        + ", ".join(
            f"{t['set']} p={t['p']:g}: {t['shared']} vs chance {t['chance']:.1f}"
            for t in result["consistency"]["top"]
            if t["p"] in (ps[0], ps[len(ps) // 2])
        )
    )
    th = result["consistency"]["threshold"]
    lines.append(
        f"always easy in the window: per run {th['always_easy']['per_run']}, shared "
        f"{th['always_easy']['shared']} (chance {th['always_easy']['chance']:.1f}); never "
        f"learned in the window: per run {th['never_learned']['per_run']}, shared "
        f"{th['never_learned']['shared']} (chance {th['never_learned']['chance']:.1f})"
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], folder: str) -> list[str]:
    """pairs.png (heat-map of the easy and hard Jaccard at p nearest 10%) and overlap.png
    (Jaccard against p per group, with the chance line). Returns the written paths."""
    from .figures import pyplot
    from .figures import save as save_png

    plt = pyplot()

    def save(name: str, fig) -> str:
        path = os.path.join(folder, name)
        save_png(fig, path)
        return path

    written = []
    R = len(result["runs"])
    p_map = min(result["ps"], key=lambda p: abs(p - 0.1))
    mat = np.full((R, R), np.nan)
    for pr in result["pairs"]:
        for o in pr["overlap"]:
            if o["p"] == p_map:
                a, b = (pr["a"], pr["b"]) if o["set"] == "easy" else (pr["b"], pr["a"])
                mat[a, b] = o["jaccard"]
    names = [f"[{i}] {r.get('arch')} s{r.get('seed')}" for i, r in enumerate(result["runs"])]
    fig, ax = plt.subplots(figsize=(1.2 * R + 3, 1.0 * R + 2.5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    for i in range(R):
        for j in range(R):
            if not np.isnan(mat[i, j]):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    color="white" if mat[i, j] < 0.6 else "black",
                    fontsize=9,
                )
    ax.set_xticks(range(R), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(R), names, fontsize=8)
    ax.set_title(
        f"Jaccard of the {p_map:.0%} easiest (upper) and hardest (lower) examples\n"
        f"chance {chance_jaccard(p_map):.3f}; score {result['score']}"
    )
    fig.colorbar(im, ax=ax, label="Jaccard index")
    fig.tight_layout()
    written.append(save("pairs.png", fig))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    ps = np.array(result["ps"])
    for ax, which in zip(axes, ("easy", "hard")):
        for name, g in result["groups"].items():
            rows = [o for o in g["overlap"] if o["set"] == which]
            mean = np.array([o["jaccard"]["mean"] for o in rows])
            lo = np.array([o["jaccard"]["min"] for o in rows])
            hi = np.array([o["jaccard"]["max"] for o in rows])
            ax.plot(
                ps * 100,
                mean,
                marker="o",
                label=f"{name} ({g['pairs']} pair{'s' if g['pairs'] > 1 else ''})",
            )
            if g["pairs"] > 1:
                ax.fill_between(ps * 100, lo, hi, alpha=0.2)
        grid = np.linspace(ps.min(), ps.max(), 100)
        ax.plot(grid * 100, grid / (2 - grid), "k--", label="chance p/(2-p)")
        ax.set_xscale("log")
        ax.set_xticks(ps * 100, [f"{p * 100:g}%" for p in ps])
        ax.minorticks_off()
        ax.set_xlabel("set size p (% of the examples, log scale)")
        ax.set_title(f"the {'easiest' if which == 'easy' else 'hardest'} p: overlap between runs")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Jaccard index (mean over pairs; band: min-max)")
    axes[1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"Are the easy and hard sets shared? (score {result['score']}, "
        f"{len(result['runs'])} runs, window {result['window'] or 'all'})"
    )
    fig.tight_layout()
    written.append(save("overlap.png", fig))
    return written


def write_outputs(
    result: dict[str, Any], folder: str, *, force: bool = False, inputs: Sequence[str] = ()
) -> dict[str, Any]:
    """overlap.json (the result, sealed as the folder's manifest), overlap.txt (the table) and
    the figures, into `folder` (not overlapping any input; replaced only with `force` when it is
    an earlier overlap output)."""
    from .io import atomic_write, check_disjoint
    from .outputs import Output

    folder = os.path.abspath(folder)
    check_disjoint(folder, {f"input {i + 1}": p for i, p in enumerate(inputs)})

    def build(work: str) -> dict[str, Any]:
        with atomic_write(os.path.join(work, TABLE), "w") as f:
            f.write(format_table(result) + "\n")
        return {**result, "figures": [os.path.basename(p) for p in plot(result, work)]}

    with Output(folder, MANIFEST, FORMAT, force=force, command="analyze overlap") as out:
        return out.write(build)


def written(record: dict[str, Any]) -> list[str]:
    """The files of an overlap folder, by name, from its record."""
    return [MANIFEST, TABLE, *record["figures"]]


def class_names(inputs: Sequence[str]) -> list[str] | None:
    """Class names for the per-class table, when the runs' dataset is Fashion-MNIST (the only
    dataset whose names are known without reading it)."""
    from .datasets import FASHION_MNIST_CLASSES
    from .statsfile import read_metadata_block

    try:
        meta = read_metadata_block(expand_inputs(inputs)[0]) or {}
    except ValueError:
        return None
    return list(FASHION_MNIST_CLASSES) if meta.get("dataset") == "fashion-mnist" else None


def run_overlap(
    cfg: OverlapConfig, inputs: Sequence[str], out: str, *, force: bool = False
) -> dict[str, Any]:
    """`easyhard analyze overlap`: the overlap analysis of `inputs` (statistics files, run
    folders or score folders) by `cfg`, written to folder `out`; returns the sealed record, with
    written(record) names its files."""
    result = analyze_overlap(
        list(inputs),
        score=cfg.score,
        window=cfg.window,
        view=cfg.view,
        ps=cfg.ps,
        tie_seed=cfg.tie_seed,
        kendall_max=cfg.kendall_max,
        class_names=class_names(inputs),
    )
    return write_outputs(result, out, force=force, inputs=list(inputs))


def read_result(folder: str) -> dict[str, Any]:
    """overlap.json of an analysis folder."""
    with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------- the report's view
def read_record(folder: str) -> dict[str, Any] | None:
    """The record of an overlap folder, or None when `folder` holds none (what the report asks
    of every input folder)."""
    from .io import read_json_object

    record = read_json_object(os.path.join(folder, MANIFEST))
    return record if (record or {}).get("format") == FORMAT else None


def record_fingerprint(record: dict[str, Any]) -> str | None:
    """The dataset fingerprint the analysed runs were scored on."""
    return record.get("fingerprint")


def report_blocks(folder: str, record: dict[str, Any]) -> list[tuple]:
    """The report's section for one overlap folder, as blocks: ("text", paragraph), ("table",
    header, rows), ("figure", path, caption)."""
    res = record
    blocks: list[tuple] = [
        (
            "text",
            f"{folder}: {len(res.get('runs', []))} runs, score {res.get('score')}, window "
            f"{res.get('window') or 'all'}, {res.get('compared')} examples compared"
            + (
                f" ({res['never_presented']} never presented, left out)"
                if res.get("never_presented")
                else ""
            )
            + ".",
        )
    ]
    p_show = min(res.get("ps", [0.1]), key=lambda p: abs(p - 0.1))
    rows = []
    for name, g in res.get("groups", {}).items():
        cells = {o["set"]: o for o in g["overlap"] if o["p"] == p_show}
        rows.append(
            [
                name,
                g["pairs"],
                cells["easy"]["jaccard"]["mean"],
                cells["hard"]["jaccard"]["mean"],
                cells["easy"]["chance"],
                g["spearman"]["mean"],
                g["kendall"]["mean"],
            ]
        )
    header = ["group (what differs)", "pairs", f"easy Jaccard p={p_show:g}"]
    header += [f"hard Jaccard p={p_show:g}", "chance", "Spearman", "Kendall"]
    blocks.append(("table", header, rows))
    th = res.get("consistency", {}).get("threshold", {})
    if th:
        easy, never = th["always_easy"], th["never_learned"]
        blocks.append(
            (
                "text",
                f"Always easy in the window (correct at every observation): per run "
                f"{easy['per_run']}, shared by all {easy['shared']} (chance {easy['chance']:.1f}). "
                f"Never learned in the window: per run {never['per_run']}, shared by all "
                f"{never['shared']} (chance {never['chance']:.1f}).",
            )
        )
    from .figures import figure_blocks

    return blocks + figure_blocks(folder)

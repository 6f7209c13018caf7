"""Difficulty scores derived from a run's per-example log (SampleStats / its statistics file).

Every score is a float64 array [N] in dataset order. ``DIRECTION[name]`` says which end is easy:
"higher_easier", "higher_harder", or "neither" (variability). Each score's definition, direction
and range is in the docstring of ``Scores`` (``help(easyhard.Scores)``), the table of every
example's scores that ``SampleStats.scores()``, ``read_scores(path)`` and ``merge_scores(runs)``
return.

In a merged file every score is the mean over runs, ``never_learned`` and ``never_presented`` the
fraction of runs; an example never presented in any one run has NaN scores there too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from .io import first_repeat, same_file
from .statsfile import (
    MERGED_FORMAT,
    MergedFile,
    parse_metadata,
    read_archive,
    write_merged_file,
)


class RunStatistics(Protocol):
    """What scores are computed from: a SampleStats (live or loaded) or a StatsFile (this module
    loads without torch and imports neither: the command line reads SCORES from it)."""

    num_samples: int
    num_classes: int
    fingerprint: str | None
    labels: np.ndarray
    paths: list[str] | None
    epochs: int
    history: np.ndarray

    def totals(self, open_epoch: bool = True) -> dict[str, np.ndarray]: ...


DIRECTION = {
    "easiness": "higher_easier",
    "easiness_plain": "higher_easier",
    "forgetting": "higher_harder",
    "first_learned": "higher_harder",
    "el2n": "higher_harder",
    "margin": "higher_easier",
    "confidence": "higher_easier",
    "variability": "neither",
}
SCORES = tuple(DIRECTION)
#: The scores a window of early epochs applies to: those the per-epoch record (the history) can
#: give for its first epochs. Forgetting and margin are sums over every presentation that the
#: record keeps only in total, so they have no window (check_window refuses one).
WINDOWED = ("easiness", "easiness_plain", "first_learned", "el2n", "confidence", "variability")


def check_window(scores: str | Sequence[str], window: int | None) -> None:
    """Refuse a window for a score that has none (not in WINDOWED): it would be labelled with
    the window while it counts every epoch."""
    names = [scores] if isinstance(scores, str) else list(scores)
    whole = [n for n in names if n in SCORES and n not in WINDOWED]
    if window is not None and whole:
        raise ValueError(
            f"{whole[0]} is counted over every presentation (the per-epoch record keeps no "
            f"{whole[0]} of its own), so it has no `window`: leave `window` out for it"
        )


def check_same_window(epochs: Sequence[tuple[str, int]], window: int | None) -> None:
    """Runs averaged or compared, as (name, epochs recorded): without a window they must have
    recorded as many epochs, else a score over all epochs counts different windows (merging,
    the overlap analysis and the report refuse alike)."""
    if window is not None or not epochs:
        return
    first_name, first = epochs[0]
    for name, e in epochs[1:]:
        if e != first:
            raise ValueError(
                f"{name} has {e} epochs, {first_name} {first}: scores over all epochs would "
                f"count different windows; set `window` to at most {min(e, first)} epoch(s)"
            )


def compute_scores(
    stats: RunStatistics, window: int | None = None, names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The scores of one run (definitions: Scores), with ``never_learned`` and
    ``never_presented``. `window`: the first epochs counted by the WINDOWED scores (forgetting
    and margin count every presentation). `names`: only these scores (default: all of SCORES);
    each is computed only when asked for."""
    hist = stats.history  # [E, N]
    # the closed epochs only, as the history holds them: an epoch still open (a file saved
    # mid-epoch, or before the last end_epoch) would count in forgetting, EL2N and margin and
    # not in easiness
    tot = stats.totals(open_epoch=False)
    E = hist.shape[0]
    if E == 0:
        raise ValueError(
            "the statistics have no closed epoch: nothing to score (a record's epochs close "
            "with end_epoch())"
        )
    w = E if window is None else int(window)
    if not 1 <= w <= E:
        raise ValueError(f"window must be between 1 and the {E} recorded epochs, got {window}")
    # with a window, only the scores that have one (forgetting and margin would be all-epoch
    # sums labelled with the window, and averaged over runs of other lengths when merged)
    every = SCORES if window is None else WINDOWED
    wanted = every if names is None else tuple(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose among {', '.join(SCORES)}")
    check_window(wanted, window)
    never = tot["correct"] == 0
    finite = (tot["presentations"] - tot["nonfinite"]).astype(np.float64)
    safe = np.maximum(finite, 1)

    def early_counts():
        early = hist[:w]
        pres = early["presentations"].astype(np.float64).sum(0)
        correct = early["correct"].astype(np.float64).sum(0)
        return early, pres, correct

    def easiness():
        early, pres, correct = early_counts()
        prob = (early["prob"].astype(np.float64) * early["presentations"]).sum(0)
        mean_prob = np.divide(prob, pres, out=np.zeros_like(prob), where=pres > 0)
        return (correct + mean_prob) / (pres + 1)

    def plain():
        _, pres, correct = early_counts()
        return np.divide(correct, pres, out=np.zeros_like(correct), where=pres > 0)

    def first_learned():
        learned = hist["correct"][:w] > 0
        return np.where(learned.any(0), learned.argmax(0), w).astype(np.float64)

    def el2n():
        if w == E:  # every epoch: the exact float64 sums
            return np.where(finite > 0, tot["el2n_sum"] / safe, np.sqrt(2.0))
        early = hist[:w]  # the epochs' means (float16: within 1e-3), weighted by presentations
        pres = early["presentations"].astype(np.float64)
        n = pres.sum(0)
        total = (early["el2n"].astype(np.float64) * pres).sum(0)
        return np.where(n > 0, total / np.maximum(n, 1), np.sqrt(2.0))

    def confidence_variability(which: str):
        seen = hist["presentations"][:w] > 0
        epoch_prob = np.where(seen, hist["prob"][:w].astype(np.float64), np.nan)
        with np.errstate(invalid="ignore"):
            n_seen = seen.sum(0)
            conf = np.where(n_seen > 0, np.nansum(epoch_prob, 0) / np.maximum(n_seen, 1), 0.0)
            if which == "confidence":
                return conf
            return np.where(
                n_seen > 0,
                np.sqrt(np.nansum((epoch_prob - conf) ** 2, 0) / np.maximum(n_seen, 1)),
                0.0,
            )

    makers = {
        "easiness": easiness,
        "easiness_plain": plain,
        "forgetting": lambda: np.where(never, E, tot["forgetting_events"]).astype(np.float64),
        "first_learned": first_learned,
        "el2n": el2n,
        "margin": lambda: np.where(finite > 0, tot["margin_sum"] / safe, -np.inf),
        "confidence": lambda: confidence_variability("confidence"),
        "variability": lambda: confidence_variability("variability"),
    }
    absent = tot["presentations"] == 0
    out = {}
    for name in wanted:
        value = makers[name]()
        out[name] = np.where(absent, np.nan, value) if absent.any() else value
    out["never_learned"] = never & ~absent
    out["never_presented"] = absent
    return out


def excluded(table: "ScoreTable") -> np.ndarray:
    """bool [N]: examples that take no part in rankings (never presented in some run)."""
    absent = table.scores.get("never_presented")
    if absent is None:  # merged by an easyhard that did not record it
        return np.zeros(len(table.labels), dtype=bool)
    return np.asarray(absent) > 0


def hardness(name: str, values: np.ndarray) -> np.ndarray:
    """`values` of score `name` oriented so that larger means harder (for selection)."""
    direction = DIRECTION.get(name)
    if direction is None:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")
    if direction == "neither":
        raise ValueError(f"{name} has no easy/hard direction; rank by another score")
    v = np.asarray(values, dtype=np.float64)
    return -v if direction == "higher_easier" else v


# ---------------------------------------------------------------------------- the table
class Scores(dict):
    """Every example's scores as a table: a dict of numpy arrays [N], one row per example in
    dataset order, with ``to_pandas()``. From ``SampleStats.scores()`` (a live recorder),
    ``easyhard.read_scores(path)`` (a statistics or merged scores file) or
    ``easyhard.merge_scores(runs)`` (runs averaged in memory).

    Columns:

    - index (int64): the dataset index (what SampleStats.update was given).
    - label (int64): the example's label (-1: never presented and no labels given).
    - path (str): the file's relative path (file datasets only).
    - easiness (higher_easier, [0, 1]): the paper's notion, the fraction of observations in a window
      of early epochs in which the example was classified correctly, graded by the mean true-class
      probability over the same observations: (correct + mean_prob) / (observations + 1). Within a
      count of correct observations the probability orders examples, so examples correct every time
      are not one big tie. Window: the first ``window`` epochs (default: all recorded epochs).
    - easiness_plain (higher_easier, [0, 1]): the paper's own definition, the fraction of the
      window's observations in which the example was classified correctly, without the probability
      grading: most examples tie (a handful of values over a few epochs), so rank it with random
      tie-breaking (select's ``tie_seed``), never by dataset index.
    - forgetting (higher_harder, [0, epochs]): forgetting events (correct, then incorrect at the
      next presentation) over all presentations; examples never classified correctly get the number
      of epochs, as in Toneva et al. (2019). No window: every presentation counts.
    - first_learned (higher_harder, [0, epochs]): the first epoch with a correct presentation;
      never-learned examples get the number of epochs (in a window: of its epochs).
    - el2n (higher_harder, [0, sqrt 2]): mean EL2N over finite presentations (Paul et al., 2021);
      in a window, over the window's presentations, from the per-epoch means (float16: within
      1e-3 of the exact mean), the early-training EL2N Paul et al. rank by.
    - margin (higher_easier, real): mean margin over finite presentations: the area under the margin
      (AUM, Pleiss et al., 2020) divided by presentations. No window: every presentation counts.
    - confidence (higher_easier, [0, 1]): mean over epochs (of the window) of the epoch's mean
      true-class probability (dataset cartography, Swayamdipta et al., 2020).
    - variability (neither, [0, 0.5]): standard deviation over epochs (of the window) of that
      probability.
    - never_learned: bool, presented but never classified correctly (not a ranking score).
    - never_presented: bool, never presented to the model (e.g. an unreadable image dropped by
      ``--skip-corrupt``). Such an example keeps its row, in dataset order, with every score NaN
      (its scores measure nothing); selection and analysis exclude it and count it.

    Attributes: ``num_classes``, ``fingerprint`` (of the data scored, or None), ``window`` (the
    first epochs the WINDOWED scores counted, all but forgetting and margin; None: all),
    ``runs`` (how many runs the scores average), ``per_run`` (merged in memory: name -> float64
    [runs, N]) and ``metadata``.
    """

    def __init__(
        self,
        columns: Mapping[str, np.ndarray],
        *,
        num_classes: int,
        fingerprint: str | None = None,
        window: int | None = None,
        runs: int = 1,
        metadata: Mapping | None = None,
        per_run: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        super().__init__(columns)
        self.num_classes = int(num_classes)
        self.fingerprint = fingerprint
        self.window = window
        self.runs = int(runs)
        self.metadata = dict(metadata or {})
        self.per_run = dict(per_run or {})

    @classmethod
    def from_table(cls, table: "ScoreTable", window: int | None = None, runs: int = 1) -> "Scores":
        n = len(table.labels)
        columns: dict[str, np.ndarray] = {
            "index": np.arange(n, dtype=np.int64),
            "label": np.asarray(table.labels, dtype=np.int64),
        }
        if table.paths is not None:
            columns["path"] = np.asarray(table.paths, dtype=str)
        columns.update(table.scores)
        return cls(
            columns,
            num_classes=table.num_classes,
            fingerprint=table.fingerprint,
            window=window,
            runs=runs,
            metadata=table.metadata,
        )

    def table(self) -> "ScoreTable":
        """The same scores as a ScoreTable (what the selection and analyses take)."""
        names = [k for k in self if k not in ("index", "label", "path")]
        paths = self.get("path")
        return ScoreTable(
            {k: self[k] for k in names},
            np.asarray(self["label"], dtype=np.int64),
            self.num_classes,
            self.fingerprint,
            None if paths is None else [str(p) for p in paths],
            self.metadata,
            self.window,
        )

    def to_pandas(self):
        """A pandas DataFrame indexed by the dataset index, one column per array."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(
            {k: v for k, v in self.items() if k != "index"},
            index=pd.Index(self["index"], name="index"),
        )

    def __repr__(self) -> str:
        return (
            f"Scores({len(self['label'])} examples, {self.num_classes} classes, runs={self.runs}, "
            f"columns: {', '.join(self)})"
        )


# ---------------------------------------------------------------------------- merging
@dataclass
class ScoreTable:
    """Scores of one run or of merged runs, with the identity of every example."""

    scores: dict[str, np.ndarray]  # name -> float64 [N] (never_learned: fraction of runs)
    labels: np.ndarray  # int64 [N]
    num_classes: int
    fingerprint: str | None
    paths: list[str] | None
    metadata: dict
    window: int | None = None  # the first epochs the scores counted (None: every epoch)

    def column(self, name: str, where: str = "the scores") -> np.ndarray:
        """Score `name`, refused by name when the table holds none (a table counted over a
        window holds no forgetting and margin, which have none)."""
        if name not in self.scores:
            why = (
                f" (counted over the first {self.window} epoch(s): {name} has no window)"
                if self.window is not None and name in SCORES and name not in WINDOWED
                else ""
            )
            raise ValueError(
                f"{where} holds no {name!r} score{why} (it has "
                f"{', '.join(sorted(n for n in self.scores if n in SCORES))})"
            )
        return self.scores[name]


def merge_stats_files(paths: Sequence[str], out: str, window: int | None = None) -> ScoreTable:
    """Average every score over runs (and architectures); refuses files of different data.

    Writes `out` (.npz, atomically): index, label, (path), score_<name> [N] means over runs,
    runs_<name> [R, N] per run, and a JSON metadata block listing the runs."""
    if not paths:
        raise ValueError("nothing to merge: give at least one statistics file")
    for p in paths:
        if same_file(p, out):
            raise ValueError(
                f"the output {out} is one of the inputs ({p}): merging into it would "
                "destroy a run's per-epoch history; choose another output file"
            )
    repeat = first_repeat(paths)
    if repeat:
        i, j, copy = repeat
        how = ", a copy: the same bytes" if copy else ""
        raise ValueError(
            f"{paths[i]} is given twice (as {paths[j]}{how}): each run counts once in a merge"
        )
    from .statsfile import check_merged_output, read_stats_file

    check_merged_output(out)

    first, means, stacked, runs = _merge_runs([(p, read_stats_file(p)) for p in paths], window)
    runs = [{"file": os.path.abspath(p), **r} for p, r in zip(paths, runs)]
    meta = write_merged_file(
        out,
        labels=first.labels,
        num_classes=first.num_classes,
        fingerprint=first.fingerprint,
        paths=first.paths,
        window=window,
        runs=runs,
        means=means,
        per_run=stacked,
        directions=DIRECTION,
    )
    return ScoreTable(means, first.labels, first.num_classes, first.fingerprint, first.paths, meta)


def _merge_runs(named: Sequence[tuple[str, RunStatistics]], window: int | None):
    """(the first run, means name -> [N], per run name -> [R, N], each run's description) of
    runs of the same data, by name (a file or "run i"); refuses runs that cannot be merged."""
    per_run = []
    first_name, first = named[0]
    for name, stats in named:
        meta = getattr(stats, "metadata", None) or {}
        first_meta = getattr(first, "metadata", None) or {}
        if stats.fingerprint != first.fingerprint:
            raise ValueError(
                f"{name} was scored on dataset fingerprint {stats.fingerprint!r}, "
                f"{first_name} on {first.fingerprint!r}: they cannot be merged"
            )
        if (
            stats.num_samples != first.num_samples
            or stats.num_classes != first.num_classes
            or not np.array_equal(stats.labels, first.labels)
        ):
            raise ValueError(f"{name} and {first_name} disagree on the examples or their labels")
        if meta.get("view") != first_meta.get("view"):
            raise ValueError(
                f"{name} records the {meta.get('view')!r} view, {first_name} the "
                f"{first_meta.get('view')!r} view: views are never merged"
            )
        check_same_window([(first_name, first.epochs), (name, stats.epochs)], window)
        per_run.append((meta, compute_scores(stats, window)))
    names = list(per_run[0][1])
    stacked = {n: np.stack([r[1][n].astype(np.float64) for r in per_run]) for n in names}
    means = {n: stacked[n].mean(0) for n in names}
    runs = [
        {k: m.get(k) for k in ("arch", "seed", "run")} | {"epochs": m.get("epochs")}
        for m, _ in per_run
    ]
    return first, means, stacked, runs


def merge_scores(runs: Sequence, window: int | None = None) -> Scores:
    """Every score averaged over runs in memory (as ``easyhard merge`` does with files): `runs`
    are SampleStats (live or loaded) or paths of statistics files, of the same data and, unless
    `window` is given, the same number of epochs. Returns a Scores table whose ``per_run`` holds
    each run's scores; ``never_learned`` and ``never_presented`` become fractions of runs."""
    from .statsfile import read_stats_file

    if not runs:
        raise ValueError("nothing to merge: give at least one run")
    named = []
    for i, r in enumerate(runs):
        if any(r is q for q in runs[:i]):
            raise ValueError(f"runs[{i}] is given twice: each run counts once in a merge")
        if isinstance(r, (str, os.PathLike)):
            named.append((os.fspath(r), read_stats_file(os.fspath(r))))
        elif hasattr(r, "history") and hasattr(r, "totals"):
            named.append((f"run {i}", r))
        else:
            raise TypeError(
                f"runs[{i}] is a {type(r).__name__}: give SampleStats or statistics file paths"
            )
    first, means, stacked, described = _merge_runs(named, window)
    table = ScoreTable(
        means, first.labels, first.num_classes, first.fingerprint, first.paths, {"runs": described}
    )
    merged = Scores.from_table(table, window, runs=len(named))
    merged.per_run = stacked
    return merged


def load_scores(path: str, window: int | None = None) -> ScoreTable:
    """Scores from a run's statistics file (computed here) or a merged scores file (read); both
    through easyhard.statsfile, which checks their format and version."""
    from .statsfile import read_merged_file, read_stats_file

    arrays = read_archive(path)
    if parse_metadata(arrays, path).get("format") == MERGED_FORMAT:
        merged: MergedFile = read_merged_file(path, arrays)
        if window is not None and window != merged.metadata.get("window"):
            raise ValueError(
                f"{path} was merged with window={merged.metadata.get('window')}; "
                f"re-merge to use window={window}"
            )
        return ScoreTable(
            merged.scores,
            merged.labels,
            merged.num_classes,
            merged.fingerprint,
            merged.paths,
            merged.metadata,
            merged.metadata.get("window"),
        )
    stats = read_stats_file(path, arrays)
    return ScoreTable(
        compute_scores(stats, window),
        stats.labels,
        stats.num_classes,
        stats.fingerprint,
        stats.paths,
        stats.metadata,
        window,
    )


def read_scores(path: str | os.PathLike, window: int | None = None) -> Scores:
    """The Scores table of a statistics file (scores computed here, easiness over the first
    `window` epochs) or of a merged scores file (read as merged)."""
    table = load_scores(os.fspath(path), window)
    if table.metadata.get("format") == MERGED_FORMAT:
        return Scores.from_table(
            table, table.metadata.get("window"), runs=len(table.metadata.get("runs") or ()) or 1
        )
    return Scores.from_table(table, window)

"""The compression experiment: can a dataset be compressed by easiness, and cheaply?

    easyhard experiment compression runs/fm/convnet-run0/scores.npz --window 1,2 \\
        --dataset fashion-mnist --arch resnet20 --keep 0.5,0.7 --seeds 3 --out runs/removal

Keep a fraction of the training set, chosen by a strategy (``hardest``: drop the easiest, the
paper's compression; ``easiest``; ``random``, the baseline; ``stratified``, coverage-centric
selection over equal-width score bins) ranked by a *ranking*: a score (easiness,
easiness_plain, forgetting, EL2N, margin, ...) of a statistics file counted over a window of its
early epochs, or an external score array (``--external NAME=FILE.npy``, e.g. published
C-scores). Train afresh on the subset (the harness: easyhard.experiments.harness's cells, resume,
index subsets; stats' error bars) and measure test accuracy.

Whether compression is worth it depends on what the scores cost, so the scoring cost is an axis:
every ranking carries the time its scoring runs took for the epochs it counts (read from their
metrics.jsonl: the sum over runs of the first `window` epochs' seconds), and every result records
``scoring_seconds`` and ``training_seconds``; compression-cost.png plots test accuracy against
their sum, with the full-data training as the reference point. Transfer is the `--arch` of the
experiment differing from the scoring runs' (score with a small network, train the big one).

Cells are the removal experiment's: keyed by the training's identity only, so in one --out the
removal and the compression experiment share them (dropping the easiest 30% is keeping the
hardest 70%; random keeps draw like random removal). The kept count is the removal's: keeping q
of n examples keeps n - round((1 - q) n).

Outputs in OUT (beside a removal experiment's, if any): ``compression-results.jsonl`` (one line
per requested training: ROW_FIELDS), ``compression-summary.md``, ``compression.png`` (accuracy
against kept fraction, a panel per ranking) and ``compression-cost.png``, the resolved
``compression-config.toml``, and the compression record in ``experiment.json``.
"""

from __future__ import annotations

import functools
import math
import os
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import BUDGETS, COMPRESSION_STRATEGIES, DYNAMIC_STRATEGIES, settings
from .folder import KIND_FILES
from .harness import (
    CELL_ROW_FIELDS,
    REFERENCE,
    TIMING_FIELDS,  # noqa: F401  (the timing fields of its rows; tests import them from here)
    Cell,
    Kind,
    file_sha256,
    load_score_table,
    plan_cells,
    reference_subset,
    selected,
)
from .harness import run as run_kind
from .plots import (
    accuracy,
    accuracy_limits,
    draw_full_data,
    draw_line,
    error_bars,
    grouped,
    interval,
)
from .stats import paired_summary

if TYPE_CHECKING:
    from ..config import CompressionConfig

CONFIG_FILE, RESULTS, SUMMARY, FIGURE, COST_FIGURE = KIND_FILES["compression"]

#: Settings a continued compression experiment may change (they add cells); statistics files may be
#: added too, never changed.
GRID_FIELDS = ("keep", "strategies", "seeds", "score", "budget", "window", "external")


ROW_FIELDS = (
    "ranking",
    "score",
    "source",
    "window",
    "budget",
    "keep",
    "strategy",
    *CELL_ROW_FIELDS,
    "cut_hardest",
    "scoring_arch",
    "scoring_runs",
    "scoring_epochs",
    "scoring_seconds",
    "scoring_images",
    "dataset",
    "selection_seed",
    "tie_seed",
    "cell",
    "training_seconds",
    "total_seconds",
    "training_images",
    "total_images",
    "seconds",
    "images_per_s",
)


STRATEGY_RANK = {
    REFERENCE: 0,
    **{s: i + 1 for i, s in enumerate(COMPRESSION_STRATEGIES + DYNAMIC_STRATEGIES)},
}
#: The control of each dynamic strategy: as many examples skipped, at random.
DYNAMIC_CONTROL = "prune-random"


#: The removal order that a strategy's subset equals (keeping the hardest = removing the easiest).
AS_REMOVAL = {
    "hardest": "easiest",
    "easiest": "hardest",
    "random": "random",
    "stratified": "stratified",
    REFERENCE: REFERENCE,
}


@dataclass
class Ranking:
    """One way of ranking the examples: a score of a statistics (or merged scores) file over a
    window, or an external
    array; with what it cost to compute."""

    label: str  # unique: "easiness (convnet-run0, 1 epoch)", "cscore (external)"
    score: str
    source: str  # the scores input's label, or the external name
    window: int | None
    hardness: np.ndarray  # float64 [N], larger = harder (scores.hardness)
    cost: dict  # {"seconds", "runs", "arch", "epochs"}; seconds None when unknown


def _metrics_cost(run_file: str, epochs: int) -> tuple[float, float] | None:
    """(seconds, images) of the first `epochs` epochs of the run that wrote `run_file` (its
    folder's metrics.jsonl; images from images_per_s x seconds where a row lacks them); None
    when they are not all recorded there."""
    from ..runfolder import read_metrics

    try:
        rows = read_metrics(os.path.dirname(os.path.abspath(run_file)))
    except (OSError, ValueError):
        return None
    found = {}
    for r in rows:
        if "epoch" in r and isinstance(r.get("seconds"), (int, float)):
            images = r.get("images")
            if not isinstance(images, (int, float)):
                images = float(r.get("images_per_s") or 0.0) * float(r["seconds"])
            found[int(r["epoch"])] = (float(r["seconds"]), float(images))
    if not all(e in found for e in range(1, epochs + 1)):
        return None
    return (
        sum(found[e][0] for e in range(1, epochs + 1)),
        sum(found[e][1] for e in range(1, epochs + 1)),
    )


def scoring_cost(path: str, table, window: int | None) -> dict:
    """What the scores of `path` counted over `window` cost: the scoring runs (one, or those a
    merged file lists), their architectures, the epochs counted, and the sums over runs of those
    epochs' training seconds and images processed (None when a run's metrics.jsonl does not
    record them). Images processed is the machine-independent measure: seconds depend on what
    else the machine was doing."""
    meta = table.metadata or {}
    runs = meta.get("runs")
    if isinstance(runs, list) and runs:  # a merged file: its runs' own folders
        files = [r.get("file") for r in runs if isinstance(r, dict)]
        archs = [r.get("arch") for r in runs if isinstance(r, dict)]
    else:
        files, archs = [path], [meta.get("arch")]
    if window is None:
        window = meta.get("window") if isinstance(runs, list) and runs else None
    if window is None:
        first = runs[0] if isinstance(runs, list) and runs and isinstance(runs[0], dict) else meta
        window = first.get("epochs_trained") or first.get("epochs") or 0
    epochs = int(window)
    parts = [_metrics_cost(f, epochs) if f else None for f in files]
    known = not any(p is None for p in parts)
    return {
        "seconds": round(sum(p[0] for p in parts), 3) if known else None,
        "images": round(sum(p[1] for p in parts)) if known else None,
        "runs": len(files),
        "arch": ",".join(dict.fromkeys(str(a) for a in archs)),
        "epochs": epochs,
    }


def source_labels(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(label, path) of the scores inputs given as [LABEL=]FILE: the label defaults to the run
    folder's name for a run's scores.npz and to the file's stem otherwise, made unique."""
    out, seen = [], set()
    for item in paths:
        label, sep, path = str(item).partition("=")
        if not sep or os.path.exists(item):
            label, path = "", str(item)
        if not label:
            stem = os.path.splitext(os.path.basename(path))[0]
            label = (
                (os.path.basename(os.path.dirname(os.path.abspath(path))) or stem)
                if stem == "scores"
                else stem
            )
        if not os.path.isfile(path):
            raise FileNotFoundError(f"scores input {path} does not exist (give [LABEL=]FILE)")
        bad = sorted(set(label) & set("|`\n\r"))
        if bad:  # a label is a cell of the summary's tables and a figure's legend
            raise ValueError(
                f"the scores input label {label!r} holds {' and '.join(map(repr, bad))}, which "
                f"would break the summary's tables: name it, e.g. run0={path}"
            )
        base, n = label, 2
        while label in seen:
            label, n = f"{base}#{n}", n + 1
        seen.add(label)
        out.append((label, path))
    return out


def load_external(name: str, direction: str, path: str, train) -> np.ndarray:
    """An external score array as hardness (float64 [N], larger = harder), checked: one finite
    value per training example, in dataset order (an .npz's `labels`, when given, must be the
    dataset's; its `index`, when given, must be 0..N-1)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"external score {name!r}: {path} does not exist")
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"\x93NUMPY", b"PK")):  # numpy would talk of pickles
        raise ValueError(
            f"external score {name!r}: {path} is not a .npy or .npz array file (write one with "
            "numpy.save or numpy.savez)"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"external score {name!r}: {path} is not a .npy or .npz array file ({e})"
        ) from e
    labels = index = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "scores" not in loaded.files:
                raise ValueError(
                    f"external score {name!r}: {path} holds no array named "
                    f"'scores' (it has {', '.join(loaded.files) or 'nothing'})"
                )
            values = loaded["scores"]
            labels = loaded["labels"] if "labels" in loaded.files else None
            index = loaded["index"] if "index" in loaded.files else None
    else:
        values = loaded
    n = len(train)
    if values.ndim != 1 or values.shape[0] != n or values.dtype.kind not in "fiub":
        raise ValueError(
            f"external score {name!r}: {path} must hold one number per training "
            f"example ({n}, in dataset order), got {values.dtype} {values.shape}"
        )
    values = values.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise ValueError(
            f"external score {name!r}: {path} has {len(bad)} non-finite values "
            f"(the first at dataset index {bad[0]}): every example needs a score"
        )
    if index is not None and not np.array_equal(np.asarray(index), np.arange(n)):
        raise ValueError(
            f"external score {name!r}: {path}'s 'index' is not 0..{n - 1}: the "
            "scores must be in dataset order"
        )
    if labels is not None and not np.array_equal(
        np.asarray(labels).astype(np.int64), train.labels.astype(np.int64)
    ):
        raise ValueError(
            f"external score {name!r}: {path}'s 'labels' are not the dataset's "
            "labels in dataset order: the scores are in another order or of other "
            "data"
        )
    return values if direction == "higher_harder" else -values


def build_rankings(
    cfg: "CompressionConfig", sources: Sequence[tuple[str, str]], train
) -> tuple[list[Ranking], np.ndarray, dict[str, str]]:
    """Every ranking of the grid, the examples that take part (presented in every scoring run),
    and label -> sha256 of every input file."""
    from ..scores import WINDOWED, excluded, hardness

    rankings: list[Ranking] = []
    alive = np.ones(len(train), dtype=bool)
    shas: dict[str, str] = {}
    for label, path in sources:
        shas[label] = file_sha256(path)
        tables = {}  # window -> the scores of `path` counted over it

        def table_of(w):
            if w not in tables:
                tables[w] = load_score_table(path, w, train, cfg)
            return tables[w]

        for window in cfg.window_list():
            for score in cfg.score_list():
                # forgetting and margin have no window (scores.WINDOWED): ranked once, over
                # every recorded epoch, and labelled so
                w = window if score in WINDOWED else None
                if any(r.source == label and r.score == score and r.window == w for r in rankings):
                    continue
                table = table_of(w)
                alive &= ~excluded(table)
                cost = scoring_cost(path, table, w)
                span = f"{cost['epochs']} epoch{'s' if cost['epochs'] > 1 else ''}"
                rankings.append(
                    Ranking(
                        f"{score} ({label}, {span})",
                        score,
                        label,
                        w,
                        hardness(score, table.column(score, path)),
                        cost,
                    )
                )
    for name, direction, path in cfg.external_items():
        shas[f"external:{name}"] = file_sha256(path)
        rankings.append(
            Ranking(
                f"{name} (external)",
                name,
                "external",
                None,
                load_external(name, direction, path, train),
                {"seconds": None, "images": None, "runs": None, "arch": None, "epochs": None},
            )
        )
    if not rankings:
        raise ValueError(
            "no ranking: give statistics or merged scores files (SCORES) or external scores "
            "(`external`)"
        )
    return rankings, alive, shas


@dataclass(frozen=True)
class Request:
    """One requested training: a line of compression-results.jsonl."""

    ranking: str
    budget: str
    keep: float  # fraction kept (1.0: the reference)
    strategy: str  # hardest | easiest | random | stratified | none | prune-<rule>
    k: int
    prune: str = "none"  # the dynamic strategies' rule (the harness trains the cell pruning)

    def sort_key(self) -> tuple:
        return (
            self.ranking,
            BUDGETS.index(self.budget),
            -self.keep,
            STRATEGY_RANK[self.strategy],
            self.k,
        )


def compression_subset(
    r: Ranking,
    alive: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    strategy: str,
    keep: float,
    balanced: bool,
    cut_hardest: float,
    seed: int,
    tie_seed: int,
):
    """(indices, info): `strategy` keeps n - round((1 - keep) n) of the n examples that take
    part (the removal experiment's count, so that the same subset is the same cell)."""
    from ..select import select

    n = int(alive.sum())
    removed = int(math.floor(round(1 - keep, 10) * n + 0.5))
    count = n - removed
    if count < 1:
        raise ValueError(f"keeping {keep:g} of the {n} examples keeps none: raise `keep`")
    cut = cut_hardest if strategy in ("hardest", "stratified") else 0.0
    key = np.zeros(len(alive)) if strategy == "random" else r.hardness
    ties = tie_seed if strategy in ("hardest", "easiest") else None
    if cut and count > n - int(math.floor(cut * n + 0.5)):
        raise ValueError(
            f"keeping {keep:g} of the examples after cutting the hardest "
            f"{cut:g} is more than is left: lower `cut_hardest` or `keep`"
        )
    sel = select(
        key,
        labels,
        num_classes,
        count,
        strategy=strategy,
        balanced=balanced,
        cut_hardest=cut,
        seed=seed,
        score_name=r.score,
        exclude=~alive,
        tie_seed=ties,
    )
    random_seed = seed if strategy in ("random", "stratified") else None
    return selected(sel, removed, strategy, ties, random_seed)


def plan(
    cfg: "CompressionConfig",
    rankings: Sequence[Ranking],
    alive: np.ndarray,
    labels,
    num_classes: int,
    fingerprint: str,
) -> tuple[list[tuple[Request, str]], dict[str, Cell]]:
    """Every request of the grid and the unique cells they need, in training order
    (harness.plan_cells); cell ids are those of any other experiment on the same training."""
    grid = [(1.0, REFERENCE)] + [
        (q, s) for q in sorted(cfg.keep_list(), reverse=True) for s in cfg.strategy_list()
    ]

    def key_of(r: Ranking, keep: float, strategy: str, k: int) -> tuple:
        if strategy == "random":
            return ("random", keep, k)
        return (
            (r.label, strategy, keep, k) if strategy == "stratified" else (r.label, strategy, keep)
        )

    def full_data():
        return reference_subset(alive, labels, num_classes)

    def wanted():
        for k in range(cfg.seeds):
            for budget in cfg.budget_list():
                for r in rankings:
                    for keep, strategy in grid:
                        req = Request(r.label, budget, keep, strategy, k)
                        if strategy == REFERENCE:
                            yield req, (REFERENCE,), full_data
                            continue
                        yield req, key_of(r, keep, strategy, k), functools.partial(
                            compression_subset, r, alive, labels, num_classes, strategy, keep,
                            cfg.balanced, cfg.cut_hardest, cfg.selection_seed + k,
                            cfg.selection_seed,
                        )  # fmt: skip
                    # the dynamic strategies: the full data, pruned while it trains (epochs only)
                    for strategy in cfg.dynamic_list() if budget == "epochs" else ():
                        rule = strategy.removeprefix("prune-")
                        yield (
                            Request(r.label, budget, 1.0, strategy, k, rule),
                            (REFERENCE,),
                            full_data,
                        )

    return plan_cells(cfg, wanted(), int(alive.sum()), fingerprint)


def describe(req: Request) -> str:
    if req.strategy == REFERENCE:
        return "full data"
    if req.prune != "none":
        return f"full data pruned during training by {req.prune}"
    if req.strategy == "random":
        return f"keep a random {req.keep:.0%}"
    return f"keep the {req.strategy} {req.keep:.0%} by {req.ranking}"


def result_rows(
    cfg: "CompressionConfig",
    rankings: Sequence[Ranking],
    requests: Sequence[tuple[Request, str]],
    results: dict[str, dict],
    excluded_count: int,
) -> list[dict]:
    """compression-results.jsonl's lines (ROW_FIELDS) for the requests whose cell finished."""
    by_label = {r.label: r for r in rankings}
    rows = []
    for req, cid in requests:
        res = results.get(cid)
        if res is None:
            continue
        r = by_label[req.ranking]
        # random selection, the full data and pruning during training need no scores
        scored = req.strategy in COMPRESSION_STRATEGIES and req.strategy != "random"
        scoring = r.cost["seconds"] if scored else 0.0
        scoring_images = r.cost["images"] if scored else 0
        training = round(res["seconds"], 3)
        rows.append(
            {
                "ranking": r.label,
                "score": r.score,
                "source": r.source,
                "window": r.window,
                "budget": req.budget,
                "keep": req.keep,
                "strategy": req.strategy,
                "fraction": round(1 - req.keep, 10),
                "order": AS_REMOVAL.get(req.strategy),  # None: dynamic, no removal equals it
                "seed": cfg.seed + req.k,
                "test_acc": res["test_acc"],
                "train_acc": res["train_acc"],
                "epochs": res["epochs"],
                "steps": res["steps"],
                "kept": res["kept"],
                "removed": res["removed"],
                "excluded": excluded_count,
                "balanced": cfg.balanced,
                "arch": cfg.arch,
                "cut_hardest": cfg.cut_hardest
                if req.strategy in ("hardest", "stratified")
                else 0.0,
                "scoring_arch": r.cost["arch"],
                "scoring_runs": r.cost["runs"],
                "scoring_epochs": r.cost["epochs"],
                "scoring_seconds": scoring,
                "dataset": cfg.dataset,
                "selection_seed": cfg.selection_seed,
                "tie_seed": res["tie_seed"],
                "cell": cid,
                "training_seconds": training,
                "total_seconds": None if scoring is None else round(scoring + training, 3),
                "scoring_images": scoring_images,
                "training_images": res["images"],
                "total_images": None if scoring_images is None else scoring_images + res["images"],
                "seconds": training,
                "images_per_s": round(res["images_per_s"], 1),
            }
        )
    return rows


def summarize(rows: Sequence[dict]) -> list[dict]:
    """Per (ranking, budget, keep, strategy): accuracy over seeds and the paired differences to
    the full data and to random selection at the same kept fraction (t-intervals), with the
    mean training, scoring and total seconds."""
    stats = paired_summary(
        rows,
        ("ranking", "budget", "keep", "strategy"),
        "strategy",
        REFERENCE,
        "random",
        lambda k: (k[0], BUDGETS.index(k[1]), -k[2], STRATEGY_RANK[k[3]]),
        baselines={s: DYNAMIC_CONTROL for s in DYNAMIC_STRATEGIES},  # as many skipped, at random
    )
    for e in stats:
        mine = [
            r
            for r in rows
            if (r["ranking"], r["budget"], r["keep"], r["strategy"])
            == (e["ranking"], e["budget"], e["keep"], e["strategy"])
        ]
        for name in (
            "training_seconds",
            "scoring_seconds",
            "total_seconds",
            "scoring_images",
            "training_images",
            "total_images",
        ):
            values = [r[name] for r in mine]
            e[name] = None if any(v is None for v in values) else float(np.mean(values))
    _images_shares(stats)
    return stats


def _images_shares(stats: list[dict]) -> None:
    """Each entry's `images_share`: its mean images processed (scoring included) over the full
    data's of its (ranking, budget)."""
    full = {
        (e["ranking"], e["budget"]): e["total_images"] for e in stats if e["strategy"] == REFERENCE
    }
    for e in stats:
        ref = full.get((e["ranking"], e["budget"]))
        e["images_share"] = (
            e["total_images"] / ref if ref and e["total_images"] is not None else None
        )


def _seconds(x: float | None) -> str:
    """Seconds for the tables: whole ones, tenths below 10 s (a tiny training is not 0 s)."""
    return "n/a" if x is None else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def summary_markdown(
    cfg: "CompressionConfig", rankings: Sequence[Ranking], stats: list[dict], context: dict
) -> str:
    """compression-summary.md: what was run, the rankings with their cost, one table per
    (ranking, budget)."""
    lines = [
        "# Compression experiment",
        "",
        f"- Dataset: {cfg.dataset} (fingerprint `{context['fingerprint']}`), {context['n']} "
        "training examples take part"
        + (
            " (left out of every subset, the reference included: "
            f"{context['excluded']} not presented in every scoring run)"
            if context["excluded"]
            else ""
        )
        + f"; test accuracy on the full test split ({context['test_size']} examples).",
        f"- Training: {cfg.arch}, {cfg.optimizer}, lr {cfg.lr:g} ({cfg.schedule}), batch "
        f"{cfg.batch_size}, {cfg.epochs} epoch(s) on the full data ({context['full_steps']} "
        f"steps), seeds {cfg.seed}..{cfg.seed + cfg.seeds - 1}; easyhard "
        f"{context['easyhard_version']}, torch {context['torch_version']}, device "
        f"{context['device']}.",
        f"- Selection {'class-balanced' if cfg.balanced else 'global'}; ties broken by a "
        f"permutation from seed {cfg.selection_seed}; random and stratified selection for "
        f"training seed k drawn with seed {cfg.selection_seed}+k"
        + (
            f"; hardest and stratified first cut the hardest {cfg.cut_hardest:g}"
            if cfg.cut_hardest
            else ""
        )
        + ".",
        *(
            [
                "- Dynamic strategies (prune-*): the full data, pruned during training by a rule "
                f"of easyhard.prune (skip share r = {cfg.prune_ratio:g} of the candidates each "
                f"epoch, the last {cfg.prune_anneal:g} of the epochs on the full data; easiness: "
                f"correct at the last {cfg.prune_window} presentations with mean probability at "
                f"least {cfg.prune_threshold:g}; loss rescaled by 1/(1 - r): "
                f"{'yes' if cfg.prune_rescale else 'no'}); they need no scores, and their Δ vs "
                "random is against prune-random, which skips as many examples at random.",
            ]
            if cfg.dynamic_list()
            else []
        ),
        "- Budget `epochs`: every subset trains for the recipe's epochs (fewer steps: the "
        "saving); `steps`: every subset trains for the full data's steps.",
        "- Test accuracy in %: mean ± sd over seeds. Δ: paired difference (same training seed) "
        "in points, mean [95% t-interval]. Seconds: scoring (the scoring runs' epochs the "
        "ranking counts, from their metrics), training (the subset's), total; random selection "
        "and the full data need no scoring. Images: the images processed (forward and "
        "backward), scoring included, as a share of the full data's: the machine-independent "
        "cost.",
        "",
        "## Rankings",
        "",
        "| ranking | scoring runs | architecture | epochs counted | scoring seconds |",
        "|:---|---:|:---|---:|---:|",
    ]
    for r in rankings:
        c = r.cost
        lines.append(
            f"| {r.label} | {c['runs'] or 'n/a'} | {c['arch'] or 'n/a'} | "
            f"{c['epochs'] or 'n/a'} | {_seconds(c['seconds'])} |"
        )
    lines.append("")
    for (ranking, budget), entries in grouped(stats, "ranking", "budget").items():
        lines += [
            f"## {ranking}, budget: {budget}",
            "",
            "| kept | strategy | examples | n | test acc % | Δ vs full data | Δ vs random "
            "| images % of full | training s | total s |",
            "|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            acc = accuracy(e)
            strategy = "full data" if e["strategy"] == REFERENCE else e["strategy"]
            dynamic = e["strategy"] in DYNAMIC_STRATEGIES
            share = "n/a" if e.get("images_share") is None else f"{100 * e['images_share']:.1f}"
            lines.append(
                f"| {'dynamic' if dynamic else format(e['keep'], '.0%')} | {strategy} | "
                f"{'varies' if e['kept'] is None else e['kept']} | {e['acc_n']} | {acc} | "
                f"{interval(e.get('vs_full'))} | {interval(e.get('vs_random'))} | {share} | "
                f"{_seconds(e['training_seconds'])} | {_seconds(e['total_seconds'])} |"
            )
        lines.append("")
    return "\n".join(lines)


COLORS = {
    "hardest": "tab:red",
    "easiest": "tab:blue",
    "random": "tab:gray",
    "stratified": "tab:green",
    "prune-easiness": "tab:purple",
    "prune-loss": "tab:orange",
    "prune-random": "tab:olive",
}


def _dynamic_label(strategy: str) -> str:
    return f"pruned during training: {strategy.removeprefix('prune-')}"


def plot_compression(stats: list[dict], path: str, title: str) -> None:
    """compression.png: a panel per (ranking, budget): test accuracy (%) against the kept
    fraction (%), a line per strategy with its 95% interval, the full data as a line and band."""
    from ..figures import pyplot, save

    plt = pyplot()

    combos = grouped(stats, "ranking", "budget")
    cols = min(3, len(combos))
    rows_n = math.ceil(len(combos) / cols)
    fig, axes = plt.subplots(
        rows_n, cols, figsize=(5.2 * cols, 4.2 * rows_n + 0.8), squeeze=False, sharey=True
    )
    shift = {s: 0.8 * (i - 1.5) for i, s in enumerate(COMPRESSION_STRATEGIES)}
    for ax, ((ranking, budget), entries) in zip(axes.flat, combos.items()):
        for r in (e for e in entries if e["strategy"] == REFERENCE):
            draw_full_data(ax, r)
        for s in COMPRESSION_STRATEGIES:
            line = sorted((e for e in entries if e["strategy"] == s), key=lambda e: e["keep"])
            label = f"keep the {s}" if s != "random" else "keep at random"
            draw_line(ax, line, lambda e: e["keep"], shift=shift[s], color=COLORS[s], label=label)
        for s in DYNAMIC_STRATEGIES:  # at the share of the full data's images they processed
            dots = [e for e in entries if e["strategy"] == s and e.get("images_share")]
            if dots:
                y, err = error_bars(dots)
                ax.errorbar([100 * e["images_share"] for e in dots], y, yerr=err,
                            color=COLORS[s], marker="D", ms=5, capsize=3, ls="none",
                            label=_dynamic_label(s))  # fmt: skip
        ax.set_title(textwrap.fill(f"{ranking}; budget: {budget}", 48), fontsize=9)
        dynamic = any(e["strategy"] in DYNAMIC_STRATEGIES for e in entries)
        ax.set_xlabel(
            "kept fraction of the training set (%)"
            + ("\n(pruned during training: images processed, % of the full data's)" * dynamic)
        )
        ax.set_xticks(
            sorted({round(100 * e["keep"]) for e in entries if e["strategy"] != REFERENCE})
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(combos) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    accuracy_limits(axes.flat[0], stats)
    fig.suptitle(textwrap.fill(title, 60 * cols), fontsize=11)
    fig.tight_layout()
    save(fig, path)


def _cost_point(ax, e: dict, point: tuple, seen: set, markers: dict) -> bool:
    """Draw one summary entry at `point` (x, y, yerr) of a cost panel; True when nothing more is
    to be drawn for it (the full data and the dynamic strategies are not annotated with a kept
    fraction). The full data, random selection at each fraction and the dynamic strategies are
    the same cells under every ranking: drawn once (`seen`), labelled the first time."""
    x, y, yerr = point
    strategy = e["strategy"]
    style = dict(yerr=yerr, capsize=3, ls="none")
    if strategy in DYNAMIC_STRATEGIES or strategy in (REFERENCE, "random"):
        mark = {REFERENCE: "full", "random": e["keep"]}.get(strategy, strategy)
        if mark in seen:
            return True
        seen.add(mark)
    if strategy in DYNAMIC_STRATEGIES:
        label = _dynamic_label(strategy)
        ax.errorbar([x], [y], color=COLORS[strategy], marker="D", ms=7, label=label, **style)
        return True
    if strategy == REFERENCE:
        ax.errorbar([x], [y], color="black", marker="*", ms=14, label="full data", **style)
        return True
    if strategy == "random":
        first = len(seen - {"full", *DYNAMIC_STRATEGIES}) == 1
        label = "keep at random" if first else None
        ax.errorbar([x], [y], color=COLORS["random"], marker="o", ms=6, label=label, **style)
    else:
        ax.errorbar([x], [y], color=COLORS[strategy], marker=markers[e["ranking"]], ms=6,
                    alpha=0.85, **style)  # fmt: skip
    return False


def plot_cost(stats: list[dict], path: str, title: str) -> None:
    """compression-cost.png: test accuracy (%) against total cost, scoring + subset training
    (means over seeds), in seconds (left: what it took on this machine, load included) and in
    images processed (right: the machine-independent count); a point per (ranking, strategy,
    kept fraction) with its 95% interval, random selection and the full data as reference
    points; a row per budget."""
    from ..figures import pyplot, save

    plt = pyplot()

    budgets = list(dict.fromkeys(e["budget"] for e in stats))
    rankings = list(dict.fromkeys(e["ranking"] for e in stats))
    markers = dict(zip(rankings, "osD^v<>pXh*" * 4))
    axes_x = (("total_seconds", "seconds", 1.0), ("total_images", "million images processed", 1e-6))
    fig, axes = plt.subplots(len(budgets), 2, figsize=(17, 5.8 * len(budgets)), squeeze=False)
    for row, budget in enumerate(budgets):
        for col, (key, unit, scale) in enumerate(axes_x):
            ax = axes[row, col]
            seen: set = set()
            for e in (e for e in stats if e["budget"] == budget and e.get(key) is not None):
                x, y = e[key] * scale, 100 * e["acc_mean"]
                yerr = (
                    None
                    if e["acc_low"] is None
                    else [[y - 100 * e["acc_low"]], [100 * e["acc_high"] - y]]
                )
                if _cost_point(ax, e, (x, y, yerr), seen, markers):
                    continue
                ax.annotate(
                    f"{e['keep']:.0%}",
                    (x, y),
                    fontsize=6,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
            ax.set_xlabel(f"total cost: scoring + subset training ({unit})")
            ax.set_ylabel("test accuracy (%)")
            accuracy_limits(ax, [e for e in stats if e["budget"] == budget])
            ax.set_title(f"budget: {budget}; cost in {unit} (labels: kept fraction)", fontsize=10)
            ax.grid(alpha=0.3)
        ax = axes[row, 1]
        # the legend's keys: colour = the scored strategies drawn, marker = the ranking (black:
        # grey is random selection's colour)
        drawn = {e["strategy"] for e in stats if e["budget"] == budget}
        for strategy in (s for s in ("hardest", "easiest", "stratified") if s in drawn):
            ax.plot(
                [], [], color=COLORS[strategy], marker="o", ls="none", label=f"keep the {strategy}"
            )
        for r in rankings:
            ax.plot([], [], color="black", marker=markers[r], ls="none", label=r)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(textwrap.fill(title, 150), fontsize=11)
    fig.tight_layout()
    save(fig, path)


class Compression(Kind):
    """The compression experiment on the harness: rankings (scores inputs over windows, external
    arrays) x kept fraction x strategy, with what each ranking's scoring cost."""

    name = "compression"
    grid_fields = GRID_FIELDS
    grows = "more seeds, kept fractions, strategies, scores, windows, scores inputs or budgets"
    usage = "easyhard experiment compression SCORES..."

    def __init__(self, cfg: CompressionConfig, score_files: Sequence[str]) -> None:
        super().__init__(cfg)
        self.score_files = score_files

    def inputs(self) -> dict[str, str]:
        self.labelled = source_labels(self.score_files)
        inputs = {f"scores input {label}": path for label, path in self.labelled}
        for name, _, path in self.cfg.external_items():
            inputs[f"external score {name}"] = path
        return inputs

    def load(self, train) -> np.ndarray:
        self.train = train
        self.rankings, alive, self.sources = build_rankings(self.cfg, self.labelled, train)
        self.alive = alive
        return alive

    def plan(self, fingerprint: str):
        t = self.train
        return plan(self.cfg, self.rankings, self.alive, t.labels, t.num_classes, fingerprint)

    def identity(self, fingerprint: str) -> dict:
        skip = set(GRID_FIELDS) | {"workers"}
        return {
            "experiment": "compression",
            "dataset_fingerprint": fingerprint,
            "config": {k: v for k, v in settings(self.cfg).items() if k not in skip},
        }

    def describe(self, request: Request) -> str:
        return describe(request)

    def context(self) -> dict:
        return {"score_files": {label: os.path.abspath(p) for label, p in self.labelled}}

    def record(self) -> dict:
        fields = ("label", "score", "source", "window", "cost")
        return {"rankings": [{f: getattr(r, f) for f in fields} for r in self.rankings]}

    def intro(self, where: str, requests: list, cells: dict, progress: str, context: dict) -> str:
        n, n_excluded = context["n"], context["excluded"]
        return (
            f"compression experiment in {where}: {len(self.rankings)} "
            f"ranking(s), {len(requests)} requested trainings, {len(cells)} distinct cells, "
            f"{progress}; {n} examples" + (f" ({n_excluded} left out)" if n_excluded else "")
        )

    def rows(self, requests: list, results: dict[str, dict], excluded: int) -> list[dict]:
        return result_rows(self.cfg, self.rankings, requests, results, excluded)

    def summarize(self, rows: list[dict]) -> list[dict]:
        return summarize(rows)

    def summary_markdown(self, stats: list[dict], context: dict) -> str:
        return summary_markdown(self.cfg, self.rankings, stats, context)

    def plot(self, stats: list[dict], out: str) -> None:
        cfg = self.cfg
        what = (
            f"{cfg.dataset}, {cfg.arch}, {cfg.epochs} epoch(s) on the full data, "
            f"{'class-balanced' if cfg.balanced else 'global'} selection; mean and 95% "
            f"t-interval over {cfg.seeds} seed(s)"
        )
        plot_compression(stats, os.path.join(out, FIGURE), f"Compression experiment: {what}")
        plot_cost(
            stats,
            os.path.join(out, COST_FIGURE),
            f"Accuracy against total cost (scoring + training): {what}",
        )

    def summary(self) -> dict:
        return {"rankings": len(self.rankings)}


def run_compression(
    cfg: CompressionConfig,
    score_files: Sequence[str],
    out: str,
    *,
    force: bool = False,
    quiet: bool = False,
    log=None,
    train_missing: bool = True,
) -> dict:
    """Run (or continue) the compression experiment of `cfg` with the rankings of `score_files`
    ([LABEL=]FILE) and cfg.external in `out` (harness.run); returns a summary. Everything is
    checked before anything is written (the harness's checks, for every scores input, and every
    external array's length, values and order)."""
    return run_kind(
        Compression(cfg, score_files),
        out,
        force=force,
        quiet=quiet,
        log=log,
        train_missing=train_missing,
    )

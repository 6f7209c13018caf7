"""The removal experiment: do hard examples matter more?

    easyhard experiment removal runs/fm/merged.npz --dataset fashion-mnist --arch convnet \\
        --fractions 0.1,0.3,0.5,0.7,0.9 --seeds 3 --budget epochs,steps --out runs/removal

Do hard examples matter more (Kishida & Nakayama, 2019)? Remove the easiest, the hardest or a
random fraction of the training set, train afresh on what is left with the scoring engine
(easyhard.train.train_run, given the subset as an index list: no copy of the data), and measure
test accuracy on the full test split. The full data is trained too, with the same recipe and
seeds: it is the reference, not a number from elsewhere.

Cells, resume and the folder are the harness's (easyhard.experiments.harness): more seeds,
fractions, orders, scores or budgets add cells; any other change is refused.

Selection: easyhard.select.select on the scores input's hardness (scores.hardness): removing the
easiest fraction f keeps the hardest round((1 - f) N), class-balanced or global; ties of the
score are broken by a permutation from ``selection_seed`` (never by dataset index: easiness_plain
and forgetting have many ties); random removal for training seed k draws with
``selection_seed + k``. Examples never presented during scoring (scores.excluded) are in no
subset, the reference included, and are counted.

Budgets: ``epochs`` trains every subset for the recipe's epochs (a smaller subset gets fewer
steps); ``steps`` trains every subset for the full data's optimizer steps (epochs x steps per
epoch of the full data): more epochs over a smaller subset, the last cut at the exact step, with
the learning-rate schedule of the full data.

Statistics: for every (score, budget, fraction, order), the mean and standard deviation of test
accuracy over seeds, and paired differences (same seed) to random removal at the same fraction
and to the full data, each with a 95% t-interval over the n seeds (Student's t, n - 1 degrees of
freedom; none for n = 1).

Outputs in OUT: ``results.jsonl`` (one line per requested cell and seed: ROW_FIELDS),
``summary.md`` (the tables, also printed), ``removal.png`` (test accuracy against the removed
fraction, one line per order with its 95% interval, the full data as a band; below, the paired
difference to random removal), ``removal-config.toml`` (the resolved configuration) and
``experiment.json`` (the manifest: identity, provenance, what the folder holds, so that
``--force`` replaces only an earlier easyhard experiment).
"""

from __future__ import annotations

import functools
import math
import os
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..config import BUDGETS, REMOVAL_ORDERS, settings
from .folder import KIND_FILES
from .harness import CELL_ROW_FIELDS, REFERENCE, Cell, Kind, plan_cells, reference_subset, selected
from .harness import run as run_kind
from .plots import accuracy, accuracy_limits, draw_full_data, draw_line, grouped, interval
from .stats import paired_summary

if TYPE_CHECKING:
    from ..config import RemovalConfig

CONFIG_FILE, RESULTS, SUMMARY, FIGURE = KIND_FILES["removal"]

#: Settings a continued experiment may change (they add cells); every other setting is part of
#: the experiment's identity, and so is the content of the scores input.
GRID_FIELDS = ("fractions", "orders", "seeds", "score", "budget")


JOB_ONLY_FIELDS = ("workers",)


#: The fields of a results.jsonl line; the timing fields differ between repetitions.
ROW_FIELDS = (
    "score",
    "budget",
    *CELL_ROW_FIELDS,
    "window",
    "dataset",
    "selection_seed",
    "tie_seed",
    "cell",
    "seconds",
    "images_per_s",
)


TIMING_FIELDS = ("seconds", "images_per_s")


ORDER_RANK = {REFERENCE: 0, **{o: i + 1 for i, o in enumerate(REMOVAL_ORDERS)}}


def summarize(rows: Sequence[dict]) -> list[dict]:
    """One entry per (score, budget, fraction, order) of removal results rows: test accuracy over
    seeds (n, mean, std) and the paired differences (same seed) to the full data (`vs_full`) and
    to random removal at the same fraction (`vs_random`, easiest and hardest only), each a
    t_interval of the differences."""
    return paired_summary(
        rows,
        ("score", "budget", "fraction", "order"),
        "order",
        REFERENCE,
        "random",
        lambda k: (k[0], BUDGETS.index(k[1]), k[2], ORDER_RANK[k[3]]),
    )


@dataclass(frozen=True)
class Request:
    """One requested training: a line of results.jsonl."""

    score: str
    budget: str
    fraction: float  # removed, of the examples that take part (0: the reference)
    order: str  # easiest | hardest | random | none
    k: int  # seed index: training seed = cfg.seed + k

    def sort_key(self) -> tuple:
        return (
            self.score,
            BUDGETS.index(self.budget),
            self.fraction,
            ORDER_RANK[self.order],
            self.k,
        )


def experiment_identity(cfg: "RemovalConfig", fingerprint: str, score_sha256: str) -> dict:
    """What a continued experiment may not change: every setting but the grid's (GRID_FIELDS),
    the dataset and the scores input's content."""
    skip = set(GRID_FIELDS) | set(JOB_ONLY_FIELDS)
    config = {k: v for k, v in settings(cfg).items() if k not in skip}
    return {
        "experiment": "removal",
        "dataset_fingerprint": fingerprint,
        "score_file_sha256": score_sha256,
        "config": config,
    }


def removal_subset(
    table,
    alive: np.ndarray,
    score: str,
    order: str,
    fraction: float,
    balanced: bool,
    seed: int,
    tie_seed: int,
):
    """(indices, info) of the examples kept when `order` removal takes away `fraction` of the
    examples that take part (`alive`): removed = round(fraction * n), class-balanced or
    global."""
    from ..scores import hardness
    from ..select import select

    n = int(alive.sum())
    removed = int(math.floor(fraction * n + 0.5))
    keep = n - removed
    if keep < 1:
        raise ValueError(
            f"removing {fraction:g} of the {n} examples leaves none: lower `fractions`"
        )
    if order == "random":
        key, strategy, ties = np.zeros(len(alive)), "random", None
    else:  # removing the easiest keeps the hardest, and the other way round
        key = hardness(score, table.column(score))
        strategy, ties = ("hardest" if order == "easiest" else "easiest"), tie_seed
    sel = select(
        key,
        table.labels,
        table.num_classes,
        keep,
        strategy=strategy,
        balanced=balanced,
        seed=seed,
        score_name=score,
        exclude=~alive,
        tie_seed=ties,
    )
    return selected(sel, removed, strategy, ties, seed if order == "random" else None)


def plan(
    cfg: "RemovalConfig", table, fingerprint: str
) -> tuple[list[tuple[Request, str]], dict[str, Cell]]:
    """Every request of the configuration's grid and the unique cells they need (by id), in
    training order (harness.plan_cells)."""
    from ..scores import excluded

    alive = ~excluded(table)
    grid = [(0.0, REFERENCE)] + [(f, o) for f in cfg.fraction_list() for o in cfg.order_list()]

    def wanted():
        for k in range(cfg.seeds):
            for budget in cfg.budget_list():
                for score in cfg.score_list():
                    for fraction, order in grid:
                        req = Request(score, budget, fraction, order, k)
                        if order == REFERENCE:
                            yield (
                                req,
                                (REFERENCE,),
                                lambda: reference_subset(alive, table.labels, table.num_classes),
                            )
                            continue
                        random = order == "random"
                        key = ("random", fraction, k) if random else (score, order, fraction)
                        yield req, key, functools.partial(
                            removal_subset, table, alive, score, order, fraction, cfg.balanced,
                            cfg.selection_seed + k, cfg.selection_seed,
                        )  # fmt: skip

    return plan_cells(cfg, wanted(), int(alive.sum()), fingerprint)


def describe(req: Request) -> str:
    if req.order == REFERENCE:
        return "full data"
    if req.order == "random":
        return f"remove a random {req.fraction:.0%}"
    return f"remove the {req.order} {req.fraction:.0%} by {req.score}"


def result_rows(
    cfg: "RemovalConfig",
    requests: Sequence[tuple[Request, str]],
    results: dict[str, dict],
    excluded_count: int,
) -> list[dict]:
    """results.jsonl's lines (ROW_FIELDS) for the requests whose cell has finished, in the
    requests' order."""
    rows = []
    for req, cid in requests:
        r = results.get(cid)
        if r is None:
            continue
        rows.append(
            {
                "score": req.score,
                "budget": req.budget,
                "fraction": req.fraction,
                "order": req.order,
                "seed": cfg.seed + req.k,
                "test_acc": r["test_acc"],
                "train_acc": r["train_acc"],
                "epochs": r["epochs"],
                "steps": r["steps"],
                "kept": r["kept"],
                "removed": r["removed"],
                "excluded": excluded_count,
                "balanced": cfg.balanced,
                "arch": cfg.arch,
                "window": cfg.window,
                "dataset": cfg.dataset,
                "selection_seed": cfg.selection_seed,
                "tie_seed": r["tie_seed"],
                "cell": cid,
                "seconds": round(r["seconds"], 3),
                "images_per_s": round(r["images_per_s"], 1),
            }
        )
    return rows


def summary_markdown(cfg: "RemovalConfig", stats: list[dict], context: dict) -> str:
    """summary.md: what was run, then one table per (score, budget)."""
    budgets = {
        "epochs": f"every subset is trained for {cfg.epochs} epoch(s): a smaller subset gets "
        "fewer optimizer steps",
        "steps": f"every subset is trained for the full data's {context['full_steps']} "
        f"optimizer steps ({cfg.epochs} epoch(s) of {context['n']} examples, batch "
        f"{cfg.batch_size}): more epochs over a smaller subset, the last one cut at the "
        "exact step, with the full data's learning-rate schedule",
    }
    window = "all recorded epochs" if cfg.window is None else f"the first {cfg.window} epoch(s)"
    lines = [
        "# Removal experiment",
        "",
        f"- Dataset: {cfg.dataset} (fingerprint `{context['fingerprint']}`), {context['n']} "
        f"training examples take part"
        + (
            " (left out of every subset, the reference included: "
            f"{context['excluded']} never presented during scoring)"
            if context["excluded"]
            else ""
        )
        + f"; test accuracy on the full test split ({context['test_size']} examples).",
        f"- Training: {cfg.arch}, {cfg.optimizer}, lr {cfg.lr:g} ({cfg.schedule}), batch "
        f"{cfg.batch_size}, {cfg.epochs} epoch(s) on the full data, seeds {cfg.seed}.."
        f"{cfg.seed + cfg.seeds - 1} ({cfg.seeds} per cell); easyhard "
        f"{context['easyhard_version']}, torch {context['torch_version']}, device "
        f"{context['device']}.",
        f"- Scores: {context['score_file']}, counted over {window}; removal "
        f"{'class-balanced' if cfg.balanced else 'global (all classes ranked together)'}; "
        f"ties broken by a permutation from seed {cfg.selection_seed}; random removal for "
        f"training seed k drawn with seed {cfg.selection_seed}+k.",
        *[f"- Budget `{b}`: {budgets[b]}." for b in cfg.budget_list()],
        "- Test accuracy in %: mean ± standard deviation over the n seeds. Δ: paired difference "
        "(same training seed) in percentage points, mean [95% t-interval over the n seeds, "
        "n − 1 degrees of freedom]; an interval that excludes 0 is a difference these seeds "
        "resolve.",
        "",
    ]
    for (score, budget), entries in grouped(stats, "score", "budget").items():
        lines += [
            f"## {score}, budget: {budget}",
            "",
            "| removed | order | kept | n | test acc % | Δ vs full data | Δ vs random |",
            "|---:|:---|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            acc = accuracy(e)
            order = "none (full data)" if e["order"] == REFERENCE else e["order"]
            lines.append(
                f"| {e['fraction']:.0%} | {order} | "
                f"{'varies' if e['kept'] is None else e['kept']} | {e['acc_n']} | {acc} | "
                f"{interval(e.get('vs_full'))} | {interval(e.get('vs_random'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_removal(stats: list[dict], path: str, title: str) -> None:
    """removal.png: per (score, budget) a column; above, test accuracy (%) against the removed
    fraction (%), one line per order with its 95% interval and the full data as a line with its
    band; below, the paired difference to random removal (percentage points) with its interval."""
    from ..figures import pyplot, save

    plt = pyplot()

    combos = grouped(stats, "score", "budget")
    fig, axes = plt.subplots(
        2, len(combos), figsize=(5.2 * len(combos), 8.4), squeeze=False, sharex=True, sharey="row"
    )  # one scale per row: panels compare
    colors = {"easiest": "tab:blue", "hardest": "tab:red", "random": "tab:gray"}
    labels = {
        "easiest": "remove the easiest",
        "hardest": "remove the hardest",
        "random": "remove at random",
    }
    shift = {"easiest": -0.8, "random": 0.0, "hardest": 0.8}  # keeps error bars apart

    for col, ((score, budget), entries) in enumerate(combos.items()):
        top, bottom = axes[0, col], axes[1, col]
        ref = [e for e in entries if e["order"] == REFERENCE]
        if ref:
            draw_full_data(top, ref[0])
        for order in REMOVAL_ORDERS:
            line = sorted((e for e in entries if e["order"] == order), key=lambda e: e["fraction"])
            n = max((e["acc_n"] for e in line), default=0)
            style = dict(shift=shift[order], color=colors[order])
            draw_line(top, line, _fraction, label=f"{labels[order]} (n={n})", **style)
            diffs = [e for e in line if e.get("vs_random") and e["vs_random"]["n"]]
            draw_line(bottom, [{**e["vs_random"], "fraction": e["fraction"]} for e in diffs],
                      _fraction, label=labels[order], keys=("mean", "low", "high"),
                      **style)  # fmt: skip
        bottom.axhline(0, color="tab:gray", lw=1.2, label="remove at random (Δ = 0)")
        top.set_title(f"ranking: {score}; budget: {budget}")
        bottom.set_xlabel("removed fraction of the training set (%)")
        bottom.set_xticks(sorted({round(100 * e["fraction"]) for e in entries}))
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[1, 0].set_ylabel("Δ test accuracy vs random removal (points)")
    accuracy_limits(axes[0, 0], stats)
    fig.suptitle(textwrap.fill(title, 60 * len(combos)), fontsize=11)
    fig.tight_layout()
    save(fig, path)


def _fraction(entry: dict) -> float:
    return entry["fraction"]


class Removal(Kind):
    """The removal experiment on the harness: one scores input, a fraction x order grid."""

    name = "removal"
    grid_fields = GRID_FIELDS
    grows = "more seeds, fractions, orders, scores or budgets"
    usage = "easyhard experiment removal SCORES"

    def __init__(self, cfg: RemovalConfig, score_file: str) -> None:
        super().__init__(cfg)
        self.score_file = score_file

    def inputs(self) -> dict[str, str]:
        return {"scores input": self.score_file}

    def load(self, train) -> np.ndarray:
        from ..scores import excluded
        from .harness import file_sha256, load_score_table

        self.table = load_score_table(self.score_file, self.cfg.window, train, self.cfg)
        missing = [s for s in self.cfg.score_list() if s not in self.table.scores]
        if missing:
            raise ValueError(
                f"{self.score_file} holds no {missing[0]!r} score (it has "
                f"{', '.join(sorted(self.table.scores))}): choose another `score`"
            )
        self.sha256 = file_sha256(self.score_file)
        return ~excluded(self.table)

    def plan(self, fingerprint: str):
        return plan(self.cfg, self.table, fingerprint)

    def identity(self, fingerprint: str) -> dict:
        return experiment_identity(self.cfg, fingerprint, self.sha256)

    def describe(self, request: Request) -> str:
        return describe(request)

    def context(self) -> dict:
        return {"score_file": os.path.abspath(self.score_file)}

    def intro(self, where: str, requests: list, cells: dict, progress: str, context: dict) -> str:
        n, n_excluded, budgets = context["n"], context["excluded"], self.cfg.budget_list()
        return (
            f"removal experiment in {where}: {len(requests)} requested "
            f"trainings, {len(cells)} distinct cells ({len(requests) - len(cells)} shared), "
            f"{progress}; {n} examples"
            + (
                f" ({n_excluded} never presented during scoring, left out of every subset)"
                if n_excluded
                else ""
            )
            + f"; budget(s): {', '.join(budgets)}"
            + (
                f" (steps: {context['full_steps']} optimizer steps for every subset)"
                if "steps" in budgets
                else ""
            )
        )

    def rows(self, requests: list, results: dict[str, dict], excluded: int) -> list[dict]:
        return result_rows(self.cfg, requests, results, excluded)

    def summarize(self, rows: list[dict]) -> list[dict]:
        return summarize(rows)

    def summary_markdown(self, stats: list[dict], context: dict) -> str:
        return summary_markdown(self.cfg, stats, context)

    def plot(self, stats: list[dict], out: str) -> None:
        cfg = self.cfg
        seeds = f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}"
        plot_removal(
            stats,
            os.path.join(out, FIGURE),
            f"Removal experiment: {cfg.dataset}, {cfg.arch}, {cfg.epochs} epoch(s) on the "
            f"full data, {'class-balanced' if cfg.balanced else 'global'} removal; mean and "
            f"95% t-interval over {seeds}",
        )


def run_removal(
    cfg: RemovalConfig,
    score_file: str,
    out: str,
    *,
    force: bool = False,
    quiet: bool = False,
    log=None,
    train_missing: bool = True,
) -> dict:
    """Run (or continue) the removal experiment of `cfg` ranked by `score_file` in `out`
    (harness.run); returns a summary (rows, statistics, counts, files)."""
    return run_kind(
        Removal(cfg, score_file),
        out,
        force=force,
        quiet=quiet,
        log=log,
        train_missing=train_missing,
    )

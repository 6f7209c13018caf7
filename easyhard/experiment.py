"""Experiments on subsets chosen by difficulty; first, the removal experiment.

    easyhard experiment removal runs/fm/merged.npz --dataset fashion-mnist --arch convnet \\
        --fractions 0.1,0.3,0.5,0.7,0.9 --seeds 3 --budget epochs,steps --out runs/removal

Do hard examples matter more (Kishida & Nakayama, 2019)? Remove the easiest, the hardest or a
random fraction of the training set, train afresh on what is left with the scoring engine
(easyhard.train.train_run, given the subset as an index list: no copy of the data), and measure
test accuracy on the full test split. The full data is trained too, with the same recipe and
seeds: it is the reference, not a number from elsewhere.

A *cell* is one training: (subset, recipe, seed, step budget), named by a digest of its identity
(runfolder.run_identity), in ``OUT/cells/<digest>/``. Requests that come to the same cell (the
reference of every score and budget, random removal under every score) train it once. The
experiment is resumable: the same command again reads finished cells back (never retrained),
continues a half-finished one from its checkpoint, and trains only what is missing, so more
seeds, fractions, orders, scores or budgets add cells. A changed recipe (anything else, the
scores input's content included) is refused with the differences named.

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
``--force`` replaces only an earlier easyhard experiment). This module imports torch only inside
its functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .config import BUDGETS, HIDDEN_FIELDS, REMOVAL_ORDERS
from .io import (
    OutputExistsError,
    atomic_write,
    check_disjoint,
    check_replaceable,
    is_own_temp,
    remove_owned,
    remove_stale_temps,
    seal_output,
)
from .runfolder import CHECKPOINT, HISTORY_FILE, METRICS, RUN_CONFIG

if TYPE_CHECKING:
    from .config import RemovalConfig

REFERENCE = "none"  # the order of the full-data reference (fraction 0)

FORMAT, MANIFEST = "easyhard.experiment", "experiment.json"
CONFIG_FILE, RESULTS, SUMMARY, FIGURE = (
    "removal-config.toml",
    "results.jsonl",
    "summary.md",
    "removal.png",
)
CELLS, CELL_RESULT = "cells", "result.json"
#: The experiments one folder can hold; they share its cells (dropping the easiest 30% is keeping
#: the hardest 70%: one training).
KINDS = ("removal", "compression")
#: What each experiment writes at the top of its folder (besides the shared manifest).
KIND_FILES = {
    "removal": (CONFIG_FILE, RESULTS, SUMMARY, FIGURE),
    "compression": (
        "compression-config.toml",
        "compression-results.jsonl",
        "compression-summary.md",
        "compression.png",
        "compression-cost.png",
    ),
}
#: Everything an experiment writes at the top of its folder, and in a cell folder.
TOP_FILES = (MANIFEST,) + tuple(f for k in KINDS for f in KIND_FILES[k])
CELL_FILES = (RUN_CONFIG, METRICS, CHECKPOINT, HISTORY_FILE, CELL_RESULT)  # a cell is a run folder
#: Settings a continued experiment may change (they add cells); every other setting is part of
#: the experiment's identity, and so is the content of the scores input.
GRID_FIELDS = ("fractions", "orders", "seeds", "score", "budget")
JOB_ONLY_FIELDS = ("workers",)
#: The fields of a results.jsonl line; the timing fields differ between repetitions.
ROW_FIELDS = (
    "score",
    "budget",
    "fraction",
    "order",
    "seed",
    "test_acc",
    "train_acc",
    "epochs",
    "steps",
    "kept",
    "removed",
    "excluded",
    "balanced",
    "arch",
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


# ---------------------------------------------------------------------------- statistics
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
) -> list[dict]:
    """One entry per `group` key of results rows (the last field, `order_field`, is what was
    done): test accuracy over seeds (n, mean, std) and the paired differences (same seed) to the
    full data (`vs_full`: the same key with `reference` in `order_field`, and fraction 0) and to
    the `baseline` (`vs_random`: the same key with `baseline` in `order_field`), each a t_interval
    of the differences."""
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
        for name, other in (
            ("vs_full", refs[0] if refs else None),
            ("vs_random", key[:where] + (baseline,) + key[where + 1 :]),
        ):
            if order == reference or (name == "vs_random" and order == baseline):
                continue
            base = groups.get(other, {})
            entry[name] = t_interval([accs[s] - base[s] for s in sorted(accs) if s in base])
        out.append(entry)
    return out


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


# ---------------------------------------------------------------------------- the plan
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


@dataclass
class Cell:
    """One training, shared by every request that comes to the same identity."""

    id: str
    identity: dict
    run: int  # the seed index k (train_run's run)
    subset: np.ndarray  # ascending dataset indices
    max_steps: int | None  # None: the recipe's epochs
    steps: int  # planned optimizer steps
    epochs: int  # planned epochs (the last may be cut short)
    selection: dict  # kept, removed, kept_per_class, tie_seed, ...
    requests: list[Request] = dataclasses.field(default_factory=list)


def training_config(cfg: "RemovalConfig"):
    """The ScoreConfig a cell trains with: the experiment's recipe, its one architecture; the
    grid settings are not part of it (adding seeds or fractions changes no cell)."""
    from .config import ScoreConfig

    names = {f.name for f in dataclasses.fields(ScoreConfig)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    values.update(archs=(cfg.arch,), runs=1, window=None, clean_every=0, clean_steps=0)
    return ScoreConfig(**values)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def experiment_identity(cfg: "RemovalConfig", fingerprint: str, score_sha256: str) -> dict:
    """What a continued experiment may not change: every setting but the grid's (GRID_FIELDS),
    the dataset and the scores input's content."""
    skip = set(GRID_FIELDS) | set(HIDDEN_FIELDS) | set(JOB_ONLY_FIELDS)
    config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
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
    from .scores import hardness
    from .select import select

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
        key = hardness(score, table.scores[score])
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
    info = {
        "kept": int(len(sel.indices)),
        "removed": removed,
        "kept_per_class": sel.kept_per_class.tolist(),
        "strategy": strategy,
        "tie_seed": ties,
        "random_seed": seed if order == "random" else None,
    }
    return sel.indices, info


def plan(
    cfg: "RemovalConfig", table, fingerprint: str
) -> tuple[list[tuple[Request, str]], dict[str, Cell]]:
    """Every request of the configuration's grid and the unique cells they need (by id), in
    training order: seed by seed, the reference first, so that a stopped run already holds whole
    curves."""
    from .scores import excluded

    alive = ~excluded(table)
    n = int(alive.sum())
    B = cfg.batch_size
    full_steps = cfg.epochs * math.ceil(n / B)
    run_cfg = training_config(cfg)
    subsets: dict[tuple, tuple[np.ndarray, dict]] = {}
    requests: list[tuple[Request, str]] = []
    cells: dict[str, Cell] = {}
    grid = [(0.0, REFERENCE)] + [(f, o) for f in cfg.fraction_list() for o in cfg.order_list()]
    for k in range(cfg.seeds):
        for budget in cfg.budget_list():
            for score in cfg.score_list():
                for fraction, order in grid:
                    if order == REFERENCE:
                        key = (REFERENCE,)
                    elif order == "random":
                        key = ("random", fraction, k)
                    else:
                        key = (score, order, fraction)
                    if key not in subsets:
                        if order == REFERENCE:
                            subsets[key] = reference_subset(alive, table.labels, table.num_classes)
                        else:
                            subsets[key] = removal_subset(
                                table,
                                alive,
                                score,
                                order,
                                fraction,
                                cfg.balanced,
                                cfg.selection_seed + k,
                                cfg.selection_seed,
                            )
                    idx, info = subsets[key]
                    req = Request(score, budget, fraction, order, k)
                    cid = add_cell(
                        cells, run_cfg, cfg.arch, k, fingerprint, idx, info, budget, full_steps, req
                    )
                    requests.append((req, cid))
    requests.sort(key=lambda rc: rc[0].sort_key())
    return requests, cells


def reference_subset(alive: np.ndarray, labels: np.ndarray, num_classes: int):
    """(indices, info) of the full data: every example that takes part."""
    return np.flatnonzero(alive).astype(np.int64), {
        "kept": int(alive.sum()),
        "removed": 0,
        "kept_per_class": np.bincount(labels[alive], minlength=num_classes).tolist(),
        "strategy": None,
        "tie_seed": None,
        "random_seed": None,
    }


def add_cell(
    cells: dict[str, "Cell"],
    run_cfg,
    arch: str,
    k: int,
    fingerprint: str,
    idx: np.ndarray,
    info: dict,
    budget: str,
    full_steps: int,
    request: Any,
) -> str:
    """The id of the cell that trains `idx` with seed index k under `budget` (created in
    `cells` when new), with `request` added to it. The id is a digest of the training's identity
    (runfolder.run_identity: recipe, architecture, seeds, data, subset, step count) and nothing
    else, so any experiment that asks for the same training gets the same cell."""
    from .runfolder import run_identity

    spe = math.ceil(len(idx) / run_cfg.batch_size)
    natural = run_cfg.epochs * spe
    # a step budget equal to the recipe's own steps is the same training
    max_steps = None if budget == "epochs" or natural == full_steps else full_steps
    identity = run_identity(run_cfg, arch, k, fingerprint, subset=idx, max_steps=max_steps)
    cid = _digest(identity)[:16]
    if cid not in cells:
        steps = natural if max_steps is None else max_steps
        cells[cid] = Cell(cid, identity, k, idx, max_steps, steps, math.ceil(steps / spe), info)
    cells[cid].requests.append(request)
    return cid


def describe(req: Request) -> str:
    if req.order == REFERENCE:
        return "full data"
    if req.order == "random":
        return f"remove a random {req.fraction:.0%}"
    return f"remove the {req.order} {req.fraction:.0%} by {req.score}"


# ---------------------------------------------------------------------------- the folder
def _read_manifest(out: str) -> dict | None:
    try:
        with open(os.path.join(out, MANIFEST), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_LOCK = re.compile(r"^[0-9a-f]{16}\.lock$")  # cells/<id>.lock: held while a worker trains <id>


def _cell_folders(out: str) -> list[str]:
    """The entries of OUT/cells but the cells' lock files."""
    cells = os.path.join(out, CELLS)
    if not os.path.isdir(cells) or os.path.islink(cells):
        return []
    return sorted(
        os.path.join(cells, n)
        for n in os.listdir(cells)
        if not (
            _LOCK.match(n)
            and os.path.isfile(os.path.join(cells, n))
            and not os.path.islink(os.path.join(cells, n))
        )
    )


def _lock_files(out: str) -> list[str]:
    cells = os.path.join(out, CELLS)
    if not os.path.isdir(cells) or os.path.islink(cells):
        return []
    return [
        os.path.join(cells, n)
        for n in os.listdir(cells)
        if _LOCK.match(n)
        and os.path.isfile(os.path.join(cells, n))
        and not os.path.islink(os.path.join(cells, n))
    ]


@contextlib.contextmanager
def cell_lock(out: str, cid: str, wait: bool):
    """Hold OUT/cells/<cid>.lock (an advisory lock, released when the process dies): yields True
    when held, False when another worker holds it and `wait` is False. Lets several workers (the
    same command started more than once, or a removal and a compression experiment) share one
    folder: each trains the cells nobody else is training."""
    import fcntl

    fd = os.open(os.path.join(out, CELLS, f"{cid}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _only_own_files(out: str) -> str | None:
    """None when everything in `out` is what an experiment writes (TOP_FILES, cell folders of
    CELL_FILES, and the temporary files of a killed atomic write); else the first other path."""
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name == CELLS and os.path.isdir(path) and not os.path.islink(path):
            continue
        if not (name in TOP_FILES or is_own_temp(name, TOP_FILES)) or not os.path.isfile(path):
            return path
    from .runfolder import is_run_folder

    for cell in _cell_folders(out):
        if os.path.islink(cell) or not os.path.isdir(cell) or not is_run_folder(cell):
            return cell
        for name in sorted(os.listdir(cell)):
            path = os.path.join(cell, name)
            if (
                not (name in CELL_FILES or is_own_temp(name, CELL_FILES))
                or not os.path.isfile(path)
                or os.path.islink(path)
            ):
                return path
    return None


def _remove_experiment(out: str) -> None:
    """Delete what an experiment wrote in `out` (checked by _only_own_files first): the files of
    its own names, by the rules that recognise them, and the folders they leave empty."""
    own = [os.path.relpath(lock, out) for lock in _lock_files(out)]
    for cell in _cell_folders(out):
        own += [f"{CELLS}/{os.path.basename(cell)}/{name}" for name in os.listdir(cell)]
    own += [n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))]
    remove_owned(out, own)


def _remove_stale_temps(out: str) -> None:
    """Temporary files that a killed atomic write left (never complete files); recent ones may
    be another worker's write in progress and stay."""
    for folder, owners in [(out, TOP_FILES)] + [(c, CELL_FILES) for c in _cell_folders(out)]:
        remove_stale_temps(folder, owners)


def experiments_of(record: dict | None) -> dict[str, dict]:
    """The experiments an experiment.json records, by kind (format 1 held one, at the top)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return {}
    exps = record.get("experiments")
    if isinstance(exps, dict):
        return {k: v for k, v in exps.items() if k in KINDS and isinstance(v, dict)}
    kind = record.get("experiment")
    if kind not in KINDS:
        return {}
    return {
        kind: {
            k: v
            for k, v in record.items()
            if k not in ("format", "format_version", "entries", "file_count")
        }
    }


def write_manifest(out: str, kind: str, entry: dict) -> None:
    """experiment.json with `entry` as the record of the `kind` experiment, the records of the
    other experiments in the folder kept (they share its cells)."""
    exps = experiments_of(_read_manifest(out))
    exps[kind] = entry
    seal_output(
        out,
        MANIFEST,
        {
            "format": FORMAT,
            "format_version": 2,
            "experiments": {k: exps[k] for k in KINDS if k in exps},
        },
    )


def prepare_output(
    out: str,
    identity: dict,
    force: bool,
    kind: str = "removal",
    sources: dict[str, str] | None = None,
) -> str:
    """May the `kind` experiment go to `out`? "new" (absent or empty), "continued" (an earlier
    `kind` experiment of the same identity: the same recipe, dataset and scores), "joined" (the
    folder holds the other kind of experiment: cells are shared) or "replaced" (an earlier
    easyhard experiment, deleted, with `force`; when the folder also holds the other kind, only
    this kind's files go, the cells stay). `sources`: label -> sha256 of the scores inputs; a
    continued experiment may add labels, never change the content of one. Refuses anything
    else, before any change."""
    from .runfolder import identity_differences

    if not os.path.lexists(out):
        return "new"
    if os.path.islink(out):
        raise OutputExistsError(
            f"{out} is a symbolic link (to {os.readlink(out)}); easyhard writes only into real "
            "folders: give the folder itself as `out`"
        )
    if not os.path.isdir(out):
        raise OutputExistsError(f"{out} exists and is not a folder; choose another `out`")
    names = os.listdir(out)
    if all(is_own_temp(n, TOP_FILES) for n in names):  # empty, or killed before its manifest
        remove_owned(out, names)
        return "new"
    record = _read_manifest(out)
    exps = experiments_of(record)
    if force:
        if any(k != kind for k in exps):  # keep the other experiment and the shared cells
            other = _only_own_files(out)
            if other:
                raise OutputExistsError(
                    f"{out} holds {other}, which easyhard did not write; "
                    "`force=True` does not delete it: move it or choose "
                    "another folder"
                )
            remove_owned(out, list(KIND_FILES[kind]))
            return "replaced"
        try:
            check_replaceable(out, MANIFEST, FORMAT, True)
        except OutputExistsError:
            # A killed experiment holds files written after its manifest (a cell's checkpoint):
            # replace it when everything in it is what an experiment writes, by name.
            if record is None or record.get("format") != FORMAT or _only_own_files(out):
                raise
        other = _only_own_files(out)
        if other:
            raise OutputExistsError(
                f"{out} holds {other}, which easyhard did not write; "
                "`force=True` does not delete it: move it or choose another "
                "folder"
            )
        _remove_experiment(out)
        return "replaced"
    if record is None or record.get("format") != FORMAT or not exps:
        raise OutputExistsError(
            f"{out} is not empty and holds no easyhard experiment "
            f"({MANIFEST}): choose another `out`"
        )
    if kind not in exps:
        return "joined"
    grid = (
        "more seeds, fractions, orders, scores or budgets"
        if kind == "removal"
        else "more seeds, kept fractions, strategies, scores, windows, scores inputs or budgets"
    )
    diff = identity_differences(exps[kind].get("identity") or {}, identity)
    before = exps[kind].get("sources") or {}
    diff += [
        f"the scores input labelled {label!r} has other content (sha256 "
        f"{before[label][:12]}... there, {sha[:12]}... now)"
        for label, sha in (sources or {}).items()
        if label in before and before[label] != sha
    ]
    if diff:
        raise ValueError(
            f"{out} holds a {kind} experiment with other settings "
            f"({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}): repeat its "
            f"settings to continue it ({grid} add cells), or use a new `out`, or "
            "`force=True` to replace it"
        )
    return "continued"


def read_cell_result(cell_dir: str, cell: Cell) -> dict | None:
    """A finished cell's result.json (None when the cell has not finished); refuses one that
    belongs to another cell or cannot be read."""
    path = os.path.join(cell_dir, CELL_RESULT)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"{path} cannot be read ({e}): move the folder {cell_dir} away to train that cell again"
        ) from e
    from .runfolder import check_same_run

    check_same_run(
        result.get("identity") if isinstance(result, dict) else None, cell.identity, path
    )
    return result


def _cell_outcome(cell_dir: str, cell: Cell) -> dict:
    """result.json of a cell whose training has just ended, from its metrics.jsonl."""
    from .runfolder import read_metrics

    metrics = read_metrics(cell_dir)
    last = metrics[-1]
    seconds = float(sum(m["seconds"] for m in metrics))
    images = int(sum(m["images"] for m in metrics))
    if last["steps"] != cell.steps or last["test_acc"] is None:
        raise RuntimeError(
            f"cell {cell.id} ended after {last['steps']} steps instead of "
            f"{cell.steps}, or without a test accuracy"
        )
    return {
        "identity": cell.identity,
        "test_acc": last["test_acc"],
        "train_acc": last["train_acc"],
        "epochs": len(metrics),
        "steps": last["steps"],
        "images": images,
        "seconds": seconds,
        "images_per_s": images / max(seconds, 1e-9),
        **cell.selection,
    }


# ---------------------------------------------------------------------------- outputs
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


def _pts(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}"


def _interval(d: dict | None) -> str:
    if not d or not d["n"]:
        return ""
    if d["low"] is None:
        return f"{_pts(d['mean'], True)} (n=1, no interval)"
    return f"{_pts(d['mean'], True)} [{_pts(d['low'], True)}, {_pts(d['high'], True)}]"


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
            f" ({context['excluded']} never presented during scoring are left out of every "
            "subset, the reference included)"
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
    by_group: dict[tuple, list[dict]] = {}
    for e in stats:
        by_group.setdefault((e["score"], e["budget"]), []).append(e)
    for (score, budget), entries in by_group.items():
        lines += [
            f"## {score}, budget: {budget}",
            "",
            "| removed | order | kept | n | test acc % | Δ vs full data | Δ vs random |",
            "|---:|:---|---:|---:|---:|---:|---:|",
        ]
        for e in entries:
            acc = _pts(e["acc_mean"]) + ("" if e["acc_std"] is None else f" ± {_pts(e['acc_std'])}")
            order = "none (full data)" if e["order"] == REFERENCE else e["order"]
            lines.append(
                f"| {e['fraction']:.0%} | {order} | "
                f"{'varies' if e['kept'] is None else e['kept']} | {e['acc_n']} | {acc} | "
                f"{_interval(e.get('vs_full'))} | {_interval(e.get('vs_random'))} |"
            )
        lines.append("")
    return "\n".join(lines)


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


def plot_removal(stats: list[dict], path: str, title: str) -> None:
    """removal.png: per (score, budget) a column; above, test accuracy (%) against the removed
    fraction (%), one line per order with its 95% interval and the full data as a line with its
    band; below, the paired difference to random removal (percentage points) with its interval."""
    from .figures import pyplot, save

    plt = pyplot()

    combos = list(dict.fromkeys((e["score"], e["budget"]) for e in stats))
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

    for col, (score, budget) in enumerate(combos):
        top, bottom = axes[0, col], axes[1, col]
        entries = [e for e in stats if (e["score"], e["budget"]) == (score, budget)]
        ref = [e for e in entries if e["order"] == REFERENCE]
        if ref:
            draw_full_data(top, ref[0])
        for order in REMOVAL_ORDERS:
            line = sorted((e for e in entries if e["order"] == order), key=lambda e: e["fraction"])
            if not line:
                continue
            x = np.array([100 * e["fraction"] for e in line]) + shift[order]
            y, err = error_bars(line)
            n = max(e["acc_n"] for e in line)
            top.errorbar(
                x,
                y,
                yerr=err,
                color=colors[order],
                marker="o",
                ms=4,
                capsize=3,
                label=f"{labels[order]} (n={n})",
            )
            diffs = [e for e in line if e.get("vs_random") and e["vs_random"]["n"]]
            if diffs:
                d = [e["vs_random"] for e in diffs]
                xd = np.array([100 * e["fraction"] for e in diffs]) + shift[order]
                yd, errd = error_bars(d, "mean", "low", "high")
                bottom.errorbar(
                    xd,
                    yd,
                    yerr=errd,
                    color=colors[order],
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=labels[order],
                )
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


def partial_note(text: str, finished: int, cells: int) -> str:
    """A summary with a line after its title saying that only `finished` of `cells` trainings
    are in it (`no_train` on an unfinished experiment)."""
    if finished >= cells:
        return text
    title, _, rest = text.partition("\n\n")
    return (
        f"{title}\n\n- **Partial**: {finished} of {cells} distinct trainings have finished; "
        "the tables hold those. The same command without --no-train trains the rest.\n"
        f"{rest}"
    )


def _write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------- the run
def load_data(cfg, kind: str):
    """(device, train, test) for an experiment's trainings: one process, matplotlib present,
    an in-memory dataset (index subsets) with a test split."""
    from .train import Dist, load_datasets, resolve_device

    cfg.validate()
    if Dist.from_env().enabled:
        raise ValueError(f"the {kind} experiment runs in one process: start it without torchrun")
    device = resolve_device(cfg.device)
    try:
        import matplotlib  # noqa: F401  (the figure is drawn at the end: fail before training)
    except ImportError as e:
        raise ImportError(
            f"the {kind} experiment draws its figures with matplotlib: pip install matplotlib"
        ) from e
    train, test = load_datasets(cfg, quiet=True)
    if not train.in_memory:
        raise ValueError(
            f"the {kind} experiment trains on index subsets, which only in-memory "
            f"datasets (fashion-mnist, cifar10, cifar100, synthetic) support for now, "
            f"not {cfg.dataset}"
        )
    if test is None:
        raise ValueError(
            f"{cfg.dataset} has no test split: the {kind} experiment measures test accuracy"
        )
    return device, train, test


def load_score_table(path: str, window: int | None, train, dataset: str):
    """The scores of `path` counted over `window`, checked to belong to `train` (fingerprint,
    labels of the examples presented)."""
    from .scores import excluded, load_scores

    table = load_scores(path, window)
    if table.fingerprint != train.fingerprint:
        raise ValueError(
            f"{path} was scored on dataset fingerprint {table.fingerprint!r}, "
            f"but {dataset} has fingerprint {train.fingerprint!r}: the scores belong "
            "to other data"
        )
    alive = ~excluded(table)
    if len(table.labels) != len(train) or not np.array_equal(
        table.labels[alive], train.labels[alive]
    ):
        raise ValueError(f"{path} and {dataset} disagree on the examples or their labels")
    if not alive.any():
        raise ValueError(f"{path}: no example was presented during scoring")
    return table


def train_cells(
    todo: Sequence[Cell],
    out: str,
    run_cfg,
    arch: str,
    datasets,
    say,
    describe_cell: Callable[[Cell], str],
    done: Callable[[Cell, dict], None],
) -> None:
    """Train the cells of `todo` one after the other in OUT/cells/<id>/ (a half-finished one
    continues from its checkpoint), write each one's result.json and call done(cell, result)."""
    pending, n = list(todo), len(todo)
    count = 0
    while pending:
        busy = []
        for cell in pending:
            with cell_lock(out, cell.id, wait=False) as held:
                if not held:  # another worker is training it: come back to it at the end
                    busy.append(cell)
                    continue
                count += 1
                _train_cell(cell, count, n, out, run_cfg, arch, datasets, say, describe_cell, done)
                # finished (result.json is read before any training): the lock has done its job
                remove_owned(os.path.join(out, CELLS), [f"{cell.id}.lock"])
        if busy:
            say(f"waiting for another worker that is training {len(busy)} cell(s)")
            with cell_lock(out, busy[0].id, wait=True):
                pass
        pending = busy


def _train_cell(
    cell: Cell,
    i: int,
    n: int,
    out: str,
    run_cfg,
    arch: str,
    datasets,
    say,
    describe_cell: Callable[[Cell], str],
    done: Callable[[Cell, dict], None],
) -> None:
    """Train one cell, holding its lock; a cell another worker finished is read back."""
    from .train import train_run

    cell_dir = os.path.join(out, CELLS, cell.id)
    found = read_cell_result(cell_dir, cell)
    if found is not None:
        say(f"[{i}/{n}] {describe_cell(cell)}: finished by another worker")
        done(cell, found)
        return
    resumed = os.path.exists(os.path.join(cell_dir, CHECKPOINT))
    budget = (
        "epochs budget"
        if cell.max_steps is None and getattr(cell.requests[0], "budget", "epochs") == "epochs"
        else f"steps budget: {cell.steps} steps"
    )
    say(
        f"[{i}/{n}] {describe_cell(cell)}, seed {run_cfg.seed + cell.run} (cell "
        f"{cell.id}"
        f"{', ' + str(len(cell.requests)) + ' requests' if len(cell.requests) > 1 else ''}): "
        f"{cell.selection['kept']} examples, {cell.steps} steps in {cell.epochs} epoch(s) "
        f"({budget}){'; resuming from its checkpoint' if resumed else ''}"
    )
    train_run(
        run_cfg,
        arch,
        cell.run,
        out,
        resume=True,
        quiet=True,
        datasets=datasets,
        subset=cell.subset,
        max_steps=cell.max_steps,
        run_dir=cell_dir,
        evaluate_every_epoch=False,
        save_scores=False,
    )
    outcome = _cell_outcome(cell_dir, cell)
    with atomic_write(os.path.join(cell_dir, CELL_RESULT), "w") as f:
        json.dump(outcome, f, indent=1)
    remove_owned(cell_dir, [CHECKPOINT, HISTORY_FILE])  # finished: nothing to resume
    say(
        f"    test acc {outcome['test_acc']:.4f} ({outcome['seconds']:.1f} s, "
        f"{outcome['images_per_s']:.0f} images/s); {n - i} cell(s) left"
    )
    done(cell, outcome)


def finished_cells(out: str, cells: dict[str, Cell]) -> dict[str, dict]:
    """The results of the cells that finished earlier (any experiment in `out` may have
    trained them)."""
    results = {}
    for cid, cell in cells.items():
        found = read_cell_result(os.path.join(out, CELLS, cid), cell)
        if found is not None:
            results[cid] = found
    return results


def run_removal(
    cfg: "RemovalConfig",
    score_file: str,
    out: str,
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    train_missing: bool = True,
) -> dict:
    """Run (or continue) the removal experiment of `cfg` ranked by `score_file` in `out`;
    returns a summary (rows, statistics, counts). Everything that can be checked is checked
    before anything is written: the configuration, the device, the dataset (in-memory only for
    now), the scores input (same data: fingerprint and labels; the scores asked for), the
    selections,
    where the output goes (not overlapping an input; empty, the same experiment to continue, the
    other kind of experiment to join, or with `force` an earlier easyhard experiment to
    replace)."""
    from . import __version__
    from .runfolder import input_paths
    from .scores import excluded

    say = (lambda s: None) if quiet else (log or (lambda s: print(s, flush=True)))
    device, train, test = load_data(cfg, "removal")
    check_disjoint(out, {"scores input": score_file, **input_paths(cfg, train)})
    table = load_score_table(score_file, cfg.window, train, cfg.dataset)
    alive = ~excluded(table)
    missing = [s for s in cfg.score_list() if s not in table.scores]
    if missing:
        raise ValueError(
            f"{score_file} holds no {missing[0]!r} score (it has "
            f"{', '.join(sorted(table.scores))}): choose another `score`"
        )
    requests, cells = plan(cfg, table, train.fingerprint)
    identity = experiment_identity(cfg, train.fingerprint, file_sha256(score_file))
    if not train_missing and force:
        raise ValueError(
            "`no_train` writes the outputs of an existing experiment; it does not go with `force`"
        )
    state = prepare_output(out, identity, force)
    if not train_missing and state == "new":
        raise ValueError(f"{out} holds no experiment yet: nothing to report without training")

    n, n_excluded = int(alive.sum()), int((~alive).sum())
    full_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    context = {
        "fingerprint": train.fingerprint,
        "n": n,
        "excluded": n_excluded,
        "test_size": len(test),
        "full_steps": full_steps,
        "score_file": os.path.abspath(score_file),
        "easyhard_version": __version__,
        "torch_version": _torch_version(),
        "device": str(device),
    }
    grid = {name: getattr(cfg, name) for name in GRID_FIELDS}

    def manifest(finished: bool, done: int) -> None:
        write_manifest(
            out,
            "removal",
            {
                "finished": finished,
                "identity": identity,
                "grid": grid,
                "config": dataclasses.asdict(cfg),
                **context,
                "cells": {"requested": len(requests), "unique": len(cells), "finished": done},
                "outputs": [RESULTS, SUMMARY, FIGURE],
            },
        )

    os.makedirs(out, exist_ok=True)
    _remove_stale_temps(out)
    results = finished_cells(out, cells)
    manifest(False, len(results))  # first: marks the folder as an experiment's
    from .config import to_toml

    _write_text(
        os.path.join(out, CONFIG_FILE),
        to_toml(
            cfg,
            (
                f"written by easyhard experiment removal {__version__}: the resolved "
                "configuration.\n"
                "Repeat or continue it: easyhard experiment removal SCORES --config <a copy> --out "
                "<folder>"
            ),
        ),
    )
    os.makedirs(os.path.join(out, CELLS), exist_ok=True)

    todo = [c for c in cells.values() if c.id not in results] if train_missing else []
    say(
        f"removal experiment in {os.path.abspath(out)} ({state}): {len(requests)} requested "
        f"trainings, {len(cells)} distinct cells ({len(requests) - len(cells)} shared), "
        f"{len(cells) - len(todo)} finished earlier, {len(todo)} to train; {n} examples"
        + (
            f" ({n_excluded} never presented during scoring, left out of every subset)"
            if n_excluded
            else ""
        )
        + f"; budget(s): {', '.join(cfg.budget_list())}"
        + (
            f" (steps: {full_steps} optimizer steps for every subset)"
            if "steps" in cfg.budget_list()
            else ""
        )
    )

    def done(cell: Cell, outcome: dict) -> None:
        results[cell.id] = outcome
        _write_rows(out, result_rows(cfg, requests, results, n_excluded))
        manifest(False, len(results))

    train_cells(
        todo,
        out,
        training_config(cfg),
        cfg.arch,
        (train, test),
        say,
        lambda cell: describe(cell.requests[0]),
        done,
    )

    rows = result_rows(cfg, requests, results, n_excluded)
    _write_rows(out, rows)
    stats = summarize(rows)
    text = partial_note(summary_markdown(cfg, stats, context), len(results), len(cells))
    _write_text(os.path.join(out, SUMMARY), text + "\n")
    seeds = f"{cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}"
    plot_removal(
        stats,
        os.path.join(out, FIGURE),
        f"Removal experiment: {cfg.dataset}, {cfg.arch}, {cfg.epochs} epoch(s) on the "
        f"full data, {'class-balanced' if cfg.balanced else 'global'} removal; mean and "
        f"95% t-interval over {seeds}",
    )
    manifest(len(results) == len(cells), len(results))
    return {
        "out": os.path.abspath(out),
        "state": state,
        "requested": len(requests),
        "cells": len(cells),
        "trained": len(todo),
        "reused": len(cells) - len(todo),
        "excluded": n_excluded,
        "full_steps": full_steps,
        "rows": rows,
        "statistics": stats,
        "summary": text,
        "files": {
            name: os.path.join(os.path.abspath(out), name) for name in (RESULTS, SUMMARY, FIGURE)
        },
    }


def _write_rows(out: str, rows: list[dict], name: str = RESULTS) -> None:
    with atomic_write(os.path.join(out, name), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _torch_version() -> str:
    import torch

    return torch.__version__


def read_results(path: str) -> list[dict]:
    """The lines of a results.jsonl."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(rows: Sequence[dict]) -> list[dict]:
    """Rows without TIMING_FIELDS: what two runs of the same experiment share exactly."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]

"""The experiment harness: cells, their training and resume, and the one run of every kind.

A *cell* is one training: (subset, recipe, seed, step budget), named by a digest of its identity
(runfolder.run_identity), in ``OUT/cells/<digest>/``. Requests that come to the same cell (the
reference of every score and budget, random removal under every score, the same subset asked by
two kinds of experiment) train it once. An experiment is resumable: the same command again reads
finished cells back (never retrained), continues a half-finished one from its checkpoint, and
trains only what is missing, so a larger grid adds cells. A changed recipe (anything else, the
scores inputs' content included) is refused with the differences named.

A *kind* of experiment (removal.Removal, compression.Compression) is a small class on `Kind`: it
declares its grid, reads its inputs, plans its requests and cells, and turns finished cells into
rows, a summary and figures. `run` does everything else once for every kind: the checks before
anything is written, the folder (folder.prepare_output), the manifest, the resolved
configuration, training the missing cells, and the outputs. This module imports torch only
inside its functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from ..io import atomic_write, check_disjoint, remove_owned
from ..runfolder import CHECKPOINT, HISTORY_FILE
from .folder import (
    CELL_RESULT,
    CELLS,
    KIND_FILES,
    cell_folders,
    cell_lock,
    check_test_split,
    prepare_output,
    remove_stale_temps_of,
    write_manifest,
)

if TYPE_CHECKING:
    from ..config import ExperimentConfig

_log = logging.getLogger("easyhard.experiments")

REFERENCE = "none"  # what the full-data reference did: removed nothing, kept everything
#: The fields of a results line that differ between repetitions of the same training.
TIMING_FIELDS = ("training_seconds", "total_seconds", "seconds", "images_per_s")
#: The fields every kind's results line takes from its request and cell, in this order: what
#: was removed, the training seed, how the training went, what it trained on.
CELL_ROW_FIELDS = (
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
    requests: list[Any] = dataclasses.field(default_factory=list)  # the kind's requests
    recipe: Any = None  # the ScoreConfig it trains with (training_config, or a pruning one)

    @property
    def prune(self) -> str:
        """The rule that prunes this cell's training (easyhard.prune), or "none"; a pruned
        cell's `steps` is its most, the steps of its epochs on the full subset."""
        return getattr(self.recipe, "prune", "none")


def training_config(cfg: ExperimentConfig):
    """The ScoreConfig a cell trains with: the experiment's recipe, its one architecture; the
    grid settings are not part of it (adding seeds or fractions changes no cell)."""
    from ..config import ScoreConfig

    names = {f.name for f in dataclasses.fields(ScoreConfig)}
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k in names}
    values.update(archs=(cfg.arch,), runs=1, window=None, clean_every=0, clean_steps=0)
    return ScoreConfig(**values)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def cell_id(identity: dict) -> str:
    """A cell's name: a digest of its training's identity, the data counted by their fingerprint,
    not their path (runfolder.without_location), so a moved dataset finds its cells."""
    from ..runfolder import without_location

    return _digest(without_location(identity))[:16]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def plan_cells(
    cfg: ExperimentConfig, wanted: Iterable[tuple[Any, tuple, Callable]], n: int, fingerprint: str
) -> tuple[list[tuple[Any, str]], dict[str, Cell]]:
    """The requests of a grid with their cells' ids, sorted by the requests' sort_key(), and
    the distinct cells by id. `wanted` yields, in training order (seed by seed, the reference
    first, so that a stopped run already holds whole curves), (request, subset key, a function
    making that subset's (indices, info)): each subset is made once per key, each training
    (subset, seed, budget) is one cell (add_cell). `n`: the examples that take part. A request
    whose ``prune`` attribute names a rule of easyhard.prune trains with the recipe pruning by it
    (the compression experiment's dynamic strategies)."""
    from ..config import default_prune_settings

    full_steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    run_cfg = training_config(cfg)
    # the trainings that do not prune leave the pruning settings at their defaults: they are
    # the same cells whatever the dynamic strategies' settings
    recipes = {"none": dataclasses.replace(run_cfg, **default_prune_settings())}
    subsets: dict[tuple, tuple[np.ndarray, dict]] = {}
    requests: list[tuple[Any, str]] = []
    cells: dict[str, Cell] = {}
    for req, key, make in wanted:
        if key not in subsets:
            subsets[key] = make()
        rule = getattr(req, "prune", "none")
        if rule not in recipes:
            recipes[rule] = dataclasses.replace(run_cfg, prune=rule)
        cid = add_cell(cells, req, recipes[rule], subsets[key], arch=cfg.arch,
                       fingerprint=fingerprint, full_steps=full_steps)  # fmt: skip
        requests.append((req, cid))
    requests.sort(key=lambda rc: rc[0].sort_key())
    return requests, cells


def selected(sel, removed: int, strategy: str, ties: int | None, random_seed: int | None):
    """(indices, info) of a cell's subset from select's Selection: what a results row and
    result.json record of how it was chosen."""
    return sel.indices, {
        "kept": int(len(sel.indices)),
        "removed": removed,
        "kept_per_class": sel.kept_per_class.tolist(),
        "strategy": strategy,
        "tie_seed": ties,
        "random_seed": random_seed,
    }


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
    request: Any,
    run_cfg,
    subset: tuple[np.ndarray, dict],
    *,
    arch: str,
    fingerprint: str,
    full_steps: int,
) -> str:
    """The id of the cell that trains `subset` (indices, selection info) with the request's
    seed index and budget (created in `cells` when new), with `request` added to it. The id is a
    digest of the training's identity (runfolder.run_identity: recipe, architecture, seeds, data,
    subset, step count) and nothing else, so any experiment that asks for the same training gets
    the same cell (cell_id)."""
    from ..runfolder import run_identity

    (idx, info), k, budget = subset, request.k, request.budget

    spe = math.ceil(len(idx) / run_cfg.batch_size)
    natural = run_cfg.epochs * spe
    # a step budget equal to the recipe's own steps is the same training
    max_steps = None if budget == "epochs" or natural == full_steps else full_steps
    identity = run_identity(run_cfg, arch, k, fingerprint, subset=idx, max_steps=max_steps)
    cid = cell_id(identity)
    if cid not in cells:
        steps = natural if max_steps is None else max_steps
        cells[cid] = Cell(
            cid, identity, k, idx, max_steps, steps, math.ceil(steps / spe), info, recipe=run_cfg
        )
    cells[cid].requests.append(request)
    return cid


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
    from ..runfolder import check_same_run

    check_same_run(
        result.get("identity") if isinstance(result, dict) else None, cell.identity, path
    )
    return result


def _cell_outcome(cell_dir: str, cell: Cell) -> dict:
    """result.json of a cell whose training has just ended, from its metrics.jsonl."""
    from ..runfolder import read_metrics

    metrics = read_metrics(cell_dir)
    last = metrics[-1]
    seconds = float(sum(m["seconds"] for m in metrics))
    images = int(sum(m["images"] for m in metrics))
    # a pruned cell's steps depend on what it skipped: it ends after its epochs, at most as many
    ended = (
        len(metrics) == cell.epochs and last["steps"] <= cell.steps
        if cell.prune != "none"
        else last["steps"] == cell.steps
    )
    if not ended or last["test_acc"] is None:
        raise RuntimeError(
            f"cell {cell.id} ended after {last['steps']} steps in {len(metrics)} epoch(s) "
            f"instead of {cell.steps} in {cell.epochs}, or without a test accuracy"
        )
    return {
        "identity": cell.identity,
        "test_acc": last["test_acc"],
        **({"test_examples": last["test_examples"]} if "test_examples" in last else {}),
        "train_acc": last["train_acc"],
        "epochs": len(metrics),
        "steps": last["steps"],
        "images": images,
        "seconds": seconds,
        "images_per_s": images / max(seconds, 1e-9),
        **cell.selection,
    }


def load_data(cfg, kind: str):
    """(device, train, test) for an experiment's trainings: one process, matplotlib present,
    a dataset with a test split (in memory, or image files: every loader trains on a subset)."""
    from ..datasets import NoTestSplit
    from ..train import Dist, resolve_device

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
    train = cfg.load_dataset("train")
    try:
        test = cfg.load_dataset("test")
    except NoTestSplit as e:
        raise NoTestSplit(f"the {kind} experiment measures test accuracy, but {e}") from e
    return device, train, test


def load_score_table(path: str, window: int | None, train, cfg: ExperimentConfig):
    """The scores of `path` counted over `window`, checked to belong to `train` (fingerprint,
    by runfolder.check_same_data as for every command that reads scores; labels of the examples
    presented)."""
    from ..runfolder import check_same_data
    from ..scores import excluded, load_scores

    table = load_scores(path, window)
    check_same_data(path, table, cfg, train)
    dataset = cfg.dataset
    alive = ~excluded(table)
    if len(table.labels) != len(train) or not np.array_equal(
        table.labels[alive], train.labels[alive]
    ):
        raise ValueError(f"{path} and {dataset} disagree on the examples or their labels")
    if not alive.any():
        raise ValueError(f"{path}: no example was presented during scoring")
    return table


@dataclass
class CellJob:
    """How the cells of one experiment are trained and reported: the recipe (a ScoreConfig of
    one architecture), the loaded (train, test) datasets, where progress lines go, a cell in
    words, and what to do with a finished cell's result."""

    run_cfg: Any
    arch: str
    datasets: tuple
    say: Callable[[str], None]
    describe: Callable[[Cell], str]
    done: Callable[[Cell, dict], None]


def train_cells(todo: Sequence[Cell], out: str, job: CellJob) -> None:
    """Train the cells of `todo` one after the other in OUT/cells/<id>/ (a half-finished one
    continues from its checkpoint), write each one's result.json and call job.done(cell,
    result). A cell another worker is training is left to it and waited for at the end."""
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
                _train_cell(cell, count, n, out, job)
                # finished (result.json is read before any training): the lock has done its job
                remove_owned(os.path.join(out, CELLS), [f"{cell.id}.lock"])
        if busy:
            job.say(f"waiting for another worker that is training {len(busy)} cell(s)")
            with cell_lock(out, busy[0].id, wait=True):
                pass
        pending = busy


def _train_cell(cell: Cell, i: int, n: int, out: str, job: CellJob) -> None:
    """Train one cell, holding its lock; a cell another worker finished is read back."""
    from ..train import train_run

    cell_dir = os.path.join(out, CELLS, cell.id)
    found = read_cell_result(cell_dir, cell)
    if found is not None:
        job.say(f"[{i}/{n}] {job.describe(cell)}: finished by another worker")
        job.done(cell, found)
        return
    resumed = os.path.exists(os.path.join(cell_dir, CHECKPOINT))
    budget = (
        "epochs budget"
        if cell.max_steps is None and getattr(cell.requests[0], "budget", "epochs") == "epochs"
        else f"steps budget: {cell.steps} steps"
    )
    steps = f"{cell.steps} steps"
    if cell.prune != "none":
        steps = f"at most {steps} (pruned during training by {cell.prune})"
    recipe = cell.recipe if cell.recipe is not None else job.run_cfg
    job.say(
        f"[{i}/{n}] {job.describe(cell)}, seed {recipe.seed + cell.run} (cell "
        f"{cell.id}"
        f"{', ' + str(len(cell.requests)) + ' requests' if len(cell.requests) > 1 else ''}): "
        f"{cell.selection['kept']} examples, {steps} in {cell.epochs} epoch(s) "
        f"({budget}){'; resuming from its checkpoint' if resumed else ''}"
    )
    train_run(
        recipe,
        job.arch,
        cell.run,
        out,
        resume=True,
        quiet=True,
        datasets=job.datasets,
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
    job.say(
        f"    test acc {outcome['test_acc']:.4f} ({outcome['seconds']:.1f} s, "
        f"{outcome['images_per_s']:.0f} images/s); {n - i} cell(s) left"
    )
    job.done(cell, outcome)


def _recorded_identity(cell_dir: str) -> dict | None:
    """The identity a cell folder recorded (its config.json, written when its training began),
    or None when it holds no readable one."""
    from ..runfolder import read_run_record

    identity = read_run_record(cell_dir).get("identity")
    return (
        identity
        if isinstance(identity, dict) and isinstance(identity.get("config"), dict)
        else None
    )


def adopt_cells(
    out: str, requests: list[tuple[Any, str]], cells: dict[str, Cell]
) -> tuple[list[tuple[Any, str]], dict[str, Cell]]:
    """The requests and cells of a plan, each cell under the name its folder has in `out`. A
    cell is named by a digest of its identity without the data's location (add_cell); one
    written by easyhard <= 0.2.0, whose digest included the data's path, has another name, so
    a cell without a folder of its name takes the folder that recorded its training (its
    config.json; a finished one first): read back when finished, continued when half-done,
    wherever the data lay then. Nothing is renamed (workers of one folder may share a cell)."""
    root = os.path.join(out, CELLS)
    if all(os.path.isdir(os.path.join(root, cid)) for cid in cells):
        return requests, cells
    recorded: dict[str, str] = {}
    for path in sorted(
        cell_folders(out), key=lambda p: not os.path.exists(os.path.join(p, CELL_RESULT))
    ):
        name = os.path.basename(path)
        own = name not in cells and os.path.isdir(path) and not os.path.islink(path)
        identity = _recorded_identity(path) if own else None
        if identity is not None:
            recorded.setdefault(cell_id(identity), name)
    names = {cid: recorded[cid] for cid in cells
             if cid in recorded and not os.path.isdir(os.path.join(root, cid))}  # fmt: skip
    if not names:
        return requests, cells
    adopted = {names.get(cid, cid): dataclasses.replace(cell, id=names.get(cid, cid))
               for cid, cell in cells.items()}  # fmt: skip
    return [(req, names.get(cid, cid)) for req, cid in requests], adopted


def finished_cells(out: str, cells: dict[str, Cell]) -> dict[str, dict]:
    """The results of the cells that finished earlier (any experiment in `out` may have
    trained them)."""
    results = {}
    for cid, cell in cells.items():
        found = read_cell_result(os.path.join(out, CELLS, cid), cell)
        if found is not None:
            results[cid] = found
    return results


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


def write_text(path: str, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def write_rows(out: str, rows: list[dict], name: str) -> None:
    with atomic_write(os.path.join(out, name), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def read_results(path: str) -> list[dict]:
    """The lines of a results.jsonl."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def without_timing(rows: Sequence[dict]) -> list[dict]:
    """Rows without TIMING_FIELDS: what two runs of the same experiment share exactly."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


def torch_version() -> str:
    import torch

    return torch.__version__


# ---------------------------------------------------------------------------- kinds and the run
class Kind:
    """One kind of experiment on the harness. A subclass sets the class attributes and
    implements the methods below; `run` calls them in this order: inputs, load, plan, identity,
    then (as cells finish) rows, and at the end summarize, summary_markdown and plot."""

    name: str  # "removal": its files are folder.KIND_FILES[name]
    grid_fields: tuple[str, ...]  # settings a continued experiment may change (they add cells)
    grows: str  # those, in words, for the refusal of other settings
    usage: str  # how to repeat it, for the header of its resolved configuration file

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.sources: dict[str, str] | None = None  # label -> sha256 of each scores input

    @property
    def files(self) -> tuple[str, ...]:
        """Its configuration, results, summary and figure files, in that order."""
        return KIND_FILES[self.name]

    def inputs(self) -> dict[str, str]:
        """What it reads (what -> path): the output may overlap none of it."""
        raise NotImplementedError

    def load(self, train) -> np.ndarray:
        """Read and check the inputs against the training set; the examples that take part."""
        raise NotImplementedError

    def plan(self, fingerprint: str) -> tuple[list[tuple[Any, str]], dict[str, Cell]]:
        """Every request of the grid with its cell's id, and the distinct cells by id."""
        raise NotImplementedError

    def identity(self, fingerprint: str) -> dict:
        """What a continued experiment may not change."""
        raise NotImplementedError

    def describe(self, request: Any) -> str:
        """A request in words ("remove the easiest 30% by easiness")."""
        raise NotImplementedError

    def context(self) -> dict:
        """What its summary and manifest name besides the harness's context (its inputs)."""
        return {}

    def record(self) -> dict:
        """Fields of its manifest entry besides the harness's."""
        return {}

    def intro(self, state: str, requests: list, cells: dict, progress: str, context: dict) -> str:
        """The line that says what this run of it will do (`progress`: the harness's count of
        the cells finished earlier and to train)."""
        raise NotImplementedError

    def rows(self, requests: list, results: dict[str, dict], excluded: int) -> list[dict]:
        """Its results file's lines, for the requests whose cell has finished."""
        raise NotImplementedError

    def summarize(self, rows: list[dict]) -> list[dict]:
        """Its paired statistics over seeds (stats.paired_summary)."""
        raise NotImplementedError

    def summary_markdown(self, stats: list[dict], context: dict) -> str:
        raise NotImplementedError

    def plot(self, stats: list[dict], out: str) -> None:
        """Draw its figures into folder `out`."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Fields of `run`'s returned summary besides the harness's."""
        return {}


def emptied_classes(cells: dict[str, Cell], labels: np.ndarray, alive: np.ndarray) -> str | None:
    """A warning when subsets keep no example of a class that takes part (a class's share of a
    small subset rounds to nothing, as `select` warns too): those trainings never see the class,
    and the test accuracy counts it wrong. None when every subset holds every class."""
    present = np.flatnonzero(np.bincount(labels[alive], minlength=1))
    lacking = {
        cell.id: [int(c) for c in present if c >= len(k) or k[c] == 0]
        for cell in cells.values()
        if (k := cell.selection.get("kept_per_class")) is not None
    }
    lacking = {cid: classes for cid, classes in lacking.items() if classes}
    if not lacking:
        return None
    cid, classes = next(iter(lacking.items()))
    return (
        f"{len(lacking)} of the {len(cells)} trainings' subsets keep no example of a class "
        f"(e.g. class {', '.join(map(str, classes[:10]))} in a subset of "
        f"{cells[cid].selection.get('kept')} examples): those trainings never see it, and "
        "the test accuracy counts its images wrong"
    )


def _context(kind: Kind, alive: np.ndarray, train, test, device) -> dict:
    """What an experiment's summary and manifest say of its data, scale and machine."""
    from .. import __version__

    n = int(alive.sum())
    return {
        "fingerprint": train.fingerprint,
        "n": n,
        "excluded": int((~alive).sum()),
        "test_size": len(test),
        "test_fingerprint": test.fingerprint,
        "full_steps": kind.cfg.epochs * math.ceil(n / kind.cfg.batch_size),
        **kind.context(),
        "easyhard_version": __version__,
        "torch_version": torch_version(),
        "device": str(device),
    }


def _outputs(kind: Kind, out: str, requests, results, cells, context) -> tuple:
    """The kind's results file, summary and figures from the cells finished so far; returns
    (rows, statistics, summary text)."""
    _, results_file, summary_file, *_ = kind.files
    counted = {r["test_examples"] for r in results.values() if "test_examples" in r}
    if len(counted) == 1:  # what the accuracies counted: unreadable test files left out
        context = {**context, "test_size": counted.pop()}
    rows = kind.rows(requests, results, context["excluded"])
    write_rows(out, rows, results_file)
    stats = kind.summarize(rows)
    text = partial_note(kind.summary_markdown(stats, context), len(results), len(cells))
    write_text(os.path.join(out, summary_file), text + "\n")
    kind.plot(stats, out)
    return rows, stats, text


def _todo(cells: dict[str, Cell], results: dict, train_missing: bool) -> tuple[list[Cell], str]:
    """The cells to train now, and the intro's count of what finished and what is to train."""
    missing = [c for c in cells.values() if c.id not in results]
    left = (
        f"{len(missing)} to train" if train_missing else f"{len(missing)} unfinished, not trained"
    )
    progress = f"{len(results)} finished earlier (by any experiment in the folder), {left}"
    return (missing if train_missing else []), progress


def run(
    kind: Kind,
    out: str,
    *,
    force: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
    train_missing: bool = True,
) -> dict:
    """Run (or continue) the experiment `kind` in folder `out`; returns a summary (rows,
    statistics, counts, the files written). Everything that can be checked is checked before
    anything is written: the configuration, the device, the dataset (in-memory, with a test
    split), the inputs (same data: fingerprint and labels; what is asked of them), the
    selections, where the output goes (not overlapping an input; empty, the same experiment to
    continue, another kind to join, or with `force` an earlier easyhard experiment to replace)."""
    from .. import __version__
    from ..config import to_toml
    from ..runfolder import input_paths

    cfg, (config_file, results_file, *_) = kind.cfg, kind.files
    say = (lambda s: None) if quiet else (log or (lambda s: print(s, flush=True)))
    device, train, test = load_data(cfg, kind.name)
    check_disjoint(out, {**kind.inputs(), **input_paths(cfg, train)})
    alive = kind.load(train)
    requests, cells = kind.plan(train.fingerprint)
    identity = kind.identity(train.fingerprint)
    if not train_missing and force:
        raise ValueError(
            "`no_train` writes the outputs of an existing experiment; it does not go with `force`"
        )
    check_test_split(out, kind.name, test.fingerprint, force)
    state = prepare_output(
        out, identity, force, kind=kind.name, sources=kind.sources, grows=kind.grows
    )
    if not train_missing and state == "new":
        raise ValueError(f"{out} holds no experiment yet: nothing to report without training")

    context = _context(kind, alive, train, test, device)
    lacking = emptied_classes(cells, train.labels, alive)
    if lacking:  # said even with quiet, as select says it
        _log.warning("warning: %s", lacking)
    n_excluded, full_steps = context["excluded"], context["full_steps"]

    def manifest(finished: bool, done: int) -> None:
        entry = {
            "finished": finished,
            "identity": identity,
            **({"sources": kind.sources} if kind.sources is not None else {}),
            "grid": {name: getattr(cfg, name) for name in kind.grid_fields},
            "config": dataclasses.asdict(cfg),
            **context,
            **kind.record(),
            "cells": {"requested": len(requests), "unique": len(cells), "finished": done},
            "outputs": list(kind.files[1:]),
        }
        write_manifest(out, kind.name, entry)

    os.makedirs(out, exist_ok=True)
    remove_stale_temps_of(out)
    requests, cells = adopt_cells(out, requests, cells)
    results = finished_cells(out, cells)
    reused = len(results)
    manifest(False, reused)  # first: marks the folder as an experiment's
    header = (
        f"written by easyhard experiment {kind.name} {__version__}: the resolved configuration."
        f"\nRepeat or continue it: {kind.usage} --config <a copy> --out <folder>"
    )
    write_text(os.path.join(out, config_file), to_toml(cfg, header))
    os.makedirs(os.path.join(out, CELLS), exist_ok=True)
    todo, progress = _todo(cells, results, train_missing)
    say(kind.intro(f"{os.path.abspath(out)} ({state})", requests, cells, progress, context))

    def done(cell: Cell, outcome: dict) -> None:
        results[cell.id] = outcome
        write_rows(out, kind.rows(requests, results, n_excluded), results_file)
        manifest(False, len(results))

    def describe(cell: Cell) -> str:
        return kind.describe(cell.requests[0])

    train_cells(
        todo, out, CellJob(training_config(cfg), cfg.arch, (train, test), say, describe, done)
    )
    rows, stats, text = _outputs(kind, out, requests, results, cells, context)
    manifest(len(results) == len(cells), len(results))
    return {
        "out": os.path.abspath(out),
        "state": state,
        **kind.summary(),
        "requested": len(requests),
        "cells": len(cells),
        "trained": len(todo),
        "reused": reused,
        "excluded": n_excluded,
        "full_steps": full_steps,
        "rows": rows,
        "statistics": stats,
        "summary": text,
        "files": {name: os.path.join(os.path.abspath(out), name) for name in kind.files[1:]},
    }

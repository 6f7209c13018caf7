"""Choose a subset by settings (``select_table``: what ``easyhard select`` and ``compress`` and
``easyhard.select_subset`` all call), and write it out as a dataset a user can train on directly.

- Image folders: a new ImageFolder tree (hard links by default; symbolic links or copies as
  options) that torchvision's ImageFolder and easyhard's loaders read unchanged, plus a DALI /
  ImageFolder file list (``file_list.txt``: ``relative/path label``).
- Fashion-MNIST: the four idx files, the training pair holding the subset (gzipped like the
  source), the test pair linked unchanged, so the folder works as ``--data-dir``.
- CIFAR-10/100: the python batches (same pickled layout as the source), test batch and meta as in
  the source.
- Synthetic (in-memory) data: ``subset.npz`` (images, labels).

Each format writes its own subset (``dataset.write_subset``, beside its reader in
easyhard.datasets); this module builds, records and seals the output around it.

Every output has ``indices.npy`` / ``indices.txt`` (kept dataset indices, ascending) and
``manifest.json`` (source, fingerprints, scores file, strategy, kept count per class, bytes before
and after, and every file written). The source is never modified. The output is built in a
hidden sibling folder and swapped into place when complete (easyhard.outputs), so a killed run
never leaves a tree that looks finished; a non-empty output folder is refused unless ``force``,
and then replaced only when it holds exactly the files an earlier compress wrote.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from .datasets import Dataset
from .io import (
    LINK_MODES,
    OutputExistsError,  # noqa: F401  (raised by compress; importable from here too)
    atomic_write,
    check_disjoint,
)
from .outputs import Output
from .select import Selection, select

if TYPE_CHECKING:
    from .config import SelectConfig
    from .scores import ScoreTable

FORMAT = "easyhard.compressed"
MANIFEST = "manifest.json"
SELECTION_FORMAT, SELECTION_MANIFEST = "easyhard.selection", "selection.json"  # `select`'s output


def select_from_file(score_file: str, cfg: SelectConfig) -> tuple[ScoreTable, Selection]:
    """Load scores (a run's statistics file or a merged scores file) and select by `cfg`;
    returns (table, selection). What `easyhard select` and `easyhard compress` choose."""
    from .scores import load_scores

    table = load_scores(score_file, cfg.window)
    selection = select_table(table, cfg, where=score_file)
    selection.info["score_file"] = os.path.abspath(score_file)
    return table, selection


def select_table(table: ScoreTable, cfg: SelectConfig, where: str = "the scores") -> Selection:
    """The one path from scores and settings to a subset (the CLI's and select_subset's): ranks
    by `cfg.score` oriented by its known direction, leaves out never-presented examples."""
    from .scores import excluded, hardness

    selection = select(
        hardness(cfg.score, table.column(cfg.score, where)),
        table.labels,
        table.num_classes,
        cfg.keep,
        strategy=cfg.strategy,
        balanced=cfg.balanced,
        cut_hardest=cfg.cut_hardest,
        seed=cfg.seed,
        bins=cfg.bins,
        score_name=cfg.score,
        exclude=excluded(table),
        tie_seed=cfg.tie_seed,
    )
    selection.info["window"] = cfg.window if cfg.window is not None else table.window
    selection.fingerprint = table.fingerprint
    return selection


def select_subset(scores: Any, score: str = "easiness", keep: float | int | str = 0.7, **settings):
    """Choose a subset by the score named `score`: the Python form of ``easyhard select``, with
    its names, defaults (class-balanced ``stratified`` selection, ``keep=0.7``) and checks.

    `scores`: a Scores table (``SampleStats.scores()``, ``read_scores``, ``merge_scores``), a
    SampleStats, or the path of a statistics or merged scores file. The score's direction is
    known (easiness: higher is easier; el2n: higher is harder; ...), so ``strategy="hardest"``
    keeps the hardest whatever the score. `settings`: ``strategy`` (hardest, easiest, random,
    stratified), ``balanced`` (True: per-class budgets; False: one global ranking),
    ``cut_hardest``, ``bins``, ``seed``, ``tie_seed`` and ``window`` (easiness's epochs, for a
    SampleStats or a statistics file), as in ``easyhard select --help``. Examples never presented
    while scoring are left out (their scores are NaN), with a warning that says how many.
    Returns a Selection; ``selection.subset(dataset)`` is the torch Subset to train on."""
    import dataclasses
    import warnings

    from .config import SelectConfig, from_mapping
    from .scores import Scores, load_scores

    known = {f.name for f in dataclasses.fields(SelectConfig)} - {"keep", "score"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TypeError(
            f"select_subset got an unknown setting {unknown[0]!r}; it takes "
            f"{', '.join(sorted(known))}"
        )
    cfg = from_mapping(
        SelectConfig, {"keep": str(keep), "score": score, **settings}, "select_subset"
    )
    if isinstance(scores, (str, os.PathLike)):
        table, where = load_scores(os.fspath(scores), cfg.window), os.fspath(scores)
    elif isinstance(scores, Scores):
        if cfg.window is not None and cfg.window != scores.window:
            raise ValueError(
                "these scores count "
                + (f"the first {scores.window} epoch(s)" if scores.window else "every epoch")
                + f" in easiness, not window={cfg.window}; a window is chosen when they are "
                "made: scores(window=...) or read_scores(path, window=...)"
            )
        table, where = scores.table(), "the scores"
    elif hasattr(scores, "scores") and hasattr(scores, "history"):  # a SampleStats
        table, where = scores.scores(cfg.window).table(), "the statistics"
    else:
        raise TypeError(
            f"select_subset takes a Scores table, a SampleStats or a scores file's path, got "
            f"{type(scores).__name__}"
        )
    selection = select_table(table, cfg, where)
    if selection.left_out():
        warnings.warn(selection.left_out(), stacklevel=2)
    return selection


def write_selection(
    selection: Selection, out: str, *, force: bool = False, inputs: dict[str, str] | None = None
) -> dict[str, Any]:
    """`easyhard select`'s output: indices.npy, indices.txt and selection.json in folder `out`
    (which may not overlap `inputs`); returns the record. Replaces only an earlier selection."""
    check_disjoint(out, inputs or {})

    def build(work: str) -> dict[str, Any]:
        write_indices(work, selection.indices)
        return {
            "format": SELECTION_FORMAT,
            "kept": int(len(selection.indices)),
            "of": selection.num_samples,
            "compression_ratio": selection.ratio,
            "kept_per_class": selection.kept_per_class.tolist(),
            "class_sizes": selection.class_sizes.tolist(),
            **selection.info,
        }

    with Output(out, SELECTION_MANIFEST, SELECTION_FORMAT, force=force, command="select") as o:
        return o.write(build)


def write_indices(folder: str, indices: np.ndarray) -> None:
    """indices.npy and indices.txt (one dataset index per line), atomically."""
    with atomic_write(os.path.join(folder, "indices.npy")) as f:
        np.save(f, np.asarray(indices, dtype=np.int64), allow_pickle=False)
    with atomic_write(os.path.join(folder, "indices.txt"), "w") as f:
        f.write("".join(f"{int(i)}\n" for i in indices))


def compress(
    dataset: Dataset,
    selection: Selection,
    out: str,
    *,
    link: str = "hard",
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write `selection` of `dataset` to folder `out`; returns the manifest.

    `out` may not overlap the source or any of `inputs` (what -> path, e.g. the scores input),
    however the paths are spelled. An existing non-empty `out` is replaced only with `force`, and
    only when it is an earlier compress output holding nothing else (see io.check_replaceable)."""
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if selection.num_samples != len(dataset):
        raise ValueError(
            f"the selection is over {selection.num_samples} examples but the dataset "
            f"has {len(dataset)}"
        )
    if len(selection.indices) == 0:
        raise ValueError("the selection is empty: nothing to write")
    out = os.path.abspath(out)
    check_disjoint(out, {**dataset.sources(), **(inputs or {})})
    idx = selection.indices

    def build(work: str) -> dict[str, Any]:
        bytes_before, files, used = dataset.write_subset(idx, work, link)  # its own format
        write_indices(work, idx)
        return {
            "format": FORMAT,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "easyhard_version": __version__,
            "source": {
                "dataset": dataset.name,
                "split": dataset.split,
                "root": dataset.root,
                "fingerprint": dataset.fingerprint,
                "num_samples": len(dataset),
            },
            "selection": selection.info,
            "kept": int(len(idx)),
            "compression_ratio": selection.ratio,
            "kept_per_class": {str(c): int(n) for c, n in enumerate(selection.kept_per_class)},
            "class_sizes": {str(c): int(n) for c, n in enumerate(selection.class_sizes)},
            "link": used,  # how source files entered the output; None: every file written anew
            "bytes_before": int(bytes_before),
            "bytes_after": int(files),
            **(provenance or {}),
        }

    with Output(out, MANIFEST, FORMAT, force=force, command="compress") as output:
        return output.write(build)

"""easyhard: easy and hard examples in CNN training.

Records, for every training example, how it is classified at every presentation (from the
training forward pass itself, through the fused op easyhard::accumulate_stats), keeps a compact
per-example, per-epoch log, and derives difficulty scores from it.

    import easyhard
    stats = easyhard.SampleStats(num_samples=60000, num_classes=10, device="cuda")
    stats.update(logits, labels, indices)   # every training step
    stats.end_epoch()                       # every epoch
    stats.save("scores.npz", metadata={"arch": "resnet18"})

`import easyhard` checks the compiled extension without importing torch (so the command line stays
fast); the heavy modules load on first use.

Three words, three things: a *run* is one training of one architecture with one seed that
records every example at every presentation (`easyhard score` trains runs); its *statistics
file* (scores.npz) holds those raw per-example, per-epoch statistics; *scores* are the
difficulty measures derived from it (easiness, forgetting, EL2N, ...), averaged over runs in a
*merged scores file* (merged.npz).

The data flow, one module per stage (follow one example index from the dataset to the report):

    datasets.py     a dataset: images, labels, a fingerprint; example i is dataset index i;
                    each format also writes its own subsets (write_subset)
    loaders/        batches of (images, labels, dataset indices): the Loader protocol, one
                    module per loader (tensor, dali, torch_images), common order and sharding
    train.py        a run: RunData, Training (the training step), train_one_epoch feeding the
                    step's own logits to the fused op, checkpoints; train_job runs them all
    runfolder.py    what a run is (its identity, checked on resume) and the files it owns
    ops.py, csrc/   easyhard::accumulate_stats adds correctness, probability, margin, loss,
                    EL2N per example on the device; easyhard::topk_select picks subsets
    stats.py        SampleStats: those accumulators, the totals, an 8-byte record per example
                    per epoch
    statsfile.py    the statistics file, the merged scores file and the history side file:
                    every reader and writer of those formats
    scores.py       scores derived from a statistics file (easiness, forgetting, EL2N,
                    margin, ...), and the merge of several runs
    select.py       a subset by score (hardest, easiest, random, stratified; per class or not)
    compress.py     the subset written out as a dataset of the source's format
    overlap.py,     analyses: are easy/hard sets shared across runs and architectures; do easy
    similarity.py   examples look alike (ranks.py: the rank correlations both use)
    experiments/    training afresh on subsets: one harness (cells, resume, the folder, paired
                    statistics) and its kinds, removal.py and compression.py
    study.py        the main job: score, analyses and report in one call
    report.py       one page of all of it
    config.py       every command's settings (DataConfig + TrainingRecipe + each one's own)
    cli/            the command line: one thin module per area over the functions above
    bench.py        `easyhard bench`; io.py and outputs.py atomic writes, what an output may
                    replace, the no-overlap rules
"""

from __future__ import annotations

import importlib
from typing import Any

from ._extension import check_installed as _check_installed

__version__ = "0.1.0"

_check_installed()

_LAZY = {"SampleStats": "easyhard.stats", "HISTORY_DTYPE": "easyhard.statsfile"}
_SUBMODULES = {"ops", "reference", "stats", "statsfile", "io"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"easyhard.{name}")
    raise AttributeError(f"module 'easyhard' has no attribute {name!r}")


__all__ = ["SampleStats", "HISTORY_DTYPE", "__version__"]

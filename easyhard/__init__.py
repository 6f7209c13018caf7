"""easyhard: easy and hard examples in CNN training.

Records, for every training example, how it is classified at every presentation (from the
training forward pass itself, through the fused op easyhard::accumulate_stats), keeps a compact
per-example, per-epoch log, and derives difficulty scores from it.

    import easyhard
    data = easyhard.with_indices(train_set)               # items gain their dataset index
    stats = easyhard.SampleStats.for_dataset(data, device="cuda")
    stats.update(logits, labels, indices)   # every training step
    stats.end_epoch()                       # every epoch
    stats.save("scores.npz", metadata={"arch": "resnet18"})
    subset = easyhard.select_subset(stats.scores(), "easiness", keep=0.7).subset(train_set)

The public names (``from easyhard import ...``; the rest lives in the modules below):

    SampleStats     the recorder: update, end_epoch, save/load, scores(), combine(shards),
                    for_dataset(indexed), state_dict
    with_indices    any map-style dataset with each item's dataset index
    IndexedDataset  what with_indices returns (num_samples, labels, fingerprint, indices)
    load_dataset    easyhard's datasets (Fashion-MNIST, CIFAR, image folders, synthetic), torch
                    map-style datasets with a fingerprint
    Scores          every example's scores as a table (dict of arrays, to_pandas); each score's
                    direction and range in its docstring
    read_scores     the Scores of a statistics or merged scores file
    merge_scores    runs averaged in memory (SampleStats or files)
    select_subset   a subset by a score's name, the CLI's defaults; Selection.subset(dataset)
    Selection       what select_subset returns (indices, per class, info)
    SCORES          the score names
    DIRECTION       which end of each score is easy
    HISTORY_DTYPE   the per-epoch record of the statistics file

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
    indexed.py      with_indices: anyone's dataset with each item's dataset index (your own
                    loop's entry: the index, the fingerprint, a Subset mapped back)
    loaders/        batches of (images, labels, dataset indices): the Loader protocol, one
                    module per loader (tensor, dali, torch_images), common order and sharding
    train.py        a run: RunData, Training (the training step), train_one_epoch feeding the
                    step's own logits to the fused op, checkpoints; train_job runs them all
    prune.py        pruning during training: each epoch's kept set from the record (easiness,
                    InfoBatch's loss rule, random), the schedule's planned steps
    runfolder.py    what a run is (its identity, checked on resume) and the files it owns
    ops.py, csrc/   easyhard::accumulate_stats adds correctness, probability, margin, loss,
                    EL2N per example on the device; easyhard::topk_select picks subsets
    stats.py        SampleStats: those accumulators, the totals, an 8-byte record per example
                    per epoch
    statsfile.py    the statistics file, the merged scores file and the history side file:
                    every reader and writer of those formats
    scores.py       scores derived from a statistics file (easiness, forgetting, EL2N,
                    margin, ...), the Scores table, and the merge of several runs
    select.py       a subset by score (hardest, easiest, random, stratified; per class or not)
    compress.py     select_table / select_subset (settings -> Selection, the CLI's and the
                    API's one path), and the subset written out in the source's format
    overlap.py,     analyses: are easy/hard sets shared across runs and architectures; do easy
    similarity.py   examples look alike (ranks.py: the rank correlations both use)
    experiments/    training afresh on subsets: one harness (cells, resume, the folder, paired
                    statistics) and its kinds, removal.py and compression.py
    study.py        the main job: score, analyses and report in one call
    report.py       one page of all of it
    config.py       every command's settings (DataConfig + TrainingRecipe + each one's own)
    cli/            the command line: one thin module per area over the functions above
    integrations/   Lightning's Callback and Hugging Face's Trainer over one shared recorder
                    (each an optional extra)
    bench.py        `easyhard bench`; io.py and outputs.py atomic writes, what an output may
                    replace, the no-overlap rules
"""

from __future__ import annotations

import importlib
from typing import Any

from ._extension import check_installed as _check_installed

__version__ = "0.2.0"

_check_installed()

_LAZY = {
    "SampleStats": "easyhard.stats",
    "HISTORY_DTYPE": "easyhard.statsfile",
    "with_indices": "easyhard.indexed",
    "IndexedDataset": "easyhard.indexed",
    "load_dataset": "easyhard.datasets",
    "Scores": "easyhard.scores",
    "read_scores": "easyhard.scores",
    "merge_scores": "easyhard.scores",
    "SCORES": "easyhard.scores",
    "DIRECTION": "easyhard.scores",
    "select_subset": "easyhard.compress",
    "Selection": "easyhard.select",
}
_SUBMODULES = {
    "ops",
    "reference",
    "stats",
    "statsfile",
    "io",
    "datasets",
    "indexed",
    "loaders",
    "models",
    "scores",
    "select",
    "compress",
    "train",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"easyhard.{name}")
    raise AttributeError(f"module 'easyhard' has no attribute {name!r}")


__all__ = [*_LAZY, "__version__"]

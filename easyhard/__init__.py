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

The data flow, one module per stage (follow one example index from the dataset to the report):

    datasets.py     a dataset: images, labels, a fingerprint; example i is dataset index i
    loaders.py      batches of (images, labels, dataset indices): tensors, DALI or torch + PIL
    train.py        the training step (score_run); its own logits go to the fused op
    ops.py, csrc/   easyhard::accumulate_stats adds correctness, probability, margin, loss,
                    EL2N per example on the device; easyhard::topk_select picks subsets
    stats.py        SampleStats: those accumulators, an 8-byte record per example per epoch,
                    and the statistics file (scores.npz) they are saved to
    scores.py       difficulty scores derived from a statistics file (easiness, forgetting,
                    EL2N, margin, ...), and the merge of several runs
    select.py       a subset by score (hardest, easiest, random, stratified; per class or not)
    compress.py     the subset written out as a dataset of the source's format
    overlap.py,     analyses: are easy/hard sets shared across runs and architectures; do easy
    similarity.py   examples look alike
    experiment.py,  training afresh on subsets: removal and compression experiments (shared
    compression.py  cells, resume, paired error bars)
    report.py       one page of all of it; cli*.py the command line, config.py its settings
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

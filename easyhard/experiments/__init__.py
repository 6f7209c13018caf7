"""Experiments on subsets chosen by difficulty: train afresh on a subset, measure test accuracy.

    easyhard experiment removal runs/fm/merged.npz --dataset fashion-mnist --arch convnet \\
        --fractions 0.1,0.3,0.5,0.7,0.9 --seeds 3 --budget epochs,steps --out runs/removal

One harness, small kinds (DeepCore's one class per method on a base):

    harness.py      cells (one training each, keyed by its identity), their training and resume,
                    the Kind base class and `run`, which every kind goes through
    folder.py       an experiment's folder: manifest, locks, what `force` may replace
    stats.py        Student's t intervals and paired differences over seeds
    plots.py        number formats and figure pieces the kinds share
    removal.py      Removal: remove the easiest, hardest or a random fraction
    compression.py  Compression: keep a fraction by a ranking, with what the ranking cost

A new kind is a module with a Kind subclass (its grid, requests, rows, summary, figures), its
files in folder.KIND_FILES, and a command in easyhard/cli/experiment.py.
"""

from __future__ import annotations

from .compression import Compression, run_compression
from .folder import KINDS, experiments_of
from .harness import Kind, read_results, run, without_timing
from .removal import Removal, run_removal

__all__ = [
    "KINDS",
    "Compression",
    "Kind",
    "Removal",
    "experiments_of",
    "read_results",
    "run",
    "run_compression",
    "run_removal",
    "without_timing",
]

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
"""
from __future__ import annotations

import importlib
from typing import Any

from ._extension import check_installed as _check_installed

__version__ = "0.1.0"

_check_installed()

_LAZY = {"SampleStats": "easyhard.stats", "HISTORY_DTYPE": "easyhard.stats"}
_SUBMODULES = {"ops", "reference", "stats", "io"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"easyhard.{name}")
    raise AttributeError(f"module 'easyhard' has no attribute {name!r}")


__all__ = ["SampleStats", "HISTORY_DTYPE", "__version__"]

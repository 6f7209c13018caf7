"""Shared pytest configuration: the `cuda` marker skips cleanly without a GPU or CUDA kernels."""
from __future__ import annotations

import pytest
import torch


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    from easyhard import ops

    return ops.has_kernel("accumulate_stats", "CUDA")


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and the extension's CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)

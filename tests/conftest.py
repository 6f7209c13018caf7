"""Shared pytest configuration: the `cuda` marker skips cleanly without a GPU or CUDA kernels;
shared fixtures."""
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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny trainings on one thread: they gain nothing from two, and on a shared CPU OpenMP's
    waiting threads make them several times slower. Use as
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Helpers shared by the benchmark scripts: timing, environment record, JSON output.

Benchmarks are scripts, never part of the test suite. Each writes one JSON file under
benchmarks/results/ (atomically) and prints a table.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Callable

import torch

from easyhard.bench import environment  # noqa: F401  (one record of the machine)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_fn(
    fn: Callable[[], object],
    device: str,
    *,
    warmup: int = 3,
    repeat: int = 20,
    min_time: float = 0.2,
    reduce: Callable[[list[float]], float] = statistics.median,
) -> float:
    """Seconds per call of fn(): `reduce` (the median by default; min for the least disturbed
    block on a shared machine) over `repeat` timed blocks of equal size."""
    for _ in range(warmup):
        fn()
    sync(device)
    # Size a block so that it lasts at least min_time / repeat.
    start = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - start, 1e-7)
    per_block = max(1, int(min_time / repeat / once))
    samples = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        for _ in range(per_block):
            fn()
        sync(device)
        samples.append((time.perf_counter() - start) / per_block)
    return reduce(samples)


def write_json(name: str, payload: dict, out_dir: str | None = None) -> str:
    from easyhard.io import atomic_write

    out_dir = out_dir or RESULTS
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path

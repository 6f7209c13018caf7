"""Helpers shared by the benchmark scripts: timing, environment record, JSON output.

Benchmarks are scripts, never part of the test suite. Each writes one JSON file under
benchmarks/results/ (atomically) and prints a table.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch

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


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    from easyhard import ops

    env = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        # what the extension dispatches to on this CPU (not read from /proc/cpuinfo)
        "cpu_paths": ops.cpu_capabilities(),
        "cpu_path_default": ops.cpu_capabilities()[-1],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def write_json(name: str, payload: dict, out_dir: str | None = None) -> str:
    from easyhard.io import atomic_write

    out_dir = out_dir or RESULTS
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    with atomic_write(path, "w") as f:
        json.dump(payload, f, indent=1)
    return path

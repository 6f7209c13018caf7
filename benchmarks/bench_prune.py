"""Benchmark pruning's per-epoch work at ImageNet scale (easyhard.prune): what a pruned run adds
to every epoch, without training. N = 1,281,167 examples; the record is filled as a training
epoch leaves it (each example presented once, 70% of them correct and confident), then timed:
Pruner.observe (the closed epoch into the pruning state) and Pruner.plan (the next epoch's kept
set, weights and planned steps) for each rule. Target: at most 0.2 s per epoch on the CPU.

Then the image-folder loaders' side at the same N (paths of one small JPEG, 1.28M times): what
giving a loader an epoch's kept set costs (``set_subset`` and the epoch's permutation and shard,
the same in DaliLoader and TorchImageLoader, plus the kept files' list DaliLoader hands its
reader), and, with DALI installed, defining the epoch's DALI reader over the kept files. Every
training epoch of a DaliLoader defines a fresh reader anyway (seeded by (seed, epoch)), pruned or
not: that part is timed at the full and at the kept size for comparison, not as pruning's cost.

    python benchmarks/bench_prune.py            # CPU, 1.28M examples
    python benchmarks/bench_prune.py --n 100000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, write_json  # noqa: E402

from easyhard import ops  # noqa: E402
from easyhard.loaders import dali_available  # noqa: E402
from easyhard.loaders.common import EpochOrder  # noqa: E402
from easyhard.prune import Pruner  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_281_167)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    N, device = a.n, torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(N, len(ops.COUNT_FIELDS), dtype=torch.int32)
    counts[:, ops.PRESENTATIONS] = 1
    confident = torch.rand(N, generator=g) < 0.7
    counts[:, ops.CORRECT] = confident.int()
    sums = torch.zeros(N, len(ops.SUM_FIELDS), dtype=torch.float32)
    sums[:, ops.PROB_SUM] = torch.where(confident, 0.95, 0.3)
    sums[:, ops.LOSS_SUM] = torch.rand(N, generator=g) * 3
    counts, sums = counts.to(device), sums.to(device)
    results = {}
    for rule in ("easiness", "loss", "random"):
        cfg = SimpleNamespace(prune=rule, prune_ratio=0.5, prune_anneal=0.125, prune_window=2,
                              prune_threshold=0.9, prune_rescale=True, epochs=90,
                              batch_size=256)  # fmt: skip
        pruner = Pruner(cfg, torch.arange(N), N, device, seed=0)
        observe, plan = [], []
        for e in range(1, a.repeat + 2):
            t0 = time.perf_counter()
            pruner.observe(counts, sums)
            observe.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            result = pruner.plan(e, steps_done=e * 5005)
            plan.append(time.perf_counter() - t0)
        observe, plan = observe[1:], plan[1:]  # the first is a warm-up
        per_epoch = statistics.median(observe) + statistics.median(plan)
        results[rule] = {
            "observe_s": statistics.median(observe),
            "plan_s": statistics.median(plan),
            "per_epoch_s": per_epoch,
            "kept": len(result.kept),
            "skipped": result.skipped,
        }
        print(f"{rule:9s} observe {results[rule]['observe_s']:.3f} s  plan "
              f"{results[rule]['plan_s']:.3f} s  per epoch {per_epoch:.3f} s  "
              f"(kept {results[rule]['kept']:,}, skipped {result.skipped:,})")  # fmt: skip
    kept = result.kept  # the last plan's kept set (random rule)
    payload = {"env": environment(a.device), "n": N, "target_s": 0.2, "results": results,
               "loaders": loader_refeed(N, kept, a.repeat)}  # fmt: skip
    print("written", write_json(f"bench_prune-{device.type}.json", payload, a.out))


class _Order(EpochOrder):
    """The order part every image-folder loader shares, without a dataset behind it."""

    def __init__(self, n: int) -> None:
        self._init_order(torch.arange(n), batch_size=256, train=True, seed=0, rank=0,
                         world_size=1)  # fmt: skip


def loader_refeed(n: int, kept: torch.Tensor, repeat: int) -> dict:
    """Seconds (medians) to give a loader an epoch's kept set, and DALI's reader definition."""
    import tempfile

    import numpy as np
    from PIL import Image

    order = _Order(n)
    files = ["x"] * n
    refeed = []
    for e in range(repeat):
        t0 = time.perf_counter()
        order.set_subset(kept)
        order.set_epoch(e)
        todo = order.epoch_order().tolist()
        [files[i] for i in todo]  # DaliLoader's reader list
        refeed.append(time.perf_counter() - t0)
    out = {"kept": len(kept), "refeed_s": statistics.median(refeed)}
    print(f"loaders   set_subset + epoch order + file list: {out['refeed_s']:.3f} s "
          f"({len(kept):,} kept of {n:,})")  # fmt: skip
    if not dali_available():
        out["dali"] = "not installed"
        return out
    from easyhard.loaders.dali import _dali_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        jpeg = os.path.join(tmp, "a.jpg")
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(jpeg)
        for name, size in (("dali_define_full_s", n), ("dali_define_kept_s", len(kept))):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                pipe = _dali_pipeline(files=[jpeg] * size, indices=list(range(size)), train=True,
                                      crop=16, gpu=False, dtype=torch.float32, mean=(0.5,) * 3,
                                      std=(0.5,) * 3, roi_decode=True, batch_size=256,
                                      num_threads=2, device_id=None, prefetch_queue_depth=2,
                                      seed=1)  # fmt: skip
                pipe.run()
                times.append(time.perf_counter() - t0)
                del pipe
            out[name] = statistics.median(times)
            print(f"dali      a training epoch's reader over {size:,} files: "
                  f"{out[name]:.3f} s (first batch included)")  # fmt: skip
    return out


if __name__ == "__main__":
    main()

"""Benchmark pruning's per-epoch work at ImageNet scale (easyhard.prune): what a pruned run adds
to every epoch, without training. N = 1,281,167 examples; the record is filled as a training
epoch leaves it (each example presented once, 70% of them correct and confident), then timed:
Pruner.observe (the closed epoch into the pruning state) and Pruner.plan (the next epoch's kept
set, weights and planned steps) for each rule. Target: at most 0.2 s per epoch on the CPU.

Then the image-folder loaders' side at the same N: what giving a loader an epoch's kept set
costs (``set_subset`` and the epoch's permutation and shard, the same in DaliLoader and
TorchImageLoader); what DaliLoader adds, pruned or not: the plan handed to its pipeline's source
(one pipeline serves the whole run) and, spread over the epoch's batches, each batch's paths and
crop draws of (seed, epoch, index), all of an epoch's timed together; and, with DALI installed, a
real DaliLoader's switch from one pruned epoch to the next (the last batch of one to the first of
the next, on a small folder: it does not grow with N).

    python benchmarks/bench_prune.py            # CPU, 1.28M examples
    python benchmarks/bench_prune.py --n 100000
"""

from __future__ import annotations

import argparse
import math
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
    """Seconds (medians) to give a loader an epoch's kept set, and DaliLoader's epoch plan."""
    order = _Order(n)
    files = ["/data/train/n01440764/n01440764_10026.JPEG"] * n
    refeed, plan = [], []
    for e in range(repeat):
        t0 = time.perf_counter()
        order.set_subset(kept)
        order.set_epoch(e)
        todo = order.epoch_order()
        refeed.append(time.perf_counter() - t0)
        if dali_available():  # what DaliLoader adds: the plan, and each batch's draws
            from easyhard.loaders.dali import _EpochFeed

            t0 = time.perf_counter()
            feed = _EpochFeed(files, 256, 0, True)
            feed.plan(todo.numpy(), e)
            for _ in feed:
                pass
            plan.append(time.perf_counter() - t0)
    out = {"kept": len(kept), "refeed_s": statistics.median(refeed)}
    print(f"loaders   set_subset + epoch order: {out['refeed_s']:.3f} s "
          f"({len(kept):,} kept of {n:,})")  # fmt: skip
    if not dali_available():
        out["dali"] = "not installed"
        return out
    out["dali_feed_s"] = statistics.median(plan)
    out["dali_feed_per_batch_s"] = out["dali_feed_s"] / math.ceil(len(kept) / 256)
    print(f"dali      the plan, and every batch's paths and draws: {out['dali_feed_s']:.3f} s "
          f"an epoch ({1e3 * out['dali_feed_per_batch_s']:.2f} ms a batch of 256)")  # fmt: skip
    out["dali_epoch_switch_s"] = dali_epoch_switch(repeat)
    print(f"dali      last batch of a pruned epoch to the first of the next: "
          f"{out['dali_epoch_switch_s']:.4f} s (median of {repeat})")  # fmt: skip
    return out


def dali_epoch_switch(repeat: int) -> float:
    """Median seconds from the last batch of one pruned epoch to the first of the next, for a
    real DaliLoader (CPU, 64 small JPEGs, half kept each epoch)."""
    import tempfile

    import numpy as np
    from PIL import Image

    from easyhard.datasets import load_dataset
    from easyhard.loaders import DaliLoader

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for c in range(2):
            os.makedirs(os.path.join(tmp, f"c{c}"))
            for i in range(32):
                arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
                Image.fromarray(arr).save(os.path.join(tmp, f"c{c}", f"{i}.jpg"))
        loader = DaliLoader(load_dataset("imagefolder", root=tmp), 8, "cpu", crop=32,
                            num_threads=2)  # fmt: skip
        switches, end = [], None
        for e in range(repeat + 1):
            loader.set_subset(torch.randperm(64, generator=torch.Generator().manual_seed(e))[:32])
            loader.set_epoch(e)
            for k, _ in enumerate(loader):
                if k == 0 and end is not None:
                    switches.append(time.perf_counter() - end)
            end = time.perf_counter()
    return statistics.median(switches)


if __name__ == "__main__":
    main()

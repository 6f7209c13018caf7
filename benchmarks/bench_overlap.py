"""Benchmark `easyhard analyze overlap` at ImageNet size: six runs of 1,281,167 examples and 1,000
classes, every metric (pairwise Jaccard at six set sizes, Spearman, Kendall on a 200k sample,
consistency, threshold sets, per class), figures and JSON included.

    python benchmarks/bench_overlap.py            # target: under 10 s on a 2-core CPU
    python benchmarks/bench_overlap.py --epochs 16

The six score files are made once (in a temporary folder) from correlated synthetic difficulties
through SampleStats' own state (no training); loading them is part of the timed work, as it is
for a user. Writes results/bench_overlap-cpu.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, write_json  # noqa: E402

from easyhard import SampleStats  # noqa: E402
from easyhard.statsfile import HISTORY_DTYPE  # noqa: E402


def make_run(
    path: str, base: np.ndarray, labels: np.ndarray, C: int, epochs: int, seed: int, arch: str
) -> None:
    """A score file whose per-epoch true-class probabilities follow a shared difficulty `base`
    plus run noise (what correlated runs look like), written through SampleStats.save."""
    rng = np.random.default_rng(seed)
    N = len(base)
    hist = np.zeros((epochs, N), dtype=HISTORY_DTYPE)
    for e in range(epochs):
        logit = 3 * (base - 0.5) + 0.8 * e + rng.normal(0, 1.0, N)
        prob = 1 / (1 + np.exp(-logit))
        hist[e]["presentations"] = 1
        hist[e]["correct"] = rng.random(N) < prob
        hist[e]["prob"] = prob
        hist[e]["el2n"] = (1 - prob) * np.sqrt(2)
    total_counts = np.zeros((N, 4), np.int64)
    total_counts[:, 0] = epochs
    total_counts[:, 1] = hist["correct"].sum(0)
    total_sums = np.zeros((N, 5), np.float64)
    total_sums[:, 0] = hist["prob"].astype(np.float64).sum(0)
    total_sums[:, 4] = hist["el2n"].astype(np.float64).sum(0)
    total_sums[:, 2] = (hist["prob"].astype(np.float64) - 0.5).sum(0)
    stats = SampleStats(N, C, labels=labels, fingerprint="bench-imagenet")
    stats.load_state_dict(
        {
            "num_samples": N,
            "num_classes": C,
            "counts": torch.zeros(N, 4, dtype=torch.int32),
            "sums": torch.zeros(N, 5),
            "flags": torch.from_numpy(hist[-1]["correct"].astype(np.int32)),
            "total_counts": total_counts,
            "total_sums": total_sums,
            "history": torch.from_numpy(hist.view(np.uint8).reshape(epochs, N, 8).copy()),
            "labels": torch.from_numpy(labels),
        }
    )
    stats.save(
        path,
        metadata={
            "arch": arch,
            "seed": seed,
            "init_seed": seed,
            "data_seed": seed,
            "view": "train",
            "dataset": "bench",
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_281_167)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from easyhard.overlap import analyze_overlap, write_outputs

    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.n).astype(np.int64)
    base = rng.random(args.n)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for r in range(args.runs):
            path = os.path.join(
                tmp, f"{'resnet50' if r % 2 else 'resnet18'}-run{r // 2}", "scores.npz"
            )
            os.makedirs(os.path.dirname(path))
            make_run(
                path,
                base,
                labels,
                args.classes,
                args.epochs,
                r,
                "resnet50" if r % 2 else "resnet18",
            )
            files.append(path)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            result = analyze_overlap(files, score="easiness", window=2)
            mid = time.perf_counter()
            write_outputs(result, os.path.join(tmp, f"an{len(times)}"), inputs=files)
            times.append((mid - start, time.perf_counter() - start))
    analysis, total = min(times, key=lambda t: t[1])
    payload = {
        "benchmark": "bench_overlap",
        "env": environment("cpu"),
        "n": args.n,
        "classes": args.classes,
        "runs": args.runs,
        "epochs": args.epochs,
        "pairs": args.runs * (args.runs - 1) // 2,
        "kendall_n": result["kendall_n"],
        "analysis_s": analysis,
        "total_s": total,
        "target_s": 10.0,
        "met": total < 10.0,
    }
    path = write_json("bench_overlap-cpu.json", payload, args.out)
    print(
        f"analyze overlap: {args.runs} runs x {args.n} examples x {args.classes} classes: "
        f"{analysis:.2f} s analysis, {total:.2f} s with figures and JSON "
        f"(target < 10 s: {'met' if payload['met'] else 'NOT met'}) -> {path}"
    )


if __name__ == "__main__":
    main()

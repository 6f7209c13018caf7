"""Benchmark the cost of recording and the speed of a scoring run.

1. Recording overhead: images/s of the same training step (same model, same batches, same run)
   with and without SampleStats.update, in alternating blocks. Targets: at most 3% of step time on
   a 2-core CPU, at most 1% on a GPU.
2. Scoring run vs a plain loop: one epoch of `easyhard score`'s training (GPU-resident loader with
   crop + flip, recording every example) against a plain PyTorch loop over a
   torch.utils.data.DataLoader of the same (pre-normalised, unaugmented) tensors with no
   recording at all. Target: the scoring run at least as fast.
3. (--gpu-suite) ResNet-50 and ResNet-18 at 224 px on synthetic device data, channels-last bf16,
   with and without recording (target for ResNet-50 on an H200: 3,500 images/s or more), and a
   CIFAR-shaped scoring run with the fast network (target: 10 epochs over 50,000 in under 10 s).

    python benchmarks/bench_train.py                      # Fashion-MNIST, convnet, CPU
    python benchmarks/bench_train.py --device cuda --gpu-suite --out gpu-results
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, sync, write_json  # noqa: E402

from easyhard.datasets import load_dataset, make_synthetic  # noqa: E402
from easyhard.models import build_model  # noqa: E402


def make_step(model, opt, dtype, device):
    crit = nn.CrossEntropyLoss()

    def step(x, y):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = model(x)
            loss = crit(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return logits

    return step


def recording_overhead(
    arch, dataset_args: dict, batch_size, device, amp, blocks, steps_per_block
) -> dict:
    """The recording overhead as `easyhard bench train` measures it (easyhard.bench: one
    implementation): the same model, batches and process with and without recording, in
    alternating blocks."""
    from easyhard.bench import bench_train
    from easyhard.config import BenchTrainConfig

    cfg = BenchTrainConfig(
        arch=arch,
        batch_size=batch_size,
        device=str(device),
        amp=amp,
        blocks=blocks,
        steps=blocks * steps_per_block,
        warmup=3,
        **dataset_args,
    )
    r = bench_train(cfg)
    return {
        "arch": arch,
        "batch_size": batch_size,
        "images_per_s_recording": r["images_per_s"]["recording"],
        "images_per_s_plain": r["images_per_s"]["plain"],
        "overhead": r["overhead_percent"] / 100,
        "bench": r,
    }


def scoring_vs_plain(dataset, arch, batch_size, device, epochs=1) -> dict:
    from easyhard.train import ScoreConfig, train_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScoreConfig(
            dataset=dataset, archs=(arch,), epochs=epochs, batch_size=batch_size, device=str(device)
        )
        train_run(cfg, arch, 0, tmp, quiet=True)
        import json

        metrics = [
            json.loads(line) for line in open(os.path.join(tmp, f"{arch}-run0", "metrics.jsonl"))
        ]
    scoring = sum(m["images_per_s"] for m in metrics) / len(metrics)
    # The plain loop: DataLoader over pre-normalised tensors, no augmentation, no recording.
    ds = load_dataset(dataset)
    x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div_(255)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(ds.labels)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True
    )
    torch.manual_seed(0)
    model = build_model(arch, ds.num_classes, x.shape[1], x.shape[2]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    step = make_step(model, opt, None, device)
    seen, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            step(xb.to(device, non_blocking=True), yb.to(device, non_blocking=True))
            seen += len(yb)
    sync(str(device))
    plain = seen / (time.perf_counter() - t0)
    return {
        "dataset": dataset,
        "arch": arch,
        "scoring_images_per_s": scoring,
        "plain_loop_images_per_s": plain,
        "ratio": scoring / plain,
    }


def gpu_suite(device, out: dict) -> None:
    big = {"dataset": "synthetic", "num_samples": 2048, "num_classes": 1000, "image_size": 224}
    for arch, bs in (("resnet50", 256), ("resnet18", 256)):
        r = recording_overhead(arch, big, bs, device, "bf16", blocks=3, steps_per_block=6)
        out.setdefault("gpu_224", []).append(r)
        print(
            f"{arch} 224px bf16: {r['images_per_s_recording']:.0f} images/s recording, "
            f"{r['images_per_s_plain']:.0f} plain ({100 * r['overhead']:.2f}% overhead)",
            flush=True,
        )
    from easyhard.train import ScoreConfig, train_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScoreConfig(
            dataset="synthetic",
            num_samples=50_000,
            num_classes=10,
            image_size=32,
            archs=("airbench",),
            epochs=10,
            batch_size=1024,
            device=str(device),
        )
        t0 = time.perf_counter()
        train_run(cfg, "airbench", 0, tmp, quiet=True)
        sync(str(device))
        out["cifar_shaped_scoring_10_epochs_s"] = time.perf_counter() - t0
    print(
        f"CIFAR-shaped scoring run (airbench, 10 epochs x 50,000): "
        f"{out['cifar_shaped_scoring_10_epochs_s']:.1f} s",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="convnet")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--steps", type=int, default=20, help="steps per timed block")
    p.add_argument("--skip-plain", action="store_true", help="skip the scoring-run comparison")
    p.add_argument("--gpu-suite", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    device = torch.device(a.device)
    results: dict = {}
    try:
        ds = load_dataset("fashion-mnist")
        data = {"dataset": "fashion-mnist"}
    except Exception:
        ds = make_synthetic(60_000, 10, 28, channels=1, seed=0)
        data = {"dataset": "synthetic", "num_samples": 60_000, "num_classes": 10, "image_size": 28}
    r = recording_overhead(a.arch, data, a.batch_size, device, "auto", a.blocks, a.steps)
    results["recording"] = r
    goal = 0.03 if device.type == "cpu" else 0.01
    print(
        f"recording overhead ({a.arch}, {ds.name}, batch {a.batch_size}): "
        f"{100 * r['overhead']:.2f}% ({r['images_per_s_recording']:.0f} vs "
        f"{r['images_per_s_plain']:.0f} images/s; target <= {100 * goal:.0f}%: "
        f"{'met' if r['overhead'] <= goal else 'NOT met'})",
        flush=True,
    )
    if not a.skip_plain and ds.name == "fashion-mnist":
        c = scoring_vs_plain("fashion-mnist", a.arch, a.batch_size, device)
        results["scoring_vs_plain"] = c
        print(
            f"scoring run {c['scoring_images_per_s']:.0f} images/s vs plain DataLoader loop "
            f"{c['plain_loop_images_per_s']:.0f} ({c['ratio']:.2f}x; target >= 1: "
            f"{'met' if c['ratio'] >= 1 else 'NOT met'})",
            flush=True,
        )
    if a.gpu_suite:
        gpu_suite(device, results)
    path = write_json(
        f"bench_train-{device.type}.json", {"env": environment(a.device), **results}, a.out
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

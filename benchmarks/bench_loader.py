"""Benchmark the loaders: images/s of the DALI CPU pipeline against the torch.utils.data + PIL
pipeline on the same generated ImageNet-like JPEG folder (500 x 375 images, random-resized crop
to 224, flip, normalise), with the same number of threads / workers; and of the GPU-resident
TensorLoader on CIFAR-shaped data.

    python benchmarks/bench_loader.py                       # 400 images, 2 threads/workers
    python benchmarks/bench_loader.py --images 2000 --threads 8 --device cuda --out gpu-results

Target on a 2-core CPU: DALI at least 1.2x the torch pipeline. Decoding is the bound there, so the
gain comes from decoding only the crop's region (fn.decoders.image_random_crop); the plain DALI
pipeline (full decode, then crop) is measured too. Writes results/bench_loader-<device>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, sync, write_json  # noqa: E402

from easyhard.datasets import load_dataset, make_synthetic  # noqa: E402
from easyhard.loaders import DaliLoader, TensorLoader, TorchImageLoader, dali_available  # noqa: E402


def make_jpeg_folder(root: str, n: int, classes: int = 10, size=(500, 375), seed: int = 0) -> None:
    """Photo-like JPEGs (smooth gradients, shapes and mild noise, quality 90)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        c = i % classes
        os.makedirs(os.path.join(root, f"class{c:02d}"), exist_ok=True)
        base = rng.uniform(0, 255, 3)
        grad = rng.uniform(-0.4, 0.4, (2, 3))
        img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
        img += rng.normal(0, 6, img.shape)
        pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)],
                         fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        pil.save(os.path.join(root, f"class{c:02d}", f"{i:06d}.jpg"), quality=90)


def images_per_second(loader, epochs: int, device: str) -> float:
    for _ in loader:  # warm-up epoch: workers, pipeline, caches
        pass
    n = 0
    sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        for images, _, _ in loader:
            n += images.shape[0]
    sync(device)
    return n / (time.perf_counter() - start)


def bench_files(a) -> list[dict]:
    """images/s of the file loaders on a generated (or given) JPEG folder."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.folder or os.path.join(tmp, "train")
        if a.folder is None:
            make_jpeg_folder(folder, a.images)
        ds = load_dataset("imagefolder", root=folder)
        loaders = {"torch+PIL": lambda: TorchImageLoader(ds, a.batch_size, "cpu", crop=224,
                                                          num_workers=a.threads)}
        if dali_available():
            loaders["dali-cpu"] = lambda: DaliLoader(ds, a.batch_size, "cpu", crop=224,
                                                     num_threads=a.threads)
            loaders["dali-cpu-full-decode"] = lambda: DaliLoader(
                ds, a.batch_size, "cpu", crop=224, num_threads=a.threads, roi_decode=False)
        for name, make in loaders.items():
            ips = images_per_second(make(), a.epochs, "cpu")
            rows.append({"loader": name, "images_per_s": ips, "images": len(ds),
                         "threads": a.threads, "crop": 224})
            print(f"{name:<22} {ips:8.0f} images/s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--threads", type=int, default=2, help="DALI threads = torch workers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device of the GPU-resident loader")
    p.add_argument("--folder", default=None, help="reuse a JPEG folder (default: generate one)")
    p.add_argument("--skip-files", action="store_true",
                   help="only the GPU-resident loader (e.g. on a GPU machine without DALI)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rows = []
    if not a.skip_files:
        rows += bench_files(a)
    small = make_synthetic(50_000, 10, 32, seed=0)
    tl = TensorLoader(small, 512, a.device, train=True)
    ips = images_per_second(tl, 2, a.device)
    rows.append({"loader": f"tensor-{a.device}", "images_per_s": ips, "images": len(small),
                 "batch_size": 512, "size": 32})
    print(f"{'tensor-' + a.device:<22} {ips:8.0f} images/s (CIFAR-shaped, crop+flip on device)")
    by = {r["loader"]: r["images_per_s"] for r in rows}
    verdict = {}
    if "dali-cpu" in by:
        ratio = by["dali-cpu"] / by["torch+PIL"]
        verdict = {"dali_over_torch": ratio, "target": 1.2, "met": ratio >= 1.2,
                   "full_decode_over_torch": by["dali-cpu-full-decode"] / by["torch+PIL"]}
        print(f"DALI CPU is {ratio:.2f}x the torch pipeline (target 1.2x: "
              f"{'met' if verdict['met'] else 'NOT met'})")
    path = write_json(f"bench_loader-{a.device.split(':')[0]}.json",
                      {"env": environment(a.device), "rows": rows, "verdict": verdict}, a.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

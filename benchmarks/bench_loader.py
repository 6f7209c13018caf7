"""Benchmark the loaders on an ImageNet-like JPEG folder made here, through `easyhard bench
loader` (easyhard.bench.bench_loader: one implementation of the measurement): images/s of the DALI
CPU pipeline (crop-region decoding, and full decoding for contrast) against torch.utils.data + PIL
on the same generated folder (500 x 375 photo-like JPEGs, random-resized crop to 224, flip,
normalise), with the same number of threads / workers; and of the device-resident TensorLoader on
CIFAR-shaped data. What this script adds to the command: the generated folder and the verdict.

    python benchmarks/bench_loader.py                       # 400 images, 2 threads/workers
    python benchmarks/bench_loader.py --images 2000 --threads 8 --device cuda --out gpu-results

Target on a 2-core CPU: DALI at least 1.2x the torch pipeline. Decoding is the bound there, so the
gain comes from decoding only the crop's region (fn.decoders.image_slice). Writes
results/bench_loader-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import environment, write_json  # noqa: E402

from easyhard.bench import bench_loader  # noqa: E402
from easyhard.config import BenchLoaderConfig  # noqa: E402


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
            draw.ellipse(
                [x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)],
                fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
            )
        pil.save(os.path.join(root, f"class{c:02d}", f"{i:06d}.jpg"), quality=90)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=400)
    p.add_argument("--threads", type=int, default=2, help="DALI threads = torch workers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed batches per loader (default: two passes over the folder)",
    )
    p.add_argument("--device", default="cpu", help="device of the device-resident loader")
    p.add_argument(
        "--folder", default=None, help="reuse a JPEG folder holding train/ (default: generate one)"
    )
    p.add_argument(
        "--skip-files",
        action="store_true",
        help="only the device-resident loader (e.g. on a GPU machine without DALI)",
    )
    p.add_argument("--out", default=None)
    a = p.parse_args()
    results = {}
    if not a.skip_files:
        with tempfile.TemporaryDirectory() as tmp:
            root = a.folder or tmp
            if a.folder is None:
                make_jpeg_folder(os.path.join(root, "train"), a.images)
            n = sum(len(f) for _, _, f in os.walk(os.path.join(root, "train")))
            steps = a.steps or max(1, 2 * n // a.batch_size)
            results["files"] = bench_loader(
                BenchLoaderConfig(
                    dataset="imagefolder",
                    data_dir=root,
                    batch_size=a.batch_size,
                    steps=steps,
                    warmup=max(2, -(-n // a.batch_size)),
                    workers=a.threads,
                    crop=224,
                    device="cpu",
                )
            )
    results["tensors"] = bench_loader(
        BenchLoaderConfig(
            dataset="synthetic",
            num_samples=50_000,
            num_classes=10,
            image_size=32,
            batch_size=512,
            steps=150,
            warmup=5,
            device=a.device,
        )
    )
    rows = []
    for kind, r in results.items():
        for name, rate in r["images_per_s"].items():
            rows.append(
                {
                    "loader": name,
                    "images_per_s": rate,
                    "kind": kind,
                    "batch_size": r["config"]["batch_size"],
                    "threads": a.threads,
                }
            )
            print(f"{name:<28} {rate:8.0f} images/s", flush=True)
    by = {r["loader"]: r["images_per_s"] for r in rows}
    verdict = {}
    if "DALI CPU" in by:
        ratio = by["DALI CPU"] / by["torch + PIL"]
        verdict = {
            "dali_over_torch": ratio,
            "target": 1.2,
            "met": ratio >= 1.2,
            "full_decode_over_torch": by["DALI CPU, full decode"] / by["torch + PIL"],
        }
        print(
            f"DALI CPU is {ratio:.2f}x the torch pipeline (target 1.2x: "
            f"{'met' if verdict['met'] else 'NOT met'})"
        )
    path = write_json(
        f"bench_loader-{a.device.split(':')[0]}.json",
        {"env": environment(a.device), "rows": rows, "verdict": verdict},
        a.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Benchmark easyhard::accumulate_stats against the eager PyTorch composition of the same
statistics (easyhard.reference.accumulate_stats) and torch.compile of it.

    python benchmarks/bench_ops.py                 # CPU, plus CUDA when a GPU is present
    python benchmarks/bench_ops.py --device cuda --out gpu-results

Cases: B x C = 1024 x 1000 and 512 x 10, float32 and bfloat16 (and on a GPU a large 65536 x 1000
batch, compared with reading the logits once at the card's measured copy bandwidth). Targets: on
a 2-core CPU at least 4x faster than eager at 1024 x 1000 float32; on a GPU at least 10x faster
than eager and the large batch within 2x of the bandwidth bound. Writes
results/bench_ops-<device>.json.
"""

from __future__ import annotations

import argparse
import sys

import torch

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import environment, sync, time_fn, write_json  # noqa: E402

from easyhard import ops, reference  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def make(B, C, dtype, device, N=100_000):
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(B, C, generator=g) * 3).to(dtype).to(device)
    labels = torch.randint(0, C, (B,), generator=g).to(device)
    indices = torch.randperm(N, generator=g)[:B].to(device)
    return logits, labels, indices, ops.new_state(N, device)


def copy_bandwidth(device: str) -> float:
    """Measured device memory bandwidth in bytes/s (read + write of a 1 GiB copy)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = time_fn(lambda: dst.copy_(src), device, repeat=10)
    return 2 * src.numel() / t


def bench_device(device: str, compile_eager: bool) -> list[dict]:
    rows = []
    cases = [(1024, 1000), (512, 10)] + ([(65536, 1000)] if device == "cuda" else [])
    bw = copy_bandwidth(device) if device == "cuda" else None
    for B, C in cases:
        for dname, dtype in DTYPES.items():
            logits, labels, indices, st = make(B, C, dtype, device)
            args = (logits, labels, indices, st["counts"], st["sums"], st["flags"], st["errors"])
            fused = time_fn(lambda: ops.accumulate_stats(*args), device)
            eager = time_fn(lambda: reference.accumulate_stats(*args, validate=False), device)
            row = {
                "device": device,
                "B": B,
                "C": C,
                "dtype": dname,
                "fused_s": fused,
                "eager_s": eager,
                "speedup_vs_eager": eager / fused,
            }
            if compile_eager:
                compiled_fn = torch.compile(reference.accumulate_stats, dynamic=False)
                compiled = time_fn(lambda: compiled_fn(*args, validate=False), device, warmup=2)
                row.update(compiled_s=compiled, speedup_vs_compiled=compiled / fused)
            if bw:
                ideal = logits.numel() * logits.element_size() / bw
                row.update(bandwidth_Bps=bw, read_once_s=ideal, fused_over_read_once=fused / ideal)
            rows.append(row)
            sync(device)
            print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    s = (
        f"{r['device']:>4} {r['B']:>6}x{r['C']:<5} {r['dtype']:<8} "
        f"fused {r['fused_s'] * 1e6:9.1f} us"
        f"  eager {r['eager_s'] * 1e6:9.1f} us ({r['speedup_vs_eager']:5.1f}x)"
    )
    if "compiled_s" in r:
        s += f"  compiled {r['compiled_s'] * 1e6:9.1f} us ({r['speedup_vs_compiled']:5.1f}x)"
    if "fused_over_read_once" in r:
        s += f"  {r['fused_over_read_once']:.2f}x the read-once bound"
    return s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--device",
        action="append",
        choices=["cpu", "cuda"],
        help="default: cpu, and cuda when available",
    )
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    a = p.parse_args()
    devices = a.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    for device in devices:
        rows = bench_device(device, compile_eager=not a.no_compile)
        target = next(r for r in rows if r["B"] == 1024 and r["dtype"] == "float32")
        goal = 4.0 if device == "cpu" else 10.0
        verdict = {"target_speedup_vs_eager": goal, "met": target["speedup_vs_eager"] >= goal}
        if device == "cuda":
            big = [r for r in rows if r["B"] == 65536]
            verdict["read_once_target_met"] = all(r["fused_over_read_once"] <= 2.0 for r in big)
        path = write_json(
            f"bench_ops-{device}.json",
            {"env": environment(device), "rows": rows, "verdict": verdict},
            a.out,
        )
        print(
            f"{device}: 1024x1000 float32 fused is {target['speedup_vs_eager']:.1f}x eager "
            f"(target {goal}x: {'met' if verdict['met'] else 'NOT met'}); wrote {path}"
        )


if __name__ == "__main__":
    main()

"""easyhard's command line: `easyhard --help`.

A thin layer over the library. torch is imported inside command bodies, so `easyhard --help`
answers at once.
"""
from __future__ import annotations

import json
import platform

import click

from . import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="easyhard")
def main() -> None:
    """Easy and hard examples in CNN training: score every training example, analyse, compress."""


def _dali_version() -> str | None:
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali.__version__


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info(as_json: bool) -> None:
    """Versions (package, torch, CUDA, DALI), devices, and the compiled backends."""
    import torch

    from . import ops

    build = ops.build()
    report = {
        "easyhard": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "dali": _dali_version(),
        "extension": build,
    }
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    ext = build
    rows = [
        ("easyhard", report["easyhard"]),
        ("python", report["python"]),
        ("torch", f"{report['torch']} (CUDA {report['torch_cuda'] or 'none'})"),
        ("GPUs", ", ".join(report["devices"]) or "none visible"),
        ("DALI", report["dali"] or "not installed (pip install nvidia-dali-cuda130)"),
        ("extension built for", f"torch {ext['torch_version']}"),
        ("compiled backends", ", ".join(ext["backends"])),
        ("CUDA kernels", f"CUDA {ext['cuda_version']}, archs {ext['cuda_archs']}"
         if ext["cuda_version"] else "not built (CPU-only extension)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


if __name__ == "__main__":  # pragma: no cover
    main()

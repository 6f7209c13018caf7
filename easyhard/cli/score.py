"""`easyhard score` (train and record every example), `merge` (average runs' scores), `models`
and `info`."""

from __future__ import annotations

import json
import os
import platform

import click

from .. import __version__
from ..config import ScoreConfig
from ._base import (
    _CONFIG_FILE,
    NON_CONFIG_OPTIONS,
    config_options,
    debug_option,
    make_config,
    output_options,
)


def _dali_version() -> str | None:
    try:
        import nvidia.dali as dali
    except ImportError:
        return None
    return dali.__version__


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help=NON_CONFIG_OPTIONS["--json"] + ".")
@debug_option
def info(as_json: bool) -> None:
    """Versions (package, torch, CUDA, DALI), devices, and the compiled backends.

    \b
    Example:
        easyhard info --json
    """
    import torch

    from .. import ops

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
        (
            "CPU kernels",
            f"{ext['cpu_capability']} (this CPU runs {', '.join(ext['cpu_capabilities'])}; "
            "EASYHARD_CPU_CAPABILITY picks another)",
        ),
        (
            "CUDA kernels",
            f"CUDA {ext['cuda_version']}, archs {ext['cuda_archs']}"
            if ext["cuda_version"]
            else "not built (a CPU-only build: FORCE_CUDA=1 pip install --no-build-isolation "
            "-e . builds them)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.command("score")
@config_options(ScoreConfig)
@output_options(
    "Output folder (one sub-folder per run, plus merged.npz).",
    resume=True,
    force="Start afresh in a non-empty --out: deletes only what an earlier `easyhard score` "
    "wrote there.",
    as_json="Print a JSON summary at the end.",
    quiet=NON_CONFIG_OPTIONS["--quiet"] + ".",
)
def score_cmd(out_dir, resume, force, quiet, as_json, **settings):
    """Train CNNs and record every training example at every presentation.

    \b
    Example:
        easyhard score --dataset fashion-mnist --arch resnet20 --arch convnet --runs 2 \\
            --epochs 4 --out runs/fm
    """
    from ..io import same_file
    from ..runfolder import JOB_CONFIG
    from ..train import train_job

    cfg = make_config(ScoreConfig, settings)
    source = click.get_current_context().meta.get(_CONFIG_FILE)
    if source and same_file(source, os.path.join(out_dir, JOB_CONFIG)):
        raise click.ClickException(
            f"{source} is the job's own record in --out, which the run rewrites: pass a copy of "
            "it as --config"
        )
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not (resume or force):
        from ..datasets import FASHION_MNIST_ROOT
        from ..io import check_disjoint

        # the dataset itself is the likelier mistake than an earlier job: say that first
        default_root = FASHION_MNIST_ROOT if cfg.dataset == "fashion-mnist" else None
        check_disjoint(
            out_dir, {"dataset": cfg.data_dir or default_root, "file list": cfg.file_list}
        )
        raise click.ClickException(
            f"{out_dir} is not empty: pass --resume to continue its runs or --force to start afresh"
        )
    summary = train_job(cfg, out_dir, resume=resume, quiet=quiet, force=force)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    elif "merged" in summary:
        cost, n, reused = summary["cost"], len(summary["runs"]), summary["reused"]
        # the cost is the scores' (every run's training, earlier sessions' included)
        now = (
            ""
            if not reused
            else " (all finished earlier: nothing trained now)"
            if reused == n
            else f" ({reused} finished earlier, reused)"
        )
        click.echo(
            f"scores: {n} run(s) in {os.path.abspath(out_dir)}{now}; merged scores in "
            f"{os.path.abspath(summary['merged'])}; their training: {cost['images']:,} images "
            f"in {cost['seconds']:.1f} s"
        )
        if summary["never_presented"]:
            click.echo(
                f"{summary['never_presented']} example(s) were never presented (dropped "
                "as unreadable): they keep their rows with NaN scores and are left out of "
                "every ranking"
            )


@click.command("merge")
@click.argument(
    "score_files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "--out", required=True, type=click.Path(dir_okay=False), help="The merged scores file to write."
)
@click.option(
    "--window",
    type=click.IntRange(1),
    default=None,
    help="The first epochs the merged scores count (forgetting and margin, which have no "
    "window, are then left out; default: all).",
)
@debug_option
def merge_cmd(score_files, out, window):
    """Average the scores of several runs (and architectures) of the same dataset.

    \b
    Example:
        easyhard merge runs/fm/convnet-run*/scores.npz --window 2 --out convnet.npz
    """
    from ..scores import merge_stats_files

    table = merge_stats_files(list(score_files), out, window=window)
    click.echo(f"merged {len(score_files)} runs of {len(table.labels)} examples into {out}")


@click.command("models")
@debug_option
def models_cmd():
    """List the registered architectures.

    \b
    Example:
        easyhard models
    """
    from ..models import available_models

    click.echo("\n".join(available_models()))


COMMANDS = (score_cmd, merge_cmd, models_cmd, info)

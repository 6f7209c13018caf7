"""`easyhard bench train|loader`: a thin layer over easyhard.bench (options generated from
easyhard.config.BenchTrainConfig and BenchLoaderConfig)."""

from __future__ import annotations

import json

import click

from ..config import BenchLoaderConfig, BenchTrainConfig
from ._base import NON_CONFIG_OPTIONS, EasyhardGroup, config_options, make_config, output_options


@click.group("bench", cls=EasyhardGroup)
def bench() -> None:
    """Throughput here: the training step with and without recording, and the loaders."""


def _rank0() -> bool:
    """Whether this process speaks: under torchrun only rank 0 prints (the images/s are summed
    over ranks already), so --json gives one object, not one a process."""
    from ..train import Dist

    return Dist.from_env().rank == 0


def _finish(result: dict, as_json: bool) -> None:
    from ..bench import format_table

    if _rank0():
        click.echo(json.dumps(result, indent=1) if as_json else format_table(result))


def _progress(quiet: bool):
    return None if quiet or not _rank0() else (lambda msg: click.echo(f".. {msg}", err=True))


@bench.command("train")
@config_options(BenchTrainConfig)
@output_options(None, force=None, quiet=NON_CONFIG_OPTIONS["--quiet"] + ".")
def bench_train_cmd(as_json, quiet, **settings):
    """Images/s of the scoring step with and without recording, and where the time goes.

    Same model, batches and process for both, in alternating blocks; reports the recording
    overhead, the time waiting for data, peak memory and the first (compiling) step apart.
    Under torchrun, images/s are summed over ranks.

    \b
    Example:
        easyhard bench train --arch resnet50 --dataset synthetic --image-size 224 \\
            --num-classes 1000 --batch-size 256 --amp bf16 --compile --json
    """
    from ..bench import bench_train

    result = bench_train(make_config(BenchTrainConfig, settings), _progress(quiet or as_json))
    _finish(result, as_json)


@bench.command("loader")
@config_options(BenchLoaderConfig)
@output_options(None, force=None, quiet=NON_CONFIG_OPTIONS["--quiet"] + ".")
def bench_loader_cmd(as_json, quiet, **settings):
    """Images/s of every loader that can read the dataset here (DALI mixed, DALI CPU, torch +
    PIL, or device-resident tensors), same batch and threads.

    \b
    Example:
        easyhard bench loader --dataset imagefolder --data-dir /data/imagenet --workers 8
    """
    from ..bench import bench_loader

    result = bench_loader(make_config(BenchLoaderConfig, settings), _progress(quiet or as_json))
    _finish(result, as_json)


COMMANDS = (bench,)

"""What many test files share: the command line as a function, and the command-line arguments
of a tiny synthetic dataset and training recipe (no dataset on disk, seconds to train).

    from helpers import cli, synthetic
    r = cli(["score", *synthetic(n=120, classes=3, batch=64, epochs=1), "--out", tmp_path])
"""

from __future__ import annotations

import os

from click.testing import CliRunner, Result

from easyhard.cli import main
from easyhard.config import ScoreConfig

# One thread for subprocesses: tiny trainings gain nothing from two, and on a shared CPU
# OpenMP's waiting threads make them several times slower.
ONE_THREAD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(args) -> Result:
    """`easyhard ARGS...` in this process (paths and numbers may be given as they are)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def synthetic(
    n: int, classes: int, size: int = 8, batch: int | None = None, **more: object
) -> list[str]:
    """The arguments of a synthetic dataset of `n` images of `classes` classes, `size` pixels a
    side, with a batch size and any other option given by name (epochs=2, device="cpu",
    arch="convnet"); True gives a flag alone (quiet=True)."""
    args = ["--dataset", "synthetic", "--num-samples", str(n), "--num-classes", str(classes)]
    args += ["--image-size", str(size)]
    if batch is not None:
        args += ["--batch-size", str(batch)]
    for name, value in more.items():
        flag = "--" + name.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


def tiny_config(n: int, classes: int, size: int = 8, batch: int = 32, **recipe) -> ScoreConfig:
    """The ScoreConfig of synthetic(n, classes, size): one convnet run of 2 epochs on the CPU
    unless `recipe` says otherwise (epochs=1, runs=2, seed=5, lr=...)."""
    settings = {"archs": ("convnet",), "epochs": 2, "device": "cpu", **recipe}
    return ScoreConfig(dataset="synthetic", num_samples=n, num_classes=classes, image_size=size,
                       batch_size=batch, **settings)  # fmt: skip


def score_job(out, n: int, classes: int, size: int = 8, batch: int = 32, **recipe) -> str:
    """Score tiny_config(n, classes, size, batch, **recipe) into folder `out`; returns it."""
    from easyhard.train import train_job

    train_job(tiny_config(n, classes, size, batch, **recipe), str(out), quiet=True)
    return str(out)

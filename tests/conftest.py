"""Shared pytest configuration: the `cuda` marker skips cleanly without a GPU or CUDA kernels;
shared fixtures."""

from __future__ import annotations

import pytest
import torch


def cuda_ready() -> bool:
    if not torch.cuda.is_available():
        return False
    from easyhard import ops

    return ops.has_kernel("accumulate_stats", "CUDA")


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device and the extension's CUDA kernels")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny trainings on one thread: they gain nothing from two, and on a shared CPU OpenMP's
    waiting threads make them several times slower. Use as
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_scored(tmp_path_factory):
    """One convnet scoring run of the tiny synthetic data (160 examples, 4 classes, 2 epochs, on
    one thread): its folder, read (never written) by the experiment tests of several modules."""
    from helpers import tiny_config

    from easyhard.train import train_job

    out = tmp_path_factory.mktemp("tiny-scored")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_job(tiny_config(160, 4), str(out), quiet=True)
    finally:
        torch.set_num_threads(before)
    return out


class SimulatedKill(Exception):
    """Raised out of train_run by `killed_after_epoch`, as a kill would end the process."""


@pytest.fixture
def killed_after_epoch(monkeypatch):
    """``with killed_after_epoch(n): train_run(...)``: the run stops right after epoch n's
    checkpoint, as if killed there (train_run raises SimulatedKill, which the block expects)."""
    import contextlib

    from easyhard import train

    @contextlib.contextmanager
    def killed(n):
        def finished(epoch):
            if epoch >= n:
                raise SimulatedKill(f"killed after epoch {epoch}")

        with monkeypatch.context() as m, pytest.raises(SimulatedKill):
            m.setattr(train, "_epoch_finished", finished)
            yield

    return killed


@pytest.fixture
def kill_midway():
    """kill_midway(command, out): start `command` (a list, in a new process, one thread), and
    SIGKILL it at a moment when OUT/cells holds a finished cell (result.json) and a half-finished
    one (checkpoint.pt only); returns (finished, half) cell names."""
    import os
    import signal
    import subprocess
    import time

    def run(command, out):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(command, env=env)
        finished = half = None
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            cells = out / "cells"
            names = (
                sorted(n for n in os.listdir(cells) if not n.endswith(".lock"))
                if cells.is_dir()
                else []
            )
            finished = [n for n in names if (cells / n / "result.json").exists()]
            half = [
                n
                for n in names
                if (cells / n / "checkpoint.pt").exists()
                and not (cells / n / "result.json").exists()
            ]
            if finished and half:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert finished and half, "no moment with a finished cell and a half-finished one was seen"
        return finished, half

    return run

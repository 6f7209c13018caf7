"""What many test files share: the command line as a function, and the command-line arguments
of a tiny synthetic dataset and training recipe (no dataset on disk, seconds to train).

    from helpers import cli, synthetic
    r = cli(["score", *synthetic(n=120, classes=3, batch=64, epochs=1), "--out", tmp_path])
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

import pytest
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


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc): torchrun starts each worker in a session of its
    own, so killing the agent's process group leaves its workers running."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")  # exited, not reaped
    except OSError:
        return True


def kill_node(p: subprocess.Popen) -> None:
    """Kill an agent and its workers at once, as a node's failure would, and wait until they
    are all gone (a worker left running still holds the output folder's lock)."""
    workers = descendants(p.pid)
    os.killpg(p.pid, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 30
    while not all(gone(pid) for pid in workers):
        assert time.time() < deadline, "a killed worker did not exit within 30 s"
        time.sleep(0.01)


class Killed(BaseException):
    """What a kill -9 does to a command, as far as one process can: it stops where it is."""


@contextlib.contextmanager
def killed_after_deleting(monkeypatch, name: str):
    """``with killed_after_deleting(monkeypatch, "config.json"): command()``: easyhard's one
    deletion function stops the command (Killed, which the block expects) right after it
    deleted a file of that name, as a kill there would."""
    from easyhard import io

    real_unlink = os.unlink

    def unlink(path, *a, **k):
        real_unlink(path, *a, **k)
        if os.path.basename(os.fspath(path)) == name:
            raise Killed(path)

    with monkeypatch.context() as m, pytest.raises(Killed):
        m.setattr(io.os, "unlink", unlink)
        yield


def free_port() -> int:
    """A TCP port free on localhost now (for a torchrun rendezvous)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def compress_args(scores, dataset: str, data_dir, keep, out, *more) -> list:
    """`easyhard compress` arguments: SCORES --dataset --data-dir --keep --out, then `more`."""
    return ["compress", scores, "--dataset", dataset, "--data-dir", data_dir, "--keep", keep,
            "--out", out, *more]  # fmt: skip

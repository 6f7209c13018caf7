"""Multi-node scoring (slow tier): two torchrun "nodes" on localhost, one process each, gloo.

Each node gets an output folder of its own, as nodes with local disks would: the process with
global rank 0 writes every output and the other writes nothing; the statistics equal those of a
two-process run on one node; a job killed on both nodes resumes from rank 0's folder to exactly
the statistics of an uninterrupted run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import free_port, kill_node, synthetic

from easyhard import SampleStats

pytestmark = pytest.mark.slow

JOB = [
    "score",
    *synthetic(1500, 4, 12, batch=50),
    "--arch",
    "convnet",
    "--device",
    "cpu",
    "--quiet",
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(launcher: list[str], out, epochs: int, *extra: str) -> subprocess.Popen:
    """One torchrun agent (its own process group, so a kill takes its workers too)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "easyhard", *JOB]
    cmd += ["--epochs", str(epochs), "--out", str(out), *extra]
    return subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(*procs: subprocess.Popen, timeout: float = 240) -> None:
    """Wait for every agent; on a failure or a hang (ranks that disagree wait on each other
    forever), kill them all and fail with their output."""
    deadline = time.time() + timeout
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
            outputs.append(out)
            assert p.returncode == 0, out
    except subprocess.TimeoutExpired:
        pytest.fail(f"the nodes did not finish within {timeout} s (ranks out of step?)")
    finally:
        for p in procs:
            if p.poll() is None:
                kill_node(p)


def two_nodes_c10d(port: int) -> list[list[str]]:
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"]
    common += ["--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", f"job{port}"]
    return [common, common]


def two_nodes_static(port: int) -> list[list[str]]:
    common = ["--nnodes", "2", "--nproc-per-node", "1", "--master-addr", "localhost"]
    common += ["--master-port", str(port)]
    return [[*common, "--node-rank", str(i)] for i in range(2)]


def one_node_two_processes(tmp_path, epochs: int):
    out = tmp_path / f"single-{epochs}"
    p = launch(["--nproc-per-node", "2", "--master-port", str(free_port())], out, epochs)
    finish(p)
    return out / "convnet-run0" / "scores.npz"


def assert_same_statistics(a, b) -> None:
    sa, sb = SampleStats.load(a), SampleStats.load(b)
    assert sa.metadata["world_size"] == sb.metadata["world_size"] == 2
    ta, tb = sa.totals(), sb.totals()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    np.testing.assert_array_equal(sa.history, sb.history)


def test_two_nodes_equal_two_processes_and_one_process_writes(tmp_path):
    port = free_port()
    folders = [tmp_path / "node0", tmp_path / "node1"]
    procs = [launch(args, out, 2) for args, out in zip(two_nodes_c10d(port), folders)]
    finish(*procs)
    # c10d rendezvous decides which node holds global rank 0: exactly one folder was written
    written = [f for f in folders if f.exists()]
    assert len(written) == 1, [os.listdir(f) for f in written]
    names = sorted(os.listdir(written[0]))
    assert names == ["convnet-run0", "merged.npz", "score-config.toml"]
    assert_same_statistics(
        written[0] / "convnet-run0" / "scores.npz", one_node_two_processes(tmp_path, 2)
    )


def test_killed_on_both_nodes_resumes_from_rank0s_folder(tmp_path):
    """Static rendezvous keeps rank 0 on node 0 across restarts; node 1's folder stays empty,
    so the resume can only have read rank 0's checkpoint and history."""
    epochs = 6
    folders = [tmp_path / "node0", tmp_path / "node1"]
    ckpt = folders[0] / "convnet-run0" / "checkpoint.pt"
    procs = [launch(a, o, epochs) for a, o in zip(two_nodes_static(free_port()), folders)]
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    for p in procs:
        kill_node(p)
    assert ckpt.exists(), "the job ended before writing its first checkpoint"
    assert not (folders[0] / "convnet-run0" / "scores.npz").exists(), "finished before the kill"
    assert not folders[1].exists()
    args = two_nodes_static(free_port())
    finish(*[launch(a, o, epochs, "--resume") for a, o in zip(args, folders)])
    assert not folders[1].exists()
    resumed = folders[0] / "convnet-run0" / "scores.npz"
    assert_same_statistics(resumed, one_node_two_processes(tmp_path, epochs))
    # a finished run is reused on every node (rank 0's folder says it is finished)
    before = resumed.read_bytes()
    finish(
        *[launch(a, o, epochs, "--resume") for a, o in zip(two_nodes_static(free_port()), folders)]
    )
    assert resumed.read_bytes() == before and not folders[1].exists()

"""Tests of `easyhard bench train|loader` on the CPU with tiny settings: complete JSON with
positive throughputs, an overhead figure, the environment; every available loader of an image
folder; clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import cli, synthetic

from easyhard.loaders import dali_available

TINY = synthetic(256, 4, 12, batch=32, device="cpu")
ENV_KEYS = {
    "date",
    "cpu_count",
    "torch_threads",
    "torch",
    "cuda",
    "easyhard",
    "dali",
    "gpu_count",
    "gpus",
    "device",
    "cpu_model",
    "cpu_paths",
    "cpu_path_default",
}


def test_bench_train_json_is_complete():
    r = cli(
        [
            "bench",
            "train",
            *TINY,
            "--arch",
            "convnet",
            "--steps",
            "6",
            "--warmup",
            "2",
            "--blocks",
            "3",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["command"] == "train" and ENV_KEYS <= res["env"].keys()
    assert set(res["images_per_s"]) == {"recording", "plain"}
    assert all(v > 0 for v in res["images_per_s"].values())
    want = 100 * (res["images_per_s"]["plain"] / res["images_per_s"]["recording"] - 1)
    assert res["overhead_percent"] == pytest.approx(want)
    assert 0 <= res["data_wait_percent"] <= 100
    assert res["data_wait_percent"] + res["compute_percent"] == pytest.approx(100)
    assert res["first_step_seconds"] > 0 and res["steady_step_seconds"] > 0
    assert res["peak_host_rss_mb"] > 0 and "peak_device_mb" not in res  # no GPU here
    c = res["config"]
    assert (c["arch"], c["steps"], c["blocks"], c["world_size"], c["image_size"]) == (
        "convnet",
        6,
        3,
        1,
        12,
    )
    assert c["loader"] == "TensorLoader" and c["amp"] == "fp32" and c["channels_last"]


def test_cpu_topology_counts_cores_and_their_hardware_threads(tmp_path):
    """Whether two threads had two cores or one core's two hardware threads (a thread-scaling
    ratio means something else on each): read from sysfs for the CPUs this process may use."""
    import os

    from easyhard.bench import cpu_topology

    cpus = sorted(os.sched_getaffinity(0))

    def fake(core_of) -> str:
        root = tmp_path / f"sys{len(list(tmp_path.iterdir()))}"
        for cpu in cpus:
            topology = root / f"cpu{cpu}" / "topology"
            topology.mkdir(parents=True)
            (topology / "physical_package_id").write_text("0\n")
            (topology / "core_id").write_text(f"{core_of(cpu)}\n")
        return str(root)

    assert cpu_topology(fake(lambda cpu: cpu)) == {
        "cpu_cores": len(cpus),
        "cpu_threads_per_core": 1,
    }
    assert cpu_topology(fake(lambda cpu: 0)) == {
        "cpu_cores": 1,
        "cpu_threads_per_core": len(cpus),
    }
    assert cpu_topology(str(tmp_path / "nothing")) == {}  # unreadable: said by absence


def test_bench_train_table_and_settings():
    r = cli(
        [
            "bench",
            "train",
            *TINY,
            "--arch",
            "resnet8",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--blocks",
            "1",
            "--no-channels-last",
            "--quiet",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "images/s with recording" in r.output and "recording overhead" in r.output
    assert "resnet8 on synthetic" in r.output and "channels-last False" in r.output
    r = cli(["bench", "train", *TINY, "--steps", "2", "--blocks", "3"])
    assert r.exit_code == 1 and "--steps (2) must be at least --blocks (3)" in r.output
    r = cli(["bench", "train", *TINY, "--arch", "nope"])
    assert r.exit_code == 1 and "unknown architecture(s) nope (--arch)" in r.output


@pytest.mark.slow
def test_bench_loader_every_available_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for i in range(8):
            arr = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "data" / f"class{c}" / f"{i:02d}.jpg")
    r = cli(
        [
            "bench",
            "loader",
            "--dataset",
            "imagefolder",
            "--data-dir",
            tmp_path / "data",
            "--batch-size",
            "4",
            "--crop",
            "16",
            "--workers",
            "1",
            "--steps",
            "3",
            "--warmup",
            "1",
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    want = {"torch + PIL"} | ({"DALI CPU", "DALI CPU, full decode"} if dali_available() else set())
    assert set(res["images_per_s"]) == want and all(v > 0 for v in res["images_per_s"].values())
    assert set(res["first_batch_seconds"]) == want and res["config"]["examples"] == 16
    r = cli(["bench", "loader", *TINY, "--steps", "2", "--warmup", "1", "--quiet"])
    assert r.exit_code == 0 and "tensors (CPU)" in r.output
    # an unreadable image: the error names it and the option it suggests exists
    (tmp_path / "data" / "class1" / "99.jpg").write_bytes(b"not a jpeg" * 10)
    args = ["bench", "loader", "--dataset", "imagefolder", "--data-dir", tmp_path / "data",
            "--batch-size", "4", "--crop", "16", "--workers", "1", "--steps", "3",
            "--warmup", "1", "--device", "cpu"]  # fmt: skip
    r = cli(args)
    assert r.exit_code == 1 and "99.jpg" in r.output and "skip-corrupt" in r.output, r.output
    # rerun in this process, after the failed DALI pipeline: the torch loader's workers start from
    # a fork server, so DALI's threads cannot leave them a held lock (they crashed when forked)
    r = cli([*args, "--skip-corrupt", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["config"]["examples"] == 17
    # the header says how many of them were unreadable (DALI checks every file up front; the
    # torch loader finds one only when it reads it)
    skipped = json.loads(r.output)["config"]["skipped"]
    assert skipped == 1 if dali_available() else skipped in (0, 1)
    if dali_available():
        r = cli([*args, "--skip-corrupt"])
        assert r.exit_code == 0 and "(17 examples; 1 unreadable, skipped)" in r.output, r.output


@pytest.mark.slow
def test_under_torchrun_one_report_and_no_loader_bench(tmp_path, monkeypatch):
    """Under torchrun only rank 0 prints (--json is one object, the images/s summed over ranks);
    bench loader, which would time each rank's own loaders and sum nothing, is refused (both
    found by a careless-user helper: two JSON objects on stdout)."""
    import subprocess
    import sys

    from helpers import ONE_THREAD_ENV, free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), "-m", "easyhard", "bench", "train",
           "--num-samples", "256", "--image-size", "12", "--num-classes", "4", "--batch-size",
           "32", "--warmup", "1", "--steps", "2", "--blocks", "1", "--device", "cpu",
           "--json"]  # fmt: skip
    done = subprocess.run(cmd, env=ONE_THREAD_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one object
    assert result["config"]["world_size"] == 2 and "block" not in done.stderr
    for k, v in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    r = cli(["bench", "loader", *synthetic(64, 2), "--steps", "1", "--warmup", "1"])
    assert r.exit_code == 1 and "without torchrun" in r.output, r.output


def test_a_batch_larger_than_the_data_is_reported_as_used():
    """A batch of 1000 over 100 examples is a batch of 100: reported so, the asked size beside
    it (the JSON said 1000 while every step took 100; found by a careless-user helper)."""
    args = ["bench", "train", *synthetic(100, 4, 12), "--batch-size", "1000", "--warmup", "1",
            "--steps", "2", "--blocks", "1", "--device", "cpu"]  # fmt: skip
    r = cli([*args, "--json"])
    assert r.exit_code == 0, r.output
    c = json.loads(r.output)["config"]
    assert c["batch_size"] == 100 and c["batch_size_asked"] == 1000
    r = cli([*args, "--quiet"])
    assert r.exit_code == 0 and "batch 100 (all the data; 1000 asked)" in r.output, r.output

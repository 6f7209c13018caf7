"""Tests of the scoring engine: outputs, reproducibility, resume after a kill, DDP, merging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from helpers import cli, free_port, synthetic, tiny_config

from easyhard import SampleStats
from easyhard.scores import load_scores, merge_stats_files
from easyhard.train import ScoreConfig, load_datasets, train_job, train_run

SMALL = synthetic(300, 4, 12, batch=64, quiet=True)


def small_cfg(**kw):
    """tiny_config of SMALL's data (300 examples, 4 classes, 12 pixels, batch 64), or of
    `num_samples` of it; any other setting by name."""
    return tiny_config(kw.pop("num_samples", 300), 4, 12, kw.pop("batch_size", 64), **kw)


def totals(path):
    return SampleStats.load(path).totals()


def assert_same_scores(a, b):
    ta, tb = totals(a), totals(b)
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    np.testing.assert_array_equal(SampleStats.load(a).history, SampleStats.load(b).history)


def assert_close_scores(a, b):
    """As assert_same_scores, with float sums and the history's float fields to within rounding:
    for files made on another CPU (its float kernels round otherwise; counts stay exact)."""
    ta, tb = totals(a), totals(b)
    for k in ta:
        if np.issubdtype(ta[k].dtype, np.floating):
            np.testing.assert_allclose(ta[k], tb[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    ha, hb = SampleStats.load(a).history, SampleStats.load(b).history
    for k in ha.dtype.names:
        if np.issubdtype(ha[k].dtype, np.floating):
            np.testing.assert_allclose(ha[k], hb[k], rtol=1e-3, atol=1e-3, err_msg=k)
        else:
            np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)


def test_score_outputs(tmp_path):
    r = cli(
        [
            "score",
            *SMALL,
            "--arch",
            "convnet",
            "--arch",
            "resnet20",
            "--epochs",
            "2",
            "--clean-every",
            "1",
            "--out",
            tmp_path / "o",
        ]
    )
    assert r.exit_code == 0, r.output
    assert "merged scores in" in r.output
    for arch in ("convnet", "resnet20"):
        run = tmp_path / "o" / f"{arch}-run0"
        stats = SampleStats.load(run / "scores.npz")
        assert stats.epochs == 2 and (stats.totals()["presentations"] == 2).all()
        assert stats.metadata["arch"] == arch and stats.metadata["seed"] == 0
        assert stats.fingerprint and (stats.labels >= 0).all()
        clean = SampleStats.load(run / "scores_clean.npz")
        assert clean.epochs == 2 and clean.metadata["view"] == "clean"
        lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in lines] == [1, 2]
        assert {"loss", "train_acc", "test_acc", "images_per_s"} <= lines[0].keys()
        config = json.loads((run / "config.json").read_text())
        assert config["arch"] == arch and config["epochs"] == 2 and config["torch_version"]
    merged = load_scores(str(tmp_path / "o" / "merged.npz"))
    assert len(merged.metadata["runs"]) == 2 and merged.scores["easiness"].shape == (300,)
    sel = cli(["select", tmp_path / "o" / "merged.npz", "--keep", "0.5", "--out", tmp_path / "sel"])
    assert sel.exit_code == 0, sel.output


def test_training_learns_and_is_reproducible(tmp_path):
    cfg = small_cfg(epochs=4, batch_size=32)
    train_job(cfg, str(tmp_path / "a"), quiet=True)
    train_job(cfg, str(tmp_path / "b"), quiet=True)
    assert_same_scores(
        tmp_path / "a" / "convnet-run0" / "scores.npz",
        tmp_path / "b" / "convnet-run0" / "scores.npz",
    )
    metrics = [
        json.loads(line)
        for line in (tmp_path / "a" / "convnet-run0" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics[-1]["test_acc"] > 0.8  # the synthetic classes are separable


def test_resume_equals_uninterrupted(tmp_path, killed_after_epoch):
    cfg = small_cfg(epochs=3)
    train_run(cfg, "convnet", 0, str(tmp_path / "straight"))
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"))
    assert not (tmp_path / "cut" / "convnet-run0" / "scores.npz").exists()
    train_run(cfg, "convnet", 0, str(tmp_path / "cut"), resume=True)
    assert_same_scores(
        tmp_path / "straight" / "convnet-run0" / "scores.npz",
        tmp_path / "cut" / "convnet-run0" / "scores.npz",
    )
    with pytest.raises(ValueError, match="another configuration"):
        train_run(small_cfg(epochs=4), "convnet", 0, str(tmp_path / "cut"), resume=True)


def test_a_resume_on_another_number_of_processes_is_refused(tmp_path, killed_after_epoch):
    """The batch size is per process: resuming a run on another number of processes changed its
    steps per epoch, and its learning-rate schedule (fitted to the run's steps when it started)
    ended at 0.08 instead of 0 (2 -> 1 processes) or ran out early (1 -> 2), silently; a careless-
    user helper found it. Refused, naming both counts; a finished run is not trained again, so
    it passes."""
    from easyhard.runfolder import check_resumable

    cfg = small_cfg(epochs=3)
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path))
    fp = load_datasets(cfg)[0].fingerprint
    check_resumable(cfg, str(tmp_path), fp, 1)
    with pytest.raises(ValueError, match=r"trained by 1 process\(es\) \(a global batch of 64\) "
                       r"and this resume runs 2"):  # fmt: skip
        check_resumable(cfg, str(tmp_path), fp, 2)
    train_run(cfg, "convnet", 0, str(tmp_path), resume=True)  # finished now
    check_resumable(cfg, str(tmp_path), fp, 2)


def test_checkpoints_leave_the_history_to_its_side_file(tmp_path, killed_after_epoch):
    """A checkpoint holds O(N) of per-example state; the closed epochs' records are in
    history.bin. Resume is exact after a kill between the append and the checkpoint (a record
    too many in the side file), and from a checkpoint of the previous version (history inside
    the checkpoint, no side file)."""
    from easyhard.statsfile import HISTORY_DTYPE, HistoryLog

    cfg = small_cfg(epochs=3)
    train_run(cfg, "convnet", 0, str(tmp_path / "straight"))
    straight = tmp_path / "straight" / "convnet-run0" / "scores.npz"
    run = tmp_path / "cut" / "convnet-run0"
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"))
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert "history" not in ck["stats"] and ck["stats"]["history_epochs"] == 1
    N = ck["stats"]["num_samples"]
    assert (run / "history.bin").stat().st_size == 16 + N * HISTORY_DTYPE.itemsize
    import shutil

    shutil.copytree(tmp_path / "cut", tmp_path / "old")
    # killed after appending epoch 2's record, before its checkpoint: the record is dropped
    with open(run / "history.bin", "ab") as f:
        f.write(np.full(N, 7, dtype=HISTORY_DTYPE).tobytes())
    train_run(cfg, "convnet", 0, str(tmp_path / "cut"), resume=True)
    assert_same_scores(straight, run / "scores.npz")
    assert HistoryLog(run / "history.bin", N).records() == 3
    # a checkpoint of the previous version: its history inside, no side file
    old = tmp_path / "old" / "convnet-run0"
    history = HistoryLog(old / "history.bin", N).read(1)
    ck["stats"]["history"] = torch.from_numpy(history.view(np.uint8).reshape(1, N, 8).copy())
    del ck["stats"]["history_epochs"]
    torch.save(ck, old / "checkpoint.pt")
    (old / "history.bin").unlink()
    train_run(cfg, "convnet", 0, str(tmp_path / "old"), resume=True)
    assert_same_scores(straight, old / "scores.npz")


def test_history_log_refuses_what_it_cannot_use(tmp_path):
    from easyhard.statsfile import HISTORY_DTYPE, HistoryLog

    log = HistoryLog(tmp_path / "h.bin", 5)
    assert log.records() == 0
    recs = np.zeros((3, 5), dtype=HISTORY_DTYPE)
    recs["correct"] = np.arange(15).reshape(3, 5)
    log.sync(recs[:2])
    log.sync(recs)  # appends the third only
    assert log.records() == 3 and np.array_equal(log.read(3), recs)
    log.sync(recs[:1])  # cut back
    assert log.records() == 1
    with pytest.raises(ValueError, match="holds 1 epoch record"):
        log.read(2)
    with pytest.raises(ValueError, match="not the history of a run over 6 examples"):
        HistoryLog(tmp_path / "h.bin", 6).records()
    from easyhard import SampleStats

    stats = SampleStats(5, 3)
    state = stats.state_dict(history=False)
    with pytest.raises(ValueError, match="saved without its history"):
        SampleStats(5, 3).load_state_dict(state)
    # a file shorter than the header: the start of its own header (killed while writing it) is
    # rewritten; anything else is refused, never replaced
    short = HistoryLog(tmp_path / "short.bin", 5)
    (tmp_path / "short.bin").write_bytes(short._header()[:5])
    short.sync(recs[:1])
    assert short.records() == 1
    (tmp_path / "short.bin").write_bytes(b"mine")
    with pytest.raises(ValueError, match="not the history of a run"):
        short.sync(recs[:1])
    assert (tmp_path / "short.bin").read_bytes() == b"mine"


def test_compact_epoch_end_state(tmp_path):
    """Just after end_epoch the state leaves out the zero accumulators and stores the count
    totals as int32; it loads back to the same statistics, and a state saved mid-epoch keeps its
    accumulators."""
    from easyhard import SampleStats

    g = torch.Generator().manual_seed(3)
    stats = SampleStats(40, 3)
    for epoch in range(2):
        for b in range(4):
            idx = torch.arange(b * 10, b * 10 + 10)
            stats.update(torch.randn(10, 3, generator=g), idx % 3, idx)
        if epoch == 0:
            stats.end_epoch()
    mid = stats.state_dict()
    assert "counts" in mid and mid["counts"].abs().sum() > 0
    stats.end_epoch()
    end = stats.state_dict()
    assert "counts" not in end and "sums" not in end
    assert end["total_counts"].dtype == torch.int32
    for state in (mid, end):
        again = SampleStats(40, 3)
        again.load_state_dict(state)
        if state is mid:
            again.end_epoch()
        for name, value in stats.totals().items():
            np.testing.assert_array_equal(again.totals()[name], value, err_msg=name)
        np.testing.assert_array_equal(again.history, stats.history)


def test_files_of_the_previous_version_load_and_resume(tmp_path):
    """Files written by the version before the restructure (tests/data/previous-version, made by
    its make.py at commit b7e0318, one thread): its statistics and merged scores files load to this
    version's scores, and its killed run (a checkpoint with the accumulators and int64 totals
    inside) resumes to the statistics of an uninterrupted run of this version: counts exactly, float
    sums to within rounding (the files were made on an Intel Xeon; another CPU's float kernels
    round otherwise, so bit-identity holds only on the hardware that made them)."""
    import shutil

    src = os.path.join(os.path.dirname(__file__), "data", "previous-version")
    cfg = tiny_config(60, 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the files were made: the thread count changes the numerics
    try:
        shutil.copytree(os.path.join(src, "cut"), tmp_path / "cut")
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True, resume=True)
        new = train_run(cfg, "convnet", 0, str(tmp_path / "new"), quiet=True)
    finally:
        torch.set_num_threads(threads)
    new_file = os.path.join(new, "scores.npz")
    assert_close_scores(tmp_path / "cut" / "convnet-run0" / "scores.npz", new_file)
    assert_close_scores(os.path.join(src, "full", "scores.npz"), new_file)
    merged = load_scores(os.path.join(src, "full", "merged.npz"))
    ours = load_scores(new_file)
    for name in ("easiness", "forgetting", "el2n"):
        np.testing.assert_allclose(
            merged.scores[name], ours.scores[name], rtol=1e-5, atol=1e-6, err_msg=name
        )


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path):
    args = [
        sys.executable,
        "-m",
        "easyhard",
        "score",
        *synthetic(2000, 4, 16, batch=50),
        "--arch",
        "convnet",
        "--epochs",
        "4",
        "--device",
        "cpu",
        "--quiet",
    ]
    ckpt = tmp_path / "killed" / "convnet-run0" / "checkpoint.pt"
    proc = subprocess.Popen(args + ["--out", str(tmp_path / "killed")])
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run ended before writing its first checkpoint"
    epoch = torch.load(ckpt, weights_only=True)["epoch"]
    assert epoch < 4, "the run finished before it could be killed"
    assert not (tmp_path / "killed" / "convnet-run0" / "scores.npz").exists()
    subprocess.run(args + ["--out", str(tmp_path / "killed"), "--resume"], check=True, timeout=600)
    subprocess.run(args + ["--out", str(tmp_path / "whole")], check=True, timeout=600)
    assert_same_scores(
        tmp_path / "killed" / "convnet-run0" / "scores.npz",
        tmp_path / "whole" / "convnet-run0" / "scores.npz",
    )


@pytest.mark.slow
def test_ddp_gloo_matches_single_process_replay(tmp_path):
    """Two processes (gloo) record the same per-example counts as one process that presents the
    same batches (lr=0 keeps the model fixed, so only the recording is compared)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),  # a fixed port may still be held by an earlier run's socket
        "-m",
        "easyhard",
        "score",
        *SMALL,
        "--num-samples",
        "301",
        "--arch",
        "convnet",
        "--epochs",
        "2",
        "--lr",
        "0",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, env=env, timeout=600, capture_output=True, text=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    ddp = SampleStats.load(out / "convnet-run0" / "scores.npz")
    assert ddp.metadata["world_size"] == 2

    from easyhard.datasets import load_dataset
    from easyhard.loaders import TensorLoader
    from easyhard.models import build_model

    cfg = small_cfg(num_samples=301)
    ds = load_dataset("synthetic", num_samples=301, num_classes=4, image_size=12, seed=0)
    torch.manual_seed(cfg.seed)
    model = build_model("convnet", 4, 3, 12).to(memory_format=torch.channels_last)
    stats = SampleStats(len(ds), 4, labels=ds.labels)
    with torch.no_grad():
        for epoch in range(2):
            for rank in range(2):
                loader = TensorLoader(ds, 64, seed=cfg.seed, rank=rank, world_size=2)
                loader.set_epoch(epoch)
                for x, y, idx in loader:
                    stats.update(model(x), y, idx)
            stats.end_epoch()
    got, want = ddp.totals(), stats.totals()
    for k in ("presentations", "correct", "forgetting_events", "last_correct"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    np.testing.assert_allclose(got["prob_sum"], want["prob_sum"], rtol=1e-4, atol=1e-5)


def test_a_job_leaves_the_process_group_it_joined(monkeypatch):
    """Dist.joined joins a torchrun job's group and destroys it when the body returns (a gloo
    group left to the interpreter's exit aborted a finished rank now and then: 'terminate called
    without an active exception', 3 of 45 two-process runs here, 0 of 45 with the destroy); a
    group the caller joined stays joined, and so does ours after a failure."""
    import torch.distributed as td

    from easyhard.train import Dist

    for k, v in {"MASTER_ADDR": "localhost", "MASTER_PORT": str(free_port()),
                 "RANK": "0", "WORLD_SIZE": "1"}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    # restored at the end: the command line would end this (pytest's) process on its way out
    monkeypatch.setattr(Dist, "group_joined", False)
    dist = Dist(rank=0, world_size=2)  # a torchrun job, as far as joined() can tell
    assert not td.is_initialized()
    with dist.joined(torch.device("cpu")):
        assert td.is_initialized() and td.get_backend() == "gloo"
    assert not td.is_initialized()
    assert Dist.group_joined  # gloo's threads may outlive the group: the process ends at once
    with pytest.raises(ValueError):
        with dist.joined(torch.device("cpu")):
            raise ValueError("a failed job")
    assert td.is_initialized()  # left to the exit: another rank may still wait in a collective
    with dist.joined(torch.device("cpu")):  # the caller's (here: the failed job's) group
        pass
    assert td.is_initialized()
    td.destroy_process_group()
    with Dist().joined(torch.device("cpu")):  # one process: no group at all
        assert not td.is_initialized()


@pytest.mark.parametrize("joined", [True, False])
def test_a_process_that_joined_a_group_ends_past_the_teardown(joined):
    """After a command, a process that joined a process group of its own (a torchrun worker)
    ends through train.end_process: exit handlers run, output is flushed, the exit status is
    the command's, but the interpreter's teardown (where gloo's surviving threads aborted
    finished ranks now and then, in CI) does not run. Other processes end as usual."""
    script = textwrap.dedent(f"""
        import atexit
        from easyhard import train
        from easyhard.cli import main

        class Teardown:
            def __del__(self):
                print("teardown ran", flush=True)

        kept = Teardown()
        atexit.register(lambda: print("exit handlers ran", flush=True))
        train.Dist.group_joined = {joined}
        print("unflushed", end="")
        main(["info"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "easyhard" in done.stdout and "exit handlers ran" in done.stdout
    assert done.stdout.startswith("unflushed")
    assert ("teardown ran" in done.stdout) is not joined
    # a failed command's exit status and sentence survive the early end
    failed = subprocess.run(
        [sys.executable, "-c", script.replace('main(["info"])', 'main(["select", "nosuch.npz"])')],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "nosuch.npz" in failed.stderr


def test_cli_refusals(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    r = cli(["score", *SMALL, "--out", tmp_path / "busy"])
    assert r.exit_code != 0 and "--resume" in r.output
    r = cli(["score", *SMALL, "--arch", "alexnet", "--out", tmp_path / "n"])
    assert r.exit_code != 0 and "unknown architecture(s) alexnet" in r.output
    r = cli(["score", "--dataset", "cifar10", "--out", tmp_path / "c"])
    assert r.exit_code != 0 and "needs --data-dir" in r.output


def test_merge_refuses_other_data(tmp_path):
    train_job(small_cfg(epochs=1), str(tmp_path / "a"), quiet=True)
    train_job(small_cfg(epochs=1, num_samples=301), str(tmp_path / "b"), quiet=True)
    r = cli(
        [
            "merge",
            tmp_path / "a" / "convnet-run0" / "scores.npz",
            tmp_path / "b" / "convnet-run0" / "scores.npz",
            "--out",
            tmp_path / "m.npz",
        ]
    )
    assert r.exit_code != 0 and "cannot be merged" in r.output
    import shutil

    one_file = tmp_path / "a" / "convnet-run0" / "scores.npz"
    shutil.copy(one_file, tmp_path / "copy.npz")  # a copy is the same run: it counts once
    with pytest.raises(ValueError, match="given twice .*a copy: the same bytes"):
        merge_stats_files([str(one_file), str(tmp_path / "copy.npz")], str(tmp_path / "m.npz"))
    # one run merged alone has its own scores
    table = merge_stats_files([str(one_file)], str(tmp_path / "m.npz"))
    one = load_scores(str(tmp_path / "a" / "convnet-run0" / "scores.npz"))
    np.testing.assert_allclose(table.scores["easiness"], one.scores["easiness"])


def test_models_registry():
    from easyhard.models import available_models, build_model, register_model

    for name in (
        "resnet18",
        "resnet50",
        "vgg16_bn",
        "densenet121",
        "mobilenet_v2",
        "mobilenet_v3_small",
        "resnet18_cifar",
        "resnet20",
        "airbench",
        "convnet",
    ):
        assert name in available_models()
    x = torch.randn(2, 1, 32, 32)
    for name in ("resnet20", "resnet18_cifar", "airbench", "convnet", "resnet18", "mobilenet_v2"):
        assert build_model(name, 7, 1, 32)(x).shape == (2, 7)

    @register_model("test_tiny")
    def tiny(num_classes, in_channels, image_size):
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size**2, num_classes)
        )

    assert build_model("test_tiny", 3, 1, 4)(torch.randn(2, 1, 4, 4)).shape == (2, 3)
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet")(tiny)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_easiness_on_real_fashion_mnist_is_graded(tmp_path):
    """After real training, the easiest 10% is not a tie: fewer than 1% of examples share the
    easiness value at the 10% boundary (binary per-epoch correctness alone leaves most tied)."""
    cfg = ScoreConfig(dataset="fashion-mnist", archs=("convnet",), epochs=1, device="cpu")
    train_job(cfg, str(tmp_path), quiet=True)
    table = load_scores(str(tmp_path / "convnet-run0" / "scores.npz"))
    e = table.scores["easiness"]
    boundary = np.sort(e)[::-1][len(e) // 10 - 1]
    assert (e == boundary).sum() / len(e) < 0.01
    stats = SampleStats.load(tmp_path / "convnet-run0" / "scores.npz")
    binary = stats.history["correct"][0]
    assert (binary == 1).mean() > 0.5  # most examples were correct: binary scores would tie
    metrics = json.loads((tmp_path / "convnet-run0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["test_acc"] > 0.8


def test_score_image_folder(tmp_path):
    """The image-file path: DALI (or the torch fallback) training and evaluation on train/ +
    val/."""
    from test_loaders import jpeg_folder

    jpeg_folder(tmp_path / "data" / "train", classes=2, per_class=6)
    jpeg_folder(tmp_path / "data" / "val", classes=2, per_class=2)
    common = ["score", "--dataset", "imagefolder", "--data-dir", tmp_path / "data",
              "--arch", "convnet", "--epochs", "1", "--crop", "16", "--workers", "1",
              "--batch-size", "4", "--device", "cpu", "--quiet"]  # fmt: skip
    r = cli(common + ["--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    stats = SampleStats.load(tmp_path / "o" / "convnet-run0" / "scores.npz")
    assert stats.paths[0] == "class0/000.jpg" and (stats.totals()["presentations"] == 1).all()
    metrics = json.loads((tmp_path / "o" / "convnet-run0" / "metrics.jsonl").read_text())
    assert 0 <= metrics["test_acc"] <= 1
    # A corrupt image stops the run with its name, or is skipped and never presented.
    (tmp_path / "data" / "train" / "class1" / "002.jpg").write_bytes(b"\xff\xd8\xff\xe0 junk" * 8)
    r = cli(common + ["--out", tmp_path / "bad"])
    assert r.exit_code != 0 and "class1/002.jpg" in r.output
    assert not (tmp_path / "bad").exists()  # the corrected command may use the same --out
    # Not an image at all (a text file): refused before DALI sees it (DALI crashed on one)
    (tmp_path / "data" / "train" / "class1" / "003.jpg").rename(tmp_path / "003.jpg")
    (tmp_path / "data" / "train" / "class1" / "003.jpg").write_text("not an image\n")
    r = cli(common + ["--out", tmp_path / "bad"])
    assert r.exit_code == 1 and "class1/003.jpg" in r.output and "--skip-corrupt" in r.output
    assert not (tmp_path / "bad").exists()
    (tmp_path / "003.jpg").replace(tmp_path / "data" / "train" / "class1" / "003.jpg")
    r = cli(common + ["--skip-corrupt", "--out", tmp_path / "skip"])
    assert r.exit_code == 0, r.output
    pres = SampleStats.load(tmp_path / "skip" / "convnet-run0" / "scores.npz").totals()[
        "presentations"
    ]
    assert pres.tolist() == [1] * 8 + [0] + [1] * 3  # class1/002.jpg is index 8
    assert "1 example(s) were never presented" in r.output  # counted in the summary
    merged = load_scores(str(tmp_path / "skip" / "merged.npz"))
    assert merged.scores["never_presented"].tolist() == [0] * 8 + [1] + [0] * 3
    (tmp_path / "data" / "train" / "class1" / "002.jpg").unlink()
    # A bare class tree has no test split: training still runs, without evaluation.
    r = cli(
        [
            "score",
            "--dataset",
            "imagefolder",
            "--data-dir",
            tmp_path / "data" / "train",
            "--arch",
            "convnet",
            "--epochs",
            "1",
            "--crop",
            "16",
            "--workers",
            "1",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            tmp_path / "o2",
        ]
    )
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "o2" / "convnet-run0" / "metrics.jsonl").read_text())
    assert metrics["test_acc"] is None
    # A val/ that exists but is wrong (a class train/ has not) is an error, not a run without
    # evaluation (with --quiet the run used to say nothing and record test_acc null)
    (tmp_path / "data" / "val" / "class9").mkdir()
    (tmp_path / "data" / "val" / "class0" / "000.jpg").rename(
        tmp_path / "data" / "val" / "class9" / "000.jpg"
    )
    r = cli(common + ["--out", tmp_path / "o3"])
    assert r.exit_code == 1 and "the training split has not (class9)" in r.output, r.output
    assert not (tmp_path / "o3").exists()
    # an experiment names why it has no test split, in one sentence
    r = cli(["experiment", "removal", tmp_path / "o2" / "merged.npz", *common[1:4],
             str(tmp_path / "data" / "train"), *common[5:], "--fractions", "0.3",
             "--out", tmp_path / "exp"])  # fmt: skip
    assert r.exit_code == 1 and "measures test accuracy, but" in r.output, r.output
    assert "expected train/ beside val/ or test/" in r.output


def test_clean_view_inside_the_first_epoch(tmp_path):
    cfg = small_cfg(epochs=2, clean_steps=2)  # 300 / 64 -> 5 steps: passes after steps 2 and 4
    train_run(cfg, "convnet", 0, str(tmp_path))
    clean = SampleStats.load(tmp_path / "convnet-run0" / "scores_clean.npz")
    assert clean.epochs == 1 and (clean.history["presentations"][0] == 2).all()
    train = SampleStats.load(tmp_path / "convnet-run0" / "scores.npz")
    assert train.epochs == 2 and (train.totals()["presentations"] == 2).all()


def test_runs_that_differ_in_one_seed_only(tmp_path):
    """--init-seed and --data-seed fix one source of randomness across runs: runs that share both
    are identical whatever their seed; runs that share only one differ, and each run's metadata
    records the effective seeds."""
    base = [
        "score",
        *synthetic(200, 4, batch=50),
        "--arch",
        "convnet",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--runs",
        "2",
    ]
    assert (
        cli([*base, "--init-seed", "5", "--data-seed", "7", "--out", tmp_path / "both"]).exit_code
        == 0
    )
    assert_same_scores(
        tmp_path / "both" / "convnet-run0" / "scores.npz",
        tmp_path / "both" / "convnet-run1" / "scores.npz",
    )
    for fixed, varies in (("--data-seed", "init_seed"), ("--init-seed", "data_seed")):
        out = tmp_path / fixed
        assert cli([*base, fixed, "3", "--out", out]).exit_code == 0
        a = SampleStats.load(out / "convnet-run0" / "scores.npz")
        b = SampleStats.load(out / "convnet-run1" / "scores.npz")
        assert not np.array_equal(a.history, b.history)
        fixed_key = fixed[2:].replace("-", "_")
        assert a.metadata[fixed_key] == b.metadata[fixed_key] == 3
        assert (a.metadata[varies], b.metadata[varies]) == (0, 1)


def test_adamw_trains(tmp_path):
    r = cli(
        [
            "score",
            *SMALL,
            "--arch",
            "convnet",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--optimizer",
            "adamw",
            "--lr",
            "3e-3",
            "--out",
            tmp_path / "o",
        ]
    )
    assert r.exit_code == 0, r.output
    m = [
        json.loads(x)
        for x in (tmp_path / "o" / "convnet-run0" / "metrics.jsonl").read_text().split("\n")
        if x
    ]
    assert m[-1]["train_acc"] > 0.5
    assert (
        SampleStats.load(tmp_path / "o" / "convnet-run0" / "scores.npz").metadata["config"][
            "optimizer"
        ]
        == "adamw"
    )


def test_a_resume_on_another_cpu_path_says_so_and_records_both(
    tmp_path, killed_after_epoch, monkeypatch, capsys
):
    from easyhard import ops

    paths = ops.cpu_capabilities()
    if len(paths) < 2:
        pytest.skip(f"this CPU runs one path only ({paths})")
    cfg = small_cfg(epochs=2)
    monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", paths[0])
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path), quiet=True)
    monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", paths[-1])
    run_dir = train_run(cfg, "convnet", 0, str(tmp_path), quiet=True, resume=True)
    err = capsys.readouterr().err
    assert f"recorded with the cpu-{paths[0]} kernel and resumes with cpu-{paths[-1]}" in err
    meta = SampleStats.load(os.path.join(run_dir, "scores.npz")).metadata
    assert meta["kernels"] == sorted([f"cpu-{paths[0]}", f"cpu-{paths[-1]}"])


def test_images_too_small_for_the_architecture_are_refused_before_training(tmp_path):
    """airbench's pools shrink 4 x 4 images to nothing: one sentence that names the smallest
    size it takes, before any folder is made (it was torch's 'Output size is too small')."""
    r = cli(["score", *synthetic(64, 2, 4), "--arch", "airbench", "--epochs", "1", "--device",
             "cpu", "--out", tmp_path / "o"])  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "architecture airbench cannot take 4 x 4 images" in r.output
    assert "(it takes 16 x 16 and larger); give larger images (--image-size" in r.output
    assert not (tmp_path / "o").exists()
    from easyhard.models import build_model

    build_model("airbench", 2, 3, 16)  # the size it names is taken


def test_resume_takes_the_same_data_at_another_spelling_of_its_path(tmp_path, monkeypatch):
    """--data-dir data, then --resume with --data-dir /abs/path/data/: the same data (the
    fingerprint says so), so the finished run is reused (it was refused as 'another
    configuration'); other data at the new path is still refused."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            image = (rng.random((16, 16, 3)) * 255).astype("uint8")
            Image.fromarray(image).save(tmp_path / "data" / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    job = ["score", "--dataset", "imagefolder", "--arch", "convnet", "--epochs", "1", "--crop",
           "16", "--device", "cpu", "--batch-size", "8", "--out", "out", "--quiet"]  # fmt: skip
    assert cli([*job, "--data-dir", "data"]).exit_code == 0
    before = (tmp_path / "out" / "convnet-run0" / "scores.npz").read_bytes()
    r = cli([*job, "--data-dir", f"{tmp_path}/data/", "--resume"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "convnet-run0" / "scores.npz").read_bytes() == before
    Image.new("RGB", (16, 16)).save(tmp_path / "data" / "a" / "extra.png")  # other data now
    r = cli([*job, "--data-dir", "data", "--resume"])
    assert r.exit_code == 1 and "dataset_fingerprint" in r.output, r.output

"""Nothing lost, nothing silently wrong (issue 8): outputs never replace inputs or a user's files,
resumed and merged results never mix runs, never-presented examples never rank, and every
compressed format loads back to exactly source[indices], with easyhard and with torchvision."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from helpers import cli as run
from helpers import compress_args, killed_after_deleting, synthetic, tiny_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_compress import score_file
from test_datasets import make_fmnist, make_folder, write_cifar10

from easyhard import SampleStats
from easyhard.compress import compress
from easyhard.datasets import load_dataset, read_idx, write_idx
from easyhard.io import check_disjoint, inside
from easyhard.scores import compute_scores, load_scores
from easyhard.select import select
from easyhard.train import DivergedError, train_job


def tree(folder):
    """{relative path: bytes} of every file under folder (the state a test wants unchanged)."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = fh.read()
    return out


# ---------------------------------------------------------------------------- 1. compress --force
def test_compress_never_replaces_its_source(tmp_path, monkeypatch):
    make_fmnist(tmp_path / "fmA", n=30)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "fmA"))
    scores = score_file(ds, tmp_path / "s.npz")
    before = tree(tmp_path / "fmA")
    monkeypatch.chdir(tmp_path)
    os.symlink(tmp_path / "fmA", tmp_path / "alias")
    for out in ("fmA", str(tmp_path / "fmA"), "./fmA/", "alias", str(tmp_path), "fmA/inner"):
        r = run(compress_args(scores, "fashion-mnist", "fmA", "0.7", out, "--force"))
        assert r.exit_code != 0, out
        said = "inside" in r.output or "is the source dataset" in r.output
        assert said and "Traceback" not in r.output, r.output
        assert tree(tmp_path / "fmA") == before, out


def test_compress_into_a_parent_of_an_image_folder_is_refused(tmp_path):
    make_folder(tmp_path / "P" / "data", per_class=4)
    (tmp_path / "P" / "notes.txt").write_text("mine")
    ds = load_dataset("imagefolder", root=str(tmp_path / "P" / "data"))
    scores = score_file(ds, tmp_path / "s.npz")
    before = tree(tmp_path / "P")
    for link in ("hard", "symlink"):
        r = run(
            compress_args(
                scores,
                "imagefolder",
                tmp_path / "P" / "data",
                "0.5",
                tmp_path / "P",
                "--force",
                "--link",
                link,
            )
        )
        assert r.exit_code != 0 and "lies inside the output" in r.output
    assert tree(tmp_path / "P") == before


def test_compress_force_replaces_only_its_own_output(tmp_path):
    make_fmnist(tmp_path / "src", n=30)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "src"))
    scores = score_file(ds, tmp_path / "s.npz")
    args = [
        "compress",
        scores,
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        tmp_path / "src",
        "--keep",
        "0.5",
    ]
    assert run([*args, "--out", tmp_path / "out"]).exit_code == 0
    r = run([*args, "--keep", "0.3", "--out", tmp_path / "out", "--force"])  # our own: replaced
    assert r.exit_code == 0, r.output
    assert len(load_dataset("fashion-mnist", root=str(tmp_path / "out"))) == 9
    # A user's file inside an earlier output (top level or deep) stops --force.
    for extra in (tmp_path / "out" / "notes.txt", tmp_path / "out" / "sub" / "x.txt"):
        extra.parent.mkdir(exist_ok=True)
        extra.write_text("mine")
        r = run([*args, "--out", tmp_path / "out", "--force"])
        assert r.exit_code != 0 and "did not write" in r.output, r.output
        assert extra.read_text() == "mine"
        extra.unlink()
    # The statistics file inside the output folder: refused, the file kept.
    (tmp_path / "holder").mkdir()
    inner = score_file(ds, tmp_path / "holder" / "s.npz")
    r = run(["compress", inner, *args[2:], "--out", tmp_path / "holder", "--force"])
    assert r.exit_code != 0 and "scores input" in r.output
    assert os.path.exists(inner)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    src=st.lists(st.sampled_from(["a", "b", ".", ".."]), min_size=1, max_size=4),
    out=st.lists(st.sampled_from(["a", "b", ".", ".."]), min_size=1, max_size=4),
    via_link=st.booleans(),
)
def test_overlap_check_is_spelling_independent(tmp_path_factory, src, out, via_link):
    """Property: check_disjoint refuses exactly the outputs that are, contain or lie inside the
    source, however the two paths are spelled (relative parts, '..', a symbolic link)."""
    base = tmp_path_factory.mktemp("spell")
    (base / "a" / "b").mkdir(parents=True)
    (base / "b" / "a").mkdir(parents=True)
    os.symlink(base / "a", base / "link")
    src_path = os.path.join(base, *src)
    out_path = os.path.join(base, "link" if via_link else "a", *out)
    real_src, real_out = os.path.realpath(src_path), os.path.realpath(out_path)
    common = os.path.commonpath([real_src, real_out])  # "/" when src climbs to the root
    overlap = common in (real_src, real_out)
    if overlap:
        with pytest.raises(ValueError, match="inside|is the source"):
            check_disjoint(out_path, {"source": src_path})
    else:
        check_disjoint(out_path, {"source": src_path})
    assert inside(out_path, out_path) and inside(os.path.join(out_path, "x"), out_path)


# ---------------------------------------------------------------------------- 2. score --force
SMALL = synthetic(120, 3, batch=64, arch="convnet", epochs=1, device="cpu", quiet=True)


def test_score_force_deletes_only_what_easyhard_wrote(tmp_path):
    out = tmp_path / "out"
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    (out / "my-run-notes").mkdir()
    (out / "my-run-notes" / "n.txt").write_text("mine")
    (out / "convnet-run0" / "plot.png").write_bytes(b"mine too")
    (out / "merged-notes.npz").write_bytes(b"not ours")
    r = run(["score", *SMALL, "--out", out, "--force", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert (out / "my-run-notes" / "n.txt").read_text() == "mine"
    assert (out / "convnet-run0" / "plot.png").read_bytes() == b"mine too"
    assert (out / "merged-notes.npz").read_bytes() == b"not ours"
    assert SampleStats.load(out / "convnet-run0" / "scores.npz").epochs == 2


def test_score_resume_refuses_a_folder_holding_no_job(tmp_path):
    """--resume continues an easyhard job: a folder of someone else's files is refused as it is
    without --resume, not written into (a careless-user helper's resume wrote runs beside its
    x.txt); an absent folder starts afresh, and so does resuming a job's own folder."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "x.txt").write_text("keep me\n")
    r = run(["score", *SMALL, "--out", mine, "--resume"])
    assert r.exit_code == 1 and "holds files but no easyhard scoring job" in r.output, r.output
    assert os.listdir(mine) == ["x.txt"]
    assert run(["score", *SMALL, "--out", tmp_path / "new", "--resume"]).exit_code == 0
    assert run(["score", *SMALL, "--out", tmp_path / "new", "--resume"]).exit_code == 0


def test_score_force_leaves_easyhard_run_folders_the_job_does_not_write(tmp_path):
    """A renamed copy of a run folder (easyhard's own, by its config.json) is not one of the
    job's runs: --force leaves it whole, and says so."""
    import shutil

    out = tmp_path / "out"
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    shutil.copytree(out / "convnet-run0", out / "keep-this-run")
    before = sorted(os.listdir(out / "keep-this-run"))
    r = run(["score", *SMALL, "--out", out, "--force", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out / "keep-this-run")) == before
    # said, since an analysis of the whole folder still reads it (a careless-user helper's
    # overlap analysis silently mixed a stale run in)
    note = "holds 1 earlier run folder(s) this job does not name (keep-this-run)"
    assert f"{note}: --force leaves them" in r.output, r.output
    r = run(["score", *SMALL, "--out", out, "--resume", "--epochs", "2"])
    assert f"{note}: merged.npz leaves them out" in r.output, r.output
    assert SampleStats.load(out / "keep-this-run" / "scores.npz").epochs == 1


@pytest.mark.parametrize("killed_at", ["scores.npz", "metrics.jsonl", "config.json", "history.bin"])
def test_a_score_force_killed_while_deleting_is_finished_by_the_next(tmp_path, monkeypatch,
                                                                     killed_at):  # fmt: skip
    """score --force deletes the job's earlier runs file by file: killed after any of those
    deletions, the run folder is still recognised as easyhard's (its config.json goes last) and
    the next --force finishes the job."""
    out = tmp_path / "out"
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    assert (out / "convnet-run0" / killed_at).exists()
    with killed_after_deleting(monkeypatch, killed_at):
        run(["score", *SMALL, "--out", out, "--force"])
    r = run(["score", *SMALL, "--out", out, "--force", "--epochs", "2"])
    assert r.exit_code == 0, r.output
    assert SampleStats.load(out / "convnet-run0" / "scores.npz").epochs == 2


def test_a_second_score_job_on_one_folder_is_refused(tmp_path):
    """Two jobs writing one --out would overwrite each other's records: the second is refused
    at once, in one sentence, and changes nothing."""
    from easyhard import outputs

    out = tmp_path / "out"
    with outputs.claim(out, "easyhard score"):
        r = run(["score", *SMALL, "--out", out])
        assert r.exit_code == 1
        assert "is being written by another easyhard command (easyhard score, pid" in r.output
        assert not out.exists()
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == []


def test_force_removes_what_a_killed_checkpoint_write_left(tmp_path):
    """A run killed while its checkpoint was being written (in the background) leaves atomic
    write's temporary file; --force's clear_previous deletes it when stale, with the run's files,
    and keeps a fresh one (a write in progress) and any temporary file of a name not its own."""
    import time

    from easyhard.runfolder import clear_previous

    for case in ("stale", "fresh", "foreign"):
        out = tmp_path / case
        assert run(["score", *SMALL, "--out", out]).exit_code == 0
        name = ".notes.txt.k2j3h4.tmp" if case == "foreign" else ".checkpoint.pt.k2j3h4.tmp"
        temp = out / "convnet-run0" / name
        temp.write_bytes(b"half a checkpoint")
        if case != "fresh":
            old = time.time() - 600
            os.utime(temp, (old, old))
        clear_previous(str(out), [("convnet", 0)])
        assert temp.exists() == (case != "stale"), case
        assert (out / "convnet-run0").exists() == (case != "stale"), case
        assert not (out / "convnet-run0" / "scores.npz").exists()


def test_merge_writes_only_where_a_merged_file_may_go(tmp_path):
    """`merge --out` never replaces a user's file or a run's statistics file (any run's, not
    only its inputs'); it replaces an earlier merged scores file; the same run given twice is
    refused (it would count twice)."""
    assert run(["score", *SMALL, "--runs", "2", "--out", tmp_path / "o"]).exit_code == 0
    a = tmp_path / "o" / "convnet-run0" / "scores.npz"
    b = tmp_path / "o" / "convnet-run1" / "scores.npz"
    other = tmp_path / "other.npz"
    other.write_bytes(b.read_bytes())  # another run's statistics file, not an input
    mine = tmp_path / "notes.txt"
    mine.write_text("hello")
    for out, says in ((mine, "is not a merged scores file"), (other, "statistics file")):
        before = out.read_bytes()
        r = run(["merge", a, b, "--out", out])
        assert r.exit_code == 1 and says in r.output, r.output
        assert out.read_bytes() == before
    r = run(["merge", a, a, "--out", tmp_path / "m.npz"])
    assert r.exit_code == 1 and "given twice" in r.output
    for _ in range(2):  # an earlier merged file is replaced
        assert run(["merge", a, b, "--out", tmp_path / "m.npz"]).exit_code == 0


def test_score_never_writes_over_a_users_run_folder_or_merged_file(tmp_path):
    """With --force or --resume the job still refuses, before deleting anything, a folder named
    like one of its runs that easyhard did not write, and a merged.npz that is not its own."""
    for flag in ("--force", "--resume"):
        out = tmp_path / flag.strip("-")
        assert run(["score", *SMALL, "--out", out]).exit_code == 0
        (out / "merged.npz").write_text("my merged")
        r = run(["score", *SMALL, "--out", out, flag])
        assert r.exit_code == 1 and "merged.npz exists and is not a merged scores file" in r.output
        assert (out / "merged.npz").read_text() == "my merged"
        assert (out / "convnet-run0" / "scores.npz").exists()  # nothing deleted either
        (out / "merged.npz").unlink()
        mine = out / "resnet8-run0"
        mine.mkdir()
        (mine / "scores.npz").write_text("mine")
        r = run(["score", *SMALL, "--arch", "resnet8", "--out", out, flag])  # convnet, resnet8
        assert r.exit_code == 1 and "did not write" in r.output and "resnet8-run0" in r.output
        assert (mine / "scores.npz").read_text() == "mine"


def test_a_text_file_given_as_scores_is_named_as_such(tmp_path):
    (tmp_path / "scores.txt").write_text("index,score\n0,0.5\n")
    r = run(["select", tmp_path / "scores.txt", "--keep", "0.5", "--out", tmp_path / "s"])
    assert r.exit_code == 1 and "not an .npz archive" in r.output and "pickle" not in r.output


def test_score_force_deletes_nothing_when_the_job_is_refused(tmp_path):
    """--force clears an earlier job only once everything is checked: a job refused for its
    dataset leaves the earlier runs in place."""
    out = tmp_path / "out"
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    r = run(["score", "--dataset", "imagefolder", "--data-dir", tmp_path / "missing",
             "--arch", "convnet", "--device", "cpu", "--out", out, "--force"])  # fmt: skip
    assert r.exit_code == 1 and "missing" in r.output, r.output
    assert SampleStats.load(out / "convnet-run0" / "scores.npz").epochs == 1
    assert (out / "merged.npz").exists()


def test_score_refuses_to_write_into_its_dataset(tmp_path):
    make_fmnist(tmp_path / "fm", n=20)
    before = sorted(os.listdir(tmp_path / "fm"))
    r = run(
        [
            "score",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            tmp_path / "fm",
            "--arch",
            "convnet",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            tmp_path / "fm" / "runs",
        ]
    )
    assert r.exit_code != 0 and "inside the dataset" in r.output
    assert sorted(os.listdir(tmp_path / "fm")) == before
    # the dataset folder itself, not empty: the dataset is named, not --resume/--force
    r = run(["score", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "fm", "--out",
             tmp_path / "fm"])  # fmt: skip
    assert r.exit_code == 1 and "is the dataset" in r.output and "--force" not in r.output
    assert not (tmp_path / "fm" / "runs").exists()


# ---------------------------------------------------------------------------- 3. merge
def test_merge_into_one_of_its_inputs_is_refused(tmp_path):
    assert run(["score", *SMALL, "--out", tmp_path / "o"]).exit_code == 0
    x = tmp_path / "o" / "convnet-run0" / "scores.npz"
    before = x.read_bytes()
    os.symlink(x, tmp_path / "alias.npz")
    os.link(x, tmp_path / "hard.npz")
    for out in (x, tmp_path / "alias.npz", tmp_path / "hard.npz"):
        r = run(["merge", x, "--out", out])
        assert r.exit_code != 0 and "one of the inputs" in r.output
    assert x.read_bytes() == before


def test_merge_never_mixes_views_or_windows(tmp_path):
    ds = load_dataset("synthetic", num_samples=30, num_classes=3, image_size=4)
    a = SampleStats(30, 3, labels=ds.labels, fingerprint=ds.fingerprint)
    logits = torch.randn(30, 3)
    for stats, epochs in ((a, 2),):
        for _ in range(epochs):
            stats.update(logits, torch.from_numpy(ds.labels), torch.arange(30))
            stats.end_epoch()
    a.save(tmp_path / "train.npz", metadata={"view": "train"})
    a.save(tmp_path / "clean.npz", metadata={"view": "clean"})
    a.update(logits, torch.from_numpy(ds.labels), torch.arange(30))
    a.end_epoch()
    a.save(tmp_path / "three.npz", metadata={"view": "train"})
    r = run(["merge", tmp_path / "train.npz", tmp_path / "clean.npz", "--out", tmp_path / "m.npz"])
    assert r.exit_code != 0 and "views are never merged" in r.output
    r = run(["merge", tmp_path / "train.npz", tmp_path / "three.npz", "--out", tmp_path / "m.npz"])
    assert r.exit_code != 0 and "set --window to at most 2 epoch(s)" in r.output, r.output
    assert "(--window)" not in r.output  # the library's `window` becomes the flag once
    r = run(
        [
            "merge",
            tmp_path / "train.npz",
            tmp_path / "three.npz",
            "--window",
            "2",
            "--out",
            tmp_path / "m.npz",
        ]
    )
    assert r.exit_code == 0, r.output


def test_files_of_a_newer_format_are_refused_both_kinds(tmp_path):
    """Statistics files and merged scores files both carry a format version; a newer one than
    this easyhard reads is refused with a message saying so (statsfile.check_version)."""
    from easyhard.scores import merge_stats_files
    from easyhard.statsfile import read_archive, write_archive

    ds = load_dataset("synthetic", num_samples=30, num_classes=3, image_size=4)
    a = SampleStats(30, 3, labels=ds.labels, fingerprint=ds.fingerprint)
    a.update(torch.randn(30, 3), torch.from_numpy(ds.labels), torch.arange(30))
    a.end_epoch()
    a.save(tmp_path / "s.npz", metadata={"view": "train"})
    merge_stats_files([str(tmp_path / "s.npz")], str(tmp_path / "m.npz"))
    for name in ("s.npz", "m.npz"):
        assert load_scores(str(tmp_path / name)).scores["easiness"].shape == (30,)
        arrays = read_archive(tmp_path / name)
        meta = json.loads(str(arrays.pop("metadata")))
        write_archive(tmp_path / f"new-{name}", arrays, {**meta, "format_version": 99})
        with pytest.raises(ValueError, match="format version 99, newer than this easyhard"):
            load_scores(str(tmp_path / f"new-{name}"))


def test_background_writer_keeps_order_and_reports_failures(tmp_path):
    """io.BackgroundWriter: one write at a time in the order given; a failed write's error is
    raised in the caller (once), and the writes after it still run."""
    import time

    from easyhard.io import BackgroundWriter

    done = []

    def write(name, delay):
        time.sleep(delay)
        done.append(name)

    def fail():
        raise OSError("disk full")

    w = BackgroundWriter()
    w.submit(write, "a", 0.2)
    w.submit(write, "b", 0.0)  # waits for a
    w.wait()
    assert done == ["a", "b"]
    w.submit(fail)
    with pytest.raises(OSError, match="disk full"):
        w.submit(write, "c", 0.0)  # the failure surfaces at the next hand-over
    w.submit(write, "c", 0.0)
    w.wait()
    w.wait()  # raised once only
    assert done == ["a", "b", "c"]


# ---------------------------------------------------------------------------- 4. resume
def test_resume_refuses_finished_runs_of_another_configuration(tmp_path):
    base = [
        "score",
        "--dataset",
        "synthetic",
        "--image-size",
        "8",
        "--batch-size",
        "64",
        "--arch",
        "convnet",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        tmp_path / "o",
    ]
    assert (
        run([*base, "--num-samples", "120", "--num-classes", "3", "--epochs", "1"]).exit_code == 0
    )
    merged = (tmp_path / "o" / "merged.npz").read_bytes()
    r = run([*base, "--num-samples", "150", "--num-classes", "4", "--epochs", "2", "--resume"])
    assert r.exit_code != 0 and "another configuration" in r.output
    assert "num_samples: 120 -> 150" in r.output and "epochs: 1 -> 2" in r.output
    assert (tmp_path / "o" / "merged.npz").read_bytes() == merged
    # The same job resumed (and one more run of it) is accepted.
    r = run(
        [
            *base,
            "--num-samples",
            "120",
            "--num-classes",
            "3",
            "--epochs",
            "1",
            "--resume",
            "--runs",
            "2",
        ]
    )
    assert r.exit_code == 0, r.output
    assert len(load_scores(str(tmp_path / "o" / "merged.npz")).metadata["runs"]) == 2
    # A finished run whose statistics file is not one (replaced by hand) is named, not trusted.
    (tmp_path / "o" / "convnet-run1" / "scores.npz").write_bytes(b"not an archive")
    r = run([*base, "--num-samples", "120", "--num-classes", "3", "--epochs", "1", "--resume",
             "--runs", "2"])  # fmt: skip
    assert r.exit_code == 1 and "convnet-run1" in r.output and "not an easyhard" in r.output


def test_resume_checks_runs_killed_before_their_first_epoch_ended(tmp_path):
    """A run killed in its first epoch has only config.json: resuming it with other settings is
    refused like a checkpointed one, before anything trains or the job's record is rewritten."""
    base = ["score", "--dataset", "synthetic", "--num-classes", "3", "--image-size", "8",
            "--batch-size", "64", "--device", "cpu", "--quiet",
            "--out", tmp_path / "o"]  # fmt: skip
    first = [*base, "--num-samples", "120", "--epochs", "2", "--arch", "convnet"]
    assert run(first).exit_code == 0
    run_dir = tmp_path / "o" / "convnet-run0"
    for name in ["scores.npz", "checkpoint.pt", "history.bin", "metrics.jsonl"]:
        (run_dir / name).unlink()  # as a kill during epoch 1 leaves it
    (tmp_path / "o" / "merged.npz").unlink()
    record = (tmp_path / "o" / "score-config.toml").read_bytes()
    # resnet8 comes first: it must not train before convnet's run is found to differ
    other = [*base, "--num-samples", "150", "--epochs", "1", "--arch", "resnet8", "--arch",
             "convnet", "--resume"]  # fmt: skip
    r = run(other)
    assert r.exit_code == 1 and "another configuration" in r.output, r.output
    assert "convnet-run0" in r.output and "epochs: 2 -> 1" in r.output
    assert "num_samples: 120 -> 150" in r.output
    assert not (tmp_path / "o" / "resnet8-run0").exists()
    assert (tmp_path / "o" / "score-config.toml").read_bytes() == record
    r = run([*first, "--resume"])  # the same job continues
    assert r.exit_code == 0, r.output
    assert (run_dir / "scores.npz").exists()


def test_an_architecture_given_twice_is_refused_before_training(tmp_path):
    r = run(["score", "--dataset", "synthetic", "--num-samples", "60", "--image-size", "8",
             "--device", "cpu", "--arch", "convnet", "--arch", "convnet",
             "--out", tmp_path / "o"])  # fmt: skip
    assert r.exit_code == 1 and "convnet is given twice (--arch)" in r.output
    assert "--runs" in r.output and not (tmp_path / "o").exists()


def test_resume_refuses_a_damaged_checkpoint(tmp_path, killed_after_epoch):
    cfg = tiny_config(120, 3, batch=64)
    from easyhard.train import train_run

    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path), quiet=True)
    ck = tmp_path / "convnet-run0" / "checkpoint.pt"
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(ValueError, match="damaged"):
        train_run(cfg, "convnet", 0, str(tmp_path), quiet=True, resume=True)


# ---------------------------------------------------------------------------- 6. never presented
def test_never_presented_examples_take_no_part(tmp_path):
    make_folder(tmp_path / "src", per_class=6)
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"))
    bad = 3  # e.g. an unreadable image dropped by --skip-corrupt: never presented
    N, C = len(ds), ds.num_classes
    stats = SampleStats(N, C, labels=ds.labels, paths=ds.paths, fingerprint=ds.fingerprint)
    keep = torch.tensor([i for i in range(N) if i != bad])
    for _ in range(2):
        stats.update(torch.randn(len(keep), C), torch.from_numpy(ds.labels)[keep], keep)
        stats.end_epoch()
    stats.save(tmp_path / "s.npz")
    s = compute_scores(SampleStats.load(tmp_path / "s.npz"))
    assert s["never_presented"].tolist() == [i == bad for i in range(N)]
    assert np.isnan(s["easiness"][bad]) and not s["never_learned"][bad]
    assert np.isfinite(np.delete(s["easiness"], bad)).all()
    for strategy in ("hardest", "easiest", "random", "stratified"):
        for balanced in (False, True):
            r = run(
                compress_args(
                    tmp_path / "s.npz",
                    "imagefolder",
                    tmp_path / "src",
                    "1.0",
                    tmp_path / "o",
                    "--strategy",
                    strategy,
                    "--balanced" if balanced else "--global",
                    "--force",
                )
            )
            assert r.exit_code == 0, r.output
            assert "1 example(s) never presented" in r.output and f"kept {N - 1} of {N}" in r.output
            idx = np.load(tmp_path / "o" / "indices.npy")
            assert bad not in idx and len(idx) == N - 1
            assert ds.paths[bad] not in tree(tmp_path / "o" / "train")
    # merged files carry the flag too
    run(["merge", tmp_path / "s.npz", "--out", tmp_path / "m.npz"])
    table = load_scores(str(tmp_path / "m.npz"))
    assert table.scores["never_presented"][bad] == 1.0
    r = run(
        [
            "select",
            tmp_path / "m.npz",
            "--keep",
            "5",
            "--strategy",
            "hardest",
            "--json",
            "--out",
            tmp_path / "sel",
        ]
    )
    assert r.exit_code == 0 and json.loads(r.output)["excluded"] == 1
    assert bad not in np.load(tmp_path / "sel" / "indices.npy")


# ---------------------------------------------------------------------------- 8. empty selections
@pytest.mark.parametrize(
    "extra",
    [["--keep", "0.000000001"], ["--keep", "0.5", "--cut-hardest", "0.999999"], ["--keep", "0%"]],
)
def test_empty_selections_are_refused(tmp_path, extra):
    make_fmnist(tmp_path / "src", n=30)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "src"))
    scores = score_file(ds, tmp_path / "s.npz")
    for cmd in (
        ["select", scores, *extra, "--out", tmp_path / "o"],
        [
            "compress",
            scores,
            *extra,
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            tmp_path / "src",
            "--out",
            tmp_path / "o",
        ],
    ):
        r = run(cmd)
        assert r.exit_code != 0, r.output
        assert "empty" in r.output or "no example is left" in r.output or "(0, 1]" in r.output
        assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- 9-12. formats
def test_compress_file_list_adds_no_class_folders(tmp_path):
    make_folder(tmp_path / "src", per_class=4)
    ds0 = load_dataset("imagefolder", root=str(tmp_path / "src"))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p} {7 if y else 99999}\n" for p, y in zip(ds0.paths, ds0.labels)))
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"), file_list=str(lst))
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(
        compress_args(
            scores, "imagefolder", tmp_path / "src", "0.5", tmp_path / "o", "--file-list", lst
        )
    )
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path / "o" / "train")) == sorted(
        {p.split("/")[0] for p in ds.paths}
    )
    back = load_dataset(
        "imagefolder",
        root=str(tmp_path / "o" / "train"),
        file_list=str(tmp_path / "o" / "file_list.txt"),
    )
    idx = np.load(tmp_path / "o" / "indices.npy")
    assert back.paths == [ds.paths[i] for i in idx]
    np.testing.assert_array_equal(back.labels, ds.labels[idx])


def test_compress_synthetic_matches_its_scores(tmp_path):
    opts = [
        *synthetic(50, 5, 6, synthetic_seed=3),
    ]
    ds = load_dataset("synthetic", num_samples=50, num_classes=5, image_size=6, seed=3)
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(["compress", scores, *opts, "--keep", "0.4", "--out", tmp_path / "o"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o" / "subset.npz", allow_pickle=False) as z:
        np.testing.assert_array_equal(z["images"], ds.images[z["indices"]])
        np.testing.assert_array_equal(z["labels"], ds.labels[z["indices"]])
    r = run(["compress", scores, *opts[:-1], "4", "--keep", "0.4", "--out", tmp_path / "o2"])
    assert r.exit_code != 0 and "other data" in r.output


def _tv_cifar(root):
    """torchvision's CIFAR10 reader on `root`, its md5 check of the original files bypassed (a
    subset cannot have the original checksums)."""
    import torchvision.datasets.cifar as tc

    real = tc.check_integrity
    tc.check_integrity = lambda *a, **k: True
    try:
        return tc.CIFAR10(str(root), train=True)
    finally:
        tc.check_integrity = real


@pytest.mark.parametrize("keep", ["2", "0.5", "1.0"])
def test_every_format_loads_back_to_the_selected_examples(tmp_path, keep):
    """easyhard and torchvision read each compressed format back to exactly source[indices]."""
    import torchvision
    from torchvision.datasets.mnist import read_image_file, read_label_file

    # Fashion-MNIST, not gzipped (torchvision reads raw idx files)
    make_fmnist(tmp_path / "fm", n=24)
    for name in os.listdir(tmp_path / "fm"):  # ungzip the fixture
        a = read_idx(str(tmp_path / "fm" / name))
        os.unlink(tmp_path / "fm" / name)
        write_idx(str(tmp_path / "fm" / name.removesuffix(".gz")), a)
    # CIFAR-10 with the original's str keys, an ImageFolder with train/ and val/, a file list
    write_cifar10(tmp_path / "c10", str_keys=True)
    make_folder(tmp_path / "img" / "train", per_class=5)
    make_folder(tmp_path / "img" / "val", per_class=2)
    for name, kwargs in [
        ("fashion-mnist", {"root": str(tmp_path / "fm")}),
        ("cifar10", {"root": str(tmp_path / "c10")}),
        ("imagefolder", {"root": str(tmp_path / "img")}),
    ]:
        ds = load_dataset(name, **kwargs)
        scores = score_file(ds, tmp_path / f"{name}.npz")
        out = tmp_path / f"{name}-out"
        r = run(compress_args(scores, name, kwargs["root"], keep, out))
        assert r.exit_code == 0, r.output
        idx = np.load(out / "indices.npy", allow_pickle=False)
        back = load_dataset(name, root=str(out))
        assert len(back) == len(idx) and back.classes == ds.classes
        np.testing.assert_array_equal(back.labels, ds.labels[idx])
        if name == "imagefolder":
            assert back.paths == [ds.paths[i] for i in idx]
            tv = torchvision.datasets.ImageFolder(str(out / "train"), allow_empty=True)
            assert [os.path.relpath(p, out / "train") for p, _ in tv.samples] == back.paths
            assert [y for _, y in tv.samples] == ds.labels[idx].tolist()
            test_back = load_dataset(name, root=str(out), split="test")
            assert test_back.paths == load_dataset(name, root=kwargs["root"], split="test").paths
        else:
            np.testing.assert_array_equal(back.images, ds.images[idx])
        if name == "fashion-mnist":
            tv_images = read_image_file(str(out / "train-images-idx3-ubyte")).numpy()
            np.testing.assert_array_equal(tv_images, ds.images[idx, :, :, 0])
            np.testing.assert_array_equal(
                read_label_file(str(out / "train-labels-idx1-ubyte")).numpy(), ds.labels[idx]
            )
        if name == "cifar10":
            tv = _tv_cifar(out)
            np.testing.assert_array_equal(tv.data, ds.images[idx])
            assert tv.targets == ds.labels[idx].tolist() and tv.classes == ds.classes


def test_compressed_outputs_keep_the_umask(tmp_path):
    make_fmnist(tmp_path / "src", n=20)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "src"))
    old = os.umask(0o022)
    try:
        compress(ds, select(np.arange(20.0), ds.labels, 10, 5), str(tmp_path / "o"))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "o").st_mode & 0o777 == 0o755
    assert os.stat(tmp_path / "o" / "manifest.json").st_mode & 0o777 == 0o644


def test_odd_file_names_load_back(tmp_path):
    """Names with spaces, unicode, '#' and a leading space survive compress and reload."""
    from PIL import Image

    names = ["a b.png", "ünï.png", "#hash.png", " lead.png", "x.JPEG"]
    for c in ("c0", "c 1"):
        (tmp_path / "src" / c).mkdir(parents=True)
        for i, n in enumerate(names):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(
                tmp_path / "src" / c / n, format="PNG" if n.endswith(".png") else "JPEG"
            )
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"))
    assert len(ds) == 10
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(compress_args(scores, "imagefolder", tmp_path / "src", "1.0", tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert load_dataset("imagefolder", root=str(tmp_path / "o")).paths == ds.paths
    listed = load_dataset(
        "imagefolder",
        root=str(tmp_path / "o" / "train"),
        file_list=str(tmp_path / "o" / "file_list.txt"),
    )
    assert listed.paths == ds.paths
    assert SampleStats.load(tmp_path / "s.npz").paths == ds.paths


# ---------------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_without_writing_scores(tmp_path):
    cfg = tiny_config(256, 3, lr=1e30, max_nonfinite_steps=3)
    with pytest.raises(DivergedError, match="consecutive steps"):
        train_job(cfg, str(tmp_path / "o"), quiet=True)
    assert not (tmp_path / "o" / "convnet-run0" / "scores.npz").exists()
    assert not (tmp_path / "o" / "merged.npz").exists()


def test_a_killed_compress_leaves_nothing_behind_the_next_run(tmp_path, monkeypatch):
    import easyhard.outputs as om

    make_folder(tmp_path / "src", per_class=5)
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"))
    sel = select(np.arange(10.0), ds.labels, 2, 6)
    real = om.seal_output

    def killed(*a, **k):
        raise SystemExit(137)  # as good as a SIGKILL at the last moment: no cleanup ran

    monkeypatch.setattr(om, "seal_output", killed)
    monkeypatch.setattr(om, "_discard_build", lambda *a, **k: None)  # the except clause never ran
    with pytest.raises(SystemExit):
        compress(ds, sel, str(tmp_path / "out"))
    monkeypatch.undo()
    (tmp_path / ".out.partial-user").mkdir()  # a look-alike without the marker is not ours
    (tmp_path / ".out.partial-user" / "mine.txt").write_text("mine")
    assert len([p for p in os.listdir(tmp_path) if p.startswith(".out.partial-")]) == 2
    compress(ds, sel, str(tmp_path / "out"))
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith(".out")) == [".out.partial-user"]
    assert (tmp_path / ".out.partial-user" / "mine.txt").read_text() == "mine"
    assert real is om.seal_output


_NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", "..") and not n.startswith("."))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    classes=st.lists(_NAME, min_size=2, max_size=3, unique=True),
    stems=st.lists(_NAME, min_size=1, max_size=3, unique=True),
)
def test_any_file_names_survive_scores_compress_and_reload(tmp_path_factory, classes, stems):
    """Property: whatever the class and file names (spaces, '#', unicode, newlines), the score
    file keeps every path, and the compressed folder loads back to exactly the same examples, by
    its class folders and (where names allow one) by its file list."""
    from PIL import Image

    root = tmp_path_factory.mktemp("names")
    for c in classes:
        (root / "src" / c).mkdir(parents=True)
        for j, stem in enumerate(stems):
            Image.new("RGB", (4, 4), (j * 50, 0, 0)).save(root / "src" / c / f"{stem}.png")
    ds = load_dataset("imagefolder", root=str(root / "src"))
    assert len(ds) == len(classes) * len(stems)
    scores = score_file(ds, root / "s.npz")
    assert SampleStats.load(scores).paths == ds.paths
    sel = select(np.arange(len(ds), dtype=float), ds.labels, ds.num_classes, "1.0")
    compress(ds, sel, str(root / "o"))
    back = load_dataset("imagefolder", root=str(root / "o"))
    assert back.paths == ds.paths and back.labels.tolist() == ds.labels.tolist()
    if (root / "o" / "file_list.txt").exists():
        listed = load_dataset(
            "imagefolder",
            root=str(root / "o" / "train"),
            file_list=str(root / "o" / "file_list.txt"),
        )
        assert listed.paths == ds.paths and listed.labels.tolist() == ds.labels.tolist()
    else:
        assert any("\n" in p or "\r" in p for p in ds.paths)


def test_force_names_another_commands_output(tmp_path):
    """--force into the output of another easyhard command: refused, saying whose it is (it said
    'not an earlier easyhard output'); a folder of the user's keeps the general refusal."""
    from easyhard.io import OutputExistsError, check_replaceable

    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "overlap.json").write_text('{"format": "easyhard.overlap"}')
    with pytest.raises(OutputExistsError, match=r"another kind of easyhard output \(easyhard\.ov"):
        check_replaceable(str(tmp_path / "ov"), "selection.json", "easyhard.selection", True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.json").write_text('{"format": "mine"}')
    with pytest.raises(OutputExistsError, match="is not an earlier easyhard output"):
        check_replaceable(str(tmp_path / "mine"), "selection.json", "easyhard.selection", True)
    assert (tmp_path / "ov" / "overlap.json").exists() and (tmp_path / "mine").exists()


def test_force_names_a_file_added_deep_inside_an_output(tmp_path):
    """A file a user added inside an output's sub-folder stops --force, and the message names it
    (it said only how many files there were)."""
    from easyhard.io import OutputExistsError, check_replaceable, seal_output

    out = tmp_path / "out"
    (out / "train" / "c0").mkdir(parents=True)
    (out / "train" / "c0" / "0.png").write_bytes(b"x")
    os.utime(out / "train" / "c0" / "0.png", (1e9, 1e9))  # a hard-linked source keeps its time
    seal_output(str(out), "manifest.json", {"format": "easyhard.subset"})
    check_replaceable(str(out), "manifest.json", "easyhard.subset", True)  # its own: replaceable
    mine = out / "train" / "c0" / "notes.txt"
    mine.write_text("mine")
    later = os.stat(out / "manifest.json").st_mtime + 5
    os.utime(mine, (later, later))
    with pytest.raises(
        OutputExistsError, match=r"holds .*c0/notes\.txt, which easyhard did not write, added after"
    ):  # noqa: E501
        check_replaceable(str(out), "manifest.json", "easyhard.subset", True)
    assert mine.read_text() == "mine"


def test_identity_differences_name_each_change_once():
    from easyhard.runfolder import identity_differences

    old = {"seed": 0, "arch": "convnet", "config": {"seed": 0, "epochs": 1}}
    new = {"seed": 3, "arch": "convnet", "config": {"seed": 3, "epochs": 2}}
    assert identity_differences(old, new) == ["epochs: 1 -> 2", "seed: 0 -> 3"]


def test_crafted_scores_files_are_refused_not_ranked(tmp_path):
    """A NaN or infinite score in a merged file was accepted (select --strategy hardest then kept
    examples by dataset index); float labels were truncated; NaN sums in a statistics file."""
    from easyhard.statsfile import read_archive, write_archive

    out = tmp_path / "runs"
    assert run(["score", *SMALL, "--out", out]).exit_code == 0
    merged = out / "merged.npz"
    arrays = read_archive(merged)
    meta = json.loads(str(arrays.pop("metadata")))
    for change, needle in [
        (
            lambda a: a["score_easiness"].__setitem__(3, np.nan),
            "score 'easiness' of example 3 is nan",
        ),  # noqa: E501
        (lambda a: a["score_el2n"].__setitem__(5, np.inf), "score 'el2n' of example 5 is inf"),
        (
            lambda a: a.__setitem__("label", a["label"].astype(np.float64) + 0.5),
            "labels are never truncated",
        ),  # noqa: E501
    ]:
        crafted = {k: v.copy() for k, v in arrays.items()}
        change(crafted)
        write_archive(tmp_path / "crafted.npz", crafted, meta)
        r = run(["select", tmp_path / "crafted.npz", "--keep", "0.5", "--strategy", "hardest",
                 "--out", tmp_path / "sel"])  # fmt: skip
        assert r.exit_code == 1 and needle in r.output, r.output
        assert not (tmp_path / "sel").exists()
    stats = out / "convnet-run0" / "scores.npz"
    arrays = read_archive(stats)
    meta = json.loads(str(arrays.pop("metadata")))
    arrays["total_sums"][2, 0] = np.nan
    write_archive(tmp_path / "stats.npz", arrays, meta)
    r = run(["select", tmp_path / "stats.npz", "--keep", "0.5", "--out", tmp_path / "sel"])
    assert r.exit_code == 1 and "'total_sums' holds NaN or infinite values" in r.output


def test_a_killed_merge_leaves_the_old_file_and_the_next_replaces_it(tmp_path, monkeypatch):
    """merge writes one file, atomically: killed before its rename, the earlier merged file is
    whole and only a temporary file lies beside it; a later merge replaces the file and removes
    that temporary file once it is stale (a recent one may be another merge's write)."""
    from easyhard import io

    class Killed(BaseException):
        pass

    out = tmp_path / "out"
    assert run(["score", *SMALL, "--out", out, "--runs", "2"]).exit_code == 0
    runs = [out / f"convnet-run{k}" / "scores.npz" for k in (0, 1)]
    merged = tmp_path / "m.npz"
    assert run(["merge", runs[0], "--out", merged]).exit_code == 0
    before = merged.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(io.os, "replace", lambda a, b: (_ for _ in ()).throw(Killed()))
        m.setattr(io, "remove_owned", lambda *a, **k: [])  # a kill runs no clean-up
        with pytest.raises(Killed):
            run(["merge", *runs, "--out", merged])
    assert merged.read_bytes() == before
    (left,) = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # what the kill left
    os.utime(tmp_path / left, (0, 0))  # long ago
    r = run(["merge", *runs, "--out", merged])
    assert r.exit_code == 0, r.output
    assert merged.read_bytes() != before
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []

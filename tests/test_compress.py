"""Tests of `easyhard select` / `easyhard compress`: each output format read back, refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from helpers import cli as run
from helpers import compress_args
from test_datasets import make_fmnist, make_folder, write_cifar10

from easyhard import SampleStats
from easyhard.compress import compress
from easyhard.datasets import load_dataset
from easyhard.loaders import TensorLoader, make_loader
from easyhard.select import select


def score_file(dataset, path, epochs=2, seed=0):
    """A statistics file for `dataset` from random logits (identity and fingerprint as a real
    run)."""
    g = torch.Generator().manual_seed(seed)
    N, C = len(dataset), dataset.num_classes
    stats = SampleStats(
        N,
        C,
        labels=dataset.labels,
        paths=getattr(dataset, "paths", None),
        fingerprint=dataset.fingerprint,
    )
    labels = torch.from_numpy(dataset.labels)
    for _ in range(epochs):
        logits = torch.randn(N, C, generator=g) * 2
        stats.update(logits, labels, torch.arange(N))
        stats.end_epoch()
    stats.save(path, metadata={"dataset": dataset.name})
    return str(path)


def test_select_command(tmp_path):
    ds = load_dataset("synthetic", num_samples=60, num_classes=3, image_size=4)
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(["select", scores, "--keep", "0.5", "--balanced", "--out", tmp_path / "sel"])
    assert r.exit_code == 0, r.output
    assert "kept 30 of 60 examples" in r.output and "class  kept / size" in r.output
    idx = np.load(tmp_path / "sel" / "indices.npy", allow_pickle=False)
    assert len(idx) == 30 and (np.diff(idx) > 0).all()
    assert (tmp_path / "sel" / "indices.txt").read_text().split() == [str(i) for i in idx]
    record = json.loads((tmp_path / "sel" / "selection.json").read_text())
    # the defaults: stratified (coverage-centric), class-balanced (what measured best)
    assert sum(record["kept_per_class"]) == 30 and record["strategy"] == "stratified"
    assert record["balanced"] and record["kept_per_class"] == [10, 10, 10]
    again = run(["select", scores, "--keep", "0.5", "--out", tmp_path / "sel"])
    assert again.exit_code != 0 and "not empty" in again.output
    js = run(
        [
            "select",
            scores,
            "--keep",
            "10",
            "--strategy",
            "random",
            "--json",
            "--force",
            "--out",
            tmp_path / "sel",
        ]
    )
    assert js.exit_code == 0 and json.loads(js.output)["kept"] == 10


def test_select_refuses_bad_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    r = run(["select", tmp_path / "junk.npz", "--keep", "0.5", "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "it is not an .npz archive" in r.output
    ds = load_dataset("synthetic", num_samples=20, num_classes=2, image_size=4)
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(["select", scores, "--keep", "1.5", "--out", tmp_path / "o"])
    assert r.exit_code != 0 and "fraction must be in (0, 1]" in r.output


def test_compress_imagefolder(tmp_path):
    import torchvision

    make_folder(tmp_path / "src" / "train", classes=("a", "b", "c"), per_class=6)
    ds = load_dataset("imagefolder", root=str(tmp_path / "src" / "train"))
    before = {p: os.path.getsize(os.path.join(ds.root, p)) for p in ds.paths}
    scores = score_file(ds, tmp_path / "s.npz")
    out = tmp_path / "small"
    r = run(compress_args(scores, "imagefolder", ds.root, "0.5", out, "--balanced"))
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kept"] == 9 and manifest["kept_per_class"] == {"0": 3, "1": 3, "2": 3}
    assert manifest["source"]["fingerprint"] == ds.fingerprint
    assert 0 < manifest["bytes_after"] < manifest["bytes_before"]
    idx = np.load(out / "indices.npy")
    small = load_dataset("imagefolder", root=str(out / "train"))
    assert small.paths == [ds.paths[i] for i in idx] and small.classes == ds.classes
    np.testing.assert_array_equal(small.labels, ds.labels[idx])
    tv = torchvision.datasets.ImageFolder(str(out / "train"))
    assert [os.path.relpath(p, out / "train") for p, _ in tv.samples] == small.paths
    assert [y for _, y in tv.samples] == small.labels.tolist()
    files = load_dataset(
        "imagefolder", root=str(out / "train"), file_list=str(out / "file_list.txt")
    )
    assert files.paths == small.paths
    # Hard links by default; the source is untouched.
    src = os.path.join(ds.root, small.paths[0])
    assert os.path.samefile(src, out / "train" / small.paths[0])
    assert {p: os.path.getsize(os.path.join(ds.root, p)) for p in ds.paths} == before
    for x, y, i in make_loader(small, 4, backend="torch", crop=8, num_workers=0):
        assert x.shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("link", ["symlink", "copy"])
def test_compress_link_modes(tmp_path, link):
    make_folder(tmp_path / "src", per_class=4)
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"))
    sel = select(np.arange(8.0), ds.labels, 2, 4)
    compress(ds, sel, str(tmp_path / "out"), link=link)
    p = tmp_path / "out" / "train" / ds.paths[sel.indices[0]]
    assert p.is_symlink() == (link == "symlink") and p.read_bytes()


def test_compress_fashion_mnist_format(tmp_path):
    make_fmnist(tmp_path / "src", n=40)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "src"))
    scores = score_file(ds, tmp_path / "s.npz")
    out = tmp_path / "fm"
    r = run(compress_args(scores, "fashion-mnist", tmp_path / "src", "25%", out))
    assert r.exit_code == 0, r.output
    small = load_dataset("fashion-mnist", root=str(out))
    idx = np.load(out / "indices.npy")
    assert len(small) == 10
    np.testing.assert_array_equal(small.images, ds.images[idx])
    np.testing.assert_array_equal(small.labels, ds.labels[idx])
    test = load_dataset("fashion-mnist", root=str(out), split="test")  # the test split comes along
    np.testing.assert_array_equal(
        test.images, load_dataset("fashion-mnist", root=str(tmp_path / "src"), split="test").images
    )
    assert sorted(np.concatenate([b[2].numpy() for b in TensorLoader(small, 4)])) == list(range(10))


def test_compress_cifar_format(tmp_path):
    write_cifar10(tmp_path / "src")
    ds = load_dataset("cifar10", root=str(tmp_path / "src"))
    scores = score_file(ds, tmp_path / "s.npz")
    out = tmp_path / "c10"
    r = run(
        compress_args(scores, "cifar10", tmp_path / "src", "7", out, "--strategy", "stratified")
    )
    assert r.exit_code == 0, r.output
    small = load_dataset("cifar10", root=str(out))
    idx = np.load(out / "indices.npy")
    np.testing.assert_array_equal(small.images, ds.images[idx])
    np.testing.assert_array_equal(small.labels, ds.labels[idx])
    assert small.classes == ds.classes
    assert len(load_dataset("cifar10", root=str(out), split="test")) == 4


def test_compress_refusals(tmp_path):
    make_fmnist(tmp_path / "src", n=20)
    make_fmnist(tmp_path / "other", n=21)
    ds = load_dataset("fashion-mnist", root=str(tmp_path / "src"))
    scores = score_file(ds, tmp_path / "s.npz")
    r = run(compress_args(scores, "fashion-mnist", tmp_path / "other", "0.5", tmp_path / "o1"))
    assert r.exit_code != 0 and "fingerprint" in r.output and "other data" in r.output
    assert "(fashion-mnist)" in r.output  # what the scores were made on
    assert not (tmp_path / "o1").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("precious")
    r = run(compress_args(scores, "fashion-mnist", tmp_path / "src", "0.5", tmp_path / "full"))
    assert r.exit_code != 0 and "--force" in r.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    # --force replaces only an earlier easyhard output, never a user's file (issue 8).
    r = run(
        compress_args(
            scores, "fashion-mnist", tmp_path / "src", "0.5", tmp_path / "full", "--force"
        )
    )
    assert r.exit_code != 0 and "not an earlier easyhard output" in r.output
    assert (tmp_path / "full" / "keep.txt").read_text() == "precious"
    r = run(compress_args(scores, "fashion-mnist", tmp_path / "none", "0.5", tmp_path / "o2"))
    assert r.exit_code != 0 and "apt-get install dataset-fashion-mnist" in r.output


def test_killed_compress_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    make_folder(tmp_path / "src", per_class=5)
    ds = load_dataset("imagefolder", root=str(tmp_path / "src"))
    sel = select(np.arange(10.0), ds.labels, 2, 6)
    import easyhard.datasets as dm

    calls = {"n": 0}
    real = dm.place

    def dying(src, dst, mode):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed mid-way
        real(src, dst, mode)

    monkeypatch.setattr(dm, "place", dying)  # the image folder's writer places each file
    with pytest.raises(KeyboardInterrupt):
        compress(ds, sel, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".out")] == []
    assert sorted(os.listdir(tmp_path)) == ["src"]

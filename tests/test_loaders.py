"""Tests of easyhard.loaders: exact coverage, sharding, determinism, layout, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from easyhard.datasets import load_dataset
from easyhard.loaders import (
    CorruptImageError,
    DaliLoader,
    TensorLoader,
    TorchImageLoader,
    augment,
    dali_available,
    make_loader,
)

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed")


def collect(loader):
    idx, lab, shapes = [], [], []
    for images, labels, indices in loader:
        idx += indices.tolist()
        lab += labels.tolist()
        shapes.append(tuple(images.shape))
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert labels.dtype == torch.int64 and indices.dtype == torch.int64
    return idx, lab, shapes


@pytest.fixture(scope="module")
def small():
    return load_dataset("synthetic", num_samples=103, num_classes=4, image_size=12, seed=1)


def test_every_loader_follows_the_loader_protocol(small, tmp_path):
    """One interface: iterate to (images, labels, indices), len, set_epoch, skipped; the same
    rank/world_size names; the same epoch order for the same examples and seed."""
    from easyhard.loaders import Loader

    files = jpeg_folder(tmp_path / "data", per_class=3)
    loaders = [
        TensorLoader(small, 8, seed=4, rank=1, world_size=2),
        TorchImageLoader(files, 4, crop=16, num_workers=0, seed=4, rank=1, world_size=2),
    ]
    if dali_available():
        loaders.append(
            DaliLoader(files, 4, "cpu", crop=16, num_threads=1, seed=4, rank=1, world_size=2)
        )
    for loader in loaders:
        assert isinstance(loader, Loader), type(loader).__name__
        assert loader.skipped == [] and (loader.rank, loader.world_size) == (1, 2)
        loader.set_epoch(3)
        idx, _, _ = collect(loader)
        assert len(loader) == -(-len(idx) // loader.batch_size)
    # the shared epoch order: the file loaders agree example for example
    orders = [lo.epoch_order() for lo in loaders[1:]]
    assert all(torch.equal(orders[0], o) for o in orders)


class TestTensorLoader:
    def test_every_index_once_per_epoch(self, small):
        loader = TensorLoader(small, 16, train=True, seed=5)
        orders = []
        for _ in range(3):
            idx, lab, shapes = collect(loader)
            assert sorted(idx) == list(range(103))
            assert lab == small.labels[idx].tolist()
            assert shapes[0] == (16, 3, 12, 12) and shapes[-1] == (103 % 16, 3, 12, 12)
            orders.append(idx)
        assert orders[0] != orders[1]  # a new permutation each epoch
        assert len(loader) == 7

    def test_same_seed_same_batches(self, small):
        a, b = TensorLoader(small, 10, seed=2), TensorLoader(small, 10, seed=2)
        for (xa, ya, ia), (xb, yb, ib) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ia, ib)
        c = TensorLoader(small, 10, seed=3)
        assert collect(c)[0] != collect(TensorLoader(small, 10, seed=2))[0]

    def test_set_epoch_replays_an_epoch(self, small):
        loader = TensorLoader(small, 10, seed=2)
        first = [x.clone() for x, _, _ in loader]
        loader.set_epoch(0)
        again = [x for x, _, _ in loader]
        assert all(torch.equal(p, q) for p, q in zip(first, again))

    @pytest.mark.parametrize("world", [2, 3])
    def test_shards_together_cover_once(self, small, world):
        seen = []
        for rank in range(world):
            loader = TensorLoader(small, 8, seed=4, rank=rank, world_size=world)
            seen += collect(loader)[0]
        assert sorted(seen) == list(range(103))
        with pytest.raises(ValueError, match="rank must be in"):
            TensorLoader(small, 8, rank=world, world_size=world)

    def test_clean_view_is_dataset_order_unaugmented(self, small):
        loader = TensorLoader(small, 50, train=False)
        x, y, idx = next(iter(loader))
        assert idx.tolist() == list(range(50))
        raw = torch.from_numpy(small.images[:50]).permute(0, 3, 1, 2).float() / 255
        torch.testing.assert_close(x * loader.std + loader.mean, raw, rtol=1e-5, atol=1e-5)

    def test_subset_keeps_dataset_indices(self, small):
        loader = TensorLoader(small, 4, subset=[5, 7, 99], seed=1)
        assert sorted(collect(loader)[0]) == [5, 7, 99]
        with pytest.raises(ValueError, match="outside"):
            TensorLoader(small, 4, subset=[103])

    def test_grayscale_fashion_mnist_shape(self):
        ds = load_dataset("synthetic", num_samples=20, num_classes=3, image_size=28, channels=1)
        x, _, _ = next(iter(TensorLoader(ds, 8)))
        assert x.shape == (8, 1, 28, 28)


def test_augment_crop_and_flip_are_exact():
    x = torch.arange(2 * 4 * 5 * 1, dtype=torch.uint8).view(2, 4, 5, 1)
    assert torch.equal(augment(x, 0, False, None), x)
    g = torch.Generator().manual_seed(0)
    out = augment(x, 2, True, g)
    assert out.shape == x.shape
    # Every output is a shifted (zero-padded), possibly mirrored copy of its input.
    for b in range(2):
        padded = torch.nn.functional.pad(x[b], (0, 0, 2, 2, 2, 2))
        windows = [padded[dy : dy + 4, dx : dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], w) or torch.equal(out[b], w.flip(1)) for w in windows)


def jpeg_folder(root, classes=3, per_class=7, corrupt=None):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (30 + 3 * i, 40, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / f"class{c}" / f"{i:03d}.jpg")
    if corrupt:
        # damaged inside, whole at both ends: only decoding finds it (DALI's error, then the
        # search for the file); truncated or foreign files are refused before DALI sees them
        (root / corrupt).write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 4 + b"\xff\xd9")
    return load_dataset("imagefolder", root=str(root))


def gif_folder(root, name="class1/003.jpg"):
    """jpeg_folder with one image replaced by a real GIF under a .jpg name (PIL reads it, DALI's
    decoder does not)."""
    from PIL import Image

    jpeg_folder(root)
    Image.new("RGB", (30, 40), (200, 10, 10)).save(root / name, format="GIF")
    return load_dataset("imagefolder", root=str(root))


@needs_dali
class TestDaliLoader:
    def test_every_index_once_and_labels_match(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        loader = DaliLoader(ds, 4, "cpu", crop=16, num_threads=2, seed=3)
        for _ in range(2):
            idx, lab, shapes = collect(loader)
            assert sorted(idx) == list(range(21))
            assert lab == ds.labels[idx].tolist()
            assert shapes[0] == (4, 3, 16, 16) and shapes[-1] == (1, 3, 16, 16)

    def test_two_shards_together_once(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        seen = []
        for shard in range(2):
            seen += collect(
                DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=3, rank=shard, world_size=2)
            )[0]
        assert sorted(seen) == list(range(21))

    def test_same_seed_same_order_and_clean_view(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        a = collect(DaliLoader(ds, 5, "cpu", crop=16, num_threads=1, seed=9))[0]
        b = collect(DaliLoader(ds, 5, "cpu", crop=16, num_threads=1, seed=9))[0]
        assert a == b
        clean = DaliLoader(ds, 5, "cpu", crop=16, num_threads=1, train=False)
        assert collect(clean)[0] == list(range(21))

    def test_corrupt_file_named(self, tmp_path):
        ds = jpeg_folder(tmp_path, corrupt="class1/003.jpg")
        with pytest.raises(CorruptImageError, match="class1/003.jpg"):
            collect(DaliLoader(ds, 4, "cpu", crop=16, num_threads=1))

    def test_corrupt_file_skipped_and_recorded(self, tmp_path):
        ds = jpeg_folder(tmp_path, corrupt="class1/003.jpg")
        bad = ds.paths.index("class1/003.jpg")
        loader = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, skip_corrupt=True)
        assert loader.skipped == [bad]
        idx = collect(loader)[0]
        assert sorted(idx) == [i for i in range(21) if i != bad]

    def test_gif_named_jpg_is_named(self, tmp_path):
        """PIL reads a GIF fine, DALI's decoder does not: the error still names the file."""
        ds = gif_folder(tmp_path)
        path = str(tmp_path / "class1" / "003.jpg")
        with pytest.raises(CorruptImageError) as err:
            collect(DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=2))
        assert path in str(err.value)
        with pytest.raises(CorruptImageError) as err:  # the clean view, too
            collect(DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, train=False))
        assert path in str(err.value)

    def test_gif_named_jpg_skipped_and_recorded(self, tmp_path):
        ds = gif_folder(tmp_path)
        bad = ds.paths.index("class1/003.jpg")
        loader = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, skip_corrupt=True)
        assert loader.skipped == [bad]
        for _ in range(2):
            idx = collect(loader)[0]
            assert sorted(idx) == [i for i in range(21) if i != bad]
        clean = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, train=False, skip_corrupt=True)
        assert clean.skipped == [bad]
        assert collect(clean)[0] == [i for i in range(21) if i != bad]

    def test_find_undecodable_is_dalis_verdict(self, tmp_path):
        """DALI's check rejects what DALI cannot decode (GIF, garbage, empty, missing) and keeps
        what it can (JPEG, PNG, TIFF under a .jpg name), whatever PIL thinks."""
        from PIL import Image

        from easyhard.loaders import find_corrupt, find_undecodable

        ds = jpeg_folder(tmp_path)
        files = ds.files()
        Image.new("RGB", (9, 7), (1, 2, 3)).save(tmp_path / "gif.jpg", format="GIF")
        Image.new("RGB", (9, 7), (1, 2, 3)).save(tmp_path / "tiff.jpg", format="TIFF")
        Image.new("L", (9, 7), 5).save(tmp_path / "gray.png")
        (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 4)
        (tmp_path / "empty.jpg").write_bytes(b"")
        extra = ["gif.jpg", "tiff.jpg", "gray.png", "garbage.jpg", "empty.jpg", "missing.jpg"]
        files = files[:5] + [str(tmp_path / n) for n in extra] + files[5:]
        expected = [5, 8, 9, 10]  # gif, garbage, empty, missing
        assert find_undecodable(files, threads=1) == expected
        assert find_undecodable(files, threads=2, batch_size=3) == expected
        assert find_undecodable(files, threads=1, batch_size=1) == expected
        assert 5 not in find_corrupt(files, threads=1)  # PIL reads the GIF

    def test_find_unrecognized_reads_only_signatures(self, tmp_path):
        """Files DALI's decoder would be handed are images by their first bytes; text, GIF,
        empty and missing files are not (DALI can segfault on those instead of raising)."""
        from PIL import Image

        from easyhard.loaders import find_undecodable, find_unrecognized

        names = []
        for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"),
                         ("WEBP", "webp"), ("PPM", "ppm"), ("GIF", "gif")]:  # fmt: skip
            Image.new("RGB", (9, 7), (1, 2, 3)).save(tmp_path / f"im.{ext}", format=fmt)
            names.append(f"im.{ext}")
        Image.new("L", (9, 7), 5).save(tmp_path / "gray.pgm")
        (tmp_path / "text.jpg").write_text("not an image\n")
        (tmp_path / "empty.png").write_bytes(b"")
        names += ["gray.pgm", "text.jpg", "empty.png", "missing.jpg"]
        # truncated (an interrupted copy): a good header, no end; DALI crashed on these too
        rng = np.random.default_rng(0)
        noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        for fmt, ext in [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp")]:
            noisy.save(tmp_path / f"whole.{ext}", format=fmt)
            data = (tmp_path / f"whole.{ext}").read_bytes()
            (tmp_path / f"half.{ext}").write_bytes(data[: len(data) // 2])
            names.append(f"half.{ext}")
        # data after a JPEG's end (some cameras and tools append it) is still a whole image
        jpeg = (tmp_path / "whole.jpg").read_bytes()
        (tmp_path / "appended.jpg").write_bytes(jpeg + b"\x00" * 5000)
        names.append("appended.jpg")
        files = [str(tmp_path / n) for n in names]
        bad = [6, 8, 9, 10, 11, 12, 13, 14]  # gif, text, empty, missing, the four halves
        assert find_unrecognized(files, threads=2) == bad
        # every file it lets through is one DALI decodes
        assert find_undecodable(files, threads=1) == bad
        many = files * 2000  # more than one chunk of work
        assert find_unrecognized(many, threads=2) == [
            i for i in range(len(many)) if i % len(files) in bad
        ]

    def test_a_text_file_is_refused_before_any_pipeline(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        (tmp_path / "class1" / "003.jpg").write_text("not an image\n")
        with pytest.raises(CorruptImageError, match="class1/003.jpg.*skip_corrupt"):
            DaliLoader(ds, 4, "cpu", crop=16, num_threads=1)  # the constructor, not iteration
        loader = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, skip_corrupt=True)
        assert loader.skipped == [ds.paths.index("class1/003.jpg")]
        assert len(collect(loader)[0]) == 20

    def test_epoch_is_a_function_of_seed_and_epoch(self, tmp_path):
        """A resumed run starts a fresh loader at epoch k: it must see what the uninterrupted
        loader saw in its epoch k (order and pixels), not DALI's epoch 0."""
        ds = jpeg_folder(tmp_path)

        def epoch(loader):
            batches = [(x.clone(), idx.clone()) for x, _, idx in loader]
            return torch.cat([i for _, i in batches]).tolist(), torch.cat([x for x, _ in batches])

        straight = DaliLoader(ds, 4, "cpu", crop=16, num_threads=2, seed=3)
        epochs = [epoch(straight) for _ in range(3)]  # no set_epoch: iteration advances it
        assert straight.epoch == 3
        fresh = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=3)
        fresh.set_epoch(2)
        idx, x = epoch(fresh)
        assert idx == epochs[2][0] and torch.equal(x, epochs[2][1])
        fresh.set_epoch(0)  # replaying an epoch gives it again
        expected = fresh.epoch_order().tolist()  # the order shared with TorchImageLoader
        idx, x = epoch(fresh)
        assert idx == expected == epochs[0][0] and torch.equal(x, epochs[0][1])
        assert epochs[0][0] != epochs[1][0] != epochs[2][0]  # a new order every epoch
        other = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=4)
        assert epoch(other)[0] != epochs[0][0]

    @pytest.mark.parametrize("epoch", [0, 1, 5])
    def test_shards_cover_once_every_epoch(self, tmp_path, epoch):
        ds = jpeg_folder(tmp_path)
        seen, orders = [], []
        for shard in range(2):
            loader = DaliLoader(
                ds, 4, "cpu", crop=16, num_threads=1, seed=3, rank=shard, world_size=2
            )
            loader.set_epoch(epoch)
            expected = loader.epoch_order().tolist()
            idx, lab, _ = collect(loader)
            assert idx == expected
            assert lab == ds.labels[idx].tolist() and len(loader) == -(-len(idx) // 4)
            seen += idx
            orders.append(idx)
        assert sorted(seen) == list(range(21))
        assert len(orders[0]) == 11 and len(orders[1]) == 10

    def test_clean_view_repeats_and_recovers_from_an_abandoned_pass(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        clean = DaliLoader(ds, 5, "cpu", crop=16, num_threads=1, train=False)
        first = [x.clone() for x, _, _ in clean]
        next(iter(clean))  # a pass stopped part-way
        again = [(x, idx) for x, _, idx in clean]
        assert torch.cat([i for _, i in again]).tolist() == list(range(21))
        assert all(torch.equal(a, b) for a, (b, _) in zip(first, again))


class TestTorchImageLoader:
    def test_every_index_once_shards_and_determinism(self, tmp_path):
        ds = jpeg_folder(tmp_path)
        loader = TorchImageLoader(ds, 4, crop=16, num_workers=0, seed=1)
        idx, lab, shapes = collect(loader)
        assert sorted(idx) == list(range(21)) and lab == ds.labels[idx].tolist()
        assert shapes[0] == (4, 3, 16, 16)
        seen = []
        for shard in range(2):
            seen += collect(
                TorchImageLoader(ds, 4, crop=16, num_workers=0, seed=1, rank=shard, world_size=2)
            )[0]
        assert sorted(seen) == list(range(21))
        x1 = [x for x, _, _ in TorchImageLoader(ds, 4, crop=16, num_workers=0, seed=7)]
        x2 = [x for x, _, _ in TorchImageLoader(ds, 4, crop=16, num_workers=0, seed=7)]
        assert all(torch.equal(a, b) for a, b in zip(x1, x2))
        assert collect(TorchImageLoader(ds, 4, crop=16, num_workers=2, train=False))[0] == list(
            range(21)
        )

    def test_corrupt_file_named_or_skipped(self, tmp_path):
        ds = jpeg_folder(tmp_path, corrupt="class2/000.jpg")
        with pytest.raises(CorruptImageError, match="class2/000.jpg"):
            collect(TorchImageLoader(ds, 4, crop=16, num_workers=0))
        loader = TorchImageLoader(ds, 4, crop=16, num_workers=0, skip_corrupt=True)
        bad = ds.paths.index("class2/000.jpg")
        assert sorted(collect(loader)[0]) == [i for i in range(21) if i != bad]
        assert loader.skipped == [bad]


@pytest.mark.parametrize("kind", ["dali", "torch"])
def test_file_loaders_read_a_subset_and_check_only_its_files(tmp_path, kind):
    """An experiment's cell trains a file dataset on a subset, as TensorLoader does: the
    subset's dataset indices once an epoch, nothing else; with skip_corrupt an unreadable file of
    the subset is dropped and listed, one outside it is neither read (DALI checks only the
    subset's files) nor listed; an index outside the dataset is refused."""
    if kind == "dali" and not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    ds = jpeg_folder(tmp_path, corrupt="class1/003.jpg")
    bad = ds.paths.index("class1/003.jpg")

    def make(subset, **kw):
        if kind == "dali":
            return DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, subset=subset, **kw)
        return TorchImageLoader(ds, 4, crop=16, num_workers=0, subset=subset, **kw)

    subset = [20, 0, 5, 13, 2]  # no unreadable file: no check fails, with or without skipping
    for skip_corrupt in (False, True):
        loader = make(subset, seed=4, skip_corrupt=skip_corrupt)
        for _ in range(2):
            idx, lab, _ = collect(loader)
            assert sorted(idx) == sorted(subset) and lab == ds.labels[idx].tolist()
        assert loader.skipped == []
    loader = make([*subset, bad], seed=4, skip_corrupt=True)
    assert sorted(collect(loader)[0]) == sorted(subset) and loader.skipped == [bad]
    with pytest.raises(ValueError, match="outside"):
        make([0, len(ds)])


@pytest.mark.parametrize("kind", ["dali", "torch"])
def test_a_skipped_file_is_worded_by_its_split(tmp_path, kind, caplog):
    """Skipping an unreadable training file records it as never presented; skipping a held-out
    one leaves it out of the test accuracy (a test image is never 'presented')."""
    if kind == "dali" and not dali_available():
        pytest.skip("NVIDIA DALI is not installed")
    jpeg_folder(tmp_path / "train", classes=2, corrupt="class1/003.jpg")
    jpeg_folder(tmp_path / "val", classes=2, per_class=5, corrupt="class0/001.jpg")
    for split, words in (("train", "recorded as never presented"), ("test", "test accuracy")):
        ds = load_dataset("imagefolder", root=str(tmp_path), split=split)
        caplog.clear()
        if kind == "dali":
            loader = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, skip_corrupt=True)
        else:
            loader = TorchImageLoader(ds, 4, crop=16, num_workers=0, skip_corrupt=True)
        collect(loader)
        assert len(loader.skipped) == 1 and words in caplog.text, caplog.text


def test_make_loader_picks(tmp_path, small):
    assert isinstance(make_loader(small, 8), TensorLoader)
    ds = jpeg_folder(tmp_path)
    assert isinstance(make_loader(ds, 4, backend="torch", crop=16), TorchImageLoader)
    if dali_available():
        assert isinstance(make_loader(ds, 4, crop=16, num_threads=1), DaliLoader)
    with pytest.raises(ValueError, match="backend must be"):
        make_loader(ds, 4, backend="pil")


def test_channel_stats_match_numpy():
    from easyhard.loaders import channel_stats

    imgs = np.random.default_rng(0).integers(0, 256, (1000, 5, 6, 3), dtype=np.uint8)
    mean, std = channel_stats(imgs, chunk=77)
    flat = imgs.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, flat.std(0), rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 90),
    batch=st.integers(1, 40),
    world=st.integers(1, 4),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 5),
    train=st.booleans(),
)
def test_tensor_loader_covers_every_index_once(n, batch, world, seed, epoch, train):
    ds = load_dataset("synthetic", num_samples=n, num_classes=3, image_size=4, seed=1)
    seen = []
    for rank in range(world):
        loader = TensorLoader(ds, batch, train=train, seed=seed, rank=rank, world_size=world)
        loader.set_epoch(epoch)
        batches = [idx.tolist() for _, _, idx in loader]
        assert len(batches) == len(loader)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(n))


def test_image_folder_resume_equals_uninterrupted(tmp_path, killed_after_epoch):
    """train_run on image files (DALI when installed, else the torch loader), killed after epoch 1
    and resumed, ends with the same bits as an uninterrupted run (training and clean views)."""
    from easyhard.train import ScoreConfig, train_run

    jpeg_folder(tmp_path / "data", classes=3, per_class=8)
    cfg = ScoreConfig(
        dataset="imagefolder",
        data_dir=str(tmp_path / "data"),
        archs=("convnet",),
        epochs=3,
        crop=16,
        batch_size=8,
        device="cpu",
        workers=1,
        clean_every=1,
    )
    train_run(cfg, "convnet", 0, str(tmp_path / "straight"), quiet=True)
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True)
    assert not (tmp_path / "cut" / "convnet-run0" / "scores.npz").exists()
    train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True, resume=True)
    for name in ("scores.npz", "scores_clean.npz"):
        with (
            np.load(tmp_path / "straight" / "convnet-run0" / name, allow_pickle=False) as a,
            np.load(tmp_path / "cut" / "convnet-run0" / name, allow_pickle=False) as b,
        ):
            assert a["history"].shape[0] == 3
            np.testing.assert_array_equal(a["history"], b["history"], err_msg=name)


def changing_subsets(n: int, epochs: int, seed: int = 0) -> list[np.ndarray]:
    """A different kept set per epoch, as pruning during training gives: all, then random
    subsets of changing size (one of them empty for a shard of two: a single example)."""
    rng = np.random.default_rng(seed)
    sizes = [n, n // 2, 1, n - 3, n // 3][:epochs]
    return [np.sort(rng.choice(n, size=s, replace=False)) for s in sizes]


def check_subsets_once(make, ds, world: int) -> None:
    """Each rank's loader (make(rank, world)) given each epoch's kept set presents exactly it:
    every kept example once over the ranks, nothing else, labels its own, len() its batches."""
    loaders = [make(rank, world) for rank in range(world)]
    for epoch, kept in enumerate(changing_subsets(len(ds.labels), 5)):
        seen = []
        for loader in loaders:
            loader.set_subset(torch.from_numpy(kept))
            loader.set_epoch(epoch)
            idx, lab, _ = collect(loader)
            assert lab == ds.labels[idx].tolist()
            assert len(loader) == -(-len(idx) // loader.batch_size), (epoch, loader.rank)
            seen += idx
        assert sorted(seen) == kept.tolist(), epoch


@pytest.mark.parametrize("world", [1, 2])
def test_tensor_loader_presents_a_changing_subset_once(small, world):
    check_subsets_once(
        lambda r, w: TensorLoader(small, 8, seed=2, rank=r, world_size=w), small, world
    )


@pytest.mark.parametrize("world,workers", [(1, 0), (2, 0), (1, 2)])
def test_torch_image_loader_presents_a_changing_subset_once(tmp_path, world, workers):
    """Persistent worker processes included: the sampler, in this process, reads the new set."""
    ds = jpeg_folder(tmp_path)
    check_subsets_once(
        lambda r, w: TorchImageLoader(
            ds, 4, crop=16, num_workers=workers, seed=5, rank=r, world_size=w
        ),
        ds,
        world,
    )


@needs_dali
@pytest.mark.parametrize("world", [1, 2])
def test_dali_loader_presents_a_changing_subset_once(tmp_path, world):
    ds = jpeg_folder(tmp_path)
    check_subsets_once(
        lambda r, w: DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=5, rank=r, world_size=w),
        ds,
        world,
    )


def gradient_folder(root, sizes=((64, 48), (40, 90), (120, 30), (50, 50))):
    """PNG images (width, height), k.png in class c{k % 2}, whose red channel is x / (width - 1)
    and green channel y / (height - 1): a crop's pixels tell where in the image they came from."""
    from PIL import Image

    for k, (w, h) in enumerate(sizes):
        x = np.linspace(0, 255, w)[None, :].repeat(h, 0)
        y = np.linspace(0, 255, h)[:, None].repeat(w, 1)
        arr = np.stack([x, y, np.zeros_like(x)], -1).round().astype(np.uint8)
        (root / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / f"c{k % 2}" / f"{k}.png")
    return load_dataset("imagefolder", root=str(root)), sizes


@needs_dali
@pytest.mark.parametrize("roi_decode", [True, False])
def test_dali_training_crops_follow_the_draws(tmp_path, roi_decode):
    """Each training image is the window crop_draws(seed, epoch) places: the drawn area and
    aspect ratio (shrunk, aspect kept, where it would leave the image), at the drawn place,
    flipped when drawn; read back from gradient images, within a pixel or two."""
    from easyhard.loaders.dali import crop_draws

    ds, sizes = gradient_folder(tmp_path)
    loader = DaliLoader(ds, 3, "cpu", crop=32, num_threads=1, seed=7, mean=(0, 0, 0),
                        std=(1, 1, 1), roi_decode=roi_decode)  # fmt: skip
    flips = set()
    for epoch in range(3):
        draws = crop_draws(7, epoch, np.arange(len(ds)))
        for images, _, idx in loader:
            for im, i in zip(images.float(), idx.tolist()):
                w, h = sizes[int(ds.paths[i].split("/")[-1][0])]
                area, aspect, at_x, at_y, flip = draws[i].tolist()
                rel_w, rel_h = np.sqrt(area * aspect * h / w), np.sqrt(area / aspect * w / h)
                over = max(rel_w, rel_h, 1.0)
                rel_w, rel_h = rel_w / over, rel_h / over
                x0, y0 = at_x * (1 - rel_w), at_y * (1 - rel_h)
                red, green = im[0], im[1]  # [32, 32] each, in [0, 1]
                left, right = red[:, 0].mean().item(), red[:, -1].mean().item()
                if flip:
                    left, right = right, left
                flips.add(bool(flip))
                tol = 2.5 / min(w, h) + 1 / 32
                assert abs(left - x0) < tol + rel_w / 32, (epoch, i, left, x0)
                assert abs(right - (x0 + rel_w)) < tol + rel_w / 32, (epoch, i, right)
                top, bottom = green[0].mean().item(), green[-1].mean().item()
                assert abs(top - y0) < tol + rel_h / 32, (epoch, i, top, y0)
                assert abs(bottom - (y0 + rel_h)) < tol + rel_h / 32, (epoch, i, bottom)
    assert flips == {True, False}


@needs_dali
def test_dali_augmentation_depends_on_seed_epoch_and_example_only(tmp_path):
    """A resumed run's loader (a fresh one, set to epoch 2) gives each example the images the
    uninterrupted one gives at epoch 2, and so does a loader reading a subset, or one of two
    shards: the augmentation is drawn per (seed, epoch, example), never from the pipeline."""
    ds = jpeg_folder(tmp_path)

    def images(loader, epoch):
        loader.set_epoch(epoch)
        return {i: im.clone() for x, _, idx in loader for im, i in zip(x, idx.tolist())}

    whole = DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=3)
    run = [images(whole, e) for e in range(3)]
    assert sum(not torch.equal(run[0][i], run[1][i]) for i in run[0]) > 15  # epochs differ
    resumed = DaliLoader(ds, 4, "cpu", crop=16, num_threads=2, seed=3)
    shard = DaliLoader(ds, 3, "cpu", crop=16, num_threads=1, seed=3, rank=1, world_size=2)
    shard.set_subset(torch.arange(2, 19))
    for got in (images(resumed, 2), images(shard, 2)):
        assert got and all(torch.equal(im, run[2][i]) for i, im in got.items())
    other_seed = images(DaliLoader(ds, 4, "cpu", crop=16, num_threads=1, seed=4), 2)
    assert sum(not torch.equal(other_seed[i], run[2][i]) for i in run[2]) > 15

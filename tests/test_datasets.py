"""Tests of easyhard.datasets: readers, example identity and fingerprints, refused input."""

from __future__ import annotations

import os
import pickle
import tarfile

import numpy as np
import pytest

from easyhard.datasets import FASHION_MNIST_ROOT, DatasetError, load_dataset, read_idx, write_idx

FMNIST_PRESENT = os.path.exists(
    os.path.join(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz")
) or os.path.exists(os.path.join(FASHION_MNIST_ROOT, "train-images-idx3-ubyte"))


@pytest.mark.skipif(not FMNIST_PRESENT, reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    train = load_dataset("fashion-mnist", split="train")
    test = load_dataset("fashion-mnist", split="test")
    assert train.images.shape == (60000, 28, 28, 1) and train.images.dtype == np.uint8
    assert test.images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    assert train.num_classes == 10 and train.classes[9] == "Ankle boot"
    assert train.fingerprint == load_dataset("fashion-mnist").fingerprint
    assert train.fingerprint != test.fingerprint


def make_fmnist(folder, n=12, compress=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(
            str(folder / f"{prefix}-images-idx3-ubyte{'.gz' if compress else ''}"),
            images,
            compress=compress,
        )
        write_idx(
            str(folder / f"{prefix}-labels-idx1-ubyte{'.gz' if compress else ''}"),
            labels,
            compress=compress,
        )
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reader_on_written_files(tmp_path, compress):
    images, labels = make_fmnist(tmp_path, compress=compress)
    ds = load_dataset("fashion-mnist", root=str(tmp_path))
    np.testing.assert_array_equal(ds.images[..., 0], images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_idx_errors(tmp_path):
    p = tmp_path / "x-idx3-ubyte"
    write_idx(str(p), np.zeros((3, 4, 4), np.uint8))
    np.testing.assert_array_equal(read_idx(str(p)), np.zeros((3, 4, 4)))
    p.write_bytes(p.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="truncated idx file"):
        read_idx(str(p))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="bad magic number"):
        read_idx(str(tmp_path / "bad"))


def test_missing_fashion_mnist_says_where_and_how(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", root=str(tmp_path / "nowhere"))
    assert "nowhere" in str(e.value) and "apt-get install dataset-fashion-mnist" in str(e.value)


def write_cifar10(folder, n_per_batch=4, str_keys=False):
    """CIFAR-10 python batches; `str_keys` writes str keys (read as str by torchvision, as the
    original Python 2 strings are), else bytes keys."""
    k = (lambda s: s) if str_keys else (lambda s: s.encode())
    d = folder / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, n_per_batch)]
        with open(d / name, "wb") as f:
            pickle.dump(
                {k("data"): data, k("labels"): labels, k("batch_label"): k("x")}, f, protocol=2
            )
        if name != "test_batch":
            all_images.append(data)
            all_labels += labels
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({k("label_names"): [k(f"c{i}") for i in range(10)]}, f, protocol=2)
    return np.concatenate(all_images), np.array(all_labels)


def test_cifar10_folder_and_archive(tmp_path):
    data, labels = write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.images.shape == (20, 32, 32, 3) and ds.classes[3] == "c3"
    np.testing.assert_array_equal(ds.labels, labels)
    np.testing.assert_array_equal(ds.images[5], data[5].reshape(3, 32, 32).transpose(1, 2, 0))
    assert len(load_dataset("cifar10", root=str(tmp_path), split="test")) == 4
    archive = tmp_path / "arch"
    archive.mkdir()
    with tarfile.open(archive / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_dataset("cifar10", root=str(archive))
    np.testing.assert_array_equal(from_tar.images, ds.images)
    assert from_tar.fingerprint == ds.fingerprint


def test_cifar100(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    data = np.random.default_rng(2).integers(0, 256, (6, 3072), dtype=np.uint8)
    for name in ("train", "test"):
        with open(d / name, "wb") as f:
            pickle.dump(
                {"data": data, "fine_labels": [0, 5, 99, 3, 2, 1], "coarse_labels": [0] * 6}, f
            )
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)]}, f)
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert ds.num_classes == 100 and ds.labels.tolist() == [0, 5, 99, 3, 2, 1]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_refuses_pickles_that_run_code(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar_missing(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(
        DatasetError, match="needs `data_dir`"
    ):  # library words; the CLI says --data-dir
        load_dataset("cifar100")


def make_folder(root, classes=("cat", "dog"), per_class=3, size=(20, 24)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"img{i}.jpg")


def test_imagefolder_order_labels_and_fingerprint(tmp_path):
    make_folder(tmp_path / "train")
    ds = load_dataset("imagefolder", root=str(tmp_path / "train"))
    assert ds.paths == [f"{c}/img{i}.jpg" for c in ("cat", "dog") for i in range(3)]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1] and ds.classes == ["cat", "dog"]
    fp = ds.fingerprint
    assert load_dataset("imagefolder", root=str(tmp_path / "train")).fingerprint == fp
    with open(tmp_path / "train" / "dog" / "img0.jpg", "ab") as f:
        f.write(b"\0")
    assert load_dataset("imagefolder", root=str(tmp_path / "train")).fingerprint != fp


def test_file_list(tmp_path):
    make_folder(tmp_path / "data")
    lst = tmp_path / "list.txt"
    lst.write_text("dog/img1.jpg 1\ncat/img2.jpg 0\n\n# comment\n")
    ds = load_dataset("imagefolder", root=str(tmp_path / "data"), file_list=str(lst))
    assert ds.paths == ["cat/img2.jpg", "dog/img1.jpg"] and ds.labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "line, message",
    [
        ("../secret.jpg 0", "escapes the dataset root"),
        ("/etc/passwd 0", "escapes the dataset root"),
        ("cat/../../x.jpg 0", "escapes the dataset root"),
        ("cat/img0.jpg", "expected 'relative/path label'"),
        ("cat/img0.jpg 1.5", r"list.txt:1: expected 'relative/path label', got 'cat/img0.jpg 1.5'"),
        ("cat/img9.jpg 0", "missing under"),
        ("cat/img0.jpg -1", "negative label"),
    ],
)
def test_file_list_refused(tmp_path, line, message):
    make_folder(tmp_path / "data")
    lst = tmp_path / "list.txt"
    lst.write_text(line + "\n")
    with pytest.raises(DatasetError, match=message):
        load_dataset("imagefolder", root=str(tmp_path / "data"), file_list=str(lst))


def test_imagefolder_refused(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("imagefolder", root=str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        load_dataset("imagefolder", root=str(tmp_path / "empty"))


def test_synthetic_is_deterministic_and_unknown_names_refused():
    a = load_dataset("synthetic", num_samples=50, num_classes=5, image_size=8, seed=3)
    b = load_dataset("synthetic", num_samples=50, num_classes=5, image_size=8, seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.fingerprint == b.fingerprint and a.images.shape == (50, 8, 8, 3)
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(DatasetError, match="split must be"):
        load_dataset("fashion-mnist", split="val")


def test_unknown_keywords_are_refused_and_data_dir_is_root(tmp_path):
    """load_dataset passed every keyword it did not know to the synthetic generator, which only
    synthetic data calls: `train=False` loaded the training split, `data_dir=OUT` (the command
    line's name) loaded the default Fashion-MNIST instead of a compressed copy (found by a
    careless-user helper)."""
    make_fmnist(tmp_path / "fm", n=20)
    with pytest.raises(TypeError, match="split='test', not torchvision's train=False"):
        load_dataset("fashion-mnist", root=tmp_path / "fm", train=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'download'"):
        load_dataset("fashion-mnist", root=tmp_path / "fm", download=True)
    with pytest.raises(TypeError, match="'num_samples'"):
        load_dataset("imagefolder", tmp_path, num_samples=5)
    with pytest.raises(TypeError, match="one argument"):
        load_dataset("fashion-mnist", tmp_path / "fm", data_dir=tmp_path / "other")
    with pytest.raises(TypeError):
        load_dataset("synthetic", num_samples=5, train=False)
    # synthetic data: a split typo gave the test split, a root was ignored, a keyword typo named
    # an internal function, an unknown name was blamed on its keywords
    with pytest.raises(DatasetError, match="split must be 'train' or 'test', got 'Train'"):
        load_dataset("synthetic", num_samples=5, split="Train")
    with pytest.raises(TypeError, match="it takes no root"):
        load_dataset("synthetic", data_dir=tmp_path)
    with pytest.raises(TypeError, match="'num_sample' for 'synthetic'"):
        load_dataset("synthetic", num_sample=5)
    with pytest.raises(DatasetError, match="unknown dataset 'Synthetic'"):
        load_dataset("Synthetic", num_classes=3)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "fm", split="test")
    assert len(ds) == len(load_dataset("fashion-mnist", tmp_path / "fm", "test")) != 60000
    with pytest.raises(DatasetError, match="not found in"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")


def test_imagefolder_splits(tmp_path):
    make_folder(tmp_path / "train")
    make_folder(tmp_path / "val", per_class=1)
    assert len(load_dataset("imagefolder", root=str(tmp_path))) == 6
    assert len(load_dataset("imagefolder", root=str(tmp_path), split="test")) == 2
    # train/ given for the data folder: the parent holding val/ is named (found by a
    # careless-user helper)
    with pytest.raises(DatasetError, match="has no test split.*holds val/ beside it: give that"):
        load_dataset("imagefolder", root=str(tmp_path / "train"), split="test")


def test_an_image_folders_examples_are_its_distinct_files(tmp_path, caplog):
    """However links inside it point: a link to an image of the same class, or a linked folder
    of the class, is not a second example (logged); a link that would give one file two labels
    is refused naming both paths; a link back up does not loop; a file list naming one file by
    two paths is refused naming both lines."""
    make_folder(tmp_path / "data", classes=("cat", "dog"), per_class=2)
    root = tmp_path / "data"
    os.symlink("img0.jpg", root / "cat" / "again.jpg")  # the same image, the same class
    (root / "cat" / "more").mkdir()
    os.symlink("..", root / "cat" / "more" / "back")  # a loop back to the class folder
    os.symlink("../img1.jpg", root / "cat" / "more" / "x.jpg")
    ds = load_dataset("imagefolder", root=str(root))
    assert ds.paths == ["cat/img0.jpg", "cat/img1.jpg", "dog/img0.jpg", "dog/img1.jpg"]
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert "link" in caplog.text
    os.symlink("nothing.jpg", root / "cat" / "broken.jpg")  # a link to nothing: no image
    assert load_dataset("imagefolder", root=str(root)).paths == ds.paths
    assert "1 link(s) to nothing" in caplog.text and "cat/broken.jpg" in caplog.text
    os.remove(root / "cat" / "broken.jpg")
    os.symlink("../cat/img1.jpg", root / "dog" / "stolen.jpg")  # one file, two labels
    with pytest.raises(DatasetError, match=r"cat/img1.jpg \(class cat\) and dog/stolen.jpg"):
        load_dataset("imagefolder", root=str(root))
    os.remove(root / "dog" / "stolen.jpg")
    os.symlink("../cat", root / "dog" / "cats")  # a linked folder of another class
    with pytest.raises(DatasetError, match="two labels"):
        load_dataset("imagefolder", root=str(root))
    os.remove(root / "dog" / "cats")
    lst = tmp_path / "list.txt"
    lst.write_text("cat/img0.jpg 0\ndog/img1.jpg 1\ncat/again.jpg 0\n")
    with pytest.raises(DatasetError, match=r"lines 1 \(cat/img0.jpg\) and 3 \(cat/again.jpg\)"):
        load_dataset("imagefolder", root=str(root), file_list=str(lst))


def test_a_held_out_split_is_labelled_by_the_training_splits_class_names(tmp_path):
    """val/ numbers its own class folders: one lacking a class would shift every later label
    (silently wrong test accuracy); its labels follow train/'s class names instead, and a class
    train/ has not is refused."""
    make_folder(tmp_path / "d" / "train", classes=("ant", "bee", "cat"))
    make_folder(tmp_path / "d" / "val", classes=("bee", "cat"), per_class=2)
    train = load_dataset("imagefolder", root=str(tmp_path / "d"))
    val = load_dataset("imagefolder", root=str(tmp_path / "d"), split="test")
    assert val.classes == train.classes == ["ant", "bee", "cat"]
    assert val.labels.tolist() == [1, 1, 2, 2]
    assert [p.split("/")[0] for p in val.paths] == ["bee", "bee", "cat", "cat"]
    make_folder(tmp_path / "d" / "val", classes=("zebra",), per_class=1)
    with pytest.raises(DatasetError, match=r"1 class folder\(s\) the training split has not"):
        load_dataset("imagefolder", root=str(tmp_path / "d"), split="test")


def test_hidden_empty_and_lone_class_folders(tmp_path, caplog):
    """Hidden files and folders (macOS's ._x.jpg, .ipynb_checkpoints) are neither examples nor
    classes, and are reported; a class folder without images stays a class, with a warning; a
    folder or file list of one class is refused in one sentence."""
    make_folder(tmp_path / "a")
    (tmp_path / "a" / "cat" / "._img0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "a" / ".ipynb_checkpoints").mkdir()
    (tmp_path / "a" / "dog" / ".thumbs").mkdir()
    make_folder(tmp_path / "a" / "dog" / ".thumbs", classes=("x",), per_class=1)
    (tmp_path / "a" / "emu").mkdir()
    with caplog.at_level("WARNING", logger="easyhard.datasets"):
        ds = load_dataset("imagefolder", root=str(tmp_path / "a"))
    assert ds.classes == ["cat", "dog", "emu"] and len(ds) == 6
    assert not any(p.split("/")[-1].startswith(".") or "/." in p for p in ds.paths)
    assert "hidden file(s) or folder(s)" in caplog.text and "3 hidden" in caplog.text
    assert "1 class folder(s) hold no images (emu)" in caplog.text
    make_folder(tmp_path / "one", classes=("cat",))
    with pytest.raises(DatasetError, match=r"has one class folder \(cat\)"):
        load_dataset("imagefolder", root=str(tmp_path / "one"))
    (tmp_path / "list.txt").write_text("cat/img0.jpg 0\ncat/img1.jpg 0\n")
    with pytest.raises(DatasetError, match="labels every file 0"):
        load_dataset(
            "imagefolder", root=str(tmp_path / "one"), file_list=str(tmp_path / "list.txt")
        )

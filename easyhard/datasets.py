"""Datasets with stable example identity: Fashion-MNIST, CIFAR-10/100, image folders, synthetic.

Every dataset gives, for each example, a stable dataset index (its position), a label, and for
file datasets a relative path; plus a fingerprint (a short, stable hash) that goes into every
output so that scores of different data never get mixed.

    ds = load_dataset("fashion-mnist", split="train")       # ArrayDataset, uint8 NHWC in memory
    ds = load_dataset("imagefolder", root="/data/imagenet/train")   # FileDataset of JPEG/PNG paths
    ds = load_dataset("synthetic", num_samples=1000, num_classes=10, image_size=32)

Small sets (Fashion-MNIST, CIFAR, synthetic) are ArrayDatasets held in memory and fed by the
GPU-resident loader; image folders are FileDatasets read by DALI (or the torch fallback).
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import io
import logging
import os
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from typing import Callable, Sequence, Union

import numpy as np

from .io import atomic_write, place, place_tree, same_device

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively
#: What writing a subset did: (bytes of the source split, bytes written, how source files entered
#: the output: "hard", "symlink", "copy", or None when every file was written anew)
SubsetWritten = tuple[int, int, Union[str, None]]
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
MAX_CLASSES = 100_000  # more classes than any dataset easyhard is for: a label beyond is an error
log = logging.getLogger("easyhard.datasets")


class DatasetError(ValueError):
    """A dataset that cannot be found or read; the message says where and what to do."""


class CorruptImageError(DatasetError):
    """An image file that cannot be decoded; the message names it."""


class NoTestSplit(DatasetError):
    """The data has no held-out split at all (an image folder without val/ or test/, a file
    list): a scoring run trains without measuring test accuracy. A held-out split that exists
    but cannot be read raises DatasetError instead."""


class _Items:
    """Item access shared by both dataset types: ``dataset[i]`` is ``(image, label)`` as in
    torchvision's datasets, so an easyhard dataset feeds a user's own DataLoader, Subset or
    ConcatDataset. Without a `transform` the image is a uint8 CHW tensor; with one, the
    transform gets the PIL image (``transform=torchvision.transforms.ToTensor()``, or any
    augmentation) and its result is returned; `target_transform` gets the int label. The index
    is not part of the item: ``easyhard.with_indices(dataset)`` adds it."""

    transform: Callable | None
    target_transform: Callable | None

    def __getitem__(self, i: int):
        import torch

        n = len(self)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer, torch.Tensor)):
            raise TypeError(f"{self.name} is indexed by one integer, got {type(i).__name__}")
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for {self.name}'s {n} examples")
        i %= n
        label = int(self.labels[i])
        if self.target_transform is not None:
            label = self.target_transform(label)
        if self.transform is None:
            return self._tensor(i), label
        return self.transform(self._pil(i)), label

    def __iter__(self):
        # __getitem__ raises IndexError past the end; iterate by length (no legacy protocol)
        return (self[i] for i in range(len(self)))

    def with_transform(self, transform=None, target_transform=None):
        """The same dataset (same examples, fingerprint and indices) with other transforms."""
        import copy

        view = copy.copy(self)
        view.transform, view.target_transform = transform, target_transform
        return view


@dataclass
class ArrayDataset(_Items):
    """A dataset held in memory: uint8 images [N, H, W, C] (NHWC) and int64 labels [N]. A
    map-style dataset: ``ds[i]`` is ``(image, label)`` (see _Items)."""

    name: str  # e.g. "fashion-mnist"
    split: str  # "train" or "test"
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]
    classes: list[str]  # class names, label i -> classes[i]
    root: str | None = None  # where it was read from
    fingerprint: str = ""  # filled in by __post_init__ when empty
    #: Writes a subset in this dataset's own format (set by its reader; default subset.npz).
    subset_writer: Callable[..., SubsetWritten] | None = field(
        default=None, repr=False, compare=False
    )
    transform: Callable | None = field(default=None, repr=False, compare=False)
    target_transform: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DatasetError(
                f"{self.name}: images must be uint8 [N, H, W, C], got "
                f"{self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != (len(self.images),):
            raise DatasetError(
                f"{self.name}: {len(self.labels)} labels for {len(self.images)} images"
            )
        self.labels = self.labels.astype(np.int64, copy=False)
        if not self.fingerprint:
            self.fingerprint = fingerprint_arrays(self.name, self.images, self.labels)

    #: Held in memory: loaders take index subsets and put it on the device whole.
    in_memory = True

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def paths(self) -> None:
        return None

    @property
    def channels(self) -> int:
        """Channels of the images a model sees."""
        return int(self.images.shape[-1])

    def input_size(self, crop: int) -> int:
        """Side of the images a model sees: the stored images' (`crop` is for image files)."""
        return int(self.images.shape[1])

    def _tensor(self, i: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))

    def _pil(self, i: int):
        from PIL import Image

        image = self.images[i]
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)

    def sources(self) -> dict[str, str | None]:
        """What it is read from (what -> path), for the checks that no output overlaps it."""
        return {"source dataset": self.root}

    def write_subset(self, idx: np.ndarray, work: str, link: str = "hard") -> SubsetWritten:
        """Write the examples `idx` (ascending dataset indices) into folder `work` in this
        dataset's own format, so that the folder works as its data directory. Returns (bytes of
        the source split, bytes written, how source files entered: a LINK_MODES entry or None
        when every file was written anew)."""
        return (self.subset_writer or write_npz_subset)(self, idx, work, link)


@dataclass
class FileDataset(_Items):
    """Image files: relative paths (sorted; index = position), labels, and the root they are
    relative to. A map-style dataset: ``ds[i]`` is ``(image, label)``, the file decoded as RGB
    (see _Items)."""

    name: str
    split: str
    root: str
    paths: list[str]
    labels: np.ndarray  # int64 [N]
    classes: list[str]
    fingerprint: str = ""
    file_sizes: np.ndarray | None = field(default=None, repr=False)
    base: str | None = None  # the folder holding train/ and val/ (or test/), when split that way
    file_list: str | None = None  # the 'relative/path label' list the paths came from, if any
    transform: Callable | None = field(default=None, repr=False, compare=False)
    target_transform: Callable | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.paths) != len(self.labels):
            raise DatasetError(
                f"{self.name}: {len(self.labels)} labels for {len(self.paths)} files"
            )
        if not self.fingerprint:
            if self.file_sizes is None:
                self.file_sizes = np.array(
                    [os.path.getsize(os.path.join(self.root, p)) for p in self.paths], np.int64
                )
            self.fingerprint = fingerprint_files(self.paths, self.labels, self.file_sizes)

    #: Image files, decoded by a loader batch by batch.
    in_memory = False
    channels = 3  # decoded as RGB

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def input_size(self, crop: int) -> int:
        """Side of the images a model sees: the loader's crop."""
        return int(crop)

    def files(self) -> list[str]:
        """Absolute paths, in dataset-index order."""
        return [os.path.join(self.root, p) for p in self.paths]

    def _pil(self, i: int):
        from PIL import Image

        path = os.path.join(self.root, self.paths[i])
        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except Exception as e:
            raise CorruptImageError(f"cannot decode image {path} ({e})") from e

    def _tensor(self, i: int):
        import torch

        return torch.from_numpy(np.asarray(self._pil(i)).transpose(2, 0, 1).copy())

    def sources(self) -> dict[str, str | None]:
        """What it is read from (what -> path), for the checks that no output overlaps it."""
        return {"source dataset": self.base or self.root, "file list": self.file_list}

    def write_subset(self, idx: np.ndarray, work: str, link: str = "hard") -> SubsetWritten:
        """The kept files under work/<split folder>/ at their relative paths (so the output works as
        --data-dir, and with torchvision's ImageFolder), the other split of a train/ + val/ source
        beside it unchanged, and file_list.txt (paths relative to the split folder)."""
        split_dir = os.path.basename(self.root) if self.base else "train"
        tree = os.path.join(work, split_dir)
        os.makedirs(tree)
        after = 0
        lines = []
        for i in idx:
            rel = self.paths[i]
            src = os.path.join(self.root, rel)
            place(src, os.path.join(tree, rel), link)
            after += os.path.getsize(src)
            listed = f"./{rel}" if rel.lstrip().startswith("#") else rel  # never read as a comment
            lines.append(f"{listed} {int(self.labels[i])}\n")
        if self.file_list is None:
            # Empty class folders keep ImageFolder's class -> label mapping unchanged. A file list
            # has no class folders: its labels are in the list.
            for cls in self.classes:
                os.makedirs(os.path.join(tree, cls), exist_ok=True)
        if self.base:  # the held-out split comes along, as the test pair of Fashion-MNIST does
            for name in ("val", "test"):
                other = os.path.join(self.base, name)
                if name != split_dir and os.path.isdir(other):
                    place_tree(other, os.path.join(work, name), link)
        if all("\n" not in p and "\r" not in p for p in self.paths):
            with atomic_write(os.path.join(work, "file_list.txt"), "w") as f:
                f.writelines(lines)
        before = sum(os.path.getsize(os.path.join(self.root, p)) for p in self.paths)
        return before, after, link


Dataset = Union[ArrayDataset, FileDataset]


# ---------------------------------------------------------------------------- subsets written out
def write_npz_subset(ds: ArrayDataset, idx: np.ndarray, work: str, link: str) -> SubsetWritten:
    """Any in-memory dataset: subset.npz (images, labels, indices); `link` unused."""
    path = os.path.join(work, "subset.npz")
    with atomic_write(path) as f:
        np.savez(f, images=ds.images[idx], labels=ds.labels[idx], indices=idx)
    return ds.images.nbytes + ds.labels.nbytes, os.path.getsize(path), None


# ---------------------------------------------------------------------------- fingerprints
def fingerprint_arrays(name: str, images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 over the kind, shape, labels and raw image bytes (small sets: about 0.1 s)."""
    h = hashlib.sha256()
    h.update(f"arrays:{images.shape}:{images.dtype}".encode())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images).tobytes())
    return h.hexdigest()[:16]


def fingerprint_files(paths: Sequence[str], labels: np.ndarray, sizes: np.ndarray) -> str:
    """sha256 over relative paths, labels and file sizes (cheap: no image is read)."""
    h = hashlib.sha256()
    h.update(f"files:{len(paths)}".encode())
    h.update("\n".join(paths).encode("utf-8"))
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(sizes, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- Fashion-MNIST
def _open_maybe_gz(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:  # truncated, or not gzip after all
        raise DatasetError(
            f"{path} is a damaged gzip file ({e or 'truncated'}); download it again"
        ) from e


def read_idx(path: str) -> np.ndarray:
    """Read an idx file (MNIST format, gzipped or not) into a numpy array."""
    data = _open_maybe_gz(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path} is not an idx file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise DatasetError(f"{path}: unknown idx element type 0x{data[2]:02x}")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(
            f"{path}: truncated idx header ({len(data)} bytes for {ndim} dimensions)"
        )
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(dtypes[data[2]])
    body = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetError(
            f"{path}: truncated idx file ({body.size} of {int(np.prod(dims))} values)"
        )
    return body.reshape(dims).copy()  # writable, independent of the file buffer


def write_idx(path: str, array: np.ndarray, *, compress: bool = False) -> None:
    """Write a uint8 array as an idx file (optionally gzipped), atomically."""
    from .io import atomic_write

    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    with atomic_write(path) as f:
        f.write(gzip.compress(payload, compresslevel=6) if compress else payload)


def _find(root: str, stem: str) -> str | None:
    for name in (stem, stem + ".gz"):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    return None


def load_fashion_mnist(root: str | None = None, split: str = "train") -> ArrayDataset:
    root = root or FASHION_MNIST_ROOT
    prefix = {"train": "train", "test": "t10k"}[_check_split(split)]
    img = _find(root, f"{prefix}-images-idx3-ubyte")
    lab = _find(root, f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise DatasetError(
            f"Fashion-MNIST {split} files ({prefix}-images-idx3-ubyte[.gz], "
            f"{prefix}-labels-idx1-ubyte[.gz]) not found in {root}. Install them with "
            "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu; files land in "
            f"{FASHION_MNIST_ROOT}) or give `data_dir`: the folder of the four idx files."
        )
    images = read_idx(img)
    labels = read_idx(lab).astype(np.int64)
    if images.ndim != 3:
        raise DatasetError(f"{img}: expected [N, 28, 28] images, got shape {images.shape}")
    return ArrayDataset(
        "fashion-mnist",
        split,
        images[..., None],
        labels,
        list(FASHION_MNIST_CLASSES),
        root,
        subset_writer=write_fashion_mnist_subset,
    )


def write_fashion_mnist_subset(
    ds: ArrayDataset, idx: np.ndarray, work: str, link: str
) -> SubsetWritten:
    """Fashion-MNIST's four idx files: the split's pair holding the subset (gzipped like the
    source), the other split's pair placed unchanged (`link`), so `work` works as --data-dir."""
    root = ds.root
    prefix = "train" if ds.split == "train" else "t10k"
    other = "t10k" if ds.split == "train" else "train"
    src_images = _find(root, f"{prefix}-images-idx3-ubyte")
    gz = src_images.endswith(".gz")
    suffix = ".gz" if gz else ""
    before = os.path.getsize(src_images) + os.path.getsize(
        _find(root, f"{prefix}-labels-idx1-ubyte")
    )
    img_out = os.path.join(work, f"{prefix}-images-idx3-ubyte{suffix}")
    lab_out = os.path.join(work, f"{prefix}-labels-idx1-ubyte{suffix}")
    write_idx(img_out, ds.images[idx, :, :, 0], compress=gz)
    write_idx(lab_out, ds.labels[idx].astype(np.uint8), compress=gz)
    used = link
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # the other split, unchanged
        src = _find(root, f"{other}-{kind}")
        if src is not None:
            used = place(
                src,
                os.path.join(work, os.path.basename(src)),
                "copy" if link == "hard" and not same_device(src, work) else link,
            )
    return before, os.path.getsize(img_out) + os.path.getsize(lab_out), used


# ---------------------------------------------------------------------------- CIFAR
class _SafeUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's batches (dicts of lists, bytes and numpy arrays) and nothing else: no
    arbitrary callables run while reading a downloaded file."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
        # protocol 2 pickles an empty array's buffer as a call of bytes() (a batch of 0 rows)
        ("__builtin__", "bytes"),
        ("builtins", "bytes"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _unpickle(data: bytes, what: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:
        raise DatasetError(f"{what} is not a readable CIFAR batch ({e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{what} is not a CIFAR batch (not a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names": "label_names",
        "labels": "labels",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names": "fine_label_names",
        "labels": "fine_labels",
    },
}


def _cifar_reader(root: str, spec: dict):
    """Return a function name -> bytes reading from the extracted folder or the .tar.gz."""
    candidates = [os.path.join(root, spec["folder"]), root]
    for folder in candidates:
        if os.path.exists(os.path.join(folder, spec["meta"])):
            return lambda name: open(os.path.join(folder, name), "rb").read(), folder
    archives = [os.path.join(root, spec["archive"])] if os.path.isdir(root) else [root]
    for archive in archives:
        if os.path.isfile(archive) and tarfile.is_tarfile(archive):
            tar = tarfile.open(archive, "r:*")
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}

            def read(name, tar=tar, members=members, archive=archive):
                if name not in members:
                    raise DatasetError(f"{archive} has no member {name}")
                return tar.extractfile(members[name]).read()

            return read, archive
    raise DatasetError(
        f"CIFAR files not found: looked for {spec['folder']}/ or {spec['archive']} in {root}. "
        "Download the python version from the CIFAR page and give `data_dir`: the "
        "folder holding it (extracted or as the .tar.gz)."
    )


def load_cifar(name: str, root: str, split: str = "train") -> ArrayDataset:
    spec = _CIFAR[name]
    read, where = _cifar_reader(root, spec)
    meta = _unpickle(read(spec["meta"]), f"{where}:{spec['meta']}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta[spec["names"]]]
    images, labels = [], []
    for batch in spec[_check_split(split)]:
        d = _unpickle(read(batch), f"{where}:{batch}")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise DatasetError(
                f"{where}:{batch}: expected data of shape [n, 3072], got {data.shape}"
            )
        y = np.asarray(d.get(spec["labels"], []))
        if y.shape != (len(data),) or (
            len(y) and (y.dtype.kind not in "iu" or y.min() < 0 or y.max() >= len(classes))
        ):
            raise DatasetError(
                f"{where}:{batch}: expected {len(data)} integer labels in "
                f"[0, {len(classes)}), got {y.dtype} {y.shape}"
                + (f" from {y.min()} to {y.max()}" if y.size and y.dtype.kind in "iuf" else "")
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(y.astype(np.int64))
    return ArrayDataset(
        name,
        split,
        np.ascontiguousarray(np.concatenate(images)),
        np.concatenate(labels),
        classes,
        root,
        subset_writer=write_cifar_subset,
    )


def write_cifar_subset(ds: ArrayDataset, idx: np.ndarray, work: str, link: str) -> SubsetWritten:
    """CIFAR's python batches holding the subset (same pickled layout as the source), the other
    split's batches and the meta file as in the source (always written anew: `link` unused)."""
    spec = _CIFAR[ds.name]
    read, _ = _cifar_reader(ds.root, spec)
    folder = os.path.join(work, spec["folder"])
    os.makedirs(folder)
    before = sum(len(read(b)) for b in spec[ds.split])
    data = ds.images[idx].transpose(0, 3, 1, 2).reshape(len(idx), 3072)
    labels = ds.labels[idx]
    names = spec[ds.split]
    after = 0
    for b, part in zip(names, np.array_split(np.arange(len(idx)), len(names))):
        # str keys: read as str by torchvision (encoding="latin1") and by easyhard alike, as the
        # Python 2 strings of the original batches are.
        batch = {
            "batch_label": f"easyhard subset of {b}",
            "data": data[part],
            spec["labels"]: [int(x) for x in labels[part]],
            "filenames": [f"{int(i)}.png" for i in idx[part]],
        }
        with atomic_write(os.path.join(folder, b)) as f:
            pickle.dump(batch, f, protocol=2)
        after += os.path.getsize(os.path.join(folder, b))
    other = "test" if ds.split == "train" else "train"
    for name in spec[other] + [spec["meta"]]:
        with atomic_write(os.path.join(folder, name)) as f:
            f.write(read(name))
    return before, after, None


# ---------------------------------------------------------------------------- image folders
def _check_relative(path: str, where: str) -> str:
    norm = os.path.normpath(path)
    if os.path.isabs(path) or norm == ".." or norm.startswith(".." + os.sep):
        raise DatasetError(f"{where}: path {path!r} escapes the dataset root (absolute or '..')")
    return norm


def imagefolder_split_root(root: str, split: str) -> str:
    """The folder of `split`: root/train and root/val (or root/test) when root holds both, else
    root itself for the training split (and no test split). A root whose only sub-folder is
    train/ (a compressed training split) is read as root/train: a single class named "train"
    could not be trained on anyway."""
    held_out = [
        os.path.join(root, n) for n in ("val", "test") if os.path.isdir(os.path.join(root, n))
    ]
    has_train = os.path.isdir(os.path.join(root, "train"))
    if split == "train":
        if has_train and not held_out:
            only_train = _class_folders(root) == ["train"]
            return os.path.join(root, "train") if only_train else root
        return os.path.join(root, "train") if has_train else root
    if has_train and held_out:
        return held_out[0]
    parent = os.path.dirname(os.path.abspath(root))
    beside = [n for n in ("val", "test") if os.path.isdir(os.path.join(parent, n))]
    hint = (
        f"; its parent {parent} holds {beside[0]}/ beside it: give that as the data folder"
        if os.path.basename(os.path.abspath(root)) == "train" and beside
        else ""
    )
    raise NoTestSplit(
        f"{root} has no test split: expected train/ beside val/ or test/ (the ImageNet "
        f"layout){hint}"
    )


def _distinct_files(root: str, pairs: list, label_name, lines: dict | None = None) -> list:
    """The (relative path, label) pairs, sorted, with each image file once: an image folder's
    examples are its distinct files, however links inside it point. A file reached by several
    paths (a link to another image, a linked folder) keeps one path, the one without links (else
    the first in sorted order), when the paths agree on the label (the others are logged); paths
    that give one file two labels are refused, naming both. A file list (`lines`: path -> line
    number) is refused for any file it lists twice by two paths."""
    real_root = os.path.realpath(root)
    groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
    for rel, label in pairs:
        try:
            st = os.stat(os.path.join(root, rel))
        except OSError:  # gone since it was listed: left to the loaders, which name it
            groups[(-1, len(groups))] = [(rel, label)]
            continue
        groups.setdefault((st.st_dev, st.st_ino), []).append((rel, label))
    keep, dropped = set(), []
    for same in groups.values():
        if len(same) == 1:
            keep.add(same[0][0])
            continue
        (a, la), (b, lb) = same[0], next((p for p in same if p[1] != same[0][1]), same[1])
        if lines is not None:
            first, second = sorted((a, b), key=lines.get)
            raise DatasetError(
                f"{root}: lines {lines[first]} ({first}) and {lines[second]} ({second}) of the "
                "file list are the same image file (a link): list each image once"
            )
        if la != lb:
            raise DatasetError(
                f"{root}: {a} ({label_name(la)}) and {b} ({label_name(lb)}) are the same image "
                "file (a link), so it would be one example with two labels: remove the link "
                "from the class it does not belong to"
            )
        real = [r for r, _ in same if os.path.realpath(os.path.join(root, r)) ==
                os.path.join(real_root, r)]  # fmt: skip
        chosen = (real or [same[0][0]])[0]
        keep.add(chosen)
        dropped += [r for r, _ in same if r != chosen]
    if dropped:
        log.warning(
            "%s: %d image path(s) are links to files listed already (each file is one "
            "example, under one path), e.g. %s",
            root,
            len(dropped),
            sorted(dropped)[0],
        )
    return [(rel, label) for rel, label in pairs if rel in keep]


def load_imagefolder(root: str, split: str = "train", file_list: str | None = None) -> FileDataset:
    """Class sub-folders of images under `root` (ImageNet train/ or val/ layout), or a file list
    (`relative/path label` per line, DALI's file_list format) whose paths are relative to `root`.
    When `root` holds train/ and val/ (or test/), `split` picks one. Example index = position in
    the sorted list of relative paths; each image file is one example however links point."""
    if not os.path.isdir(root):
        raise DatasetError(f"image folder {root} does not exist or is not a folder")
    base = None
    if file_list is None:
        given = root
        root = imagefolder_split_root(root, _check_split(split))
        if os.path.abspath(root) != os.path.abspath(given):
            base = os.path.abspath(given)
        paths, labels, classes = _walk_class_folders(root)
        if split != "train":  # a held-out split is labelled as the training split's classes
            labels, classes = _as_training_classes(given, root, labels, classes)
    elif split != "train":
        raise NoTestSplit("a file list describes the training split only; it has no test split")
    else:
        paths, labels, classes = _read_file_list(root, file_list)
    if len(classes) < 2:
        what = (
            f"{file_list} labels every file {classes[0]}"
            if file_list
            else f"{root} has one class folder ({classes[0]})"
        )
        raise DatasetError(f"{what}: easyhard trains classifiers of at least two classes")
    return FileDataset(
        "imagefolder",
        split,
        os.path.abspath(root),
        paths,
        labels,
        classes,
        base=base,
        file_list=os.path.abspath(file_list) if file_list else None,
    )


def _read_file_list(root: str, file_list: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels, classes) of a file list, checked line by line: the format, labels in
    [0, MAX_CLASSES), paths inside `root` that exist, each file listed once."""
    entries = []
    try:
        with open(file_list, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{file_list} is not UTF-8 text (byte {e.start}); save it as UTF-8"
        ) from e
    except OSError as e:
        raise DatasetError(f"cannot read the file list {file_list} ({e.strerror})") from e
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            rel, label = line.rsplit(maxsplit=1)
            label = int(label)
        except ValueError:
            raise DatasetError(
                f"{file_list}:{lineno}: expected 'relative/path label', got {line!r}"
            )
        if label < 0:
            raise DatasetError(f"{file_list}:{lineno}: negative label {label}")
        entries.append((_check_relative(rel, f"{file_list}:{lineno}"), label, lineno))
    if not entries:
        raise DatasetError(f"{file_list} lists no files")
    top, top_line = max((label, lineno) for _, label, lineno in entries)
    if top >= MAX_CLASSES:  # before any array of classes is made
        raise DatasetError(
            f"{file_list}:{top_line}: label {top} makes {top + 1:,} classes, more than the "
            f"{MAX_CLASSES:,} easyhard handles: labels are 0..C-1"
        )
    entries.sort()
    paths = [p for p, _, _ in entries]
    for (p, _, a), (q, _, b) in zip(entries, entries[1:]):
        if p == q:
            raise DatasetError(f"{file_list} lists {p} twice (lines {min(a, b)} and {max(a, b)})")
    labels = np.array([label for _, label, _ in entries], dtype=np.int64)
    missing = [p for p in paths if not os.path.isfile(os.path.join(root, p))]
    if missing:
        raise DatasetError(
            f"{len(missing)} files of {file_list} are missing under {root}, e.g. {missing[0]}"
        )
    lines_of = {p: lineno for p, _, lineno in entries}
    _distinct_files(root, [(p, label) for p, label, _ in entries], None, lines_of)
    return paths, labels, [str(c) for c in range(int(labels.max()) + 1)]


def _class_folders(root: str) -> list[str]:
    """The class sub-folders of an image folder's split, sorted (a class's index is its place);
    hidden folders (.ipynb_checkpoints, .git, ...) are not classes."""
    return sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))


def _as_training_classes(
    base: str, root: str, labels: np.ndarray, classes: list[str]
) -> tuple[np.ndarray, list[str]]:
    """A held-out split's (labels, classes) as the training split names its classes: a val/
    folder numbers its own sub-folders, so a val/ without some classes would shift every label
    after them; mapped by name instead. A class the training split has not is refused."""
    train = _class_folders(imagefolder_split_root(base, "train"))
    if classes == train:
        return labels, classes
    unknown = [c for c in classes if c not in train]
    if unknown:
        raise DatasetError(
            f"{root} holds {len(unknown)} class folder(s) the training split has not "
            f"({', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}): the network has "
            "no output for them; remove them from the held-out split or add them to train/"
        )
    index = {c: i for i, c in enumerate(train)}
    return np.array([index[c] for c in classes], dtype=np.int64)[labels], train


def _walk_class_folders(root: str) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels, classes) of the images in `root`'s class sub-folders, links followed
    (each real folder once per class: no loops), files that are not images, hidden files and
    folders (names starting with a dot: ._x.jpg, .thumbnails/) and links to nothing left out,
    and class folders without images kept as classes, each with a warning; each image file once
    (_distinct_files)."""
    classes = _class_folders(root)
    if not classes:
        raise DatasetError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    pairs, ignored, hidden, dangling = [], [], [], []
    for c, cls in enumerate(classes):
        walked: set[str] = set()  # this class's real folders: each walked once, no loops
        for dirpath, dirs, files in os.walk(os.path.join(root, cls), followlinks=True):
            real = os.path.realpath(dirpath)
            if real in walked:  # a link back up, or to a folder of the class walked already
                dirs.clear()
                continue
            walked.add(real)
            hidden += [os.path.relpath(os.path.join(dirpath, d), root) for d in dirs if d[0] == "."]
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for fn in files:
                rel = os.path.relpath(os.path.join(dirpath, fn), root)
                if fn.startswith("."):
                    hidden.append(rel)
                elif not os.path.exists(os.path.join(dirpath, fn)):
                    dangling.append(rel)  # a link to nothing: no image file
                elif fn.lower().endswith(IMAGE_EXTENSIONS):
                    pairs.append((rel, c))
                else:
                    ignored.append(rel)
    hidden += [d.name for d in os.scandir(root) if d.is_dir() and d.name.startswith(".")]
    empty = sorted(set(classes) - {classes[c] for _, c in pairs})
    images = "/".join(IMAGE_EXTENSIONS)
    for left, what in ((ignored, f"file(s) that are not images ({images})"),
                       (hidden, "hidden file(s) or folder(s) (names starting with a dot)"),
                       (dangling, "link(s) to nothing (no file where they point)")):  # fmt: skip
        if left:
            log.warning("%s: ignored %d %s, e.g. %s", root, len(left), what, sorted(left)[0])
    if not pairs:
        raise DatasetError(f"no images ({', '.join(IMAGE_EXTENSIONS[:4])}) under {root}")
    if empty:
        log.warning(
            "%s: %d class folder(s) hold no images (%s%s): still classes of the network, "
            "never trained on",
            root, len(empty), ", ".join(empty[:5]), " ..." if len(empty) > 5 else "",
        )  # fmt: skip
    pairs = _distinct_files(root, sorted(pairs), lambda c: f"class {classes[c]}")
    return [p for p, _ in pairs], np.array([c for _, c in pairs], dtype=np.int64), classes


# ---------------------------------------------------------------------------- synthetic
def make_synthetic(
    num_samples: int = 1024,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    split: str = "train",
) -> ArrayDataset:
    """Random images whose class shifts their mean colour (learnable, for tests and benchmarks)."""
    if num_samples < 1 or num_classes < 2 or image_size < 1 or channels not in (1, 3):
        raise DatasetError(
            "synthetic data needs num_samples >= 1, num_classes >= 2, "
            "image_size >= 1 and 1 or 3 channels"
        )
    if num_classes > MAX_CLASSES:
        raise DatasetError(
            f"synthetic data cannot have {num_classes} classes (easyhard handles at most "
            f"{MAX_CLASSES:,}): lower `num_classes`"
        )
    # the noise is drawn in float64 before the uint8 images: 9 bytes a value at the peak
    need = num_samples * image_size * image_size * channels * 9
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > memory // 2:
        raise DatasetError(
            f"synthetic data of {num_samples} images of {image_size} x {image_size} would take "
            f"{need / 2**30:.1f} GiB while it is made, more than half this machine's "
            f"{memory / 2**30:.0f} GiB: lower `num_samples` or `image_size`"
        )
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    labels = rng.integers(0, num_classes, num_samples).astype(np.int64)
    centers = np.random.default_rng(seed).integers(40, 216, (num_classes, channels))
    noise = rng.normal(0, 40, (num_samples, image_size, image_size, channels))
    images = np.clip(centers[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return ArrayDataset("synthetic", split, images, labels, [str(c) for c in range(num_classes)])


# ---------------------------------------------------------------------------- entry point
def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    return split


def load_dataset(
    name: str,
    root: str | None = None,
    split: str = "train",
    *,
    file_list: str | None = None,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
    data_dir: str | None = None,
    **synthetic,
) -> Dataset:
    """Load a dataset by name (one of DATASETS). `root` (or `data_dir`, the command line's
    name): where its files are (default for Fashion-MNIST: /usr/share/datasets/fashion-mnist).
    For `imagefolder`, root is the folder of class sub-folders (or the folder a `file_list` is
    relative to). `synthetic` takes num_samples, num_classes, image_size, channels and seed;
    any other keyword is refused (torchvision's ``train=False`` is ``split="test"`` here).

    The dataset is a map-style dataset as torchvision's are: ``ds[i]`` is ``(image, label)``, the
    image a uint8 CHW tensor, or what `transform` makes of the PIL image (`target_transform` gets
    the label); easyhard's own loaders ignore both and apply the training recipe's augmentation.
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    _check_split(split)  # every dataset: a typo never falls through to the other split
    if data_dir is not None:
        if root is not None and os.fspath(root) != os.fspath(data_dir):
            raise TypeError(
                f"load_dataset() got root={os.fspath(root)!r} and data_dir="
                f"{os.fspath(data_dir)!r}: they are one argument, give one"
            )
        root = data_dir
    if "train" in synthetic:
        raise TypeError(
            "load_dataset() takes split='train' or split='test', not torchvision's train="
            f"{synthetic['train']!r}"
        )
    if name == "synthetic":
        if root is not None or file_list is not None:
            raise TypeError(
                "synthetic data is generated from num_samples, num_classes, image_size, "
                "channels and seed: it takes no root, data_dir or file_list"
            )
        known = set(inspect.signature(make_synthetic).parameters) - {"split"}
        if set(synthetic) - known:
            raise TypeError(
                "load_dataset() got an unexpected keyword argument "
                f"{sorted(set(synthetic) - known)[0]!r} for 'synthetic' (it takes "
                f"{', '.join(sorted(known))}, split, transform, target_transform)"
            )
    elif synthetic:
        raise TypeError(
            f"load_dataset() got an unexpected keyword argument {sorted(synthetic)[0]!r} for "
            f"{name!r} (it takes root or data_dir, split, file_list, transform, "
            "target_transform; num_samples, num_classes, image_size, channels and seed are "
            "synthetic data's)"
        )
    ds = _load(name, root, split, file_list, synthetic)
    return ds.with_transform(transform, target_transform) if transform or target_transform else ds


def _load(name: str, root, split: str, file_list, synthetic: dict) -> Dataset:
    if name == "fashion-mnist":
        return load_fashion_mnist(root, split)
    if name in _CIFAR:
        if root is None:
            raise DatasetError(
                f"{name} needs `data_dir`: the folder holding "
                f"{_CIFAR[name]['folder']}/ or {_CIFAR[name]['archive']}"
            )
        return load_cifar(name, root, split)
    if name == "imagefolder":
        if root is None:
            raise DatasetError("imagefolder needs `data_dir`: a folder of class sub-folders")
        return load_imagefolder(root, split, file_list)
    if name == "synthetic":
        return make_synthetic(split=split, **synthetic)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")

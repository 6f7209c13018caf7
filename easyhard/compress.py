"""Write a selected subset out as a dataset a user can train on directly.

- Image folders: a new ImageFolder tree (hard links by default; symbolic links or copies as
  options) that torchvision's ImageFolder and easyhard's loaders read unchanged, plus a DALI /
  ImageFolder file list (``file_list.txt``: ``relative/path label``).
- Fashion-MNIST: the four idx files, the training pair holding the subset (gzipped like the
  source), the test pair linked unchanged, so the folder works as ``--data-dir``.
- CIFAR-10/100: the python batches (same pickled layout as the source), test batch and meta as in
  the source.
- Synthetic (in-memory) data: ``subset.npz`` (images, labels).

Every output has ``indices.npy`` / ``indices.txt`` (kept dataset indices, ascending) and
``manifest.json`` (source, fingerprints, score file, strategy, kept count per class, bytes before
and after). The source is never modified. The output is built in a hidden sibling folder and
renamed into place when complete, so a killed run never leaves a tree that looks finished; a
non-empty output folder is refused unless ``force``.
"""
from __future__ import annotations

import datetime as dt
import os
import pickle
import shutil
import tempfile
from typing import Any

import numpy as np

from . import __version__
from .datasets import _CIFAR, ArrayDataset, Dataset, FileDataset, _cifar_reader, _find, write_idx
from .io import OutputExistsError  # noqa: F401  (raised by compress; importable from here too)
from .io import atomic_write, check_disjoint, check_replaceable, seal_output, umask
from .select import Selection

LINK_MODES = ("hard", "symlink", "copy")


FORMAT = "easyhard.compressed"
MANIFEST = "manifest.json"
PARTIAL_MARKER = ".easyhard-partial"  # inside an output being built; gone once it is complete


def _place(src: str, dst: str, mode: str) -> str:
    """Put `src` at `dst` by `mode`; returns the mode used."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if mode == "hard":
        try:
            os.link(src, dst)
        except OSError as e:
            raise OSError(f"cannot hard-link {src} into the output ({e.strerror}); use "
                          "`link='copy'` or `link='symlink'` (e.g. across file systems)") from e
    elif mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copy2(src, dst)
    return mode


def _tree_bytes(folder: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def write_indices(folder: str, indices: np.ndarray) -> None:
    """indices.npy and indices.txt (one dataset index per line), atomically."""
    with atomic_write(os.path.join(folder, "indices.npy")) as f:
        np.save(f, np.asarray(indices, dtype=np.int64), allow_pickle=False)
    with atomic_write(os.path.join(folder, "indices.txt"), "w") as f:
        f.write("".join(f"{int(i)}\n" for i in indices))


def source_paths(dataset: Dataset) -> dict[str, str | None]:
    """Everything a dataset is read from (what -> path), for the no-overlap checks."""
    if isinstance(dataset, FileDataset):
        return {"source dataset": dataset.base or dataset.root, "file list": dataset.file_list}
    return {"source dataset": dataset.root}


def compress(dataset: Dataset, selection: Selection, out: str, *, link: str = "hard",
             force: bool = False, provenance: dict[str, Any] | None = None,
             inputs: dict[str, str] | None = None) -> dict[str, Any]:
    """Write `selection` of `dataset` to folder `out`; returns the manifest.

    `out` may not overlap the source or any of `inputs` (what -> path, e.g. the score file),
    however the paths are spelled. An existing non-empty `out` is replaced only with `force`, and
    only when it is an earlier compress output holding nothing else (see io.check_replaceable)."""
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if selection.num_samples != len(dataset):
        raise ValueError(f"the selection is over {selection.num_samples} examples but the dataset "
                         f"has {len(dataset)}")
    if len(selection.indices) == 0:
        raise ValueError("the selection is empty: nothing to write")
    out = os.path.abspath(out)
    check_disjoint(out, {**source_paths(dataset), **(inputs or {})})
    check_replaceable(out, MANIFEST, FORMAT, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(out)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    os.chmod(work, 0o777 & ~umask())  # mkdtemp makes 0700 folders whatever the umask
    open(os.path.join(work, PARTIAL_MARKER), "w").close()  # removed when the output is sealed
    try:
        idx = selection.indices
        if isinstance(dataset, FileDataset):
            bytes_before, files, used = _write_imagefolder(dataset, idx, work, link)
        elif dataset.name == "fashion-mnist":
            bytes_before, files, used = _write_fashion_mnist(dataset, idx, work, link)
        elif dataset.name in _CIFAR:
            bytes_before, files, used = _write_cifar(dataset, idx, work)
        else:
            bytes_before, files, used = _write_npz(dataset, idx, work)
        write_indices(work, idx)
        manifest = {
            "format": FORMAT,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "easyhard_version": __version__,
            "source": {"dataset": dataset.name, "split": dataset.split, "root": dataset.root,
                       "fingerprint": dataset.fingerprint, "num_samples": len(dataset)},
            "selection": selection.info,
            "kept": int(len(idx)),
            "compression_ratio": selection.ratio,
            "kept_per_class": {str(c): int(n) for c, n in enumerate(selection.kept_per_class)},
            "class_sizes": {str(c): int(n) for c, n in enumerate(selection.class_sizes)},
            "link": used,  # how source files entered the output; None: every file written anew
            "bytes_before": int(bytes_before),
            "bytes_after": int(files),
            **(provenance or {}),
        }
        manifest = seal_output(work, MANIFEST, manifest, transient=(PARTIAL_MARKER,))
        os.unlink(os.path.join(work, PARTIAL_MARKER))
        _swap_into_place(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


def _remove_leftovers(out: str) -> None:
    """Delete what a killed compress of `out` left beside it: hidden build folders that still
    hold easyhard's partial marker, and the trash of a swap (the replaced earlier output)."""
    parent, base = os.path.dirname(out), os.path.basename(out)
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        if name.startswith(f".{base}.partial-") and os.path.isfile(os.path.join(path, PARTIAL_MARKER)):
            shutil.rmtree(path)
        elif (name.startswith(f".{base}.old-") and os.listdir(path) == ["old"]
              and os.path.isfile(os.path.join(path, "old", MANIFEST))):
            shutil.rmtree(path)


def _swap_into_place(work: str, out: str) -> None:
    if os.path.lexists(out):
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(trash, "old"))
        os.rename(work, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(work, out)


def _write_imagefolder(ds: FileDataset, idx: np.ndarray, work: str, link: str) -> tuple[int, int, str]:
    """The kept files under work/<split folder>/ at their relative paths (so the output works as
    --data-dir, and with torchvision's ImageFolder), the other split of a train/ + val/ source
    beside it unchanged, and file_list.txt (paths relative to the split folder)."""
    split_dir = os.path.basename(ds.root) if ds.base else "train"
    tree = os.path.join(work, split_dir)
    os.makedirs(tree)
    after = 0
    lines = []
    for i in idx:
        rel = ds.paths[i]
        src = os.path.join(ds.root, rel)
        _place(src, os.path.join(tree, rel), link)
        after += os.path.getsize(src)
        listed = f"./{rel}" if rel.lstrip().startswith("#") else rel  # never read as a comment
        lines.append(f"{listed} {int(ds.labels[i])}\n")
    if ds.file_list is None:
        # Empty class folders keep ImageFolder's class -> label mapping unchanged. A file list
        # has no class folders: its labels are in the list.
        for cls in ds.classes:
            os.makedirs(os.path.join(tree, cls), exist_ok=True)
    if ds.base:  # the held-out split comes along, as the test pair of Fashion-MNIST does
        for name in ("val", "test"):
            other = os.path.join(ds.base, name)
            if name != split_dir and os.path.isdir(other):
                _place_tree(other, os.path.join(work, name), link)
    if all("\n" not in p and "\r" not in p for p in ds.paths):
        with atomic_write(os.path.join(work, "file_list.txt"), "w") as f:
            f.writelines(lines)
    before = sum(os.path.getsize(os.path.join(ds.root, p)) for p in ds.paths)
    return before, after, link


def _place_tree(src: str, dst: str, link: str) -> None:
    os.makedirs(dst)
    for dirpath, dirnames, files in os.walk(src, followlinks=True):
        rel = os.path.relpath(dirpath, src)
        for d in dirnames:
            os.makedirs(os.path.join(dst, rel, d), exist_ok=True)
        for f in files:
            _place(os.path.join(dirpath, f), os.path.join(dst, rel, f), link)


def _write_fashion_mnist(ds: ArrayDataset, idx: np.ndarray, work: str, link: str) -> tuple[int, int, str]:
    root = ds.root
    prefix = "train" if ds.split == "train" else "t10k"
    other = "t10k" if ds.split == "train" else "train"
    src_images = _find(root, f"{prefix}-images-idx3-ubyte")
    gz = src_images.endswith(".gz")
    suffix = ".gz" if gz else ""
    before = os.path.getsize(src_images) + os.path.getsize(_find(root, f"{prefix}-labels-idx1-ubyte"))
    img_out = os.path.join(work, f"{prefix}-images-idx3-ubyte{suffix}")
    lab_out = os.path.join(work, f"{prefix}-labels-idx1-ubyte{suffix}")
    write_idx(img_out, ds.images[idx, :, :, 0], compress=gz)
    write_idx(lab_out, ds.labels[idx].astype(np.uint8), compress=gz)
    used = link
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):  # the other split, unchanged
        src = _find(root, f"{other}-{kind}")
        if src is not None:
            used = _place(src, os.path.join(work, os.path.basename(src)),
                          "copy" if link == "hard" and not _same_device(src, work) else link)
    return before, os.path.getsize(img_out) + os.path.getsize(lab_out), used


def _same_device(a: str, b: str) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def _write_cifar(ds: ArrayDataset, idx: np.ndarray, work: str) -> tuple[int, int, None]:
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
        batch = {"batch_label": f"easyhard subset of {b}", "data": data[part],
                 spec["labels"]: [int(x) for x in labels[part]],
                 "filenames": [f"{int(i)}.png" for i in idx[part]]}
        with atomic_write(os.path.join(folder, b)) as f:
            pickle.dump(batch, f, protocol=2)
        after += os.path.getsize(os.path.join(folder, b))
    other = "test" if ds.split == "train" else "train"
    for name in spec[other] + [spec["meta"]]:
        with atomic_write(os.path.join(folder, name)) as f:
            f.write(read(name))
    return before, after, None


def _write_npz(ds: ArrayDataset, idx: np.ndarray, work: str) -> tuple[int, int, None]:
    path = os.path.join(work, "subset.npz")
    with atomic_write(path) as f:
        np.savez(f, images=ds.images[idx], labels=ds.labels[idx], indices=idx)
    return ds.images.nbytes + ds.labels.nbytes, os.path.getsize(path), None

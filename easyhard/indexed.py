"""The dataset index, added to anyone's dataset: what lets SampleStats record a training loop that
easyhard does not run.

    data = easyhard.with_indices(train_set)        # items gain their dataset index
    loader = DataLoader(data, batch_size=256, shuffle=True)
    stats = easyhard.SampleStats.for_dataset(data, device="cuda")
    for images, labels, indices in loader: ...

``with_indices(dataset)`` wraps any map-style dataset (torchvision's, easyhard's, your own):
tuple items gain the index as their last element, dict items (Hugging Face style) an ``"index"``
key, anything else becomes ``(item, index)``. Length and transforms are the wrapped dataset's.

**Which index.** By default the index is the item's position in the dataset you wrapped. For a
``torch.utils.data.Subset`` (nested ones too) that is a position in the subset, which is not the
base dataset's numbering; ``base_indices=True`` records the base dataset's index instead, so that
scores of several subsets of one dataset line up, and the examples outside the subset stay in
the record as never presented.

**The fingerprint** is a short hash of the data that every easyhard output carries, so that scores
are never applied to other data: ``select``, ``compress`` and merging refuse scores whose
fingerprint differs from the data's. ``with_indices`` finds it for easyhard's datasets (the same
fingerprint ``easyhard score`` records: scores from your loop work with ``easyhard compress
--dataset ...``), for torchvision-style in-memory datasets (``.data`` uint8 images and
``.targets``: MNIST, Fashion-MNIST, CIFAR) and for image folders (``.samples`` and ``.root``:
``ImageFolder``; relative paths, labels and file sizes, no image read). A subset indexed by
position gets a fingerprint of its own (the base's and the subset's indices). For other data pass
``fingerprint=``: any string that changes when the examples or their order change, e.g.
``easyhard.datasets.fingerprint_arrays(name, images, labels)`` or a hash of your file list.
Without one the record carries none and no check can be made.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .datasets import fingerprint_arrays, fingerprint_files


def _base_chain(dataset: Any) -> tuple[Any, np.ndarray | None]:
    """(the dataset below every Subset, positions of `dataset` -> base indices, or None when
    `dataset` is not a Subset)."""
    mapping = None
    while isinstance(dataset, torch.utils.data.Subset):
        inner = np.asarray(dataset.indices, dtype=np.int64).reshape(-1)
        n = len(dataset.dataset)
        if len(inner) and (inner.min() < -n or inner.max() >= n):
            raise ValueError(
                f"a Subset holds index {int(inner.max() if inner.max() >= n else inner.min())}, "
                f"outside the {n} examples of the dataset it wraps"
            )
        inner = inner % max(n, 1)
        mapping = inner if mapping is None else inner[mapping]
        dataset = dataset.dataset
    return dataset, mapping


def _labels_of(dataset: Any) -> np.ndarray | None:
    for name in ("labels", "targets"):
        values = getattr(dataset, name, None)
        if values is None or isinstance(values, str):
            continue
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        arr = np.asarray(values)
        if arr.ndim == 1 and arr.dtype.kind in "iu" and len(arr) == len(dataset):
            return arr.astype(np.int64)
    return None


def _paths_of(dataset: Any) -> list[str] | None:
    paths = getattr(dataset, "paths", None)
    if isinstance(paths, (list, tuple)) and len(paths) == len(dataset):
        return [str(p) for p in paths]
    samples, root = getattr(dataset, "samples", None), getattr(dataset, "root", None)
    if isinstance(samples, (list, tuple)) and isinstance(root, (str, os.PathLike)):
        if len(samples) == len(dataset) and all(isinstance(s, tuple) for s in samples[:1]):
            return [os.path.relpath(str(s[0]), os.fspath(root)) for s in samples]
    return None


def _fingerprint_of(dataset: Any, labels: np.ndarray | None) -> str | None:
    own = getattr(dataset, "fingerprint", None)
    if isinstance(own, str) and own:
        return own
    if labels is None:
        return None
    data = getattr(dataset, "data", None)
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and len(data) == len(labels):
        if data.ndim == 3:  # [N, H, W] (MNIST): easyhard holds [N, H, W, 1]; same fingerprint
            data = data[..., None]
        if data.ndim == 4:
            return fingerprint_arrays(type(dataset).__name__, data, labels)
    samples = getattr(dataset, "samples", None)
    paths = _paths_of(dataset)
    if paths is not None and samples is not None:
        sizes = np.array([os.path.getsize(str(s[0])) for s in samples], np.int64)
        return fingerprint_files(paths, labels, sizes)
    return None


def _subset_fingerprint(base: str, positions: np.ndarray) -> str:
    h = hashlib.sha256(f"subset:{base}:".encode())
    h.update(np.ascontiguousarray(positions, dtype="<i8").tobytes())
    return h.hexdigest()[:16]


class IndexedDataset(torch.utils.data.Dataset):
    """A dataset whose items carry their dataset index (see the module docstring); made by
    ``with_indices``.

    Attributes, for ``SampleStats.for_dataset``: ``num_samples`` (the size of the index space:
    the base dataset's with ``base_indices=True``, else this dataset's length), ``labels``
    (int64 [num_samples] when the wrapped dataset says them: ``.labels`` or ``.targets``; else
    None), ``num_classes`` (from ``.classes``, when it has them), ``paths`` (relative paths of
    file datasets), ``fingerprint`` (or None), ``dataset`` (what was wrapped) and ``indices``
    (int64 [len]: the index recorded for each position).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        base_indices: bool = False,
        fingerprint: str | None = None,
        key: str = "index",
    ) -> None:
        if isinstance(dataset, IndexedDataset):
            raise ValueError("the dataset already carries its indices (with_indices was applied)")
        if isinstance(dataset, torch.utils.data.IterableDataset):
            raise TypeError(
                "with_indices needs a map-style dataset (dataset[i]); an IterableDataset has no "
                "stable position to record"
            )
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"with_indices needs a map-style dataset (dataset[i] and len(dataset)), got "
                f"{type(dataset).__name__}"
            )
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
            raise ValueError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        self.dataset, self.key = dataset, key
        base, mapping = _base_chain(dataset)
        base_labels = _labels_of(base)
        base_paths = _paths_of(base)
        base_print = fingerprint or _fingerprint_of(base, base_labels)
        classes = getattr(base, "classes", None)
        self.num_classes = len(classes) if isinstance(classes, (list, tuple)) else None
        if mapping is None or base_indices:
            self.indices = np.arange(len(dataset), dtype=np.int64) if mapping is None else mapping
            self.num_samples = len(base)
            self.labels, self.paths, self.fingerprint = base_labels, base_paths, base_print
        else:  # positions in the subset: its own numbering and its own fingerprint
            self.indices = np.arange(len(dataset), dtype=np.int64)
            self.num_samples = len(dataset)
            self.labels = None if base_labels is None else base_labels[mapping]
            self.paths = None if base_paths is None else [base_paths[i] for i in mapping]
            self.fingerprint = fingerprint or (
                None if base_print is None else _subset_fingerprint(base_print, mapping)
            )
        self.indices.flags.writeable = False
        # labels a target_transform changes are not the dataset's: SampleStats must not check them
        transform = getattr(base, "target_transform", None)
        self.labels_transformed = transform is not None

    def __len__(self) -> int:
        self._check_size()
        return len(self.indices)

    def _check_size(self) -> None:
        """The wrapped dataset still has the size it had when wrapped: its fingerprint, labels
        and indices were taken then (a grown one failed deep in the DataLoader; a shrunk one
        recorded other data under the old fingerprint)."""
        now = len(self.dataset)
        if now != len(self.indices):
            raise ValueError(
                f"the dataset has {now} items, but had {len(self.indices)} when with_indices "
                "wrapped it: its fingerprint, labels and indices are of the data then; wrap it "
                "again (a record of the old data does not fit the new)"
            )

    def __getitem__(self, i: int):
        self._check_size()
        item = self.dataset[i]
        index = int(self.indices[i])
        if isinstance(item, Mapping):
            if self.key in item:
                raise ValueError(
                    f"the dataset's items already have a {self.key!r} key: pass "
                    "with_indices(dataset, key=...) another name"
                )
            return {**item, self.key: index}
        if isinstance(item, (tuple, list)):
            return (*item, index)
        return item, index

    def __repr__(self) -> str:
        return (
            f"IndexedDataset({type(self.dataset).__name__}, {len(self)} items, "
            f"num_samples={self.num_samples}, fingerprint={self.fingerprint!r})"
        )


def with_indices(
    dataset: Any, *, base_indices: bool = False, fingerprint: str | None = None, key: str = "index"
) -> IndexedDataset:
    """`dataset` with each item's dataset index added (see the module docstring): tuple items
    gain it last, dict items under `key`. `base_indices`: for a Subset, record the base dataset's
    indices instead of positions in the subset. `fingerprint`: the data's fingerprint when easyhard
    cannot derive one."""
    return IndexedDataset(dataset, base_indices=base_indices, fingerprint=fingerprint, key=key)

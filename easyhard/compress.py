"""Write a selected subset out as a dataset a user can train on directly.

- Image folders: a new ImageFolder tree (hard links by default; symbolic links or copies as
  options) that torchvision's ImageFolder and easyhard's loaders read unchanged, plus a DALI /
  ImageFolder file list (``file_list.txt``: ``relative/path label``).
- Fashion-MNIST: the four idx files, the training pair holding the subset (gzipped like the
  source), the test pair linked unchanged, so the folder works as ``--data-dir``.
- CIFAR-10/100: the python batches (same pickled layout as the source), test batch and meta as in
  the source.
- Synthetic (in-memory) data: ``subset.npz`` (images, labels).

Each format writes its own subset (``dataset.write_subset``, beside its reader in
easyhard.datasets); this module builds, records and seals the output around it.

Every output has ``indices.npy`` / ``indices.txt`` (kept dataset indices, ascending) and
``manifest.json`` (source, fingerprints, scores file, strategy, kept count per class, bytes before
and after). The source is never modified. The output is built in a hidden sibling folder and
renamed into place when complete, so a killed run never leaves a tree that looks finished; a
non-empty output folder is refused unless ``force``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from . import __version__
from .datasets import Dataset
from .io import (
    LINK_MODES,
    OutputExistsError,  # noqa: F401  (raised by compress; importable from here too)
    atomic_write,
    check_disjoint,
    check_replaceable,
    seal_output,
    umask,
)
from .select import Selection

FORMAT = "easyhard.compressed"
MANIFEST = "manifest.json"
PARTIAL_MARKER = ".easyhard-partial"  # inside an output being built; gone once it is complete


def write_indices(folder: str, indices: np.ndarray) -> None:
    """indices.npy and indices.txt (one dataset index per line), atomically."""
    with atomic_write(os.path.join(folder, "indices.npy")) as f:
        np.save(f, np.asarray(indices, dtype=np.int64), allow_pickle=False)
    with atomic_write(os.path.join(folder, "indices.txt"), "w") as f:
        f.write("".join(f"{int(i)}\n" for i in indices))


def compress(
    dataset: Dataset,
    selection: Selection,
    out: str,
    *,
    link: str = "hard",
    force: bool = False,
    provenance: dict[str, Any] | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Write `selection` of `dataset` to folder `out`; returns the manifest.

    `out` may not overlap the source or any of `inputs` (what -> path, e.g. the scores input),
    however the paths are spelled. An existing non-empty `out` is replaced only with `force`, and
    only when it is an earlier compress output holding nothing else (see io.check_replaceable)."""
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {', '.join(LINK_MODES)}, got {link!r}")
    if selection.num_samples != len(dataset):
        raise ValueError(
            f"the selection is over {selection.num_samples} examples but the dataset "
            f"has {len(dataset)}"
        )
    if len(selection.indices) == 0:
        raise ValueError("the selection is empty: nothing to write")
    out = os.path.abspath(out)
    check_disjoint(out, {**dataset.sources(), **(inputs or {})})
    check_replaceable(out, MANIFEST, FORMAT, force)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(out)
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    os.chmod(work, 0o777 & ~umask())  # mkdtemp makes 0700 folders whatever the umask
    open(os.path.join(work, PARTIAL_MARKER), "w").close()  # removed when the output is sealed
    try:
        idx = selection.indices
        bytes_before, files, used = dataset.write_subset(idx, work, link)  # its own format
        write_indices(work, idx)
        manifest = {
            "format": FORMAT,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "easyhard_version": __version__,
            "source": {
                "dataset": dataset.name,
                "split": dataset.split,
                "root": dataset.root,
                "fingerprint": dataset.fingerprint,
                "num_samples": len(dataset),
            },
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
        if name.startswith(f".{base}.partial-") and os.path.isfile(
            os.path.join(path, PARTIAL_MARKER)
        ):
            shutil.rmtree(path)
        elif (
            name.startswith(f".{base}.old-")
            and os.listdir(path) == ["old"]
            and os.path.isfile(os.path.join(path, "old", MANIFEST))
        ):
            shutil.rmtree(path)


def _swap_into_place(work: str, out: str) -> None:
    if os.path.lexists(out):
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(trash, "old"))
        os.rename(work, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(work, out)

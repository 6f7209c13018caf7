"""Index-carrying loaders. Every batch is ``(images, labels, indices)``:

- images: float [B, C, H, W] in channels-last memory, normalised, on the loader's device;
- labels: int64 [B]; indices: int64 [B], stable dataset indices (what SampleStats records).

Three loaders share that interface:

- ``TensorLoader`` (small sets: Fashion-MNIST, CIFAR, synthetic; the airbench approach): the whole
  dataset lives on the device as uint8; a seeded permutation per epoch; batched random crop (with
  zero padding) and flip on the device; sharding for DDP.
- ``DaliLoader`` (image files, the ImageNet path): NVIDIA DALI's file reader with the dataset index
  passed through the pipeline as the reader's label; decode (of the crop region only, for
  training) + random-resized crop + flip + normalise, or resize + centre crop for the clean view;
  GPU ("mixed") decoding when the device is CUDA, CPU operators otherwise; ``pad_last_batch`` with
  the PARTIAL policy so that each example is seen exactly once per epoch; the epoch's order and
  augmentation depend only on (seed, epoch), so a resumed run repeats an uninterrupted one.
- ``TorchImageLoader``: the same for image files with ``torch.utils.data`` and PIL, when DALI is not
  installed.

``train=False`` gives the clean view: the same examples, no augmentation, dataset order.
``make_loader`` picks the right loader for a dataset. All of them follow the ``Loader``
protocol, take ``rank``/``world_size`` for sharding, and share the order, sharding and
normalisation code of ``common.py``; one module per loader.
"""

from __future__ import annotations

import torch

from ..datasets import CorruptImageError, Dataset
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    EpochOrder,
    Loader,
    epoch_order,
    normalize,
    shard_indices,
)
from .dali import DaliLoader, find_undecodable, find_unrecognized
from .tensor import TensorLoader, augment, channel_stats
from .torch_images import TorchImageLoader, find_corrupt, random_resized_crop_params

__all__ = [
    "Batch",
    "CorruptImageError",
    "DaliLoader",
    "EpochOrder",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Loader",
    "TensorLoader",
    "TorchImageLoader",
    "augment",
    "channel_stats",
    "dali_available",
    "epoch_order",
    "find_corrupt",
    "find_undecodable",
    "find_unrecognized",
    "make_loader",
    "normalize",
    "random_resized_crop_params",
    "shard_indices",
]


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def make_loader(
    dataset: Dataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    train: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    backend: str = "auto",
    workers: int | None = None,
    **kwargs,
) -> Loader:
    """The loader for `dataset`: TensorLoader for in-memory sets; for image files DaliLoader when
    DALI is installed (backend "auto" or "dali"), else TorchImageLoader (backend "torch").
    `workers`: DALI threads or torch worker processes for image files."""
    common = dict(train=train, seed=seed, rank=rank, world_size=world_size)
    if dataset.in_memory:  # an ArrayDataset
        return TensorLoader(dataset, batch_size, device, **common, **kwargs)
    if backend not in ("auto", "dali", "torch"):
        raise ValueError(f"backend must be auto, dali or torch, got {backend!r}")
    if backend == "dali" or (backend == "auto" and dali_available()):
        if workers is not None:
            kwargs["num_threads"] = workers
        return DaliLoader(dataset, batch_size, device, **common, **kwargs)
    if workers is not None:
        kwargs["num_workers"] = workers
    return TorchImageLoader(dataset, batch_size, device, **common, **kwargs)

"""What every loader shares: the batch, the examples it reads, the epoch's order, sharding and
normalisation. The loaders themselves are in tensor.py, dali.py and torch_images.py."""

from __future__ import annotations

import math
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

#: (images float [B, C, H, W] channels-last, normalised, on the loader's device;
#:  labels int64 [B]; indices int64 [B]: stable dataset indices, what SampleStats records)
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Loader(Protocol):
    """The interface of every easyhard loader (TensorLoader, DaliLoader, TorchImageLoader).

    Iterating gives one epoch of Batch ``(images, labels, indices)``; ``len`` is the number of
    batches per epoch; ``set_epoch(e)`` chooses the epoch (order and augmentation depend only on
    (seed, epoch), so a resumed run repeats an uninterrupted one); ``skipped`` lists the dataset
    indices dropped as unreadable (never presented)."""

    skipped: list[int]

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


def augmentation_of(loader: object) -> str:
    """What decides a loader's training augmentation, as checkpoints record it: the loader's
    class and the version of its drawing (the class's ``AUGMENTATION``, raised whenever the same
    (seed, epoch) would draw other crops or flips; 1 where a loader states none, and for a
    checkpoint written before versions were recorded)."""
    return f"{type(loader).__name__} v{getattr(loader, 'AUGMENTATION', 1)}"


def skipped_means(dataset: object) -> str:
    """What skipping a dataset's unreadable files means, for the loaders' warnings: a training
    example is recorded as never presented; a held-out one is left out of the test accuracy."""
    if getattr(dataset, "split", "train") == "train":
        return "their indices are recorded as never presented"
    return "left out of the test accuracy"


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's order: every `world_size`-th example from `rank`. Shares
    differ in size by at most one and together hold each example exactly once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return order[rank::world_size]


def epoch_order(
    indices: torch.Tensor, *, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int
) -> torch.Tensor:
    """This rank's dataset indices for an epoch, in iteration order: a permutation of `indices`
    that depends only on (seed, epoch) when shuffling, then this rank's shard."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices = indices[torch.randperm(len(indices), generator=g)]
    return shard_indices(indices, rank, world_size)


class EpochOrder:
    """The order part of every loader: the examples it reads (`indices`: all, a subset, or those
    left after dropping unreadable files), each epoch's order (a permutation depending only on
    (seed, epoch) when training, dataset order otherwise), this rank's shard, ``set_epoch`` and
    ``len``. Loaders call ``_init_order`` in their constructor."""

    def _init_order(
        self,
        indices: torch.Tensor,
        *,
        batch_size: int,
        train: bool,
        seed: int,
        rank: int,
        world_size: int,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.indices = indices
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self.epoch = 0
        shard_indices(indices, rank, world_size)  # validates rank

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (order and augmentation) of the next iteration."""
        self.epoch = epoch

    def set_subset(self, indices: torch.Tensor) -> None:
        """Read only these dataset indices from the next iteration on (pruning during training
        chooses them each epoch); the order is still a function of (seed, epoch)."""
        self.indices = torch.as_tensor(indices, dtype=torch.int64).cpu()

    def epoch_order(self) -> torch.Tensor:
        """This rank's dataset indices for the current epoch, in iteration order (CPU int64)."""
        return epoch_order(
            self.indices,
            shuffle=self.train,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def __len__(self) -> int:  # the shard's size does not depend on the permutation
        n = len(shard_indices(self.indices, self.rank, self.world_size))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def normalize(
    x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """uint8 images [B, C, H, W] (any memory format, kept) to `dtype`, scaled to [0, 1] and
    normalised by per-channel `mean` and `std` (in [0, 1] units, shape [1, C, 1, 1])."""
    x = x.to(dtype).div_(255)
    return x.sub_(mean.to(dtype)).div_(std.to(dtype))


def check_subset(subset: Sequence[int] | np.ndarray | None, n: int) -> torch.Tensor:
    """The examples a loader reads: all n, or the given dataset indices (checked)."""
    if subset is None:
        return torch.arange(n)
    out = torch.as_tensor(np.asarray(subset), dtype=torch.int64)
    if len(out) and (out.min() < 0 or out.max() >= n):
        raise ValueError(f"subset holds indices outside [0, {n})")
    return out

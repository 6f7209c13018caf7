"""TensorLoader: small sets (Fashion-MNIST, CIFAR, synthetic) held on the device as uint8, the
airbench approach: a seeded permutation per epoch, batched random crop (zero padding) and flip
on the device, in one gather."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ..datasets import ArrayDataset
from .common import Batch, EpochOrder, check_subset, normalize


class TensorLoader(EpochOrder):
    """GPU-resident loader for an ArrayDataset (uint8 NHWC images kept on `device`).

    Args:
        dataset: the ArrayDataset.
        batch_size: examples per batch (the last batch may be smaller unless drop_last).
        device: where images live and batches are produced.
        train: augment (random crop with `crop_padding` zero padding, horizontal flip) and shuffle;
            False gives the clean view (no augmentation, dataset order).
        crop_padding: pixels of zero padding for the random crop (default: image size // 8).
        flip: random horizontal flips when training.
        seed: the epoch permutation and augmentation depend only on (seed, epoch).
        rank, world_size: DDP sharding; each rank gets every world_size-th example of the epoch's
            permutation.
        dtype: dtype of the images produced.
        subset: optional dataset indices to iterate over (indices stay dataset indices).
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        device: torch.device | str = "cpu",
        *,
        train: bool = True,
        crop_padding: int | None = None,
        flip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        drop_last: bool = False,
        subset: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        H = dataset.images.shape[1]
        self.crop_padding = H // 8 if crop_padding is None else crop_padding
        self.flip = flip
        self.dtype = dtype
        self.skipped: list[int] = []  # in-memory images always decode
        self._init_order(
            check_subset(subset, len(dataset)),
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
        )
        self.images = torch.from_numpy(dataset.images).to(self.device)  # uint8 [N, H, W, C]
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        mean, std = channel_stats(dataset.images)
        self.mean = torch.tensor(mean / 255, dtype=torch.float32, device=self.device).view(
            1, -1, 1, 1
        )
        self.std = torch.tensor(
            np.maximum(std, 1e-3) / 255, dtype=torch.float32, device=self.device
        ).view(1, -1, 1, 1)

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order().to(self.device)
        g = None
        if self.train:
            g = torch.Generator(device=self.device).manual_seed(self.seed * 7_919 + self.epoch + 1)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]
            if self.train:
                x = augment(x, self.crop_padding, self.flip, g)
            yield self._to_float(x), self.labels[idx], idx
        self.epoch += 1

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC uint8 viewed as NCHW is channels-last; the conversions keep that layout.
        return normalize(x.permute(0, 3, 1, 2), self.mean, self.std, self.dtype)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in float64, in chunks (no
    full-size float copy of the dataset)."""
    C = images.shape[-1]
    total, total_sq, n = np.zeros(C), np.zeros(C), 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, C).astype(np.float64)
        total += block.sum(0)
        total_sq += (block * block).sum(0)
        n += len(block)
    mean = total / max(n, 1)
    return mean, np.sqrt(np.maximum(total_sq / max(n, 1) - mean * mean, 0.0))


def augment(
    x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Batched random crop (zero padding `padding`) and horizontal flip of uint8 NHWC images, on
    their device, in one gather."""
    B, H, W, _ = x.shape
    dev = x.device
    rows = torch.arange(H, device=dev).expand(B, H)
    cols = torch.arange(W, device=dev).expand(B, W)
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (B, 1), device=dev, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (B, 1), device=dev, generator=generator)
        rows, cols = rows + dy, cols + dx
    if flip:
        mirrored = torch.rand(B, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(mirrored, cols.flip(1), cols)
    b = torch.arange(B, device=dev)[:, None, None]
    return x[b, rows[:, :, None], cols[:, None, :]]

"""TorchImageLoader: image files with torch.utils.data and PIL, DaliLoader's interface and index
semantics, for machines without DALI; and find_corrupt, PIL's check of files."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from ..datasets import CorruptImageError, FileDataset
from .common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Batch,
    EpochOrder,
    check_subset,
    normalize,
    skipped_means,
)

log = logging.getLogger("easyhard.loaders")


class _FileImages(torch.utils.data.Dataset):
    """PIL reading for TorchImageLoader. Items are fetched by (index, epoch) so that augmentation
    depends only on (seed, epoch, index): the same in every worker, and no global RNG is used."""

    def __init__(
        self, dataset: FileDataset, train: bool, crop: int, seed: int, skip_corrupt: bool
    ) -> None:
        self.files = dataset.files()
        self.train, self.crop, self.seed = train, crop, seed
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.files)

    def _transform(self, im, i: int, epoch: int) -> torch.Tensor:
        import torchvision.transforms.functional as TF

        if self.train:
            rng = np.random.default_rng([self.seed, epoch, i])
            top, left, h, w = random_resized_crop_params(im.width, im.height, rng)
            im = TF.resized_crop(im, top, left, h, w, [self.crop, self.crop], antialias=True)
            if rng.random() < 0.5:
                im = TF.hflip(im)
        else:
            im = TF.center_crop(
                TF.resize(im, int(round(self.crop / 0.875)), antialias=True), [self.crop, self.crop]
            )
        return TF.pil_to_tensor(im)

    def __getitem__(self, key: tuple[int, int]):
        from PIL import Image

        i, epoch = key
        try:
            with Image.open(self.files[i]) as im:
                img = self._transform(im.convert("RGB"), i, epoch)
        except Exception as e:
            if self.skip_corrupt:
                return None, i
            raise CorruptImageError(
                f"cannot decode image {self.files[i]} ({e}); pass "
                "`skip_corrupt=True` to drop unreadable images"
            ) from e
        return img.permute(1, 2, 0), i  # HWC


class _EpochSampler(torch.utils.data.Sampler):
    """Yields (index, epoch) in the owning loader's order for its current epoch."""

    def __init__(self, owner: "TorchImageLoader") -> None:
        self.owner = owner

    def __len__(self) -> int:
        return len(self.owner.epoch_order())

    def __iter__(self):
        epoch = self.owner.epoch
        return iter([(i, epoch) for i in self.owner.epoch_order().tolist()])


def _collate(items):
    good = [(img, i) for img, i in items if img is not None]
    bad = [i for img, i in items if img is None]
    images = torch.stack([img for img, _ in good]) if good else torch.empty(0, dtype=torch.uint8)
    return images, torch.tensor([i for _, i in good], dtype=torch.int64), bad


def _worker_context():
    """Workers start from a fork server, never by forking this process: a process that has run
    DALI (or any library with its own threads) can hold a lock in a thread that a forked child
    never gets back, and that child then crashes or hangs. The server imports this module once, so
    each worker starts with torch and PIL already loaded."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


class TorchImageLoader(EpochOrder):
    """torch.utils.data + PIL loader for a FileDataset, with DaliLoader's interface and index
    semantics (used when DALI is not installed). Augmentation as torchvision's ImageNet recipe
    (random-resized crop + flip; resize + centre crop for the clean view), drawn from
    (seed, epoch, index) so that runs repeat exactly with any number of workers.

    Args as DaliLoader (``subset`` too); ``num_workers`` persistent worker processes decode.
    Unreadable files raise CorruptImageError naming the file, or with skip_corrupt are dropped
    and listed in ``skipped``.
    """

    def __init__(
        self,
        dataset: FileDataset,
        batch_size: int,
        device: torch.device | str = "cpu",
        *,
        train: bool = True,
        crop: int = 224,
        num_workers: int = 2,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        skip_corrupt: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        subset: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self._init_order(
            check_subset(subset, len(dataset)),
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.dtype = dtype
        self.skipped: list[int] = []  # found while reading (skip_corrupt)
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._loader = torch.utils.data.DataLoader(
            _FileImages(dataset, train, crop, seed, skip_corrupt),
            batch_size=batch_size,
            sampler=_EpochSampler(self),
            num_workers=num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=num_workers > 0,
            multiprocessing_context=_worker_context() if num_workers > 0 else None,
        )

    def __iter__(self) -> Iterator[Batch]:
        for images, idx, bad in self._loader:
            if bad:
                self.skipped.extend(bad)
                log.warning(
                    "skipped %d unreadable image(s), e.g. %s; %s",
                    len(bad),
                    self.dataset.paths[bad[0]],
                    skipped_means(self.dataset),
                )
            if len(idx) == 0:
                continue
            x = normalize(
                images.to(self.device, non_blocking=True).permute(0, 3, 1, 2),
                self.mean,
                self.std,
                self.dtype,
            )
            idx = idx.to(self.device)
            yield x, self.labels[idx], idx
        self.epoch += 1


def random_resized_crop_params(
    width: int, height: int, rng: np.random.Generator, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (top, left, height, width), drawn from `rng`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height  # fallback: central crop
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def find_corrupt(files: Sequence[str], threads: int | None = None) -> list[int]:
    """Positions of files that PIL cannot decode (JPEGs decoded at reduced scale: fast)."""
    from PIL import Image

    def bad(path: str) -> bool:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (64, 64))
                im.load()
            return False
        except Exception:
            return True

    with ThreadPoolExecutor(threads or min(16, os.cpu_count() or 2)) as pool:
        flags = list(pool.map(bad, files, chunksize=64))
    return [i for i, f in enumerate(flags) if f]

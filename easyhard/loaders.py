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
``make_loader`` picks the right loader for a dataset.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch

from .datasets import ArrayDataset, Dataset, DatasetError, FileDataset

log = logging.getLogger("easyhard.loaders")

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CorruptImageError(DatasetError):
    """An image file that cannot be decoded; the message names it."""


def shard_indices(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's order: every `world_size`-th example from `rank`. Shares
    differ in size by at most one and together hold each example exactly once."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return order[rank::world_size]


def epoch_order(indices: torch.Tensor, *, shuffle: bool, seed: int, epoch: int, rank: int,
                world_size: int) -> torch.Tensor:
    """This rank's dataset indices for an epoch, in iteration order: a permutation of `indices`
    that depends only on (seed, epoch) when shuffling, then this rank's shard."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        indices = indices[torch.randperm(len(indices), generator=g)]
    return shard_indices(indices, rank, world_size)


# ---------------------------------------------------------------------------- small sets
class TensorLoader:
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

    def __init__(self, dataset: ArrayDataset, batch_size: int, device: torch.device | str = "cpu",
                 *, train: bool = True, crop_padding: int | None = None, flip: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1,
                 dtype: torch.dtype = torch.float32, drop_last: bool = False,
                 subset: Sequence[int] | np.ndarray | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.train = train
        H = dataset.images.shape[1]
        self.crop_padding = H // 8 if crop_padding is None else crop_padding
        self.flip = flip
        self.seed = seed
        self.rank, self.world_size = rank, world_size
        self.dtype = dtype
        self.drop_last = drop_last
        self.epoch = 0
        self.images = torch.from_numpy(dataset.images).to(self.device)  # uint8 [N, H, W, C]
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        mean, std = channel_stats(dataset.images)
        self.mean = torch.tensor(mean / 255, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(np.maximum(std, 1e-3) / 255, dtype=torch.float32,
                                device=self.device).view(1, -1, 1, 1)
        if subset is None:
            self.subset = torch.arange(len(dataset))
        else:
            self.subset = torch.as_tensor(np.asarray(subset), dtype=torch.int64)
            if len(self.subset) and (self.subset.min() < 0 or self.subset.max() >= len(dataset)):
                raise ValueError(f"subset holds indices outside [0, {len(dataset)})")
        shard_indices(self.subset, rank, world_size)  # validates rank

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (permutation and augmentation) of the next iteration."""
        self.epoch = epoch

    def epoch_order(self) -> torch.Tensor:
        """This rank's dataset indices for the current epoch, in iteration order (CPU int64)."""
        return epoch_order(self.subset, shuffle=self.train, seed=self.seed, epoch=self.epoch,
                           rank=self.rank, world_size=self.world_size)

    def __len__(self) -> int:
        n = len(shard_indices(self.subset, self.rank, self.world_size))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order().to(self.device)
        g = None
        if self.train:
            g = torch.Generator(device=self.device).manual_seed(self.seed * 7_919 + self.epoch + 1)
        stop = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        for start in range(0, stop, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.images[idx]
            if self.train:
                x = augment(x, self.crop_padding, self.flip, g)
            yield self._to_float(x), self.labels[idx], idx
        self.epoch += 1

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC uint8 viewed as NCHW is channels-last; the conversions keep that layout.
        x = x.permute(0, 3, 1, 2).to(self.dtype).div_(255)
        return x.sub_(self.mean.to(self.dtype)).div_(self.std.to(self.dtype))


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 NHWC images, in float64, in chunks (no
    full-size float copy of the dataset)."""
    C = images.shape[-1]
    total, total_sq, n = np.zeros(C), np.zeros(C), 0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].reshape(-1, C).astype(np.float64)
        total += block.sum(0)
        total_sq += (block * block).sum(0)
        n += len(block)
    mean = total / max(n, 1)
    return mean, np.sqrt(np.maximum(total_sq / max(n, 1) - mean * mean, 0.0))


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None) -> torch.Tensor:
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


# ---------------------------------------------------------------------------- image files
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


def find_undecodable(files: Sequence[str], threads: int | None = None,
                     batch_size: int = 64) -> list[int]:
    """Positions of files that DALI's image decoder cannot decode: truly corrupt files, and files
    that PIL reads but DALI does not (a GIF, or any unsupported format, whatever its extension).

    Exact for DaliLoader: it runs the loader's decoder operator (``fn.decoders.image``, CPU) on
    every file, `batch_size` files per run on `threads` DALI threads. A batch that fails is split
    in halves until the failing files stand alone; DALI pipelines are unusable after an error, so
    each failed run builds a fresh one (a few milliseconds): a bad file costs about
    2·log2(batch_size) small runs. Cost: one full CPU decode of every file, the same work as one
    clean-view epoch on CPU: about 3 ms per ImageNet-size JPEG per thread (measured, 500x375), so
    a few seconds for a thousand files, about an hour of thread time for all of ImageNet (split
    over `threads`). Files that cannot be read at all count as undecodable.
    Needs NVIDIA DALI.
    """
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    threads = threads or min(16, os.cpu_count() or 2)
    batch_size = max(1, batch_size)

    @pipeline_def
    def decode():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.image(encoded, device="cpu", output_type=types.RGB)

    def read(i: int) -> np.ndarray | None:
        try:
            return np.fromfile(files[i], dtype=np.uint8)
        except OSError:
            return None

    pipe = None
    bad: list[int] = []

    def decodes(chunk: list[tuple[int, np.ndarray]]) -> bool:
        nonlocal pipe
        if pipe is None:
            pipe = decode(batch_size=batch_size, num_threads=threads, device_id=None,
                          prefetch_queue_depth=1, exec_async=False, exec_pipelined=False)
            pipe.build()
        pipe.feed_input("encoded", [data for _, data in chunk])
        try:
            pipe.run()
            return True
        except RuntimeError:
            pipe = None  # a pipeline that failed cannot run again
            return False

    def check(chunk: list[tuple[int, np.ndarray]]) -> None:
        if decodes(chunk):
            return
        if len(chunk) == 1:
            bad.append(chunk[0][0])
            return
        half = len(chunk) // 2
        check(chunk[:half])
        check(chunk[half:])

    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(files), batch_size):
            chunk = []
            positions = range(start, min(start + batch_size, len(files)))
            for i, data in zip(positions, pool.map(read, positions)):
                if data is None:
                    bad.append(i)
                else:
                    chunk.append((i, data))
            if chunk:
                check(chunk)
    return sorted(bad)


def _usable_indices(dataset: FileDataset, skip_corrupt: bool, threads: int,
                    find=find_corrupt) -> tuple[np.ndarray, list[int]]:
    """All indices, or (with skip_corrupt) those whose file `find` (find_corrupt: PIL;
    find_undecodable: DALI) does not reject, plus the skipped ones."""
    if not skip_corrupt:
        return np.arange(len(dataset)), []
    skipped = find(dataset.files(), threads)
    if skipped:
        log.warning("skipping %d unreadable image(s), e.g. %s; their indices are recorded as never "
                    "presented", len(skipped), dataset.paths[skipped[0]])
    keep = np.setdiff1d(np.arange(len(dataset)), np.array(skipped, dtype=np.int64))
    return keep, skipped


class DaliLoader:
    """DALI loader for a FileDataset (see the module docstring).

    The epoch's order and augmentation depend only on (seed, epoch), as in the other loaders, so
    that a run resumed at epoch k repeats the uninterrupted one: the order is ``epoch_order`` (the
    same permutation and sharding as TorchImageLoader), given to DALI's reader as an explicit file
    list read without shuffling, and each training epoch gets a fresh pipeline seeded from
    (seed, epoch). The clean view's pipeline (dataset order, no randomness) is built once.

    Args:
        dataset: the FileDataset.
        batch_size: examples per batch; the last batch of an epoch is partial, never padded.
        device: "cuda[:n]" decodes on that GPU (nvJPEG, "mixed"); "cpu" uses CPU operators only.
        train: random-resized crop (decoding only the crop region) + flip, and shuffling; False:
            resize (shorter side crop/0.875) + centre crop, dataset order.
        crop: output size in pixels.
        num_threads: DALI CPU threads.
        seed: the epoch order and augmentation depend only on (seed, epoch).
        shard_id, num_shards: DDP sharding; each shard gets every num_shards-th example of the
            epoch's order.
        dtype: torch.float16 or torch.float32 images.
        skip_corrupt: check every file first with DALI's own decoder (``find_undecodable``: one
            CPU decoding pass over the dataset) and drop the files it cannot decode, corrupt or in
            a format DALI does not read such as GIF (logged, their indices kept in ``skipped`` as
            never presented). Without it such a file stops the epoch with a CorruptImageError
            naming it (found by the same check over the files the epoch had not yet presented).
        roi_decode: when training, decode only the random crop's region (fn.decoders.
            image_random_crop) instead of the whole image followed by a crop.
    """

    def __init__(self, dataset: FileDataset, batch_size: int, device: torch.device | str = "cuda",
                 *, train: bool = True, crop: int = 224, num_threads: int = 4, seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, dtype: torch.dtype = torch.float32,
                 skip_corrupt: bool = False, prefetch: int = 2, roi_decode: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        try:
            import nvidia.dali.plugin.pytorch  # noqa: F401
        except ImportError as e:
            raise ImportError("DaliLoader needs NVIDIA DALI: pip install nvidia-dali-cuda130 "
                              "(or use TorchImageLoader)") from e
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.crop = crop
        self.dtype = dtype
        self.seed = seed
        self.shard = (shard_id, num_shards)
        self.epoch = 0
        keep, self.skipped = _usable_indices(dataset, skip_corrupt, num_threads, find_undecodable)
        self._keep = torch.as_tensor(keep, dtype=torch.int64)
        shard_indices(self._keep, shard_id, num_shards)  # validates the shard
        self._files = dataset.files()  # all files, by dataset index
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        device_id = None  # CPU operators only
        if self.device.type == "cuda":
            device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
        self._pipe_kwargs = dict(
            train=train, crop=crop, gpu=self.device.type == "cuda", dtype=dtype, mean=mean,
            std=std, roi_decode=roi_decode, batch_size=batch_size, num_threads=num_threads,
            device_id=device_id, prefetch_queue_depth=prefetch)
        self._iter = None  # the clean view's iterator, reused while its passes complete
        self._pending = False  # an iteration started and not finished
        if not train:  # build it now: it starts reading (prefetching) at once
            self._iter = self._make_iter(self.epoch_order(), 0)  # the same order every epoch

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch (order and augmentation) of the next iteration."""
        self.epoch = epoch

    def epoch_order(self) -> torch.Tensor:
        """This shard's dataset indices for the current epoch, in iteration order (CPU int64)."""
        return epoch_order(self._keep, shuffle=self.train, seed=self.seed, epoch=self.epoch,
                           rank=self.shard[0], world_size=self.shard[1])

    def __len__(self) -> int:  # the shard's size does not depend on the permutation
        return math.ceil(len(shard_indices(self._keep, *self.shard)) / self.batch_size)

    def _make_iter(self, order: torch.Tensor, pipeline_seed: int):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        if len(order) == 0:
            return None
        indices = order.tolist()
        pipe = _dali_pipeline(files=[self._files[i] for i in indices], indices=indices,
                              seed=pipeline_seed, **self._pipe_kwargs)
        try:  # the iterator starts reading (prefetching) at once
            return DALIGenericIterator([pipe], ["images", "index"], reader_name="Reader",
                                       last_batch_policy=LastBatchPolicy.PARTIAL,
                                       auto_reset=not self.train)  # a training epoch reads once
        except RuntimeError as e:
            raise self._corrupt_error(e, indices) from e

    def _epoch_iter(self, order: torch.Tensor):
        if not self.train:
            if self._iter is None or self._pending:
                # a pass was abandoned part-way: start over from a fresh pipeline
                self._iter = self._make_iter(order, 0)
            return self._iter
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]) & 0x7FFFFFFF
        return self._make_iter(order, seed)

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order()  # what the pipeline reads, in this order
        it = self._epoch_iter(order)
        self._pending = True
        presented = 0
        try:
            for out in it or ():
                images = out[0]["images"].permute(0, 3, 1, 2)  # NHWC -> channels-last NCHW view
                idx = out[0]["index"].view(-1).to(device=self.device, dtype=torch.int64)
                presented += len(idx)
                yield images.to(self.device), self.labels[idx], idx
        except RuntimeError as e:
            # The files presented so far decoded: the culprit is among the rest of the epoch.
            raise self._corrupt_error(e, order[presented:].tolist()) from e
        self._pending = False
        self.epoch += 1

    def _corrupt_error(self, err: Exception, indices: list[int]) -> Exception:
        """The error to raise for a pipeline failure while reading the dataset `indices`: DALI's
        decoder errors do not name the file, so decode those files one batch at a time with DALI's
        decoder (find_undecodable; one CPU decoding pass over them) and name the ones that fail.
        The original error if none fails (the failure was something else)."""
        if "pipeline" not in str(err) and "operator" not in str(err):
            return err
        files = [self._files[i] for i in indices]
        log.warning("the DALI pipeline failed; decoding the %d file(s) it had not yet presented "
                    "this epoch to find the one(s) it cannot decode", len(files))
        try:
            bad = find_undecodable(files, self._pipe_kwargs["num_threads"])
        except Exception:  # the check itself failed: keep the original error
            log.exception("could not check the files for undecodable images")
            return err
        if not bad:
            return err
        names = ", ".join(files[i] for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return CorruptImageError(
            f"{len(bad)} image(s) cannot be decoded by DALI (corrupt, or a format its decoder does "
            f"not read, such as GIF): {names}. Remove, replace or convert them, or pass "
            "`skip_corrupt=True` to drop them and record them as never presented.")


def _dali_pipeline(*, files, indices, train, crop, gpu, dtype, mean, std, roi_decode,
                   **pipeline_kwargs):
    """Build the DALI pipeline: reader (index as label, `files` read in the given order, one
    shard) -> decode -> crop/resize -> normalise."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def
    def pipeline():
        jpegs, index = fn.readers.file(files=files, labels=indices, random_shuffle=False,
                                       pad_last_batch=True, name="Reader")
        decoder_device = "mixed" if gpu else "cpu"
        area, aspect = [0.08, 1.0], [0.75, 4 / 3]
        if train and roi_decode:
            # Decodes only the region of the random crop (ROI decoding).
            images = fn.decoders.image_random_crop(jpegs, device=decoder_device,
                                                   output_type=types.RGB, random_area=area,
                                                   random_aspect_ratio=aspect)
            images = fn.resize(images, resize_x=crop, resize_y=crop)
            mirror = fn.random.coin_flip(probability=0.5)
        elif train:
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
            images = fn.random_resized_crop(images, size=(crop, crop), random_area=area,
                                            random_aspect_ratio=aspect)
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=int(round(crop / 0.875)))
            mirror = 0
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT16 if dtype == torch.float16 else types.FLOAT,
            output_layout="HWC", crop=(crop, crop), mean=[255 * m for m in mean],
            std=[255 * s for s in std], mirror=mirror)
        if gpu:
            index = index.gpu()
        return images, index

    pipe = pipeline(**pipeline_kwargs)
    pipe.build()
    return pipe


def random_resized_crop_params(width: int, height: int, rng: np.random.Generator,
                               scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
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


class _FileImages(torch.utils.data.Dataset):
    """PIL reading for TorchImageLoader. Items are fetched by (index, epoch) so that augmentation
    depends only on (seed, epoch, index): the same in every worker, and no global RNG is used."""

    def __init__(self, dataset: FileDataset, train: bool, crop: int, seed: int,
                 skip_corrupt: bool) -> None:
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
            im = TF.center_crop(TF.resize(im, int(round(self.crop / 0.875)), antialias=True),
                                [self.crop, self.crop])
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
            raise CorruptImageError(f"cannot decode image {self.files[i]} ({e}); pass "
                                    "`skip_corrupt=True` to drop unreadable images") from e
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


class TorchImageLoader:
    """torch.utils.data + PIL loader for a FileDataset, with DaliLoader's interface and index
    semantics (used when DALI is not installed). Augmentation as torchvision's ImageNet recipe
    (random-resized crop + flip; resize + centre crop for the clean view), drawn from
    (seed, epoch, index) so that runs repeat exactly with any number of workers.

    Args as DaliLoader; ``num_workers`` persistent worker processes decode. Unreadable files raise
    CorruptImageError naming the file, or with skip_corrupt are dropped and listed in ``skipped``.
    """

    def __init__(self, dataset: FileDataset, batch_size: int, device: torch.device | str = "cpu",
                 *, train: bool = True, crop: int = 224, num_workers: int = 2, seed: int = 0,
                 shard_id: int = 0, num_shards: int = 1, dtype: torch.dtype = torch.float32,
                 skip_corrupt: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.dataset = dataset
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.shard = (shard_id, num_shards)
        shard_indices(torch.arange(len(dataset)), shard_id, num_shards)  # validates the shard
        self.dtype = dtype
        self.epoch = 0
        self.skipped: list[int] = []
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        self._loader = torch.utils.data.DataLoader(
            _FileImages(dataset, train, crop, seed, skip_corrupt), batch_size=batch_size,
            sampler=_EpochSampler(self), num_workers=num_workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=num_workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> torch.Tensor:
        return epoch_order(torch.arange(len(self.dataset)), shuffle=self.train, seed=self.seed,
                           epoch=self.epoch, rank=self.shard[0], world_size=self.shard[1])

    def __len__(self) -> int:  # the shard's size does not depend on the permutation
        n = len(shard_indices(torch.arange(len(self.dataset)), *self.shard))
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        for images, idx, bad in self._loader:
            if bad:
                self.skipped.extend(bad)
                log.warning("skipped %d unreadable image(s), e.g. %s", len(bad),
                            self.dataset.paths[bad[0]])
            if len(idx) == 0:
                continue
            x = images.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype)
            x = x.sub_(self.mean.to(self.dtype)).div_(self.std.to(self.dtype))
            idx = idx.to(self.device)
            yield x, self.labels[idx], idx
        self.epoch += 1


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def make_loader(dataset: Dataset, batch_size: int, device: torch.device | str = "cpu", *,
                train: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1,
                backend: str = "auto", workers: int | None = None, **kwargs):
    """The loader for `dataset`: TensorLoader for in-memory sets; for image files DaliLoader when
    DALI is installed (backend "auto" or "dali"), else TorchImageLoader (backend "torch").
    `workers`: DALI threads or torch worker processes for image files."""
    if isinstance(dataset, ArrayDataset):
        return TensorLoader(dataset, batch_size, device, train=train, seed=seed, rank=rank,
                            world_size=world_size, **kwargs)
    if backend not in ("auto", "dali", "torch"):
        raise ValueError(f"backend must be auto, dali or torch, got {backend!r}")
    if backend == "dali" or (backend == "auto" and dali_available()):
        if workers is not None:
            kwargs["num_threads"] = workers
        return DaliLoader(dataset, batch_size, device, train=train, seed=seed, shard_id=rank,
                          num_shards=world_size, **kwargs)
    if workers is not None:
        kwargs["num_workers"] = workers
    return TorchImageLoader(dataset, batch_size, device, train=train, seed=seed, shard_id=rank,
                            num_shards=world_size, **kwargs)

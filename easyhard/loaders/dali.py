"""DaliLoader: image files (the ImageNet path) through NVIDIA DALI, with GPU ("mixed") decoding
on a CUDA device and CPU operators otherwise; and find_undecodable, DALI's own check of files."""

from __future__ import annotations

import gc
import logging
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
    skipped_means,
)

log = logging.getLogger("easyhard.loaders")


class DaliLoader(EpochOrder):
    """DALI loader for a FileDataset (see the module docstring).

    The epoch's order and augmentation depend only on (seed, epoch), as in the other loaders, so
    that a run resumed at epoch k repeats the uninterrupted one: the order is ``epoch_order`` (the
    same permutation and sharding as TorchImageLoader) and each example's crop and flip are
    ``crop_draws(seed, epoch, index)``, drawn in Python. One pipeline serves every epoch: its
    external source reads the paths of the epoch's plan (fn.io.file.read), so a new epoch, or the
    subset pruning keeps (``set_subset``), costs a new plan, not a new pipeline (a pipeline over
    1.28M files took seconds to build).

    Args:
        dataset: the FileDataset.
        batch_size: examples per batch; the last batch of an epoch is partial, never padded.
        device: "cuda[:n]" decodes on that GPU (nvJPEG, "mixed"); "cpu" uses CPU operators only.
        train: random-resized crop (decoding only the crop region) + flip, and shuffling; False:
            resize (shorter side crop/0.875) + centre crop, dataset order.
        crop: output size in pixels.
        num_threads: DALI CPU threads.
        seed: the epoch order and augmentation depend only on (seed, epoch).
        rank, world_size: DDP sharding; each rank gets every world_size-th example of the
            epoch's order.
        dtype: torch.float16 or torch.float32 images.
        skip_corrupt: check every file first with DALI's own decoder (``find_undecodable``: one
            CPU decoding pass over the dataset) and drop the files it cannot decode, corrupt or in
            a format DALI does not read such as GIF (logged, their indices kept in ``skipped`` as
            never presented). Without it a file that is not an image DALI reads, by its first
            bytes (``find_unrecognized``), is refused when the loader is built, and a damaged one
            stops the epoch with a CorruptImageError naming it (found by the same check over the
            files the epoch had not yet presented).
        subset: optional dataset indices to iterate over (indices stay dataset indices); only
            their files are checked.
        roi_decode: when training, decode only the random crop's region (fn.decoders.
            image_slice) instead of the whole image followed by a crop.
    """

    AUGMENTATION = 2  # 2: crop_draws of (seed, epoch, index); 1: DALI's RNG, a pipeline an epoch

    def __init__(
        self,
        dataset: FileDataset,
        batch_size: int,
        device: torch.device | str = "cuda",
        *,
        train: bool = True,
        crop: int = 224,
        num_threads: int = 4,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        skip_corrupt: bool = False,
        prefetch: int = 2,
        roi_decode: bool = True,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        subset: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        try:
            import nvidia.dali.plugin.pytorch  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "DaliLoader needs NVIDIA DALI: pip install nvidia-dali-cuda130 "
                "(or use TorchImageLoader)"
            ) from e
        self.dataset = dataset
        self.device = torch.device(device)
        self.crop = crop
        self.dtype = dtype
        self._files = dataset.files()  # all files, by dataset index
        wanted = check_subset(subset, len(dataset)).numpy()
        keep, self.skipped = _usable_indices(
            dataset, self._files, skip_corrupt, num_threads, wanted
        )
        self._init_order(
            torch.as_tensor(keep, dtype=torch.int64),
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self.labels = torch.from_numpy(dataset.labels).to(self.device)
        device_id = None  # CPU operators only
        if self.device.type == "cuda":
            device_id = (
                self.device.index if self.device.index is not None else torch.cuda.current_device()
            )
        self._pipe_kwargs = dict(
            train=train,
            crop=crop,
            gpu=self.device.type == "cuda",
            dtype=dtype,
            mean=mean,
            std=std,
            roi_decode=roi_decode,
            batch_size=batch_size,
            num_threads=num_threads,
            device_id=device_id,
            prefetch_queue_depth=prefetch,
        )
        self._feed = _EpochFeed(self._files, batch_size, seed, train)
        self._iter = None  # the pipeline's iterator, reused while its passes complete
        self._pending = False  # an iteration started and not finished

    def _start(self):
        """The pipeline and its iterator, built once and reused epoch after epoch (a fresh one
        only after a pass that stopped part-way, or a failure): nothing of an epoch's plan is
        in the pipeline, so a new epoch or subset is only a new plan for its source."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        if self._iter is not None and not self._pending:
            self._iter.reset()  # the source's next epoch is read from here on
            return self._iter
        self._iter = None
        gc.collect()  # the abandoned pipeline goes before a new one reads
        pipe = _dali_pipeline(feed=self._feed, **self._pipe_kwargs)
        try:  # the iterator starts reading (prefetching) at once
            self._iter = DALIGenericIterator([pipe], ["images", "index"], auto_reset=False)
            return self._iter
        except RuntimeError as e:
            failure = e
        del pipe  # the failed pipeline goes before the search builds new ones
        raise self._corrupt_error(_released(failure), self._feed.order.tolist()) from failure

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order()  # what the pipeline reads, in this order
        if len(order) == 0:
            self.epoch += 1
            return
        self._feed.plan(order.numpy(), self.epoch)
        it = self._start()
        self._pending = True
        presented = 0
        try:
            for out in it:
                images = out[0]["images"].permute(0, 3, 1, 2)  # NHWC -> channels-last NCHW view
                idx = out[0]["index"].view(-1).to(device=self.device, dtype=torch.int64)
                presented += len(idx)
                yield images.to(self.device), self.labels[idx], idx
        except RuntimeError as e:
            failure = e
        else:
            failure = None
        if failure is not None:
            del it  # the failed pipeline goes before the search builds new ones
            self._iter = None
            # The files presented so far decoded: the culprit is among the rest of the epoch.
            raise self._corrupt_error(_released(failure), order[presented:].tolist()) from failure
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
        log.warning(
            "the DALI pipeline failed; decoding the %d file(s) it had not yet presented "
            "this epoch to find the one(s) it cannot decode",
            len(files),
        )
        try:
            bad = find_undecodable(files, self._pipe_kwargs["num_threads"])
        except Exception:  # the check itself failed: keep the original error
            log.exception("could not check the files for undecodable images")
            return err
        if not bad:
            return err
        return CorruptImageError(_undecodable_message([files[i] for i in bad]))


def _undecodable_message(bad: list[str]) -> str:
    names = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    return (
        f"{len(bad)} image(s) cannot be decoded by DALI (corrupt, or a format its decoder does "
        f"not read, such as GIF): {names}. Remove, replace or convert them, or pass "
        "`skip_corrupt=True` to drop them and record them as never presented."
    )


def _released(err: RuntimeError) -> RuntimeError:
    """A failed pipeline's error without its traceback, whose frames hold the pipeline, then
    collected: DALI can crash (segfault) when a failed pipeline is still alive while new ones
    decode, as the search for the undecodable file does. The message keeps DALI's account."""
    err.__traceback__ = None
    gc.collect()
    return err


#: the random-resized crop's ranges, as torchvision's RandomResizedCrop and TorchImageLoader
CROP_AREA, CROP_ASPECT = (0.08, 1.0), (3 / 4, 4 / 3)


_M64 = (1 << 64) - 1


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping): consecutive inputs give independent-looking
    outputs."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def crop_draws(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """The training augmentation of these dataset indices in an epoch, float32 [len, 5]: the
    crop's share of the image's area, its aspect ratio (width/height, log-uniform), where it lies
    (horizontally, vertically: 0 the left/top edge, 1 the right/bottom) and the flip (1.0: flip).

    A function of (seed, epoch, index) alone (a counter-based hash, splitmix64): an example's
    augmentation does not depend on the pipeline, the subset, the shard or the batch it falls
    in, so a resumed run repeats the uninterrupted one, and each batch draws only its own."""
    key = int(_mix64(np.array([(seed * 0x9E3779B97F4A7C15 + epoch) & _M64], np.uint64))[0])
    counters = np.asarray(indices, dtype=np.uint64)[:, None] * np.uint64(5) + np.arange(
        5, dtype=np.uint64
    )
    bits = _mix64(counters * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key))
    u = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)  # [0, 1)
    u[:, 0] = CROP_AREA[0] + (CROP_AREA[1] - CROP_AREA[0]) * u[:, 0]
    low, high = np.log(CROP_ASPECT[0]), np.log(CROP_ASPECT[1])
    u[:, 1] = np.exp(low + (high - low) * u[:, 1])
    u[:, 4] = u[:, 4] < 0.5
    return u


class _EpochFeed:
    """The external source of a DaliLoader's pipeline: the batches of the epoch the loader
    planned last (file paths as bytes for fn.io.file.read, dataset indices and, when training,
    their crop draws), then StopIteration. A new plan starts the next epoch; DALI's own iteration
    calls (``__iter__`` after the end) never restart an old one, so nothing is read twice."""

    def __init__(self, files: Sequence[str], batch_size: int, seed: int, train: bool) -> None:
        self.files, self.batch_size, self.seed, self.train = files, batch_size, seed, train
        self.order, self.epoch, self.pos = np.zeros(0, dtype=np.int64), 0, 0

    def plan(self, order: np.ndarray, epoch: int) -> None:
        """Read `order` (dataset indices) from the next batch on, augmented as `epoch`."""
        self.order, self.epoch, self.pos = np.ascontiguousarray(order, dtype=np.int64), epoch, 0

    def __iter__(self) -> "_EpochFeed":
        return self

    def __next__(self) -> tuple:
        if self.pos >= len(self.order):
            raise StopIteration
        idx = self.order[self.pos : self.pos + self.batch_size]
        self.pos += len(idx)
        paths = [np.frombuffer(self.files[i].encode(), dtype=np.uint8) for i in idx.tolist()]
        if not self.train:
            return paths, idx[:, None]
        return paths, idx[:, None], crop_draws(self.seed, self.epoch, idx)


def _dali_pipeline(*, feed, train, crop, gpu, dtype, mean, std, roi_decode, **pipeline_kwargs):
    """Build the DALI pipeline: the feed's paths read (fn.io.file.read) -> decode -> crop/resize
    -> normalise. When training, the crop window follows the feed's draws: the drawn area and
    aspect ratio, scaled down (aspect kept) where it would leave the image, at the drawn place."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def
    def pipeline():
        if train:
            paths, index, draws = fn.external_source(
                source=feed, num_outputs=3, batch=True, cycle="raise",
                dtype=[types.UINT8, types.INT64, types.FLOAT],
            )  # fmt: skip
        else:
            paths, index = fn.external_source(
                source=feed, num_outputs=2, batch=True, cycle="raise",
                dtype=[types.UINT8, types.INT64],
            )  # fmt: skip
        encoded = fn.io.file.read(paths)
        decoder_device = "mixed" if gpu else "cpu"
        if train:
            hwc = fn.peek_image_shape(encoded, dtype=types.FLOAT)
            h, w, area, aspect = hwc[0], hwc[1], draws[0], draws[1]
            rel_w = dmath.sqrt(area * aspect * h / w)  # of the image's width
            rel_h = dmath.sqrt(area / aspect * w / h)
            over = dmath.max(dmath.max(rel_w, rel_h), 1.0)
            rel_w, rel_h = rel_w / over, rel_h / over
            start = fn.stack(draws[2] * (1.0 - rel_w), draws[3] * (1.0 - rel_h))
            shape = fn.stack(rel_w, rel_h)
            if roi_decode:  # decodes only the crop's region
                images = fn.decoders.image_slice(
                    encoded, device=decoder_device, output_type=types.RGB, rel_start=start,
                    rel_shape=shape,
                )  # fmt: skip
            else:
                images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
                images = fn.slice(images, rel_start=start, rel_shape=shape, axis_names="WH")
            images = fn.resize(images, resize_x=crop, resize_y=crop)
            mirror = fn.cast(draws[4], dtype=types.INT32)
        else:
            images = fn.decoders.image(encoded, device=decoder_device, output_type=types.RGB)
            images = fn.resize(images, resize_shorter=int(round(crop / 0.875)))
            mirror = 0
        images = fn.crop_mirror_normalize(
            images,
            dtype=types.FLOAT16 if dtype == torch.float16 else types.FLOAT,
            output_layout="HWC",
            crop=(crop, crop),
            mean=[255 * m for m in mean],
            std=[255 * s for s in std],
            mirror=mirror,
        )
        if gpu:
            index = index.gpu()
        return images, index

    pipe = pipeline(**pipeline_kwargs)
    pipe.build()
    return pipe


def find_undecodable(
    files: Sequence[str], threads: int | None = None, batch_size: int = 64
) -> list[int]:
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
            with open(files[i], "rb") as f:
                data = f.read()
        except OSError:
            return None
        if not is_whole_dali_image(data):  # never a crash for DALI
            return None
        return np.frombuffer(data, dtype=np.uint8)

    pipe = None
    bad: list[int] = []

    def decodes(chunk: list[tuple[int, np.ndarray]]) -> bool:
        nonlocal pipe
        if pipe is None:
            pipe = decode(
                batch_size=batch_size,
                num_threads=threads,
                device_id=None,
                prefetch_queue_depth=1,
                exec_async=False,
                exec_pipelined=False,
            )
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


_HEADER = 12  # bytes that tell the image formats apart
_TAIL = 1024  # bytes at the end of a JPEG searched for its end-of-image marker


def is_dali_image(header: bytes) -> bool:
    """Whether a file's first bytes are those of a format DALI's decoders read: JPEG, PNG, BMP,
    TIFF, PNM, JPEG 2000 or WebP (not GIF). Only its signature: the body may still be damaged."""
    return (
        header.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*"))
        or header.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xffO\xffQ"))  # JPEG 2000
        or (header[:4] == b"RIFF" and header[8:12] == b"WEBP")
        or (
            len(header) >= 3
            and header[:1] == b"P"
            and header[1:2] in b"123456"
            and header[2:3].isspace()
        )
    )


def _complete(header: bytes, size: int, read_at) -> bool:
    """Whether an image file with a good `header` also ends as its format ends (a truncated file,
    the common damage of an interrupted copy or download, does not): a JPEG's end-of-image marker
    after its last scan, a PNG's IEND chunk, the length a BMP or WebP header declares. Other
    formats pass. `read_at(n, offset)` reads the file: one more small read, a whole read only for
    a JPEG with data after its end."""
    if header.startswith(b"\xff\xd8\xff"):
        if b"\xff\xd9" in read_at(_TAIL, max(0, size - _TAIL)):
            return True
        data = read_at(size, 0)  # data after the end: the end must follow the last scan
        return data.find(b"\xff\xd9", max(0, data.rfind(b"\xff\xda"))) > 0
    if header.startswith(b"\x89PNG"):
        return b"IEND" in read_at(64, max(0, size - 64))
    if header.startswith(b"BM"):
        return int.from_bytes(header[2:6], "little") <= size
    if header.startswith(b"RIFF"):
        return int.from_bytes(header[4:8], "little") + 8 <= size
    return True


def is_whole_dali_image(data: bytes) -> bool:
    """is_dali_image and _complete for a file read into memory."""
    header = data[:_HEADER]
    return is_dali_image(header) and _complete(header, len(data), lambda n, o: data[o : o + n])


def find_unrecognized(files: Sequence[str], threads: int | None = None) -> list[int]:
    """Positions of files DALI must not be given: not images it reads by their first bytes
    (missing, empty, text, GIF...), or truncated by their last (`_complete`). Cheap: two small
    reads per file. DALI's CPU decoder can crash the process (segfault) on such a file instead of
    raising, so a DaliLoader never gives it one; damage inside a file's body is not seen here
    (DALI's error, then the search for the file, name it). About 10 us a file from the page
    cache (about 13 s for ImageNet's 1.28M; a cold disk: what 2.6M small reads cost, over
    `threads`)."""

    def bad_in(start: int) -> list[int]:  # a chunk per task: per-file tasks cost 10x more
        bad = []
        for i in range(start, min(start + 4096, len(files))):
            try:
                fd = os.open(files[i], os.O_RDONLY)
                try:
                    header = os.read(fd, _HEADER)
                    size = os.fstat(fd).st_size
                    ok = is_dali_image(header) and _complete(
                        header, size, lambda n, o: os.pread(fd, n, o)
                    )
                finally:
                    os.close(fd)
            except OSError:
                ok = False
            if not ok:
                bad.append(i)
        return bad

    with ThreadPoolExecutor(threads or min(16, os.cpu_count() or 2)) as pool:
        return [i for part in pool.map(bad_in, range(0, len(files), 4096)) for i in part]


def _usable_indices(
    dataset: FileDataset, every: list[str], skip_corrupt: bool, threads: int, wanted: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """The `wanted` indices (in their order), or (with skip_corrupt) those whose file DALI's
    decoder (find_undecodable) does not reject, plus the skipped ones. Without skip_corrupt,
    files that are not images DALI reads at all (find_unrecognized: their first bytes) are
    refused up front, naming them. Only the wanted files are read; `every`: dataset.files()."""
    files = [every[i] for i in wanted]
    if not skip_corrupt:
        bad = find_unrecognized(files, threads)
        if bad:
            raise CorruptImageError(_undecodable_message([files[i] for i in bad]))
        return wanted, []
    skipped = [int(wanted[i]) for i in find_undecodable(files, threads)]
    if skipped:
        log.warning(
            "skipping %d unreadable image(s), e.g. %s; %s",
            len(skipped),
            dataset.paths[skipped[0]],
            skipped_means(dataset),
        )
    keep = wanted[~np.isin(wanted, np.array(skipped, dtype=np.int64))]
    return keep, skipped

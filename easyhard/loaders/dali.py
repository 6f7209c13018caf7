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
from .common import IMAGENET_MEAN, IMAGENET_STD, Batch, EpochOrder

log = logging.getLogger("easyhard.loaders")


class DaliLoader(EpochOrder):
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
        roi_decode: when training, decode only the random crop's region (fn.decoders.
            image_random_crop) instead of the whole image followed by a crop.
    """

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
        keep, self.skipped = _usable_indices(dataset, skip_corrupt, num_threads)
        self._init_order(
            torch.as_tensor(keep, dtype=torch.int64),
            batch_size=batch_size,
            train=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        self._files = dataset.files()  # all files, by dataset index
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
        self._iter = None  # the clean view's iterator, reused while its passes complete
        self._pending = False  # an iteration started and not finished
        if not train:  # build it now: it starts reading (prefetching) at once
            self._iter = self._make_iter(self.epoch_order(), 0)  # the same order every epoch

    def _make_iter(self, order: torch.Tensor, pipeline_seed: int):
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        if len(order) == 0:
            return None
        indices = order.tolist()
        pipe = _dali_pipeline(
            files=[self._files[i] for i in indices],
            indices=indices,
            seed=pipeline_seed,
            **self._pipe_kwargs,
        )
        try:  # the iterator starts reading (prefetching) at once
            return DALIGenericIterator(
                [pipe],
                ["images", "index"],
                reader_name="Reader",
                last_batch_policy=LastBatchPolicy.PARTIAL,
                auto_reset=not self.train,
            )  # a training epoch reads once
        except RuntimeError as e:
            failure = e
        del pipe  # the failed pipeline goes before the search builds new ones
        raise self._corrupt_error(_released(failure), indices) from failure

    def _epoch_iter(self, order: torch.Tensor):
        if not self.train:
            if self._iter is None or self._pending:
                # a pass was abandoned part-way: start over from a fresh pipeline
                self._iter = self._make_iter(order, 0)
            return self._iter
        seed = (
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]) & 0x7FFFFFFF
        )
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


def _dali_pipeline(
    *, files, indices, train, crop, gpu, dtype, mean, std, roi_decode, **pipeline_kwargs
):
    """Build the DALI pipeline: reader (index as label, `files` read in the given order, one
    shard) -> decode -> crop/resize -> normalise."""
    import nvidia.dali.fn as fn
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    @pipeline_def
    def pipeline():
        jpegs, index = fn.readers.file(
            files=files, labels=indices, random_shuffle=False, pad_last_batch=True, name="Reader"
        )
        decoder_device = "mixed" if gpu else "cpu"
        area, aspect = [0.08, 1.0], [0.75, 4 / 3]
        if train and roi_decode:
            # Decodes only the region of the random crop (ROI decoding).
            images = fn.decoders.image_random_crop(
                jpegs,
                device=decoder_device,
                output_type=types.RGB,
                random_area=area,
                random_aspect_ratio=aspect,
            )
            images = fn.resize(images, resize_x=crop, resize_y=crop)
            mirror = fn.random.coin_flip(probability=0.5)
        elif train:
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
            images = fn.random_resized_crop(
                images, size=(crop, crop), random_area=area, random_aspect_ratio=aspect
            )
            mirror = fn.random.coin_flip(probability=0.5)
        else:
            images = fn.decoders.image(jpegs, device=decoder_device, output_type=types.RGB)
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
    dataset: FileDataset, skip_corrupt: bool, threads: int
) -> tuple[np.ndarray, list[int]]:
    """All indices, or (with skip_corrupt) those whose file DALI's decoder (find_undecodable)
    does not reject, plus the skipped ones. Without skip_corrupt, files that are not images DALI
    reads at all (find_unrecognized: their first bytes) are refused up front, naming them."""
    if not skip_corrupt:
        files = dataset.files()
        bad = find_unrecognized(files, threads)
        if bad:
            raise CorruptImageError(_undecodable_message([files[i] for i in bad]))
        return np.arange(len(dataset)), []
    skipped = find_undecodable(dataset.files(), threads)
    if skipped:
        log.warning(
            "skipping %d unreadable image(s), e.g. %s; their indices are recorded as never "
            "presented",
            len(skipped),
            dataset.paths[skipped[0]],
        )
    keep = np.setdiff1d(np.arange(len(dataset)), np.array(skipped, dtype=np.int64))
    return keep, skipped

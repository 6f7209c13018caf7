"""The statistics files: how a run's per-example statistics, and scores merged over runs, are
stored. Every reader and writer of these formats is here (format names, versions, metadata,
fingerprints, shape checks); stats.SampleStats, scores and the analyses go through it. NumPy
``.npz`` archives, written atomically (io.atomic_write), read with ``allow_pickle=False``; rows
always in dataset order (row i is dataset index i), never sorted. The file names keep the word
"scores" (scores.npz, merged.npz) for compatibility with files already written.

Statistics file (``scores.npz``, ``scores_clean.npz``; format "easyhard.scores", version 1):
one run's raw per-example statistics, from which easyhard.scores derives every score.

    index         int64 [N]            dataset index of row i (always i)
    label         int64 [N]            label of each example (-1: never presented, none given)
    path          str [N]              relative path (file datasets only)
    history       HISTORY_DTYPE [E, N] one record per closed epoch
    total_counts  int64 [N, 4]         closed epochs, columns ops.COUNT_FIELDS
    total_sums    float64 [N, 5]       closed epochs, columns ops.SUM_FIELDS
    epoch_counts, epoch_sums, flags    the open epoch's accumulators (exact resume)
    metadata      str                  JSON: format, N, C, epochs, fingerprint, versions, run info

Merged scores file (``merged.npz``; format "easyhard.merged", version 1): the scores of several
runs of the same data, averaged: index, label, (path), ``score_<name>`` float64 [N] (the mean over
runs), ``runs_<name>`` float32 [R, N] (each run's), and metadata (format, N, C, fingerprint,
window, the runs and the scores' directions).

History side file (``history.bin``, ``history_clean.bin``; HistoryLog): a run in progress's closed
epochs, beside its checkpoint: a 16-byte header, then one HISTORY_DTYPE [N] record per epoch.

A file of a newer format version than this easyhard reads is refused with a message saying so.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import __version__
from .io import atomic_write

FORMAT = "easyhard.scores"
FORMAT_VERSION = 1
MERGED_FORMAT = "easyhard.merged"
MERGED_FORMAT_VERSION = 1
_VERSIONS = {FORMAT: FORMAT_VERSION, MERGED_FORMAT: MERGED_FORMAT_VERSION}
_WHAT = {FORMAT: "statistics file", MERGED_FORMAT: "merged scores file"}

#: One example's record for one epoch (8 bytes). ``presentations`` and ``correct`` count the
#: epoch's presentations; above 255 presentations both are scaled to a total of 255 (the fraction
#: correct is kept to 1/255; exact counts stay in the totals). ``prob`` is the mean true-class
#: probability over the epoch's presentations, in float32: it breaks the ties of easiness, and
#: float16 cannot tell confident examples apart (its resolution near 1 is 5e-4). ``el2n`` is the
#: mean EL2N over the epoch's finite presentations. Both are 0 for an epoch without presentations.
#: The margin is kept in the totals (AUM averages it over all presentations).
HISTORY_DTYPE = np.dtype(
    [("presentations", "u1"), ("correct", "u1"), ("prob", "<f4"), ("el2n", "<f2")]
)

RESERVED_METADATA = {
    "format",
    "format_version",
    "num_samples",
    "num_classes",
    "epochs",
    "fingerprint",
    "created",
    "easyhard_version",
    "torch_version",
    "numpy_version",
    "kernels",
}


# ---------------------------------------------------------------------------- archives
def read_archive(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an easyhard .npz file (no pickles); ValueError naming the file when it is
    not a readable archive."""
    path = os.fspath(path)
    if os.path.isfile(path) and not _starts_like_a_zip(path):
        raise ValueError(
            f"{path} is not an easyhard statistics file: it is not an .npz archive "
            "(give a run's scores.npz or a merged.npz)"
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ValueError(f"{path} is not a readable easyhard statistics file ({e})") from e


def _starts_like_a_zip(path: str) -> bool:
    """Whether the file begins as a zip archive (an .npz) does; a damaged one may still fail."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def write_archive(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write `arrays` and the JSON block `meta` as an .npz file, atomically."""
    with atomic_write(path) as f:
        np.savez(f, **arrays, metadata=np.array(json.dumps(meta, sort_keys=True)))


def parse_metadata(arrays: Mapping[str, np.ndarray], path: str) -> dict[str, Any]:
    """The JSON metadata block of an archive's arrays, as an object ({} when there is none)."""
    if "metadata" not in arrays:
        return {}
    try:
        meta = json.loads(str(arrays["metadata"]))
    except ValueError as e:
        raise ValueError(f"{path}: metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(
            f"{path}: metadata is JSON but not an object: not an easyhard statistics file"
        )
    return meta


def check_version(meta: Mapping[str, Any], path: str) -> None:
    """Refuse a file whose format version is newer than this easyhard reads."""
    fmt = meta.get("format")
    if fmt in _VERSIONS and int(meta.get("format_version", 0)) > _VERSIONS[fmt]:
        raise ValueError(
            f"{path} has {_WHAT[fmt]} format version {meta['format_version']}, newer than this "
            f"easyhard ({__version__}) reads ({_VERSIONS[fmt]}); upgrade easyhard"
        )


def read_metadata_block(path: str) -> dict | None:
    """The JSON metadata block of an easyhard .npz file (statistics or merged), read without
    loading the arrays; None when the file has none or is not a readable archive."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "metadata" not in z.files:
                return None
            meta = json.loads(str(z["metadata"]))
    except Exception:
        return None
    return meta if isinstance(meta, dict) else None


def check_label_range(labels: np.ndarray, num_classes: int) -> None:
    """Labels must lie in [-1, num_classes) (-1: an example never presented, none given)."""
    bad = (labels < -1) | (labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"labels[{i}] = {labels[i]} is outside [0, {num_classes})")


# ---------------------------------------------------------------------------- statistics file
def check_save_target(
    path: str | os.PathLike, num_samples: int | None = None, fingerprint: str | None = None
) -> None:
    """Refuse a path a statistics file may not be written to: a folder, a symbolic link, an
    existing file that is not an easyhard statistics file (a user's file is never replaced), or
    one of other data than `num_samples` examples of `fingerprint` (when given: another run's
    record is not replaced by this one); an earlier statistics file of the same data is, as
    saving again does. Integrations call it when training starts, so that the record is not
    refused only when training ends."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a folder: give the statistics file's path, e.g. "
            f"{os.path.join(path, 'scores.npz')}"
        )
    if os.path.islink(path):
        raise FileExistsError(
            f"{path} is a symbolic link: it is not replaced; save to another path"
        )
    if not os.path.lexists(path):
        return
    meta = read_metadata_block(path) or {}
    if meta.get("format") != FORMAT:
        raise FileExistsError(
            f"{path} exists and is not an easyhard statistics file: it is not replaced; save to "
            "another path or move it away"
        )
    theirs = meta.get("fingerprint")
    if (num_samples is not None and meta.get("num_samples") != num_samples) or (
        fingerprint is not None and theirs is not None and theirs != fingerprint
    ):
        raise FileExistsError(
            f"{path} holds the statistics of other data ({meta.get('num_samples')} examples, "
            f"fingerprint {theirs!r}): it is not replaced by these ({num_samples} examples, "
            f"fingerprint {fingerprint!r}); save to another path or move it away"
        )


def write_stats_file(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    num_samples: int,
    num_classes: int,
    epochs: int,
    fingerprint: str | None,
    metadata: Mapping[str, Any] | None = None,
    torch_version: str | None = None,
    kernels: list[str] | None = None,
) -> None:
    """Write a statistics file: `arrays` as in the module docstring (without index and
    metadata), `metadata` the run's information (dataset, architecture, seed, view, ...) stored
    beside the format, sizes, fingerprint, package versions and the kernels that recorded the
    statistics (`kernels`: "cuda", "cpu-avx2", ...; float sums differ between CPU paths)."""
    check_save_target(path, num_samples, fingerprint)
    metadata = dict(metadata or {})
    clash = RESERVED_METADATA & metadata.keys()
    if clash:
        raise ValueError(
            f"metadata keys {sorted(clash)} are reserved by the statistics file format"
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "num_samples": int(num_samples),
        "num_classes": int(num_classes),
        "epochs": int(epochs),
        "fingerprint": fingerprint,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "easyhard_version": __version__,
        "torch_version": torch_version,
        "numpy_version": np.__version__,
        "kernels": list(kernels or []),
        **metadata,
    }
    write_archive(path, {"index": np.arange(num_samples, dtype=np.int64), **arrays}, meta)


class _Described:
    """What a file's metadata block says of its examples (statistics and merged scores files)."""

    metadata: dict[str, Any]

    @property
    def num_samples(self) -> int:
        return int(self.metadata["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def fingerprint(self) -> str | None:
        return self.metadata.get("fingerprint")


@dataclass
class StatsFile(_Described):
    """A statistics file as read from disk, checked, without device state: what the analyses need
    (``history`` and ``totals()`` as on SampleStats, so scores.compute_scores takes either).
    ``read_stats_file`` makes one; ``SampleStats.load`` builds on it."""

    path: str
    metadata: dict[str, Any]
    labels: np.ndarray  # int64 [N]
    paths: list[str] | None
    history: np.ndarray  # HISTORY_DTYPE [E, N]
    total_counts: np.ndarray  # int64 [N, 4], closed epochs
    total_sums: np.ndarray  # float64 [N, 5], closed epochs
    open_counts: np.ndarray  # the open epoch's accumulators
    open_sums: np.ndarray
    flags: np.ndarray  # int32 [N]

    @property
    def epochs(self) -> int:
        return int(self.history.shape[0])

    def totals(self, open_epoch: bool = True) -> dict[str, np.ndarray]:
        """As SampleStats.totals: sums over closed epochs and the open one (the closed ones only
        with ``open_epoch=False``), numpy [N] each."""
        from . import ops

        counts, sums = self.total_counts, self.total_sums
        if open_epoch:
            counts = counts + self.open_counts.astype(np.int64)
            sums = sums + self.open_sums.astype(np.float64)
        out = {name: counts[:, i] for i, name in enumerate(ops.COUNT_FIELDS)}
        out.update({name: sums[:, i] for i, name in enumerate(ops.SUM_FIELDS)})
        out["last_correct"] = (self.flags & ops.LAST_CORRECT).astype(bool)
        return out


def read_stats_file(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray] | None = None
) -> StatsFile:
    """Read and check a statistics file written by SampleStats.save: format and version, sizes,
    dtypes and shapes of every array, and example identity (rows in dataset order). `arrays`:
    its arrays when already read (read_archive)."""
    from . import ops

    path = os.fspath(path)
    arrays = read_archive(path) if arrays is None else arrays
    meta = read_metadata(arrays, path)
    N, C = int(meta["num_samples"]), int(meta["num_classes"])
    index = arrays.get("index")
    if index is None or index.shape != (N,) or not np.array_equal(index, np.arange(N)):
        raise ValueError(f"{path}: 'index' must list examples 0..{N - 1} in dataset order")
    expect = {
        "label": ((N,), "iu"),
        "total_counts": ((N, len(ops.COUNT_FIELDS)), "iu"),
        "total_sums": ((N, len(ops.SUM_FIELDS)), "f"),
        "epoch_counts": ((N, len(ops.COUNT_FIELDS)), "iu"),
        "epoch_sums": ((N, len(ops.SUM_FIELDS)), "f"),
        "flags": ((N,), "iu"),
    }
    for key, (shape, kinds) in expect.items():
        if key not in arrays:
            raise ValueError(f"{path}: missing array '{key}': the file is damaged")
        if arrays[key].shape != shape or arrays[key].dtype.kind not in kinds:
            raise ValueError(
                f"{path}: '{key}' is {arrays[key].dtype} {arrays[key].shape}, "
                f"expected shape {shape}"
            )
    history = arrays.get("history")
    if history is None or history.dtype != HISTORY_DTYPE:
        raise ValueError(
            f"{path}: 'history' has dtype "
            f"{None if history is None else history.dtype}, expected {HISTORY_DTYPE}"
        )
    if history.ndim != 2 or history.shape[1] != N:
        raise ValueError(f"{path}: 'history' has shape {history.shape}, expected [E, {N}]")
    for key in ("total_sums", "epoch_sums"):  # non-finite rows add nothing: sums stay finite
        if not np.isfinite(arrays[key]).all():
            raise ValueError(
                f"{path}: '{key}' holds NaN or infinite values, which easyhard never writes: the "
                "file is damaged"
            )
    labels = arrays["label"].astype(np.int64)
    check_label_range(labels, C)
    return StatsFile(
        path,
        meta,
        labels,
        arrays["path"].tolist() if "path" in arrays else None,
        history,
        arrays["total_counts"].astype(np.int64),
        arrays["total_sums"].astype(np.float64),
        arrays["epoch_counts"],
        arrays["epoch_sums"],
        arrays["flags"].astype(np.int32),
    )


def read_metadata(arrays: Mapping[str, np.ndarray], path: str = "<arrays>") -> dict[str, Any]:
    """Parse and check the JSON metadata block of a statistics file's arrays."""
    return check_stats_metadata(
        parse_metadata(arrays, path) if "metadata" in arrays else None, path
    )


def check_stats_metadata(meta: dict[str, Any] | None, path: str) -> dict[str, Any]:
    """Check a statistics file's parsed metadata block (None: the file has none): its format, its
    version and the sizes every reader relies on. Returns it."""
    if meta is None:
        raise ValueError(f"{path} has no metadata block: not an easyhard statistics file")
    if meta.get("format") == MERGED_FORMAT:
        raise ValueError(
            f"{path} is a merged scores file, not one run's statistics file: give the runs' "
            "own files (<arch>-run<N>/scores.npz in the folder it was merged in)"
        )
    if meta.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not an easyhard statistics file (format {meta.get('format')!r})"
        )
    check_version(meta, path)
    for key in ("num_samples", "num_classes"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise ValueError(
                f"{path}: metadata lacks an integer {key!r}: the file is damaged or "
                "was not written by easyhard"
            )
    return meta


# ---------------------------------------------------------------------------- merged scores file
def write_merged_file(
    out: str | os.PathLike,
    *,
    labels: np.ndarray,
    num_classes: int,
    fingerprint: str | None,
    paths: list[str] | None,
    window: int | None,
    runs: list[dict[str, Any]],
    means: Mapping[str, np.ndarray],
    per_run: Mapping[str, np.ndarray],
    directions: Mapping[str, str],
) -> dict[str, Any]:
    """Write a merged scores file (module docstring); returns its metadata."""
    n = len(labels)
    meta = {
        "format": MERGED_FORMAT,
        "format_version": MERGED_FORMAT_VERSION,
        "num_samples": n,
        "num_classes": int(num_classes),
        "fingerprint": fingerprint,
        "window": window,
        "runs": runs,
        "directions": dict(directions),
    }
    arrays = {"index": np.arange(n), "label": labels}
    for name in means:
        arrays[f"score_{name}"] = means[name]
        arrays[f"runs_{name}"] = per_run[name].astype(np.float32)
    if paths is not None:
        arrays["path"] = np.array(paths, dtype=str)
    write_archive(out, arrays, meta)
    return meta


def check_merged_output(out: str | os.PathLike) -> None:
    """A merged scores file may be written at `out` only when nothing is there or an earlier
    merged scores file is (easyhard's own, replaced); never over a statistics file or a file
    easyhard did not write. Raises ValueError naming the file."""
    out = os.fspath(out)
    if not os.path.lexists(out):
        return
    if os.path.isdir(out) or os.path.islink(out):
        raise ValueError(
            f"{out} exists and is not a merged scores file (a folder or a link); only an earlier "
            "merged scores file is replaced: choose another output"
        )
    fmt = (read_metadata_block(out) or {}).get("format")
    if fmt == FORMAT:
        raise ValueError(
            f"{out} is a run's statistics file: writing merged scores over it would "
            "destroy its per-epoch history; choose another output file"
        )
    if fmt != MERGED_FORMAT:
        raise ValueError(
            f"{out} exists and is not a merged scores file; only an earlier merged scores file "
            "is replaced: move it away or choose another output file"
        )


@dataclass
class MergedFile(_Described):
    """A merged scores file as read from disk, checked."""

    path: str
    metadata: dict[str, Any]
    scores: dict[str, np.ndarray]  # name -> float64 [N], means over runs
    labels: np.ndarray  # int64 [N]
    paths: list[str] | None


def read_merged_file(path: str, arrays: Mapping[str, np.ndarray] | None = None) -> MergedFile:
    """Read and check a merged scores file (its format version too); `arrays` when already
    read (read_archive)."""
    path = os.fspath(path)
    arrays = read_archive(path) if arrays is None else arrays
    meta = parse_metadata(arrays, path)
    if meta.get("format") != MERGED_FORMAT:
        raise ValueError(
            f"{path} is not an easyhard merged scores file (format {meta.get('format')!r})"
        )
    check_version(meta, path)
    missing = [k for k in ("num_classes",) if not isinstance(meta.get(k), int)]
    missing += [k for k in ("label",) if k not in arrays]
    if missing:
        raise ValueError(
            f"{path}: a merged scores file without {', '.join(missing)}: it is "
            "damaged; merge the runs again"
        )
    if arrays["label"].ndim != 1 or arrays["label"].dtype.kind not in "iu":
        raise ValueError(
            f"{path}: 'label' is {arrays['label'].dtype} {arrays['label'].shape}, expected "
            "integers [N] (labels are never truncated)"
        )
    labels = arrays["label"].astype(np.int64)
    check_label_range(labels, int(meta["num_classes"]))
    scores = {k[len("score_") :]: v for k, v in arrays.items() if k.startswith("score_")}
    check_merged_scores(scores, len(labels), path)
    return MergedFile(
        path, meta, scores, labels, arrays["path"].tolist() if "path" in arrays else None
    )


def check_merged_scores(scores: Mapping[str, np.ndarray], n: int, path: str) -> None:
    """Every score of a merged file: numbers [n]; no infinite value, and NaN only for examples
    never presented (scores.excluded). A crafted NaN would otherwise be ranked last by selection
    and the rest decided by dataset index."""
    absent = scores.get("never_presented")
    absent = np.zeros(n, dtype=bool) if absent is None or absent.shape != (n,) else absent > 0
    for name, v in scores.items():
        if v.shape != (n,) or v.dtype.kind not in "biuf":
            raise ValueError(
                f"{path}: score {name!r} is {v.dtype} {v.shape}, expected numbers [{n}]: the file "
                "is damaged"
            )
        if v.dtype.kind == "f":
            bad = np.isinf(v) | (np.isnan(v) & ~absent)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"{path}: score {name!r} of example {i} is {v[i]}, which easyhard never writes "
                    "for an example that was presented: the file is damaged; merge the runs again"
                )


# ---------------------------------------------------------------------------- history side file
class HistoryLog:
    """A run's closed-epoch records on disk, beside its checkpoint: a 16-byte header (magic,
    N) and one HISTORY_DTYPE [N] record per epoch, appended at the end of each epoch (O(N)),
    so that a checkpoint needs only ``state_dict(history=False)``. The checkpoint says how many
    records it covers; ``read`` returns those, and ``sync`` drops any written after it (a run
    killed between the append and the checkpoint)."""

    MAGIC = b"EHHIST1\0"

    def __init__(self, path: str | os.PathLike, num_samples: int) -> None:
        self.path = os.fspath(path)
        self.num_samples = int(num_samples)
        self._record = self.num_samples * HISTORY_DTYPE.itemsize

    def _header(self) -> bytes:
        return self.MAGIC + np.int64(self.num_samples).tobytes()

    def records(self) -> int:
        """Complete records in the file (0 when it does not exist); refuses a foreign file."""
        try:
            size = os.path.getsize(self.path)
        except FileNotFoundError:
            return 0
        with open(self.path, "rb") as f:
            head = f.read(16)
        if size < 16 and self._header().startswith(head):
            return 0  # killed while writing the header: nothing recorded yet
        if head != self._header():
            raise ValueError(
                f"{self.path} is not the history of a run over {self.num_samples} "
                "examples (its header differs): move it away to restart the run"
            )
        return (size - 16) // self._record

    def sync(self, history: np.ndarray) -> None:
        """Make the file hold exactly the records of `history` ([E, N]): those already there are
        kept (records beyond E are cut off), the missing ones appended; flushed to disk before it
        returns, so that a checkpoint written next never counts records the file lacks."""
        E = len(history)
        have = min(self.records(), E)  # refuses a file that is not this run's history
        mode = "r+b" if os.path.exists(self.path) and os.path.getsize(self.path) >= 16 else "wb"
        with open(self.path, mode) as f:
            if mode == "wb":
                f.write(self._header())
            f.truncate(16 + have * self._record)
            f.seek(16 + have * self._record)
            if have < E:
                f.write(np.ascontiguousarray(history[have:E]).tobytes())
            f.flush()
            os.fsync(f.fileno())

    def read(self, epochs: int) -> np.ndarray:
        """The first `epochs` records, HISTORY_DTYPE [epochs, N]."""
        have = self.records()
        if have < epochs:
            raise ValueError(
                f"{self.path} holds {have} epoch record(s), the checkpoint counts "
                f"{epochs}: the history is incomplete; move the run folder away to "
                "restart it"
            )
        with open(self.path, "rb") as f:
            f.seek(16)
            data = np.fromfile(f, dtype=HISTORY_DTYPE, count=epochs * self.num_samples)
        return data.reshape(epochs, self.num_samples)

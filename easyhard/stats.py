"""Per-example training statistics: the state behind every easyhard score.

`SampleStats` owns, for a dataset of N examples, the epoch accumulators that the fused op
easyhard::accumulate_stats updates on the device at every training step, the running totals, and a
compact per-example, per-epoch history kept in host memory (8 bytes per example per epoch:
ImageNet's 1.28M examples over 90 epochs fit in 0.92 GB).

Score file (``save``/``load``; a NumPy ``.npz`` archive written atomically, read with
``allow_pickle=False``). Rows are in dataset order, never sorted:

    index         int64 [N]            dataset index of row i (always i)
    label         int64 [N]            label of each example (-1: never presented, none given)
    path          str [N]              relative path (file datasets only)
    history       HISTORY_DTYPE [E, N] one record per closed epoch
    total_counts  int64 [N, 4]         closed epochs, columns ops.COUNT_FIELDS
    total_sums    float64 [N, 5]       closed epochs, columns ops.SUM_FIELDS
    epoch_counts, epoch_sums, flags    the open epoch's accumulators (exact resume)
    metadata      str                  JSON: format, N, C, epochs, fingerprint, versions, run info
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import __version__, ops
from .io import atomic_write

FORMAT = "easyhard.scores"
FORMAT_VERSION = 1

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
_NO_MISMATCH = torch.iinfo(torch.int64).max  # status[2] while no batch label contradicted `labels`
HISTORY_GROWTH = 16  # epochs added to the history buffer when it is full
_RESERVED_METADATA = {"format", "format_version", "num_samples", "num_classes", "epochs",
                      "fingerprint", "created", "easyhard_version", "torch_version",
                      "numpy_version"}


def _numpy(x: np.ndarray | torch.Tensor, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def epoch_record(counts: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """Compress one epoch's accumulators (counts [N, 4], sums [N, 5]) into HISTORY_DTYPE [N]."""
    pres = counts[:, ops.PRESENTATIONS].astype(np.int64)
    correct = counts[:, ops.CORRECT].astype(np.int64)
    finite = pres - counts[:, ops.NONFINITE]
    rec = np.zeros(len(pres), dtype=HISTORY_DTYPE)
    over = pres > 255
    correct = np.where(over, np.rint(correct * 255.0 / np.maximum(pres, 1)), correct)
    rec["presentations"] = np.minimum(pres, 255)
    rec["correct"] = correct
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = np.where(pres > 0, sums[:, ops.PROB_SUM] / np.maximum(pres, 1), 0.0)
        el2n = np.where(finite > 0, sums[:, ops.EL2N_SUM] / np.maximum(finite, 1), 0.0)
    rec["prob"] = prob
    rec["el2n"] = el2n
    return rec


class SampleStats:
    """Per-example statistics of one training run over a dataset of N examples.

    Args:
        num_samples: N, the dataset's size; indices passed to ``update`` are in [0, N).
        num_classes: C >= 2.
        device: where the epoch accumulators live (the device of the logits).
        labels: optional integer [N], the dataset's labels (floating point or bool arrays are
            refused, not truncated). ``update`` then refuses batch labels that differ from them.
            Without them, ``update`` records the labels it sees (a small extra scatter per step).
        paths: optional N relative paths (file datasets), saved with the scores.
        fingerprint: optional dataset fingerprint, saved and checked by ``load``.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        device: torch.device | str = "cpu",
        *,
        labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        paths: Sequence[str] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        if int(num_samples) < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        self.num_samples = N = int(num_samples)
        self.num_classes = int(num_classes)
        self.fingerprint = fingerprint
        state = ops.new_state(N, torch.device(device))
        self._counts, self._sums, self._flags = state["counts"], state["sums"], state["flags"]
        # The device the state landed on ("cuda" resolved to "cuda:<current>").
        self.device = self._counts.device
        # status[:2] is the op's `errors` ([mask, first row]); status[2] the smallest key
        # index * C + label of a batch label that contradicts `labels` (CUDA; CPU raises at once).
        # One tensor, so that one asynchronous copy polls both.
        self._status = torch.tensor([0, -1, _NO_MISMATCH], dtype=torch.int64, device=self.device)
        self._errors, self._mismatch = self._status[:2], self._status[2:]
        self._total_counts = np.zeros((N, len(ops.COUNT_FIELDS)), dtype=np.int64)
        self._total_sums = np.zeros((N, len(ops.SUM_FIELDS)), dtype=np.float64)
        # Closed epochs' records: a buffer grown HISTORY_GROWTH epochs at a time, so that adding an
        # epoch and reading the history cost O(N), not O(epochs * N).
        self._history_buf = np.zeros((0, N), dtype=HISTORY_DTYPE)
        self._epochs = 0
        self._labels: np.ndarray | None = None
        self._labels_dev: torch.Tensor | None = None  # the given labels on the device, [N + 1]
        self._seen_labels: torch.Tensor | None = None  # [N + 1]; slot N absorbs invalid rows
        if labels is not None:
            self._set_labels(self._check_labels(labels))
        else:
            self._seen_labels = torch.full((N + 1,), -1, dtype=torch.int64, device=self.device)
        if paths is not None and len(paths) != N:
            raise ValueError(f"paths has {len(paths)} entries, expected num_samples={N}")
        self.paths = list(paths) if paths is not None else None
        # CUDA reports invalid rows in self._status; poll a pinned copy without synchronising.
        self._status_host: torch.Tensor | None = None
        self._status_event = None

    # ------------------------------------------------------------------ recording
    def update(self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Record one batch: logits [B, C] (float32/16, bfloat16) on this SampleStats' device,
        labels [B] and indices [B] (any integer dtype) on the same device.

        Call it with the training step's logits (no extra forward pass); gradients are not
        tracked. Refuses at once (ValueError/TypeError naming the argument, before anything is
        written) logits whose class count is not num_classes, and labels or indices that are not
        integer tensors (never truncated), not of shape [B] or on another device.
        Raises RuntimeError for labels outside [0, C) or indices outside [0, N), and ValueError for
        batch labels that differ from the ``labels`` given to the constructor: on CPU at once and
        before anything is written; on CUDA within a few steps (no synchronisation; ``check`` and
        ``end_epoch`` raise too), the rows with invalid labels or indices having been skipped.
        """
        logits, labels, indices = self._check_batch(logits, labels, indices)
        cuda = self._counts.is_cuda
        if cuda:
            self._poll_errors()
        if self._labels_dev is not None and len(indices):
            self._compare_labels(labels, indices, raise_now=not cuda)
        ops.accumulate_stats(logits, labels, indices, self._counts, self._sums,
                             self._flags, self._errors)
        if self._seen_labels is not None:
            valid = (indices >= 0) & (indices < self.num_samples)
            self._seen_labels[torch.where(valid, indices, self.num_samples)] = labels
        if cuda:
            # Everything above ran on the current stream of the statistics' device (not
            # necessarily the current device): copy and record there, so that the event
            # completes only once this step's status has landed in the pinned buffer.
            with torch.cuda.device(self.device):
                stream = torch.cuda.current_stream(self.device)
                if self._status_host is None:
                    self._status_host = torch.empty(3, dtype=torch.int64, pin_memory=True)
                    self._status_event = torch.cuda.Event()
                with torch.cuda.stream(stream):
                    self._status_host.copy_(self._status, non_blocking=True)
                self._status_event.record(stream)

    def _check_batch(
        self, logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check update's arguments (types, shapes, devices); returns logits detached and
        labels, indices as int64. Logits' dtype is checked by the op."""
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
        if logits.dim() != 2:
            raise ValueError(f"logits must be 2-D [B, num_classes], got shape {list(logits.shape)}")
        if logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits has {logits.shape[1]} classes (shape {list(logits.shape)}) but this "
                f"SampleStats was made for num_classes={self.num_classes}"
            )
        if logits.device != self.device:
            raise ValueError(
                f"logits is on {logits.device} but this SampleStats is on {self.device}; create it "
                "on the device of the training step's logits"
            )
        B = logits.shape[0]
        out = []
        for name, t in (("labels", labels), ("indices", indices)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise TypeError(
                    f"{name} must be an integer tensor, got {t.dtype} (not truncated to integers: "
                    "pass the loader's integer tensor)"
                )
            if tuple(t.shape) != (B,):
                raise ValueError(
                    f"{name} must have shape [{B}] (one per row of logits), got {list(t.shape)}"
                )
            if t.device != logits.device:
                raise ValueError(f"{name} is on {t.device} but logits is on {logits.device}")
            out.append(t.to(torch.int64))
        return logits.detach(), out[0], out[1]

    def _compare_labels(self, labels: torch.Tensor, indices: torch.Tensor, raise_now: bool) -> None:
        """Compare batch labels with the given ones. Rows with an invalid label or index are left
        to the op, which refuses them. On CPU raise at once; on CUDA fold the smallest
        index * C + label of a contradicting row into status[2] without synchronising."""
        N, C = self.num_samples, self.num_classes
        valid = (indices >= 0) & (indices < N) & (labels >= 0) & (labels < C)
        expected = self._labels_dev[torch.where(valid, indices, N)]
        wrong = valid & (expected != labels)
        if raise_now:
            if bool(wrong.any()):
                row = int(torch.nonzero(wrong)[0, 0])
                raise ValueError(
                    f"labels[{row}] = {int(labels[row])} but example {int(indices[row])} has label "
                    f"{int(expected[row])} in the labels given to SampleStats; the loader's labels "
                    "do not match the dataset's (nothing was recorded for this batch)"
                )
            return
        key = torch.where(wrong, indices * C + labels, _NO_MISMATCH).amin()
        torch.minimum(self._mismatch, key, out=self._mismatch)

    def end_epoch(self) -> None:
        """Close the epoch: append it to the history, fold it into the totals, zero the
        accumulators. The last-correct flags carry over."""
        counts, sums = self._open_epoch()
        self._total_counts += counts
        self._total_sums += sums
        self._append_record(epoch_record(counts, sums))
        self._counts.zero_()
        self._sums.zero_()

    def all_reduce(self, group=None) -> None:
        """Sum the open epoch's accumulators across torch.distributed ranks (call before
        end_epoch on every rank). Each rank records its share of the examples; afterwards every rank
        holds the global counts. An example's last-correct flag becomes that of the rank(s) that
        presented it this epoch (all of them correct, if several did)."""
        import torch.distributed as tdist

        self.check()
        touched = (self._counts[:, ops.PRESENTATIONS] > 0).to(torch.int32)
        correct_flag = (self._flags & ops.LAST_CORRECT) * touched
        for t in (self._counts, self._sums, touched, correct_flag):
            tdist.all_reduce(t, group=group)
        settled = (correct_flag == touched).to(torch.int32) * ops.LAST_CORRECT
        self._flags.copy_(torch.where(touched > 0, settled, self._flags))

    def check(self) -> None:
        """Raise RuntimeError if any update so far had invalid labels or indices, ValueError if
        one had labels that differ from the given ones (synchronises)."""
        self._raise_for(self._status.cpu().numpy())

    def _poll_errors(self) -> None:
        if self._status_event is not None and self._status_event.query():
            self._raise_for(self._status_host.numpy())

    def _raise_for(self, status: np.ndarray) -> None:
        mask, row, mismatch = int(status[0]), int(status[1]), int(status[2])
        if mismatch != _NO_MISMATCH:
            index, label = divmod(mismatch, self.num_classes)
            raise ValueError(
                f"example {index} has label {int(self._labels[index])} in the labels given to "
                f"SampleStats, but a batch gave {label} (an earlier update); the loader's labels "
                "do not match the dataset's. Those rows were recorded."
            )
        if mask == 0:
            return
        what = []
        if mask & ops.ERROR_LABEL:
            what.append(f"a label outside [0, {self.num_classes})")
        if mask & ops.ERROR_INDEX:
            what.append(f"an index outside [0, {self.num_samples})")
        raise RuntimeError(
            f"SampleStats.update received {' and '.join(what)} (first at batch row {row} of an "
            "earlier batch); those rows were skipped and nothing was recorded for them. Check the "
            "loader's labels and dataset indices."
        )

    def _open_epoch(self) -> tuple[np.ndarray, np.ndarray]:
        self.check()
        return (self._counts.cpu().numpy().astype(np.int64),
                self._sums.cpu().numpy().astype(np.float64))

    # ------------------------------------------------------------------ reading
    @property
    def epochs(self) -> int:
        """Number of closed epochs."""
        return self._epochs

    @property
    def history(self) -> np.ndarray:
        """HISTORY_DTYPE [epochs, N]: one record per closed epoch, rows in dataset order. A
        read-only view (no copy): later epochs never change what it shows."""
        view = self._history_buf[: self._epochs]
        view.flags.writeable = False
        return view

    def _append_record(self, record: np.ndarray) -> None:
        if self._epochs == len(self._history_buf):
            grown = np.zeros((self._epochs + HISTORY_GROWTH, self.num_samples), HISTORY_DTYPE)
            grown[: self._epochs] = self._history_buf[: self._epochs]
            self._history_buf = grown
        self._history_buf[self._epochs] = record
        self._epochs += 1

    @property
    def labels(self) -> np.ndarray:
        """int64 [N]: the given labels, or those seen by ``update`` (-1 for unseen examples)."""
        if self._labels is not None:
            return self._labels
        return self._seen_labels[: self.num_samples].cpu().numpy()

    def totals(self) -> dict[str, np.ndarray]:
        """Per-example sums over every presentation so far (closed epochs and the open one).

        Returns numpy arrays of shape [N]: int64 ``presentations``, ``correct``,
        ``forgetting_events``, ``nonfinite``; float64 ``prob_sum``, ``prob_sq_sum``,
        ``margin_sum``, ``loss_sum``, ``el2n_sum``; bool ``last_correct``.
        """
        counts, sums = self._open_epoch()
        counts += self._total_counts
        sums += self._total_sums
        out = {name: counts[:, i] for i, name in enumerate(ops.COUNT_FIELDS)}
        out.update({name: sums[:, i] for i, name in enumerate(ops.SUM_FIELDS)})
        out["last_correct"] = (self._flags.cpu().numpy() & ops.LAST_CORRECT).astype(bool)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, history: bool = True) -> dict[str, Any]:
        """Everything needed to resume exactly; loadable with torch.load(weights_only=True).

        `history`: include the closed epochs' records (E x N x 8 bytes). Without them the state
        says how many there are (``history_epochs``) and ``load_state_dict`` takes them from a
        HistoryLog: a checkpoint every epoch then costs O(N), not O(E x N)."""
        self.check()
        out = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "counts": self._counts.cpu(),
            "sums": self._sums.cpu(),
            "flags": self._flags.cpu(),
            "total_counts": torch.from_numpy(self._total_counts.copy()),
            "total_sums": torch.from_numpy(self._total_sums.copy()),
            "labels": torch.from_numpy(np.array(self.labels, dtype=np.int64)),
            "history_epochs": self._epochs,
        }
        if history:
            h = self.history
            out["history"] = torch.from_numpy(
                h.view(np.uint8).reshape(*h.shape, HISTORY_DTYPE.itemsize).copy())
        return out

    def load_state_dict(self, state: Mapping[str, Any], history: np.ndarray | None = None) -> None:
        """Restore a ``state_dict``; refuses one of another dataset size or class count. A state
        saved without its history takes `history` (HISTORY_DTYPE [history_epochs, N], e.g.
        HistoryLog.read)."""
        N, C = self.num_samples, self.num_classes
        if int(state["num_samples"]) != N or int(state["num_classes"]) != C:
            raise ValueError(
                f"state is for {state['num_samples']} examples and {state['num_classes']} classes, "
                f"this SampleStats has {N} and {C}"
            )
        expect = {"counts": (N, len(ops.COUNT_FIELDS)), "sums": (N, len(ops.SUM_FIELDS)),
                  "flags": (N,), "total_counts": (N, len(ops.COUNT_FIELDS)),
                  "total_sums": (N, len(ops.SUM_FIELDS)), "labels": (N,)}
        for key, shape in expect.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(f"state[{key!r}] has shape {tuple(state[key].shape)}, expected {shape}")
        if "history" in state:
            history = _numpy(state["history"], np.uint8)
        else:
            want = int(state["history_epochs"])
            if history is None or history.dtype != HISTORY_DTYPE or history.shape != (want, N):
                got = "none" if history is None else f"{history.dtype} {history.shape}"
                raise ValueError(f"the state was saved without its history ({want} epochs of "
                                 f"{N} examples): give them as `history` (got {got})")
            history = np.ascontiguousarray(history).view(np.uint8).reshape(want, N, -1)
        if history.ndim != 3 or history.shape[1:] != (N, HISTORY_DTYPE.itemsize):
            raise ValueError(f"state['history'] has shape {history.shape}, expected [E, {N}, 8]")
        self._counts.copy_(torch.as_tensor(state["counts"]))
        self._sums.copy_(torch.as_tensor(state["sums"]))
        self._flags.copy_(torch.as_tensor(state["flags"]))
        self._status.copy_(torch.tensor([0, -1, _NO_MISMATCH]))
        self._total_counts = _numpy(state["total_counts"], np.int64).copy()
        self._total_sums = _numpy(state["total_sums"], np.float64).copy()
        records = np.ascontiguousarray(history).view(HISTORY_DTYPE)[..., 0]
        self._history_buf = records.copy()
        self._epochs = len(records)
        labels = self._check_labels(state["labels"])
        if self._labels is not None:
            self._set_labels(labels)
        else:
            self._seen_labels[:N] = torch.from_numpy(labels).to(self.device)

    # ------------------------------------------------------------------ score files
    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write the score file (format in the module docstring) atomically.

        `metadata`: run information (dataset, architecture, seed, view, ...), stored in the JSON
        block beside the format, sizes, fingerprint and package versions.
        """
        metadata = dict(metadata or {})
        clash = _RESERVED_METADATA & metadata.keys()
        if clash:
            raise ValueError(f"metadata keys {sorted(clash)} are reserved by the score file format")
        state = self.state_dict()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "epochs": self.epochs,
            "fingerprint": self.fingerprint,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "easyhard_version": __version__,
            "torch_version": torch.__version__,
            "numpy_version": np.__version__,
            **metadata,
        }
        arrays = {
            "index": np.arange(self.num_samples, dtype=np.int64),
            "label": state["labels"].numpy(),
            "history": self.history,
            "total_counts": self._total_counts,
            "total_sums": self._total_sums,
            "epoch_counts": state["counts"].numpy(),
            "epoch_sums": state["sums"].numpy(),
            "flags": state["flags"].numpy(),
            "metadata": np.array(json.dumps(meta, sort_keys=True)),
        }
        if self.paths is not None:
            arrays["path"] = np.array(self.paths, dtype=str)
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        *,
        expect_fingerprint: str | None = None,
    ) -> "SampleStats":
        """Read a score file written by ``save``; checks its format, shapes and example identity,
        and (if given) that its dataset fingerprint equals `expect_fingerprint`."""
        f = read_stats_file(path)
        if expect_fingerprint is not None and f.fingerprint != expect_fingerprint:
            raise ValueError(
                f"{f.path} was scored on dataset fingerprint {f.fingerprint!r}, but this "
                f"dataset's fingerprint is {expect_fingerprint!r}: the scores belong to other data"
            )
        N, C = f.num_samples, f.num_classes
        stats = cls(N, C, device, paths=f.paths, fingerprint=f.fingerprint)
        stats.load_state_dict({
            "num_samples": N,
            "num_classes": C,
            "counts": torch.from_numpy(f.open_counts),
            "sums": torch.from_numpy(f.open_sums),
            "flags": torch.from_numpy(f.flags),
            "total_counts": f.total_counts,
            "total_sums": f.total_sums,
            "history": f.history.view(np.uint8).reshape(*f.history.shape, HISTORY_DTYPE.itemsize),
            "labels": f.labels,
        })
        stats.metadata = f.metadata
        return stats

    @staticmethod
    def _check_labels_range(labels: np.ndarray, num_classes: int) -> None:
        bad = (labels < -1) | (labels >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"labels[{i}] = {labels[i]} is outside [0, {num_classes})")

    def _check_labels(self, labels) -> np.ndarray:
        """Dataset labels as int64 [N]: integers (never truncated) in [-1, C)."""
        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
        arr = np.asarray(labels)
        if arr.shape != (self.num_samples,):
            raise ValueError(f"labels must have shape [{self.num_samples}], got {list(arr.shape)}")
        if arr.dtype.kind not in "iu":
            raise TypeError(
                f"labels must be integers, got dtype {arr.dtype} (not truncated: pass integer "
                "class labels)"
            )
        self._check_labels_range(arr, self.num_classes)
        return arr.astype(np.int64)

    def _set_labels(self, labels: np.ndarray) -> None:
        self._labels = labels
        # Slot N is a placeholder for rows with an invalid index (never compared).
        self._labels_dev = torch.from_numpy(np.append(labels, -1)).to(self.device)


@dataclass
class StatsFile:
    """A score file as read from disk, checked, without device state: what the analyses need
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
    def num_samples(self) -> int:
        return int(self.metadata["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["num_classes"])

    @property
    def fingerprint(self) -> str | None:
        return self.metadata.get("fingerprint")

    @property
    def epochs(self) -> int:
        return int(self.history.shape[0])

    def totals(self) -> dict[str, np.ndarray]:
        """As SampleStats.totals: sums over closed epochs and the open one, numpy [N] each."""
        counts = self.total_counts + self.open_counts.astype(np.int64)
        sums = self.total_sums + self.open_sums.astype(np.float64)
        out = {name: counts[:, i] for i, name in enumerate(ops.COUNT_FIELDS)}
        out.update({name: sums[:, i] for i, name in enumerate(ops.SUM_FIELDS)})
        out["last_correct"] = (self.flags & ops.LAST_CORRECT).astype(bool)
        return out


def read_stats_file(path: str | os.PathLike) -> StatsFile:
    """Read and check a score file written by SampleStats.save: format and version, sizes,
    dtypes and shapes of every array, and example identity (rows in dataset order)."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise ValueError(f"{path} is not a readable easyhard score file ({e})") from e
    meta = read_metadata(arrays, path)
    N, C = int(meta["num_samples"]), int(meta["num_classes"])
    index = arrays.get("index")
    if index is None or index.shape != (N,) or not np.array_equal(index, np.arange(N)):
        raise ValueError(f"{path}: 'index' must list examples 0..{N - 1} in dataset order")
    expect = {"label": ((N,), "iu"), "total_counts": ((N, len(ops.COUNT_FIELDS)), "iu"),
              "total_sums": ((N, len(ops.SUM_FIELDS)), "f"),
              "epoch_counts": ((N, len(ops.COUNT_FIELDS)), "iu"),
              "epoch_sums": ((N, len(ops.SUM_FIELDS)), "f"), "flags": ((N,), "iu")}
    for key, (shape, kinds) in expect.items():
        if key not in arrays:
            raise ValueError(f"{path}: missing array '{key}': the file is damaged")
        if arrays[key].shape != shape or arrays[key].dtype.kind not in kinds:
            raise ValueError(f"{path}: '{key}' is {arrays[key].dtype} {arrays[key].shape}, "
                             f"expected shape {shape}")
    history = arrays.get("history")
    if history is None or history.dtype != HISTORY_DTYPE:
        raise ValueError(f"{path}: 'history' has dtype "
                         f"{None if history is None else history.dtype}, expected {HISTORY_DTYPE}")
    if history.ndim != 2 or history.shape[1] != N:
        raise ValueError(f"{path}: 'history' has shape {history.shape}, expected [E, {N}]")
    labels = arrays["label"].astype(np.int64)
    SampleStats._check_labels_range(labels, C)
    return StatsFile(path, meta, labels, arrays["path"].tolist() if "path" in arrays else None,
                     history, arrays["total_counts"].astype(np.int64),
                     arrays["total_sums"].astype(np.float64), arrays["epoch_counts"],
                     arrays["epoch_sums"], arrays["flags"].astype(np.int32))


def read_metadata(arrays: Mapping[str, np.ndarray], path: str = "<arrays>") -> dict[str, Any]:
    """Parse and check the JSON metadata block of a score file's arrays."""
    if "metadata" not in arrays:
        raise ValueError(f"{path} has no metadata block: not an easyhard score file")
    try:
        meta = json.loads(str(arrays["metadata"]))
    except ValueError as e:
        raise ValueError(f"{path}: metadata is not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: metadata is JSON but not an object: not an easyhard score file")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an easyhard score file (format {meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has score-file format version {meta['format_version']}, newer than this "
            f"easyhard ({__version__}) reads ({FORMAT_VERSION}); upgrade easyhard"
        )
    for key in ("num_samples", "num_classes"):
        if not isinstance(meta.get(key), int) or isinstance(meta.get(key), bool):
            raise ValueError(f"{path}: metadata lacks an integer {key!r}: the file is damaged or "
                             "was not written by easyhard")
    return meta


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
        if size < 16:  # killed while writing the header: nothing recorded yet
            return 0
        with open(self.path, "rb") as f:
            head = f.read(16)
        if head != self._header():
            raise ValueError(f"{self.path} is not the history of a run over {self.num_samples} "
                             "examples (its header differs): move it away to restart the run")
        return (size - 16) // self._record

    def sync(self, history: np.ndarray) -> None:
        """Make the file hold exactly the records of `history` ([E, N]): those already there are
        kept (records beyond E are cut off), the missing ones appended; flushed to disk before it
        returns, so that a checkpoint written next never counts records the file lacks."""
        E = len(history)
        have = min(self.records(), E)
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
            raise ValueError(f"{self.path} holds {have} epoch record(s), the checkpoint counts "
                             f"{epochs}: the history is incomplete; move the run folder away to "
                             "restart it")
        with open(self.path, "rb") as f:
            f.seek(16)
            data = np.fromfile(f, dtype=HISTORY_DTYPE, count=epochs * self.num_samples)
        return data.reshape(epochs, self.num_samples)

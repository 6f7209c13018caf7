"""Per-example training statistics: the state behind every easyhard score.

`SampleStats` owns, for a dataset of N examples, the epoch accumulators that the fused op
easyhard::accumulate_stats updates on the device at every training step, the running totals (on
the same device: an epoch is folded there), and a compact per-example, per-epoch history kept in
host memory (8 bytes per example per epoch: ImageNet's 1.28M examples over 90 epochs fit in
0.92 GB).

Its statistics file (``save``/``load``: scores.npz, format in easyhard.statsfile) holds the
totals, the history and the open epoch, rows in dataset order.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from . import ops
from .statsfile import HISTORY_DTYPE, check_label_range, read_stats_file, write_stats_file

_NO_MISMATCH = torch.iinfo(torch.int64).max  # status[2] while no batch label contradicted `labels`
HISTORY_GROWTH = 16  # the history buffer's first size in epochs (then it doubles)


def _numpy(x: np.ndarray | torch.Tensor, dtype) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(dtype, copy=False)


def host_copy(obj: Any) -> Any:
    """A snapshot of a tensor, or of a (nested) state dict's tensors, on the host: one copy from
    any device, shared with nothing that training goes on changing."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


def epoch_record(counts: np.ndarray | torch.Tensor, sums: np.ndarray | torch.Tensor) -> np.ndarray:
    """Compress one epoch's accumulators (counts [N, 4], sums [N, 5]; numpy, or torch on any
    device: computed there, only the record comes to the host) into HISTORY_DTYPE [N]."""
    counts, sums = torch.as_tensor(counts), torch.as_tensor(sums)
    pres = counts[:, ops.PRESENTATIONS].long()
    correct = counts[:, ops.CORRECT].long()
    finite = pres - counts[:, ops.NONFINITE].long()
    scaled = torch.round(correct.double() * 255.0 / pres.clamp(min=1).double()).long()  # half-even
    correct = torch.where(pres > 255, scaled, correct)
    prob = torch.where(pres > 0, sums[:, ops.PROB_SUM].double() / pres.clamp(min=1).double(), 0.0)
    el2n = torch.where(
        finite > 0, sums[:, ops.EL2N_SUM].double() / finite.clamp(min=1).double(), 0.0
    )
    rec = np.empty(len(pres), dtype=HISTORY_DTYPE)
    rec["presentations"] = pres.clamp(max=255).to(torch.uint8).cpu().numpy()
    rec["correct"] = correct.to(torch.uint8).cpu().numpy()
    rec["prob"] = prob.float().cpu().numpy()
    rec["el2n"] = el2n.cpu().numpy()  # float64 to float16 by numpy: one rounding
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
        # Closed epochs' totals live beside the accumulators (on the device): closing an epoch
        # folds there, and only its 8-byte record per example comes to the host.
        self._total_counts = torch.zeros(
            N, len(ops.COUNT_FIELDS), dtype=torch.int64, device=self.device
        )
        self._total_sums = torch.zeros(
            N, len(ops.SUM_FIELDS), dtype=torch.float64, device=self.device
        )
        self._open_empty = True  # no update since the last end_epoch: the accumulators are 0
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
        # The kernels that recorded these statistics ("cuda", "cpu-avx2", ...): float sums differ
        # between CPU paths in their last bits, so the statistics file says which were used.
        self.kernels: set[str] = set()
        # CUDA reports invalid rows in self._status; poll a pinned copy without synchronising.
        self._status_host: torch.Tensor | None = None
        self._status_event = None

    @classmethod
    def for_dataset(
        cls,
        dataset: Any,
        device: torch.device | str = "cpu",
        *,
        num_classes: int | None = None,
    ) -> "SampleStats":
        """A recorder for `dataset`, an ``easyhard.with_indices(...)`` dataset: its size (of the
        index space), labels, relative paths and fingerprint are taken from it, so that ``update``
        checks every batch's labels against the dataset's and the statistics file says which data
        it belongs to. `num_classes` is needed when the dataset does not list its classes."""
        from .indexed import IndexedDataset

        if not isinstance(dataset, IndexedDataset):
            raise TypeError(
                f"for_dataset takes a dataset wrapped by easyhard.with_indices, got "
                f"{type(dataset).__name__}: wrap it first, so that every item carries the index "
                "that update records"
            )
        classes = num_classes if num_classes is not None else dataset.num_classes
        if classes is None:
            raise ValueError(
                f"{type(dataset.dataset).__name__} does not list its classes (no .classes): pass "
                "num_classes="
            )
        labels = None if dataset.labels_transformed else dataset.labels
        if labels is not None and len(labels) and int(labels.max()) >= int(classes):
            raise ValueError(
                f"the dataset has label {int(labels.max())}, outside num_classes={classes}"
            )
        return cls(
            dataset.num_samples,
            classes,
            device,
            labels=labels,
            paths=dataset.paths,
            fingerprint=dataset.fingerprint,
        )

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
        ops.accumulate_stats(
            logits, labels, indices, self._counts, self._sums, self._flags, self._errors
        )
        self.kernels.add("cuda" if cuda else f"cpu-{ops.cpu_capability()}")
        self._open_empty = False
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
        accumulators. The last-correct flags carry over. An epoch in which nothing was
        presented is closed too (a shard may present nothing), with a warning: it is most often
        end_epoch called twice, and an empty epoch shifts first_learned, the forgetting of the
        never-learned and easiness's window."""
        self.check()
        if self._open_empty:
            warnings.warn(
                f"end_epoch: nothing was presented since the last end_epoch, so epoch "
                f"{self._epochs} is empty (end_epoch called twice?); it is recorded, and counts "
                "in first_learned, forgetting and easiness's window",
                stacklevel=2,
            )
        self._append_record(epoch_record(self._counts, self._sums))
        self._total_counts.add_(self._counts)  # int32 into int64, float32 into float64: exact
        self._total_sums.add_(self._sums)
        self._counts.zero_()
        self._sums.zero_()
        self._open_empty = True

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
        self._open_empty = False  # other ranks' presentations arrived

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

    # ------------------------------------------------------------------ reading
    def open_epoch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The open epoch's accumulators on the device: counts [N, 4] (int32: presentations,
        correct, forgetting events, non-finite) and sums [N, 5] (float32; ops.COUNT_FIELDS and
        SUM_FIELDS), read-only by convention (after ``all_reduce``: every rank's)."""
        return self._counts, self._sums

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

    def reserve(self, epochs: int) -> None:
        """Make room for `epochs` closed epochs in the history at once (a run knows how many it
        trains): appending then never copies the history. The room costs nothing until used
        (fresh zero pages)."""
        if epochs > len(self._history_buf):
            grown = np.zeros((epochs, self.num_samples), HISTORY_DTYPE)
            grown[: self._epochs] = self._history_buf[: self._epochs]
            self._history_buf = grown

    def _append_record(self, record: np.ndarray) -> None:
        if self._epochs == len(self._history_buf):  # doubles: O(1) amortised per epoch
            self.reserve(max(HISTORY_GROWTH, 2 * self._epochs))
        self._history_buf[self._epochs] = record
        self._epochs += 1

    @property
    def labels(self) -> np.ndarray:
        """int64 [N]: the given labels, or those seen by ``update`` (-1 for unseen examples)."""
        if self._labels is not None:
            return self._labels
        return self._seen_labels[: self.num_samples].cpu().numpy()

    def totals(self, open_epoch: bool = True) -> dict[str, np.ndarray]:
        """Per-example sums over every presentation so far (closed epochs and the open one; the
        closed epochs only with ``open_epoch=False``, as the scores count them).

        Returns numpy arrays of shape [N]: int64 ``presentations``, ``correct``,
        ``forgetting_events``, ``nonfinite``; float64 ``prob_sum``, ``prob_sq_sum``,
        ``margin_sum``, ``loss_sum``, ``el2n_sum``; bool ``last_correct``.
        """
        self.check()
        counts, sums = self._total_counts, self._total_sums
        if open_epoch:
            counts, sums = counts + self._counts, sums + self._sums
        counts, sums = counts.cpu().numpy(), sums.cpu().numpy()
        out = {name: counts[:, i] for i, name in enumerate(ops.COUNT_FIELDS)}
        out.update({name: sums[:, i] for i, name in enumerate(ops.SUM_FIELDS)})
        out["last_correct"] = (self._flags.cpu().numpy() & ops.LAST_CORRECT).astype(bool)
        return out

    def scores(self, window: int | None = None):
        """Every example's scores as a table (easyhard.scores.Scores: a dict of numpy arrays
        with ``to_pandas()``; each score's direction and range in its docstring). `window`:
        the first epochs easiness counts (default: every closed epoch)."""
        from .scores import Scores, ScoreTable, compute_scores

        table = ScoreTable(
            compute_scores(self, window),
            np.asarray(self.labels, dtype=np.int64),
            self.num_classes,
            self.fingerprint,
            self.paths,
            dict(getattr(self, "metadata", None) or {}),
        )
        return Scores.from_table(table, window)

    @classmethod
    def combine(cls, shards: Sequence["SampleStats"]) -> "SampleStats":
        """One run's statistics from its shards: SampleStats of the same data over the same
        epochs, each having recorded its share of the examples (as DDP ranks or separate
        processes over a fixed partition do). Counts and sums add exactly; an epoch's record of
        an example presented in several shards is their presentation-weighted mean; an example's
        last-correct flag is that of the shard(s) that presented it last. A forgetting event
        between presentations in different shards is not seen by either: for exact forgetting
        counts keep each example in one shard, or sum the open epoch with ``all_reduce``."""
        shards = list(shards)
        if not shards:
            raise ValueError("nothing to combine: give at least one SampleStats")
        first = shards[0]
        for i, s in enumerate(shards):
            if not isinstance(s, SampleStats):
                raise TypeError(f"shards[{i}] is a {type(s).__name__}, not a SampleStats")
            if any(s is t for t in shards[:i]):
                raise ValueError(f"shards[{i}] is given twice: each shard counts once")
            same = (s.num_samples, s.num_classes, s.epochs) == (
                first.num_samples,
                first.num_classes,
                first.epochs,
            )
            if not same or s.fingerprint != first.fingerprint:
                raise ValueError(
                    f"shards[{i}] has {s.num_samples} examples, {s.num_classes} classes, "
                    f"{s.epochs} closed epochs and fingerprint {s.fingerprint!r}; shards[0] "
                    f"{first.num_samples}, {first.num_classes}, {first.epochs} and "
                    f"{first.fingerprint!r}: only shards of one run combine"
                )
        given = [s._labels for s in shards if s._labels is not None]
        labels = _combined_labels([s.labels for s in shards])
        out = cls(
            first.num_samples,
            first.num_classes,
            first.device,
            labels=labels if given else None,
            paths=first.paths,
            fingerprint=first.fingerprint,
        )
        if not given:
            out._seen_labels[: out.num_samples] = torch.from_numpy(labels).to(out.device)
        for s in shards:
            s.check()
            out._total_counts += s._total_counts.to(out.device)
            out._total_sums += s._total_sums.to(out.device)
            out._counts += s._counts.to(out.device)
            out._sums += s._sums.to(out.device)
            out.kernels |= s.kernels
        out._open_empty = all(s._open_empty for s in shards)
        out._flags.copy_(torch.from_numpy(_combined_flags(shards)).to(out.device))
        if first.epochs:
            out._history_buf = _combined_history([s.history for s in shards])
            out._epochs = first.epochs
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, history: bool = True) -> dict[str, Any]:
        """Everything needed to resume exactly; loadable with torch.load(weights_only=True).
        A snapshot: later updates do not change it.

        `history`: include the closed epochs' records (E x N x 8 bytes). Without them the state
        says how many there are (``history_epochs``) and ``load_state_dict`` takes them from a
        HistoryLog: a checkpoint every epoch then costs O(N), not O(E x N). The open epoch's
        accumulators are left out while they are zero (just after ``end_epoch``: an epoch-end
        checkpoint), and the count totals are stored as int32 while they fit."""
        self.check()
        low, high = torch.aminmax(self._total_counts)
        fits = int(low) >= 0 and int(high) <= torch.iinfo(torch.int32).max
        out = {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "flags": host_copy(self._flags),
            # one copy to the host, half the size while it fits (loaded back as int64)
            "total_counts": self._total_counts.to(
                "cpu", dtype=torch.int32 if fits else torch.int64, copy=True
            ),
            "total_sums": host_copy(self._total_sums),
            "labels": torch.from_numpy(np.array(self.labels, dtype=np.int64)),
            "history_epochs": self._epochs,
            "kernels": sorted(self.kernels),
            "fingerprint": self.fingerprint,
        }
        if not self._open_empty:
            out["counts"] = host_copy(self._counts)
            out["sums"] = host_copy(self._sums)
        if history:
            h = self.history
            out["history"] = torch.from_numpy(
                h.view(np.uint8).reshape(*h.shape, HISTORY_DTYPE.itemsize).copy()
            )
        return out

    def load_state_dict(self, state: Mapping[str, Any], history: np.ndarray | None = None) -> None:
        """Restore a ``state_dict``; refuses one of another dataset size or class count, of
        another dataset fingerprint (when both have one; a SampleStats without one takes the
        state's), or whose labels contradict the ones this SampleStats was given. A state
        saved without its history takes `history` (HISTORY_DTYPE [history_epochs, N], e.g.
        HistoryLog.read)."""
        N, C = self.num_samples, self.num_classes
        if not isinstance(state, Mapping) or not {"num_samples", "num_classes"} <= state.keys():
            raise ValueError(
                "state is not a SampleStats state_dict (it has no num_samples and num_classes): "
                "give what SampleStats.state_dict() returned"
            )
        if int(state["num_samples"]) != N or int(state["num_classes"]) != C:
            raise ValueError(
                f"state is for {state['num_samples']} examples and {state['num_classes']} classes, "
                f"this SampleStats has {N} and {C}"
            )
        theirs = state.get("fingerprint")  # absent before 0.3
        if theirs is not None and self.fingerprint is not None and theirs != self.fingerprint:
            raise ValueError(
                f"state was recorded on dataset fingerprint {theirs!r}, this SampleStats is "
                f"for {self.fingerprint!r}: it belongs to other data"
            )
        expect = {
            "counts": (N, len(ops.COUNT_FIELDS)),
            "sums": (N, len(ops.SUM_FIELDS)),
            "flags": (N,),
            "total_counts": (N, len(ops.COUNT_FIELDS)),
            "total_sums": (N, len(ops.SUM_FIELDS)),
            "labels": (N,),
        }
        open_empty = "counts" not in state and "sums" not in state  # saved just after end_epoch
        for key, shape in expect.items():
            if key in ("counts", "sums") and open_empty:
                continue
            if key not in state:
                raise ValueError(f"state lacks {key!r}: it is damaged or not a SampleStats state")
            if tuple(state[key].shape) != shape:
                raise ValueError(
                    f"state[{key!r}] has shape {tuple(state[key].shape)}, expected {shape}"
                )
        labels = self._check_labels(state["labels"])
        if self._labels is not None:
            wrong = np.flatnonzero((labels >= 0) & (labels != self._labels))
            if wrong.size:
                i = int(wrong[0])
                raise ValueError(
                    f"state gives example {i} label {int(labels[i])}, the labels given to this "
                    f"SampleStats say {int(self._labels[i])} ({wrong.size} example(s) differ): "
                    "it belongs to other data"
                )
            labels = np.where(labels >= 0, labels, self._labels)
        if "history" in state:
            history = _numpy(state["history"], np.uint8)
        else:
            want = int(state["history_epochs"])
            if history is None or history.dtype != HISTORY_DTYPE or history.shape != (want, N):
                got = "none" if history is None else f"{history.dtype} {history.shape}"
                raise ValueError(
                    f"the state was saved without its history ({want} epochs of "
                    f"{N} examples): give them as `history` (got {got})"
                )
            history = np.ascontiguousarray(history).view(np.uint8).reshape(want, N, -1)
        if history.ndim != 3 or history.shape[1:] != (N, HISTORY_DTYPE.itemsize):
            raise ValueError(f"state['history'] has shape {history.shape}, expected [E, {N}, 8]")
        if open_empty:
            self._counts.zero_()
            self._sums.zero_()
        else:
            self._counts.copy_(torch.as_tensor(state["counts"]))
            self._sums.copy_(torch.as_tensor(state["sums"]))
        self._open_empty = open_empty
        self._flags.copy_(torch.as_tensor(state["flags"]))
        self._status.copy_(torch.tensor([0, -1, _NO_MISMATCH]))
        self._total_counts.copy_(torch.as_tensor(state["total_counts"]))  # int32 or int64
        self._total_sums.copy_(torch.as_tensor(state["total_sums"]))
        records = np.ascontiguousarray(history).view(HISTORY_DTYPE)[..., 0]
        self._history_buf = records.copy()
        self._epochs = len(records)
        if self.fingerprint is None and isinstance(theirs, str):
            self.fingerprint = theirs
        if self._labels is not None:
            self._set_labels(labels)
        else:
            self._seen_labels[:N] = torch.from_numpy(labels).to(self.device)
        self.kernels = {str(k) for k in state.get("kernels", ())}  # absent before 0.2

    # ------------------------------------------------------------------ statistics files
    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """Write the statistics file (easyhard.statsfile) atomically.

        `metadata`: run information (dataset, architecture, seed, view, ...), stored in the JSON
        block beside the format, sizes, fingerprint and package versions.
        """
        self.check()
        arrays = {
            "label": np.array(self.labels, dtype=np.int64),
            "history": self.history,
            "total_counts": self._total_counts.cpu().numpy(),
            "total_sums": self._total_sums.cpu().numpy(),
            "epoch_counts": self._counts.cpu().numpy(),
            "epoch_sums": self._sums.cpu().numpy(),
            "flags": self._flags.cpu().numpy(),
        }
        if self.paths is not None:
            arrays["path"] = np.array(self.paths, dtype=str)
        write_stats_file(
            path,
            arrays,
            num_samples=self.num_samples,
            num_classes=self.num_classes,
            epochs=self.epochs,
            fingerprint=self.fingerprint,
            metadata=metadata,
            torch_version=torch.__version__,
            kernels=sorted(self.kernels),
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        device: torch.device | str = "cpu",
        *,
        expect_fingerprint: str | None = None,
    ) -> "SampleStats":
        """Read a statistics file written by ``save``; checks its format, shapes and example
        identity,
        and (if given) that its dataset fingerprint equals `expect_fingerprint`."""
        f = read_stats_file(path)
        if expect_fingerprint is not None and f.fingerprint is None:
            raise ValueError(
                f"{f.path} records no dataset fingerprint, so it cannot be checked against this "
                f"dataset's {expect_fingerprint!r}: load it without expect_fingerprint, or record "
                "with SampleStats(..., fingerprint=...)"
            )
        if expect_fingerprint is not None and f.fingerprint != expect_fingerprint:
            raise ValueError(
                f"{f.path} was scored on dataset fingerprint {f.fingerprint!r}, but this "
                f"dataset's fingerprint is {expect_fingerprint!r}: the scores belong to other data"
            )
        N, C = f.num_samples, f.num_classes
        stats = cls(N, C, device, paths=f.paths, fingerprint=f.fingerprint)
        stats.load_state_dict(
            {
                "num_samples": N,
                "num_classes": C,
                "counts": torch.from_numpy(f.open_counts),
                "sums": torch.from_numpy(f.open_sums),
                "flags": torch.from_numpy(f.flags),
                "total_counts": f.total_counts,
                "total_sums": f.total_sums,
                "history": f.history.view(np.uint8).reshape(
                    *f.history.shape, HISTORY_DTYPE.itemsize
                ),
                "labels": f.labels,
            }
        )
        stats.metadata = f.metadata
        stats.kernels = {str(k) for k in f.metadata.get("kernels") or ()}
        return stats

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
        check_label_range(arr, self.num_classes)
        return arr.astype(np.int64)

    def _set_labels(self, labels: np.ndarray) -> None:
        self._labels = labels
        # Slot N is a placeholder for rows with an invalid index (never compared).
        self._labels_dev = torch.from_numpy(np.append(labels, -1)).to(self.device)


def _combined_labels(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Shards' labels as one array (-1 where no shard saw the example); refuses a conflict."""
    out = np.full(len(labels[0]), -1, dtype=np.int64)
    for i, lab in enumerate(labels):
        clash = (out >= 0) & (lab >= 0) & (out != lab)
        if clash.any():
            n = int(np.flatnonzero(clash)[0])
            raise ValueError(
                f"example {n} has label {int(out[n])} in one shard and {int(lab[n])} in "
                f"shards[{i}]: they are not shards of the same data"
            )
        out = np.where(out >= 0, out, lab)
    return out


def _combined_flags(shards: Sequence[SampleStats]) -> np.ndarray:
    """int32 [N] flags: an example's last-correct flag from the shards that presented it in
    the latest epoch any shard presented it (all of them correct, if several did)."""
    last = []
    for s in shards:
        seen = s.history["presentations"] > 0  # [E, N]
        epoch = np.where(seen.any(0), s.epochs - 1 - np.argmax(seen[::-1], 0), -1)
        open_seen = s._counts[:, ops.PRESENTATIONS].cpu().numpy() > 0
        last.append(np.where(open_seen, s.epochs, epoch))
    last = np.stack(last)  # [S, N]
    latest = last.max(0)
    correct = np.stack([(s._flags.cpu().numpy() & ops.LAST_CORRECT) > 0 for s in shards])  # [S, N]
    counted = last == latest
    settled = np.where(counted, correct, True).all(0) & (latest >= 0)
    return settled.astype(np.int32) * ops.LAST_CORRECT


def _combined_history(histories: Sequence[np.ndarray]) -> np.ndarray:
    """HISTORY_DTYPE [E, N]: per epoch and example, presentations and correct added (correct
    scaled to 255 as epoch_record does past 255 presentations), probability and EL2N the
    presentation-weighted means (exact when one shard presented the example that epoch)."""
    pres = sum(h["presentations"].astype(np.int64) for h in histories)
    correct = sum(h["correct"].astype(np.int64) for h in histories)
    weights = [h["presentations"].astype(np.float64) for h in histories]
    safe = np.maximum(pres, 1).astype(np.float64)
    prob = sum(w * h["prob"].astype(np.float64) for w, h in zip(weights, histories)) / safe
    el2n = sum(w * h["el2n"].astype(np.float64) for w, h in zip(weights, histories)) / safe
    scaled = np.round(correct * 255.0 / safe).astype(np.int64)
    out = np.empty(pres.shape, dtype=HISTORY_DTYPE)
    out["presentations"] = np.minimum(pres, 255)
    out["correct"] = np.where(pres > 255, scaled, correct)
    out["prob"] = prob
    out["el2n"] = el2n
    return out

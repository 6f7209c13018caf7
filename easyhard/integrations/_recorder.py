"""The recording machinery the framework integrations share (one piece of code for both).

A ``Recorder`` owns the SampleStats of one training run over the training set and is fed the
training step's logits, labels and dataset indices, micro-batch by micro-batch:

- **Training batches only.** ``update`` is given the model; reached while the model is in eval
  mode it warns once and records (``on_eval="warn"``), records nothing (``"skip"``) or raises
  (``"error"``).
- **Each example at most once per epoch under multi-process training.** Distributed samplers pad
  every process's share to the same length by repeating examples (torch's DistributedSampler,
  accelerate's even batches); the repeats would count as extra presentations. With
  ``once_per_epoch`` (the default when more than one process trains) every step gathers the
  processes' indices, and a row counts only when its example was not presented earlier in the
  epoch, by any process (within a step: a lower rank first, then the earlier row). The rule is the
  same on every process, so they agree without further communication. It costs two small
  collectives per step; every process must reach every step (as DDP does).
- **Epochs summed across processes**: ``end_epoch`` all-reduces the epoch's accumulators, so every
  process holds the whole record, then closes the epoch.
- **One statistics file**, written by global rank 0 (``save``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping

import numpy as np
import torch

from ..indexed import IndexedDataset
from ..stats import SampleStats

ON_EVAL = ("warn", "skip", "error")


def world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) without it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Recorder:
    """See the module docstring. `dataset`: the training set, an ``easyhard.with_indices``
    dataset (size, labels and fingerprint from it) or any sized dataset whose batches carry
    dataset indices in [0, len(dataset)) (then `num_classes`, and optionally `labels` and
    `fingerprint`, describe it)."""

    def __init__(
        self,
        dataset: Any,
        *,
        num_classes: int | None = None,
        labels: np.ndarray | None = None,
        fingerprint: str | None = None,
        on_eval: str = "warn",
        once_per_epoch: bool | None = None,
    ) -> None:
        if on_eval not in ON_EVAL:
            raise ValueError(f"on_eval must be one of {', '.join(ON_EVAL)}, got {on_eval!r}")
        self.dataset, self.num_classes = dataset, num_classes
        self.labels, self.fingerprint = labels, fingerprint
        self.on_eval, self.once_per_epoch = on_eval, once_per_epoch
        self.stats: SampleStats | None = None
        self._seen: torch.Tensor | None = (
            None  # [N + 1] bool: presented this epoch (slot N: invalid)
        )
        self._dedupe = False
        self._warned_eval = False
        self._closed_flags: torch.Tensor | None = None  # the flags as the last epoch closed them

    # ------------------------------------------------------------------ lifecycle
    def start(self, device: torch.device | str, pending: Mapping[str, Any] | None = None) -> None:
        """Make the recorder on `device` (the logits' device) at the start of training, and
        restore a saved ``state_dict`` when one is `pending`."""
        if self.stats is None:
            self.stats = self._make(torch.device(device))
        _, size = world()
        self._dedupe = size > 1 if self.once_per_epoch is None else bool(self.once_per_epoch)
        N = self.stats.num_samples
        self._seen = torch.zeros(N + 1, dtype=torch.bool, device=self.stats.device)
        if pending is not None:
            self.load_state_dict(pending)
        self._closed_flags = self.stats._flags.clone()

    def records(self, dataset: Any) -> bool:
        """Whether this recorder's record is of `dataset`: the same object, or as many examples
        with the same fingerprint (an easyhard.with_indices dataset made again)."""
        if dataset is self.dataset:
            return True
        if not (isinstance(dataset, IndexedDataset) and isinstance(self.dataset, IndexedDataset)):
            return False
        return len(dataset) == len(self.dataset) and dataset.fingerprint == self.dataset.fingerprint

    def another_training(self, continues: bool) -> None:
        """A new training (another fit or train() call) of the data this recorder records: the
        record goes on, nothing recorded is dropped; `continues`: the framework continues its
        epoch count too (Lightning's fit on the same trainer), else it is said."""
        if self.stats is not None and self.stats.epochs and not continues:
            warnings.warn(
                f"this easyhard recorder already holds {self.stats.epochs} epoch(s) of an earlier "
                "training: the record goes on across both (every presentation counts; the "
                "scores' epochs are both trainings'); a new EasyhardCallback or EasyhardTrainer "
                "starts a new record",
                stacklevel=3,
            )

    def _make(self, device: torch.device) -> SampleStats:
        if isinstance(self.dataset, IndexedDataset):
            return SampleStats.for_dataset(self.dataset, device, num_classes=self.num_classes)
        if self.num_classes is None:
            raise ValueError(
                f"the training set ({type(self.dataset).__name__}) is not an "
                "easyhard.with_indices dataset: train on easyhard.with_indices(dataset), whose "
                "batches end in (labels, dataset indices); a dataset whose batches carry its "
                "indices already needs num_classes="
            )
        return SampleStats(
            len(self.dataset),
            self.num_classes,
            device,
            labels=self.labels,
            fingerprint=self.fingerprint,
        )

    def update(self, model: torch.nn.Module | None, logits, labels, indices) -> None:
        """Record one training micro-batch (see the module docstring)."""
        if self.stats is None:
            raise RuntimeError("the recorder has not started: training has not begun")
        if model is not None and not model.training and not self._eval_allowed():
            return
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
            raise ValueError(
                f"easyhard records one prediction per example: logits must be [batch, classes], "
                f"got {shape}"
            )
        device = self.stats.device
        logits = logits.detach().to(device)
        labels = torch.as_tensor(labels).to(device)
        indices = torch.as_tensor(indices).to(device)
        if indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise TypeError(f"the batch's dataset indices must be integers, got {indices.dtype}")
        if self._dedupe:
            keep = self._first_this_epoch(indices.long())
            if not bool(keep.all()):
                logits, labels, indices = logits[keep], labels[keep], indices[keep]
        self.stats.update(logits, labels, indices)

    def _eval_allowed(self) -> bool:
        if self.on_eval == "error":
            raise RuntimeError(
                "a training batch reached the recorder while the model is in eval mode (dropout "
                "and batch norm off): its logits are not those of a training step; put the model "
                "in train mode or pass on_eval='warn' or 'skip'"
            )
        if not self._warned_eval:
            self._warned_eval = True
            what = "recorded" if self.on_eval == "warn" else "not recorded"
            warnings.warn(
                "a training batch reached the easyhard recorder while the model is in eval mode; "
                f"such batches are {what} (on_eval={self.on_eval!r}; 'error' refuses them)",
                stacklevel=3,
            )
        return self.on_eval == "warn"

    def _first_this_epoch(self, indices: torch.Tensor) -> torch.Tensor:
        """bool [B]: the rows whose example no process presented earlier this epoch."""
        import torch.distributed as dist

        N = self.stats.num_samples
        rank, size = world()
        slot = torch.where((indices >= 0) & (indices < N), indices, N)  # invalid rows: slot N
        if size > 1:
            count = torch.tensor([len(slot)], device=slot.device)
            sizes = [torch.zeros_like(count) for _ in range(size)]
            dist.all_gather(sizes, count)
            longest = int(max(int(s) for s in sizes))
            padded = torch.full((longest,), N, dtype=torch.int64, device=slot.device)
            padded[: len(slot)] = slot
            parts = [torch.empty_like(padded) for _ in range(size)]
            dist.all_gather(parts, padded)
            everyone = torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])
            offset = int(sum(int(s) for s in sizes[:rank]))
        else:
            everyone, offset = slot, 0
        positions = torch.arange(len(everyone), device=slot.device)
        first = torch.full((N + 1,), len(everyone), dtype=torch.int64, device=slot.device)
        first.scatter_reduce_(0, everyone, positions, reduce="amin")
        mine = positions[offset : offset + len(slot)]
        keep = (first[slot] == mine) & ~self._seen[slot]
        keep |= slot == N  # invalid rows go on to SampleStats, which refuses them by name
        self._seen[everyone] = True
        self._seen[N] = False
        return keep

    def end_epoch(self) -> None:
        """Sum the epoch across processes and close it (every process, at every epoch's end)."""
        if self.stats is None:
            return
        if world()[1] > 1:
            self.stats.all_reduce()
        self.stats.end_epoch()
        self._seen.zero_()
        self._closed_flags = self.stats._flags.clone()

    def finish(self) -> None:
        """At the end of training: close an epoch that training left open (max_steps)."""
        if self.stats is not None and not self.stats._open_empty:
            self.end_epoch()

    def save(self, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> None:
        """The statistics file, written by global rank 0 only."""
        if self.stats is not None and world()[0] == 0:
            self.stats.save(path, metadata=metadata)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, closed_only: bool = False) -> dict[str, Any]:
        """The record, to resume exactly; `closed_only`: the closed epochs alone (for a framework
        that restarts an interrupted epoch from its start: the open epoch would count twice)."""
        if self.stats is None:
            return {}
        stats = self.stats.state_dict()
        partial = "counts" in stats
        if closed_only and partial:
            stats = {k: v for k, v in stats.items() if k not in ("counts", "sums")}
            stats["flags"] = self._closed_flags.cpu().clone()
            return {"stats": stats, "seen": torch.zeros_like(self._seen.cpu()), "dropped": True}
        return {"stats": stats, "seen": self._seen.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if state.get("dropped"):
            warnings.warn(
                "the checkpoint was taken in the middle of an epoch: easyhard's record resumes "
                "from the last closed epoch, and the interrupted epoch's presentations count from "
                "where training resumes it",
                stacklevel=3,
            )
        self.stats.load_state_dict(state["stats"])
        seen = torch.as_tensor(state["seen"])
        if seen.shape != self._seen.shape:
            raise ValueError(
                f"the checkpoint's easyhard record is for {len(seen) - 1} examples, the training "
                f"set has {len(self._seen) - 1}"
            )
        self._seen.copy_(seen)

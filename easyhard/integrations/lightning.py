"""easyhard's record from a Lightning training run: ``EasyhardCallback``.

    from easyhard.integrations.lightning import EasyhardCallback

    class Classifier(lightning.LightningModule):
        def training_step(self, batch, batch_idx):
            images, labels, indices = batch               # easyhard.with_indices(train_set)
            logits = self(images)
            loss = F.cross_entropy(logits, labels)
            return {"loss": loss, "logits": logits}       # the step's own logits

    trainer = lightning.Trainer(callbacks=[EasyhardCallback("scores.npz")], ...)

The callback records training batches only (``on_train_batch_end``: every micro-batch under
gradient accumulation), takes labels and dataset indices from the batch (a tuple ending in
``labels, indices``, or a dict with ``labels``/``label`` and ``index``), sums each epoch across
processes under multi-process strategies, counts each example at most once per epoch there (the
DistributedSampler's padding repeats examples: the repeats do not count; see
easyhard.integrations._recorder), is saved in and restored from Lightning checkpoints, and writes
one statistics file when fitting ends (global rank 0). ``callback.stats`` is the SampleStats.

A checkpoint taken at an epoch's end (ModelCheckpoint's default) resumes to exactly the record of
an uninterrupted run. One taken mid-epoch keeps the closed epochs: Lightning restarts an
interrupted epoch, and its presentations count from where training resumes it (a warning says so).

Install with ``pip install easyhard[lightning]``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package, or neither
    try:
        import pytorch_lightning as pl
    except ImportError:
        raise ImportError(
            "easyhard.integrations.lightning needs Lightning: pip install easyhard[lightning] "
            "(or pip install lightning)"
        ) from None

from ..statsfile import check_save_target
from ._recorder import Recorder

LABEL_KEYS = ("labels", "label")


class EasyhardCallback(pl.Callback):
    """Record every training example at every presentation of a Lightning fit (see the module
    docstring).

    Args:
        out: the statistics file written when fitting ends (default: scores.npz in the trainer's
            default_root_dir); None with ``save=False`` writes nothing.
        num_classes: needed when the training set does not list its classes.
        logits_key: the key of training_step's returned dict that holds the logits [B, C].
        index_key, label_key: the dict batch keys of the dataset index and the label (default:
            "index", and "labels" or "label").
        on_eval: a training batch met with the module in eval mode: "warn" (once; recorded),
            "skip" or "error".
        once_per_epoch: count each example at most once per epoch (default: when more than one
            process trains).
        metadata: run information saved with the statistics (arch, seed, ...).
    """

    def __init__(
        self,
        out: str | os.PathLike | None = None,
        *,
        save: bool = True,
        num_classes: int | None = None,
        fingerprint: str | None = None,
        logits_key: str = "logits",
        index_key: str = "index",
        label_key: str | None = None,
        on_eval: str = "warn",
        once_per_epoch: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.out, self.save_file = out, save
        self.num_classes, self.fingerprint = num_classes, fingerprint
        self.logits_key, self.index_key, self.label_key = logits_key, index_key, label_key
        self.on_eval, self.once_per_epoch = on_eval, once_per_epoch
        self.metadata = dict(metadata or {})
        self.recorder: Recorder | None = None
        self._pending: Mapping[str, Any] | None = None

    @property
    def stats(self):
        """The SampleStats of the run (None before training starts)."""
        return None if self.recorder is None else self.recorder.stats

    # ------------------------------------------------------------------ Lightning hooks
    def _out(self, trainer) -> str:
        return os.fspath(self.out or os.path.join(trainer.default_root_dir, "scores.npz"))

    def on_train_start(self, trainer, pl_module) -> None:
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise ValueError(
                "EasyhardCallback records one training DataLoader; this fit's train_dataloader is "
                f"a {type(loader).__name__}"
            )
        if self.recorder is not None and self._pending is None and self.recorder.records(dataset):
            # another fit of the same data: the record goes on (it was replaced, losing the
            # earlier fit's epochs); on the same trainer the epochs continue too
            recorder = self.recorder
            recorder.another_training(trainer.current_epoch == recorder.stats.epochs)
            recorder.start(pl_module.device)
        else:
            recorder = Recorder(
                dataset,
                num_classes=self.num_classes,
                fingerprint=self.fingerprint,
                on_eval=self.on_eval,
                once_per_epoch=self.once_per_epoch,
            )
            recorder.start(pl_module.device, self._pending)
        if self.save_file:  # refused now, not when fitting ends with the record
            stats = recorder.stats
            check_save_target(self._out(trainer), stats.num_samples, stats.fingerprint)
        self.recorder, self._pending = recorder, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        logits = outputs.get(self.logits_key) if isinstance(outputs, Mapping) else None
        if logits is None:
            raise ValueError(
                f"EasyhardCallback needs the training step's logits: return {{'loss': loss, "
                f"'{self.logits_key}': logits}} from training_step"
            )
        labels, indices = self._labels_and_indices(batch)
        self.recorder.update(pl_module, logits, labels, indices)
        if batch_idx + 1 == trainer.num_training_batches:
            # the epoch's last batch: closed before validation, so that a checkpoint saved when
            # validation ends holds the whole epoch
            self.recorder.end_epoch()

    def _labels_and_indices(self, batch):
        if isinstance(batch, Mapping):
            if self.index_key not in batch:
                raise ValueError(
                    f"the training batch has no {self.index_key!r} key (it has "
                    f"{', '.join(map(str, batch))}): train on easyhard.with_indices(dataset)"
                )
            keys = (self.label_key,) if self.label_key else LABEL_KEYS
            for key in keys:
                if key in batch:
                    return batch[key], batch[self.index_key]
            raise ValueError(f"the training batch has no label key ({', '.join(keys)})")
        if isinstance(batch, (tuple, list)) and len(batch) >= 3:
            return batch[-2], batch[-1]
        raise ValueError(
            "the training batch must end in (labels, indices) or be a dict with an 'index' key: "
            "train on easyhard.with_indices(dataset)"
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.recorder is not None:  # an epoch cut short (max_steps, limit_train_batches)
            self.recorder.finish()

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.recorder is None:
            return
        self.recorder.finish()
        if self.save_file:
            meta = {"framework": "lightning", "epochs_run": trainer.current_epoch, **self.metadata}
            self.recorder.save(self._out(trainer), meta)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.recorder is None:
            return dict(self._pending or {})
        return self.recorder.state_dict(closed_only=True)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        # restored before training starts: applied once the recorder exists (on_train_start)
        self._pending = dict(state_dict) if state_dict else None

"""easyhard's record from a Hugging Face ``Trainer``: ``EasyhardTrainer`` (or, to combine with
another Trainer subclass, ``RecordingTrainerMixin``).

    from easyhard.integrations.huggingface import EasyhardTrainer

    trainer = EasyhardTrainer(model=model, args=args, train_dataset=easyhard.with_indices(ds))
    trainer.train()                       # writes OUTPUT_DIR/scores.npz; trainer.stats

It fixes the two ways a plain Trainer corrupts a per-example record:

- **The index column is kept** whatever ``remove_unused_columns`` says (a plain Trainer drops
  every key the model's ``forward`` does not name, the index with them); it is taken out of the
  batch before the model sees it.
- **Only training batches count.** ``compute_loss`` also runs for evaluation and prediction; the
  record is made only while the model trains, so evaluation never adds presentations.

It records every micro-batch under gradient accumulation, sums each epoch across processes under
multi-process training and counts each example at most once per epoch there (accelerate pads
the last batches by repeating examples: easyhard.integrations._recorder), writes its record into
every checkpoint (``easyhard-record-rank<R>.pt``, one per process) and restores it with
``train(resume_from_checkpoint=...)`` (the Trainer skips the batches already trained, so a resumed
run's record is that of an uninterrupted one), and writes one statistics file when training ends
(``OUTPUT_DIR/scores.npz`` or ``scores_path``; global rank 0).

The training set is an ``easyhard.with_indices(...)`` dataset (dict items gain an ``"index"``
key; size, labels and fingerprint come from it), or a ``datasets.Dataset`` with an index column
(then ``num_classes`` defaults to ``model.config.num_labels`` and the fingerprint to the
dataset's own). Install with ``pip install easyhard[hf]``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

try:
    import transformers
except ImportError:
    raise ImportError(
        "easyhard.integrations.huggingface needs transformers: pip install easyhard[hf] "
        "(or pip install transformers accelerate)"
    ) from None

import numpy as np
import torch

from ..indexed import IndexedDataset
from ._recorder import Recorder, world

RECORD_FILE = "easyhard-record-rank{rank}.pt"


class _EpochEnds(transformers.TrainerCallback):
    def __init__(self, owner: "RecordingTrainerMixin") -> None:
        self.owner = owner

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.owner.recorder is not None:
            self.owner.recorder.finish()

    def on_save(self, args, state, control, **kwargs):
        self.owner._save_record(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))

    def on_train_end(self, args, state, control, **kwargs):
        self.owner._finish_record()


class RecordingTrainerMixin:
    """Put before ``transformers.Trainer`` (or a subclass) in the bases: see the module
    docstring. Keyword arguments, beside the Trainer's: `scores_path` (default
    OUTPUT_DIR/scores.npz), `num_classes`, `fingerprint`, `index_key` ("index"),
    `on_eval` ("warn", "skip" or "error": a training batch met in eval mode), `once_per_epoch`
    (default: when more than one process trains) and `record_metadata`."""

    def __init__(
        self,
        *args: Any,
        scores_path: str | os.PathLike | None = None,
        num_classes: int | None = None,
        fingerprint: str | None = None,
        index_key: str = "index",
        on_eval: str = "warn",
        once_per_epoch: bool | None = None,
        record_metadata: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.scores_path, self.index_key = scores_path, index_key
        self._record_settings = {
            "num_classes": num_classes,
            "fingerprint": fingerprint,
            "on_eval": on_eval,
            "once_per_epoch": once_per_epoch,
        }
        self.record_metadata = dict(record_metadata or {})
        self.recorder: Recorder | None = None
        self.add_callback(_EpochEnds(self))

    @property
    def stats(self):
        """The SampleStats of the run (None before training starts)."""
        return None if self.recorder is None else self.recorder.stats

    # ------------------------------------------------------------------ the index column
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self.index_key not in self._signature_columns:
            self._signature_columns.append(self.index_key)

    # ------------------------------------------------------------------ recording
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        self._start_record(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        inputs = dict(inputs)
        indices = inputs.pop(self.index_key, None)
        labels = inputs.get("labels", inputs.get("label"))
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training and self.recorder is not None:
            if indices is None:
                raise ValueError(
                    f"the training batch has no {self.index_key!r} column: train on "
                    "easyhard.with_indices(dataset) or add the dataset index as a column"
                )
            if labels is None:
                raise ValueError("the training batch has no 'labels': easyhard records labels")
            logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[1]
            self.recorder.update(model, logits, labels, indices)
        return (loss, outputs) if return_outputs else loss

    def _scores_path(self) -> str:
        return os.fspath(self.scores_path or os.path.join(self.args.output_dir, "scores.npz"))

    def _start_record(self, resume_from_checkpoint) -> None:
        from ..statsfile import check_save_target

        dataset = self.train_dataset
        recorder = self.recorder
        if not resume_from_checkpoint and recorder is not None and recorder.records(dataset):
            recorder.another_training(continues=False)  # train() again: the record goes on, said
            recorder.start(self.args.device)
        else:
            recorder = self._new_recorder(dataset, resume_from_checkpoint)
        stats = recorder.stats  # refused now, not when training ends with the record
        check_save_target(self._scores_path(), stats.num_samples, stats.fingerprint)
        self.recorder = recorder

    def _new_recorder(self, dataset, resume_from_checkpoint) -> Recorder:
        """A started recorder of `dataset`, restored from the checkpoint training resumes from."""
        settings = dict(self._record_settings)
        if not isinstance(dataset, IndexedDataset):
            config = getattr(self.model, "config", None)
            if settings["num_classes"] is None and getattr(config, "num_labels", None):
                settings["num_classes"] = int(config.num_labels)
            if settings["fingerprint"] is None:
                settings["fingerprint"] = getattr(dataset, "_fingerprint", None)
            columns = getattr(dataset, "column_names", None) or ()
            for name in ("label", "labels"):
                if name in columns:
                    settings["labels"] = np.asarray(dataset[name], dtype=np.int64)
                    break
        recorder = Recorder(dataset, **settings)
        pending = None
        if resume_from_checkpoint:
            if resume_from_checkpoint is True:
                from transformers.trainer_utils import get_last_checkpoint

                resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
            path = os.path.join(str(resume_from_checkpoint), RECORD_FILE.format(rank=world()[0]))
            if not os.path.exists(path):
                raise ValueError(
                    f"{resume_from_checkpoint} holds no easyhard record ({os.path.basename(path)})"
                    ": it was not written by an EasyhardTrainer, so the record cannot continue "
                    "where the training does"
                )
            pending = torch.load(path, map_location="cpu", weights_only=True)
        recorder.start(self.args.device, pending)
        return recorder

    def _save_record(self, folder: str) -> None:
        if self.recorder is None or self.recorder.stats is None:
            return
        from ..io import atomic_write

        os.makedirs(folder, exist_ok=True)
        with atomic_write(os.path.join(folder, RECORD_FILE.format(rank=world()[0]))) as f:
            torch.save(self.recorder.state_dict(), f)

    def _finish_record(self) -> None:
        if self.recorder is None:
            return
        self.recorder.finish()
        meta = {"framework": "transformers", "epochs_run": self.state.epoch, **self.record_metadata}
        self.recorder.save(self._scores_path(), meta)


class EasyhardTrainer(RecordingTrainerMixin, transformers.Trainer):
    """``transformers.Trainer`` that records every training example at every presentation (see
    the module docstring)."""

"""The Lightning and Hugging Face integrations: the shared recorder's rules (training batches
only, each example at most once per epoch, one record per run), the two Hugging Face traps (a
plain Trainer fails them), Lightning checkpoints, the libraries absent cleanly, and the README's
examples run in two processes with bf16 autocast and gradient accumulation, their statistics
equal to an independent count from a forward hook on the training micro-batches."""

from __future__ import annotations

import glob
import importlib
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from helpers import free_port

import easyhard
from easyhard.integrations._recorder import Recorder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}


def tiny(n=200, split="train"):
    return easyhard.load_dataset(
        "synthetic", num_samples=n, num_classes=4, image_size=8, split=split
    )


# ---------------------------------------------------------------------------- the recorder
def test_a_training_batch_in_eval_mode_warns_once_skips_or_refuses():
    data = easyhard.with_indices(tiny(10))
    model = torch.nn.Linear(2, 4).eval()
    batch = (torch.zeros(2, 4), torch.from_numpy(data.labels[:2]), torch.tensor([0, 1]))
    rec = Recorder(data)
    rec.start("cpu")
    with pytest.warns(UserWarning, match="eval mode; such batches are recorded"):
        rec.update(model, *batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        rec.update(model, *batch)
    assert rec.stats.totals()["presentations"][:2].tolist() == [2, 2]
    skip = Recorder(data, on_eval="skip")
    skip.start("cpu")
    with pytest.warns(UserWarning, match="not recorded"):
        skip.update(model, *batch)
    assert skip.stats.totals()["presentations"].sum() == 0
    refuse = Recorder(data, on_eval="error")
    refuse.start("cpu")
    with pytest.raises(RuntimeError, match="eval mode"):
        refuse.update(model, *batch)
    refuse.update(model.train(), *batch)  # in train mode: recorded
    with pytest.raises(ValueError, match="on_eval must be one of"):
        Recorder(data, on_eval="ignore")
    with pytest.raises(ValueError, match=r"logits must be \[batch, classes\]"):
        rec.update(None, torch.zeros(2, 3, 4), *batch[1:])
    with pytest.raises(ValueError, match="already needs num_classes="):
        Recorder(list(range(5))).start("cpu")


def test_a_dataset_without_indices_is_told_to_take_them():
    """The first thing a dataset without indices lacks is its indices, not num_classes (the
    message asked for num_classes, which fixed nothing; found by a careless-user helper)."""
    recorder = Recorder(tiny())
    with pytest.raises(ValueError, match=r"not an easyhard.with_indices dataset: train on"):
        recorder.start("cpu")


def test_once_per_epoch_counts_the_first_presentation_only():
    data = easyhard.with_indices(tiny(6))
    labels = torch.from_numpy(data.labels)
    rec = Recorder(data, once_per_epoch=True)
    rec.start("cpu")
    idx = torch.tensor([0, 1, 1, 2])
    rec.update(None, torch.randn(4, 4), labels[idx], idx)  # the repeat of 1 in the batch: dropped
    idx = torch.tensor([2, 3])
    rec.update(None, torch.randn(2, 4), labels[idx], idx)  # 2 again: dropped
    rec.end_epoch()
    rec.update(None, torch.randn(2, 4), labels[idx], idx)  # a new epoch: counted
    rec.finish()
    assert rec.stats.totals()["presentations"].tolist() == [1, 1, 2, 2, 0, 0]
    assert rec.stats.epochs == 2
    free = Recorder(data)  # one process: off by default (a sampler may draw with replacement)
    free.start("cpu")
    free.update(None, torch.randn(2, 4), labels[[1, 1]], torch.tensor([1, 1]))
    assert free.stats.totals()["presentations"][1] == 2


# ---------------------------------------------------------------------------- absent libraries
@pytest.mark.parametrize(
    "module, hidden, extra",
    [
        ("lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"), "lightning"),
        ("huggingface", ("transformers",), "hf"),
    ],
)
def test_an_integration_without_its_library_names_the_extra(monkeypatch, module, hidden, extra):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"easyhard.integrations.{module}", raising=False)
    with pytest.raises(ImportError, match=rf"pip install easyhard\[{extra}\]"):
        importlib.import_module(f"easyhard.integrations.{module}")


# ---------------------------------------------------------------------------- Hugging Face
class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(192, 4)

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values.flatten(1).float() / 255)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def as_dicts(rows):
    images, labels, indices = zip(*rows)
    return {"pixel_values": torch.stack(images), "labels": torch.tensor(labels),
            "index": torch.tensor(indices)}  # fmt: skip


def naive_trainer():
    """What a user writes without the integration: compute_loss records every call."""
    transformers = pytest.importorskip("transformers")

    class EpochEnd(transformers.TrainerCallback):
        def __init__(self, stats):
            self.stats = stats

        def on_epoch_end(self, *args, **kwargs):
            self.stats.end_epoch()

    class NaiveTrainer(transformers.Trainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.stats = easyhard.SampleStats(len(self.train_dataset), 4)
            self.add_callback(EpochEnd(self.stats))

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            indices = inputs.pop("index")
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            self.stats.update(outputs["logits"].detach(), inputs["labels"], indices)
            return (loss, outputs) if return_outputs else loss

    return NaiveTrainer


def hf_train(trainer_cls, tmp_path, remove_unused_columns=True, epochs=2):
    transformers = pytest.importorskip("transformers")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=25, num_train_epochs=epochs,
        eval_strategy="epoch", save_strategy="no", use_cpu=True, report_to=[],
        disable_tqdm=True, remove_unused_columns=remove_unused_columns,
    )  # fmt: skip
    trainer = trainer_cls(
        model=Classifier(), args=args, train_dataset=easyhard.with_indices(tiny()),
        eval_dataset=easyhard.with_indices(tiny(300, "test")), data_collator=as_dicts,
    )  # fmt: skip
    trainer.train()
    return trainer


def easyhard_trainer():
    pytest.importorskip("transformers")
    from easyhard.integrations.huggingface import EasyhardTrainer

    return EasyhardTrainer


PLAIN_FAILS = pytest.mark.xfail(strict=True, reason="the trap: a plain Trainer falls into it")


@pytest.mark.slow
@pytest.mark.parametrize("make", [pytest.param(naive_trainer, marks=PLAIN_FAILS), easyhard_trainer])
def test_hf_the_index_column_survives_remove_unused_columns(tmp_path, make):
    """remove_unused_columns=True (the default) drops every key forward does not take."""
    trainer = hf_train(make(), tmp_path)
    assert trainer.stats.totals()["presentations"].tolist() == [2] * 200


@pytest.mark.slow
@pytest.mark.parametrize("make", [pytest.param(naive_trainer, marks=PLAIN_FAILS), easyhard_trainer])
def test_hf_evaluation_batches_never_count(tmp_path, make):
    """compute_loss runs for evaluation too: its batches must not become presentations."""
    trainer = hf_train(make(), tmp_path, remove_unused_columns=False)
    assert trainer.stats.totals()["presentations"].tolist() == [2] * 200


@pytest.mark.slow
def test_hf_train_again_goes_on_with_the_record(tmp_path):
    """train() again on an EasyhardTrainer: the record goes on, said (a new one replaced it and
    the earlier training's epochs were lost; found by a careless-user helper)."""
    trainer = hf_train(easyhard_trainer(), tmp_path, epochs=1)
    with pytest.warns(UserWarning, match="already holds 1 epoch"):
        trainer.train()
    assert trainer.stats.totals()["presentations"].tolist() == [2] * 200
    assert easyhard.SampleStats.load(tmp_path / "out" / "scores.npz").epochs == 2
    # a user's file where the record goes: refused when training starts, not replaced when it
    # ends (found by a careless-user helper)
    (tmp_path / "out" / "scores.npz").write_text("mine")
    with pytest.raises(FileExistsError, match="not an easyhard statistics file"):
        hf_train(easyhard_trainer(), tmp_path, epochs=1)
    assert (tmp_path / "out" / "scores.npz").read_text() == "mine"


@pytest.mark.slow
def test_hf_resume_from_a_mid_epoch_checkpoint_gives_the_uninterrupted_record(tmp_path):
    transformers = pytest.importorskip("transformers")
    from easyhard.integrations.huggingface import EasyhardTrainer

    class Kill(transformers.TrainerCallback):  # stops as a kill would, the schedule unchanged
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step == 11

    def run(out, kill=False, resume=None):
        torch.manual_seed(0)
        args = transformers.TrainingArguments(
            output_dir=str(out), per_device_train_batch_size=25, num_train_epochs=2,
            save_strategy="steps", save_steps=3, use_cpu=True, report_to=[],
            disable_tqdm=True, seed=0, data_seed=0,
        )  # fmt: skip
        trainer = EasyhardTrainer(
            model=Classifier(), args=args, train_dataset=easyhard.with_indices(tiny()),
            data_collator=as_dicts, callbacks=[Kill()] if kill else None,
        )  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    whole = run(tmp_path / "whole")
    run(tmp_path / "cut", kill=True)  # killed after step 11: checkpoints at 3, 6, 9 (mid-epoch)
    resumed = run(tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-9"))
    assert os.path.exists(tmp_path / "cut" / "checkpoint-9" / "easyhard-record-rank0.pt")
    a, b = resumed.stats.totals(), whole.stats.totals()
    for k in ("presentations", "correct", "forgetting_events"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    np.testing.assert_allclose(a["prob_sum"], b["prob_sum"], rtol=1e-5)
    with pytest.raises(ValueError, match="holds no easyhard record"):
        os.remove(tmp_path / "cut" / "checkpoint-6" / "easyhard-record-rank0.pt")
        run(tmp_path / "cut", resume=str(tmp_path / "cut" / "checkpoint-6"))


# ---------------------------------------------------------------------------- Lightning
@pytest.mark.slow
def test_lightning_checkpoint_restores_the_record_and_dict_batches(tmp_path):
    L = pytest.importorskip("lightning")
    from easyhard.integrations.lightning import EasyhardCallback

    class Dicts(torch.utils.data.Dataset):  # dict items: the index under "index"
        def __init__(self, ds):
            self.ds, self.labels, self.fingerprint, self.classes = (
                ds,
                ds.labels,
                "dicts",
                ds.classes,
            )

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            image, label = self.ds[i]
            return {"pixels": image, "label": label}

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(192, 4)

        def training_step(self, batch, batch_idx):
            logits = self.net(batch["pixels"].flatten(1).float() / 255)
            return {
                "loss": torch.nn.functional.cross_entropy(logits, batch["label"]),
                "logits": logits,
            }

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = easyhard.with_indices(Dicts(tiny()))
    loader = torch.utils.data.DataLoader(data, batch_size=50, shuffle=True)

    def fit(epochs, ckpt=None):
        callback = EasyhardCallback(tmp_path / f"scores-{epochs}.npz")
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=epochs, callbacks=[callback], logger=False,
            enable_progress_bar=False, default_root_dir=str(tmp_path),
        )  # fmt: skip
        trainer.fit(Module(), loader, ckpt_path=ckpt)
        return callback, trainer

    first, trainer = fit(2)
    ckpt = glob.glob(str(tmp_path / "checkpoints" / "*.ckpt"))
    assert len(ckpt) == 1
    resumed, _ = fit(3, ckpt[0])
    np.testing.assert_array_equal(resumed.stats.history[:2], first.stats.history)
    assert resumed.stats.totals()["presentations"].tolist() == [3] * 200
    saved = easyhard.SampleStats.load(tmp_path / "scores-3.npz")
    assert saved.fingerprint == data.fingerprint and saved.epochs == 3
    assert saved.metadata["framework"] == "lightning"
    # fit again on the same trainer: the record goes on (a new one replaced it, losing the
    # first fit's epochs: found by a careless-user helper); a new trainer with the same callback
    # starts its epochs at 0, so that is said, and the record goes on too
    callback = EasyhardCallback(tmp_path / "again.npz")
    module = Module()

    def trainer_of(epochs):
        return L.Trainer(accelerator="cpu", max_epochs=epochs, callbacks=[callback],
                         logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         default_root_dir=str(tmp_path))  # fmt: skip

    trainer = trainer_of(1)
    trainer.fit(module, loader)
    trainer.fit_loop.max_epochs = 2
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        trainer.fit(module, loader)
    assert not [w for w in said if "already holds" in str(w.message)]
    assert easyhard.SampleStats.load(tmp_path / "again.npz").epochs == 2
    with pytest.warns(UserWarning, match="already holds 2 epoch"):
        trainer_of(1).fit(module, loader)
    assert callback.stats.totals()["presentations"].tolist() == [3] * 200
    assert easyhard.SampleStats.load(tmp_path / "again.npz").epochs == 3
    # another data's fit aimed at that file: refused when it starts (it was replaced at its end)
    other = torch.utils.data.DataLoader(easyhard.with_indices(Dicts(tiny(100))), batch_size=50)
    callback = EasyhardCallback(tmp_path / "again.npz")
    with pytest.raises(FileExistsError, match="holds the statistics of other data"):
        trainer_of(1).fit(Module(), other)
    assert easyhard.SampleStats.load(tmp_path / "again.npz").epochs == 3


# ---------------------------------------------------------------------------- the examples
def independent_count(folder, n: int, fingerprint: str):
    """Counts from the captured micro-batches alone: rows ordered by (epoch, step, rank, row),
    each example's first row in an epoch kept (the once-per-epoch rule), then presentations,
    correct and forgetting events (correct, then wrong at the next kept presentation)."""
    cols = {k: [] for k in ("epoch", "step", "rank", "row", "index", "correct")}
    for path in glob.glob(os.path.join(folder, "rank*.pt")):
        got = torch.load(path, weights_only=False)
        training = [b for b in got["batches"] if b[4] == fingerprint]  # not evaluation data
        assert len(got["logits"]) == len(training), path
        for logits, (epoch, step, labels, indices, _) in zip(got["logits"], training):
            b = len(indices)
            cols["epoch"].append(np.full(b, epoch))
            cols["step"].append(np.full(b, step))
            cols["rank"].append(np.full(b, got["rank"]))
            cols["row"].append(np.arange(b))
            cols["index"].append(indices.numpy())
            cols["correct"].append((logits.argmax(1) == labels).numpy())
    c = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((c["row"], c["rank"], c["step"], c["epoch"]))
    c = {k: v[order] for k, v in c.items()}
    key = c["epoch"] * (n + 1) + c["index"]
    _, first = np.unique(key, return_index=True)
    kept = np.zeros(len(key), bool)
    kept[first] = True
    idx, ok = c["index"][kept], c["correct"][kept]
    by_example = np.argsort(idx, kind="stable")
    idx, ok = idx[by_example], ok[by_example]
    forgot = (idx[1:] == idx[:-1]) & ok[:-1] & ~ok[1:]
    return {
        "presentations": np.bincount(idx, minlength=n),
        "correct": np.bincount(idx, weights=ok, minlength=n).astype(np.int64),
        "forgetting_events": np.bincount(idx[1:], weights=forgot, minlength=n).astype(np.int64),
        "dropped": int((~kept).sum()),
    }


def run_example(tmp_path, script, capture_class, launcher=(), dicts=False):
    capture = tmp_path / "capture"
    capture.mkdir()
    env = {**ENV, "CAPTURE_CLASS": capture_class, "CAPTURE_DIR": str(capture)}
    if dicts:  # the model returns a dict holding the logits (Hugging Face style)
        env["CAPTURE_DICTS"] = "1"
    cmd = [sys.executable, *launcher, os.path.join(ROOT, "tests", "capture_run.py")]
    cmd.append(os.path.join(ROOT, "examples", script))
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return capture


def check_counts(scores_file, capture, n=1001, epochs=3):
    saved = easyhard.SampleStats.load(scores_file)
    t, count = saved.totals(), independent_count(capture, n, saved.fingerprint)
    assert saved.epochs == epochs
    assert (t["presentations"] == epochs).all()  # each example once per epoch, repeats dropped
    for k in ("presentations", "correct", "forgetting_events"):
        np.testing.assert_array_equal(t[k], count[k], err_msg=k)
    assert len(glob.glob(os.path.join(capture, "rank*.pt"))) == 2  # two processes trained
    return count


@pytest.mark.slow
def test_the_lightning_example_in_two_processes_equals_a_hook_count(tmp_path):
    pytest.importorskip("lightning")
    capture = run_example(tmp_path, "lightning_loop.py", "Classifier")
    count = check_counts(tmp_path / "scores.npz", capture)
    assert count["dropped"] == 3  # 1001 examples over 2 processes: one padding repeat an epoch


@pytest.mark.slow
def test_the_hugging_face_example_in_two_processes_equals_a_hook_count(tmp_path):
    pytest.importorskip("transformers")
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                str(free_port())]  # fmt: skip
    capture = run_example(tmp_path, "hf_loop.py", "Classifier", launcher, dicts=True)
    count = check_counts(tmp_path / "hf-out" / "scores.npz", capture)
    assert count["dropped"] == 3 * (2 * 16 * 32 - 1001)  # accelerate completes the last batches


def test_the_readme_shows_the_integration_examples():
    readme = open(os.path.join(ROOT, "README.md")).read()
    for script in ("lightning_loop.py", "hf_loop.py"):
        text = open(os.path.join(ROOT, "examples", script)).read()
        body = text[text.index('"""', 3) + 3 :].strip("\n")
        assert body in readme, f"the README does not show examples/{script} as it is"

"""The scoring engine: train CNNs and record every training example at every presentation.

    easyhard score --dataset fashion-mnist --arch convnet --arch resnet20 --runs 2 --epochs 4 --out runs/

For each (architecture, run) this trains a model (channels-last; AMP bf16 on GPU by default, fp16
with a grad scaler as an option, fp32 on CPU; optional torch.compile; SGD with momentum/Nesterov
and weight decay; label smoothing; step, cosine or one-cycle schedules with warm-up), feeds the
training step's own logits to the fused op through SampleStats (no extra forward pass), optionally
records a clean view (eval mode, no augmentation) into its own history, evaluates on the test
split each epoch, and writes into ``OUT/<arch>-run<k>/``: ``scores.npz`` (and
``scores_clean.npz``), ``metrics.jsonl`` (per epoch: loss, train and test accuracy, images/s),
``config.json`` (the resolved configuration), ``checkpoint.pt`` (every epoch, atomically; its
per-example part is O(N): the closed epochs' records are appended to ``history.bin`` instead, see
stats.HistoryLog) and ``history.bin``; ``resume`` continues a killed run and, on CPU, ends with
bit-identical scores. Finally
``OUT/merged.npz`` merges all runs (easyhard.scores.merge_score_files).

The same engine trains experiment cells (easyhard.experiment): ``score_run`` takes a ``subset`` of
dataset indices (handed to the loader, no copy of the data; in-memory datasets for now) and a
``max_steps`` step budget, both part of the run's identity, so that resume refuses a checkpoint of
another subset or budget.

Multi-GPU / multi-node: launch with torchrun; each rank trains on its shard (DDP; NCCL on GPU,
gloo on CPU) and the per-example accumulators are summed across ranks at the end of each epoch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import ScoreConfig
from .datasets import DatasetError, load_dataset
from .io import atomic_write
from .loaders import make_loader
from .models import build_model
from .stats import HistoryLog, SampleStats


# ---------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """The device of a `device` setting (auto, cpu, cuda, cuda:N), checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be auto, cpu, cuda or cuda:N, got {name!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"`device` {name} was asked for but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"`device` {name} does not exist: {torch.cuda.device_count()} CUDA "
                             "device(s) are visible")
    return dev


def amp_dtype(cfg: ScoreConfig, device: torch.device) -> torch.dtype | None:
    mode = cfg.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[mode]


def lr_lambda(cfg: ScoreConfig, steps_per_epoch: int,
              total_steps: int | None = None) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step. The schedule spans cfg.epochs epochs of
    steps_per_epoch steps, or `total_steps` steps when given (then one epoch of the schedule,
    e.g. of the warm-up, lasts total_steps / cfg.epochs steps: a step budget keeps the schedule
    of the full data whatever the size of the subset)."""
    if total_steps is None:
        total = max(1, cfg.epochs * steps_per_epoch)
        warm = int(cfg.warmup_epochs * steps_per_epoch)
    else:
        total = max(1, total_steps)
        warm = int(cfg.warmup_epochs * total_steps / cfg.epochs)

    def f(step: int) -> float:
        if cfg.schedule == "onecycle":  # linear up for 25% of steps, then linear down to 0
            peak = max(1, int(0.25 * total))
            return (step + 1) / peak if step < peak else max(0.0, (total - step) / max(1, total - peak))
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 0.1 ** int(3 * t)  # step: /10 at one and two thirds
    return f


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Dist:
    """torch.distributed context (from torchrun's environment); rank 0 of 1 without it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _maybe_progress(total: int, desc: str, quiet: bool):
    """A progress bar (images/s and ETA) on a terminal; nothing with --quiet or in a log file."""
    if quiet:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", unit_scale=True, dynamic_ncols=True,
               leave=False, disable=None, mininterval=0.5)
    return None if bar.disable else bar


# ---------------------------------------------------------------------------- one run
def load_datasets(cfg: ScoreConfig, quiet: bool = True):
    """(train, test) datasets of a configuration; test is None when the data has no test split."""
    train = load_dataset(cfg.dataset, cfg.data_dir, "train", **cfg.dataset_kwargs())
    try:
        test = load_dataset(cfg.dataset, cfg.data_dir, "test", **cfg.dataset_kwargs())
    except DatasetError as e:  # e.g. an image folder without val/: train without evaluation
        if not quiet:
            print(f"no test split ({e}); test accuracy is not measured", flush=True)
        test = None
    return train, test


class DivergedError(RuntimeError):
    """Training produced non-finite losses for too many consecutive steps; no scores were written."""


def score_run(cfg: ScoreConfig, arch: str, run: int, out_dir: str, *, resume: bool = False,
              quiet: bool = False, dist: Dist | None = None,
              stop_after_epoch: int | None = None, datasets=None,
              subset: np.ndarray | None = None, max_steps: int | None = None,
              run_dir: str | None = None, evaluate_every_epoch: bool = True,
              save_scores: bool = True) -> str:
    """Train (arch, run) and write its outputs into out_dir/<arch>-run<run>/; returns the folder.

    datasets: (train, test) when already loaded (else from cfg). stop_after_epoch: end after that
    many epochs as if killed (for tests of resume).

    For experiments on subsets (easyhard.experiment):

    - subset: int [k] dataset indices, each at most once: train on these examples only (the
      loader gets the index list; no copy of the data). The others are never presented (their
      rows in the score file say so); the test split is evaluated in full. In-memory datasets
      only for now (TensorLoader); image folders are refused.
    - max_steps: train exactly this many optimizer steps: as many epochs over the data as that
      takes, the last one cut short at the step. The learning-rate schedule spans max_steps
      steps (lr_lambda's total_steps). Default: cfg.epochs epochs.
    - run_dir: the run's folder (default out_dir/<arch>-run<run>).
    - evaluate_every_epoch: measure test accuracy after every epoch (False: after the last one
      only; the other epochs record None).
    - save_scores: write scores.npz at the end (False: metrics.jsonl and config.json only).

    Both subset and max_steps are part of the run's identity: resume refuses a checkpoint of
    another subset or step count."""
    dist = dist or Dist()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    seed = cfg.seed + run
    seeds = run_seeds(cfg, run)
    run_dir = run_dir or os.path.join(out_dir, f"{arch}-run{run}")
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    torch.manual_seed(seeds["init_seed"])  # the initialisation (and dropout, if any)
    np.random.seed(seed)
    random.seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train, test = datasets if datasets is not None else load_datasets(cfg, quiet or dist.rank != 0)
    file_kwargs = ({} if train.in_memory else
                   {"crop": cfg.crop, "workers": cfg.workers, "skip_corrupt": cfg.skip_corrupt})
    sub_kwargs = {}
    if subset is not None:
        subset = check_subset(subset, len(train))
        if not train.in_memory:
            raise ValueError(f"training on a `subset` works for in-memory datasets (fashion-mnist, "
                             f"cifar10, cifar100, synthetic) only for now, not for {cfg.dataset}: "
                             "write the subset as a dataset with `easyhard compress` instead")
        sub_kwargs["subset"] = subset
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}")
    loader = make_loader(train, cfg.batch_size, device, train=True, seed=seeds["data_seed"],
                         rank=dist.rank,
                         world_size=dist.world_size, **file_kwargs, **sub_kwargs)
    test_loader = (make_loader(test, 1024, device, train=False, **file_kwargs)
                   if test is not None else None)
    clean_loader = None
    if cfg.clean_every or cfg.clean_steps:
        clean_loader = make_loader(train, 1024, device, train=False, rank=dist.rank,
                                   world_size=dist.world_size, **file_kwargs, **sub_kwargs)
    in_ch, size = train.channels, train.input_size(cfg.crop)
    model = build_model(arch, train.num_classes, in_ch, size).to(device, memory_format=torch.channels_last)
    ddp_model = model
    if dist.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(ddp_model) if cfg.compile else ddp_model
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    else:
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    steps_per_epoch = len(loader)
    n_epochs = cfg.epochs if max_steps is None else math.ceil(max_steps / max(1, steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, steps_per_epoch, max_steps))
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    examples = dict(labels=train.labels, paths=train.paths, fingerprint=train.fingerprint)
    stats = SampleStats(len(train), train.num_classes, device, **examples)
    clean = SampleStats(len(train), train.num_classes, device, **examples) if clean_loader else None
    # The closed epochs' records go to side files, appended each epoch; checkpoints hold the rest
    log = HistoryLog(os.path.join(run_dir, HISTORY_FILE), len(train))
    clean_log = HistoryLog(os.path.join(run_dir, CLEAN_HISTORY_FILE), len(train))

    identity = run_identity(cfg, arch, run, train.fingerprint, subset=subset, max_steps=max_steps)
    start_epoch, metrics = 0, []
    if resume and os.path.exists(ckpt_path):
        try:
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, garbage, or not a checkpoint at all
            raise ValueError(f"{ckpt_path} cannot be read ({type(e).__name__}); it is damaged: "
                             "move it away to restart this run from scratch") from e
        check_same_run(ck.get("identity") if isinstance(ck, dict) else None, identity, ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        stats.load_state_dict(ck["stats"], _logged_history(ck["stats"], log))
        if clean is not None:
            clean.load_state_dict(ck["clean"], _logged_history(ck["clean"], clean_log))
        set_rng_state(ck["rng"])
        start_epoch, metrics = ck["epoch"], ck["metrics"]

    def autocast():
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    def clean_pass() -> None:
        model.eval()
        with torch.no_grad(), autocast():
            for x, y, idx in clean_loader:
                clean.update(model(x), y, idx)
        model.train()

    is_main = dist.rank == 0
    if is_main:  # says what the run is from its start, and marks the folder as easyhard's
        os.makedirs(run_dir, exist_ok=True)
        _write_run_config(run_dir, identity, device, dist, finished=False)
    label = f"{arch} run {run}"
    nonfinite_run = torch.zeros((), dtype=torch.int64, device=device)  # consecutive, on device
    nonfinite_worst = torch.zeros((), dtype=torch.int64, device=device)
    presented = len(train) if subset is None else len(subset)
    for epoch in range(start_epoch, n_epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        model.train()
        bar = _maybe_progress(presented // dist.world_size, f"{label} epoch {epoch + 1}/{n_epochs}",
                              quiet or not is_main)
        seen, t0 = 0, time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # read once per epoch: no sync per step
        join = (nn.parallel.distributed.Join([ddp_model]) if dist.enabled
                else contextlib.nullcontext())
        with join:
            for step, (x, y, idx) in enumerate(loader):
                with autocast():
                    logits = forward(x)
                    loss = criterion(logits, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                stats.update(logits, y, idx)  # the training step's own logits
                seen += len(y)
                loss_sum += loss.detach().float() * len(y)
                finite = torch.isfinite(loss.detach())  # no sync: read once per epoch
                nonfinite_run = torch.where(finite, 0, nonfinite_run + 1)
                nonfinite_worst = torch.maximum(nonfinite_worst, nonfinite_run)
                if bar is not None:
                    bar.update(len(y))
                if clean is not None and cfg.clean_steps and epoch == 0 and (step + 1) % cfg.clean_steps == 0:
                    clean_pass()
                if max_steps is not None and sched.last_epoch >= max_steps:
                    break  # the step budget is spent: this last epoch ends here
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        if bar is not None:
            bar.close()
        limit = min(cfg.max_nonfinite_steps, max(1, steps_per_epoch))
        if int(nonfinite_worst) >= limit:
            raise DivergedError(
                f"{label} diverged in epoch {epoch + 1}: the loss was NaN or infinite for "
                f"{int(nonfinite_worst)} consecutive steps; no scores were written for it. Lower "
                "`lr`, or set `amp` to bf16 or fp32 instead of fp16")
        if dist.enabled:
            stats.all_reduce()
        record_before = stats.epochs
        stats.end_epoch()
        if clean is not None and cfg.clean_every and (epoch + 1) % cfg.clean_every == 0:
            clean_pass()
        if clean is not None and (cfg.clean_every and (epoch + 1) % cfg.clean_every == 0
                                  or cfg.clean_steps and epoch == 0):
            if dist.enabled:
                clean.all_reduce()
            clean.end_epoch()
        hist = stats.history[record_before]
        train_acc = float(hist["correct"].sum()) / max(1, int(hist["presentations"].sum()))
        test_acc = None
        if is_main and test_loader and (evaluate_every_epoch or epoch + 1 == n_epochs):
            test_acc = evaluate(model, test_loader, autocast)
        metrics.append({"epoch": epoch + 1, "loss": float(loss_sum) / max(seen, 1),
                        "train_acc": train_acc, "test_acc": test_acc,
                        "images_per_s": seen * dist.world_size / elapsed, "seconds": elapsed,
                        "lr": sched.get_last_lr()[0], "steps": sched.last_epoch,
                        "images": seen * dist.world_size})
        if is_main:
            if not quiet:
                m = metrics[-1]
                test_txt = "n/a" if m["test_acc"] is None else f"{m['test_acc']:.4f}"
                print(f"{label} epoch {epoch + 1}/{n_epochs}: loss {m['loss']:.4f} train acc "
                      f"{m['train_acc']:.4f} test acc {test_txt} "
                      f"({m['images_per_s']:.0f} images/s)", flush=True)
            _write_metrics(run_dir, metrics)
            log.sync(stats.history)  # first: the checkpoint never counts records not on disk
            if clean is not None:
                clean_log.sync(clean.history)
            with atomic_write(ckpt_path) as f:
                torch.save({"epoch": epoch + 1, "arch": arch, "run": run,
                            "config": _config_dict(cfg), "identity": identity,
                            "model": model.state_dict(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "scaler": scaler.state_dict(),
                            "stats": stats.state_dict(history=False),
                            "clean": clean.state_dict(history=False) if clean is not None
                            else None,
                            "rng": rng_state(), "metrics": metrics}, f)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            return run_dir
    if is_main:
        meta = {"dataset": cfg.dataset, "arch": arch, "run": run, "seed": seed, **seeds,
                "epochs_trained": n_epochs, "view": "train", "world_size": dist.world_size,
                "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
                "config": _config_dict(cfg), "identity": identity}
        if save_scores:
            stats.save(os.path.join(run_dir, "scores.npz"), metadata=meta)
            if clean is not None:
                clean.save(os.path.join(run_dir, "scores_clean.npz"),
                           metadata={**meta, "view": "clean"})
        _write_run_config(run_dir, identity, device, dist, finished=True)
    return run_dir


def evaluate(model: nn.Module, loader, autocast) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad(), autocast():
        for x, y, _ in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return correct / max(total, 1)


def _config_dict(cfg: ScoreConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    d["archs"] = list(d["archs"])
    return d


RUN_FORMAT = "easyhard.run"
#: Fields that say which runs a job holds or how they are read, not what one run is: a finished
#: or killed run can be resumed under a job that differs in them.
JOB_ONLY_FIELDS = ("archs", "runs", "window", "workers")
#: What a run folder holds, all written by score_run: --force deletes these and nothing else.
HISTORY_FILE, CLEAN_HISTORY_FILE = "history.bin", "history_clean.bin"
RUN_FILES = ("scores.npz", "scores_clean.npz", "metrics.jsonl", "config.json", "checkpoint.pt",
             HISTORY_FILE, CLEAN_HISTORY_FILE)


def _logged_history(state: dict, log: "HistoryLog"):
    """The history a checkpointed SampleStats state needs: None when the state holds it (a
    checkpoint of an earlier easyhard), else the first history_epochs records of its side file."""
    if "history" in state:
        return None
    return log.read(int(state["history_epochs"]))


def run_seeds(cfg: ScoreConfig, run: int) -> dict[str, int]:
    """The effective seeds of run `run`: init_seed and data_seed default to the run's seed."""
    seed = cfg.seed + run
    return {"init_seed": seed if cfg.init_seed is None else cfg.init_seed,
            "data_seed": seed if cfg.data_seed is None else cfg.data_seed}


def run_identity(cfg: ScoreConfig, arch: str, run: int, fingerprint: str, *,
                 subset: np.ndarray | None = None, max_steps: int | None = None) -> dict[str, Any]:
    """Everything that makes one run what it is: resume refuses a run whose identity differs.
    A run on a subset adds the subset's size and digest (`subset_digest`), a run with a step
    budget its `max_steps`."""
    from .stats import FORMAT_VERSION

    config = {k: v for k, v in _config_dict(cfg).items() if k not in JOB_ONLY_FIELDS}
    identity = {"arch": arch, "run": run, "seed": cfg.seed + run, **run_seeds(cfg, run),
                "dataset_fingerprint": fingerprint,
                "score_format_version": FORMAT_VERSION, "config": config}
    if subset is not None:
        identity["subset"] = subset_digest(subset)
    if max_steps is not None:
        identity["max_steps"] = int(max_steps)
    return identity


def check_subset(subset, num_samples: int) -> np.ndarray:
    """A subset of dataset indices as ascending int64 [k], checked: integers in
    [0, num_samples), each at most once, at least one."""
    arr = np.asarray(subset)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"`subset` must be a 1-D array of dataset indices, got {arr.dtype} "
                         f"of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("`subset` is empty: there is nothing to train on")
    arr = np.sort(arr.astype(np.int64))
    if arr[0] < 0 or arr[-1] >= num_samples:
        raise ValueError(f"`subset` holds indices outside [0, {num_samples})")
    if (np.diff(arr) == 0).any():
        raise ValueError("`subset` names an example more than once")
    return arr


def subset_digest(subset: np.ndarray) -> dict[str, Any]:
    """{"count", "sha256"} of a subset (ascending int64 indices, little-endian bytes): equal
    digests mean the same examples."""
    import hashlib

    arr = np.ascontiguousarray(np.sort(np.asarray(subset, dtype=np.int64)), dtype="<i8")
    return {"count": int(len(arr)), "sha256": hashlib.sha256(arr.tobytes()).hexdigest()}


def identity_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable 'field: old -> new' lines for two run identities."""
    flat = lambda d: {**{k: v for k, v in d.items() if k != "config"},
                      **{f"config.{k}": v for k, v in d.get("config", {}).items()}}
    a, b = flat(old), flat(new)
    return [f"{k.removeprefix('config.')}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def check_same_run(found: dict[str, Any] | None, identity: dict[str, Any], where: str) -> None:
    """Refuse to resume from `where` unless it recorded exactly `identity`."""
    if not isinstance(found, dict):
        raise ValueError(f"{where} was written by an easyhard that did not record the run's "
                         "identity, so resuming cannot be checked: use a new output folder")
    diff = identity_differences(found, identity)
    if diff:
        raise ValueError(f"{where} belongs to another configuration ({'; '.join(diff[:6])}"
                         f"{'; ...' if len(diff) > 6 else ''}): resume it with the same settings, "
                         "or use a new output folder")


def _write_run_config(run_dir: str, identity: dict[str, Any], device, dist, *,
                      finished: bool) -> None:
    record = {"format": RUN_FORMAT, "finished": finished, "arch": identity["arch"],
              "run": identity["run"], "seed": identity["seed"],
              "easyhard_version": __version__, "torch_version": torch.__version__,
              "device": str(device), "world_size": dist.world_size,
              "dataset_fingerprint": identity["dataset_fingerprint"], "identity": identity,
              **identity["config"]}
    with atomic_write(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(record, f, indent=1)


def is_run_folder(path: str) -> bool:
    """Whether `path` is a run folder written by easyhard (its config.json says so)."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == RUN_FORMAT


def clear_previous(out_dir: str) -> list[str]:
    """Delete what an earlier `score` wrote in out_dir, recognised by its own markers: run folders
    whose config.json says easyhard wrote them (only the files a run writes; a folder left with
    anything else in it stays), and merged.npz when it is an easyhard merged file. Everything
    else stays. Returns what was deleted."""
    from .scores import MERGED_FORMAT, read_metadata_block

    removed = []
    if not os.path.isdir(out_dir):
        return removed
    for name in sorted(os.listdir(out_dir)):
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path) and is_run_folder(path):
            for f in RUN_FILES:
                if os.path.isfile(os.path.join(path, f)):
                    os.unlink(os.path.join(path, f))
            with contextlib.suppress(OSError):
                os.rmdir(path)  # only when nothing else is in it
            removed.append(path)
        elif name == "merged.npz" and os.path.isfile(path) and not os.path.islink(path):
            if (read_metadata_block(path) or {}).get("format") == MERGED_FORMAT:
                os.unlink(path)
                removed.append(path)
    return removed


def _write_metrics(run_dir: str, metrics: list[dict]) -> None:
    with atomic_write(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)


def input_paths(cfg: ScoreConfig, train) -> dict[str, str | None]:
    """What a scoring job reads (what -> path): its outputs may not overlap any of it."""
    return {"dataset": getattr(train, "base", None) or train.root, "file list": cfg.file_list}


JOB_CONFIG = "score-config.toml"  # the resolved configuration of the job in --out
_JOB_HEADER = "written by easyhard score"


def write_job_config(cfg: ScoreConfig, out_dir: str) -> None:
    """Write the resolved configuration into out_dir when the job starts (a --config file that
    reproduces it). Refuses to replace a file of that name that easyhard did not write."""
    from .config import to_toml

    path = os.path.join(out_dir, JOB_CONFIG)
    text = to_toml(cfg, f"{_JOB_HEADER} {__version__}: the resolved configuration of this job.\n"
                        f"Repeat or continue it: easyhard score --config <a copy> --out "
                        f"<folder> [--resume]")
    if os.path.lexists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            old = f.read()
        if not old.startswith(f"# {_JOB_HEADER}"):
            raise ValueError(f"{path} exists and easyhard did not write it; move it away or "
                             "choose another output folder")
        if old == text:
            return
    with atomic_write(path, "w") as f:
        f.write(text)


def score(cfg: ScoreConfig, out_dir: str, *, resume: bool = False, quiet: bool = False) -> dict:
    """Every (architecture, run) in turn, then the merged score file. Returns a summary.

    Everything that can be checked (the configuration, the device, the dataset, the output's
    place) is checked before anything is written. With `resume`, runs found in out_dir continue
    (unfinished) or are reused (finished) only when they are the same runs: configuration,
    dataset fingerprint and file format (else ValueError saying what differs). The output may not
    overlap the dataset. A job that fails leaves no trace of the runs it had not checkpointed."""
    from .io import check_disjoint

    cfg.validate()
    resolve_device(cfg.device)
    dist = Dist.from_env()
    train, test = load_datasets(cfg, quiet or dist.rank != 0)
    check_disjoint(out_dir, input_paths(cfg, train))
    if dist.enabled and not torch.distributed.is_initialized():
        backend = "nccl" if resolve_device(cfg.device).type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
    created = not os.path.exists(out_dir)
    before = set(os.listdir(out_dir)) if not created else set()
    try:
        if dist.rank == 0:
            os.makedirs(out_dir, exist_ok=True)
            write_job_config(cfg, out_dir)
        return _score_runs(cfg, out_dir, resume, quiet, dist, train, test)
    except BaseException:
        if dist.rank == 0:
            _remove_unstarted(out_dir, created, before)
        raise


def _remove_unstarted(out_dir: str, created: bool, before: set[str]) -> None:
    """After a failure: delete run folders this job made that hold no checkpoint (nothing to
    resume), and the output folder itself when this job created it and left it empty."""
    if not os.path.isdir(out_dir):
        return
    for name in set(os.listdir(out_dir)) - before:
        path = os.path.join(out_dir, name)
        if (os.path.isdir(path) and is_run_folder(path)
                and not os.path.exists(os.path.join(path, "checkpoint.pt"))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, "config.json"))
                os.rmdir(path)
    if created:
        with contextlib.suppress(OSError):
            if os.listdir(out_dir) == [JOB_CONFIG]:
                os.unlink(os.path.join(out_dir, JOB_CONFIG))
            os.rmdir(out_dir)


def _score_runs(cfg: ScoreConfig, out_dir: str, resume: bool, quiet: bool, dist: Dist, train,
                test) -> dict:
    from .scores import excluded, merge_score_files, read_metadata_block
    from .stats import read_metadata

    run_dirs = []
    for arch in cfg.archs:
        for run in range(cfg.runs):
            done = os.path.join(out_dir, f"{arch}-run{run}", "scores.npz")
            if resume and os.path.exists(done):
                block = read_metadata_block(done)  # checks the format and its version
                meta = read_metadata({} if block is None else {"metadata": json.dumps(block)}, done)
                check_same_run(meta.get("identity"),
                               run_identity(cfg, arch, run, train.fingerprint), done)
                run_dirs.append(os.path.dirname(done))
                continue
            run_dirs.append(score_run(cfg, arch, run, out_dir, resume=resume, quiet=quiet,
                                      dist=dist, datasets=(train, test)))
    summary = {"runs": run_dirs}
    if dist.rank == 0:
        files = [os.path.join(d, "scores.npz") for d in run_dirs]
        merged = os.path.join(out_dir, "merged.npz")
        table = merge_score_files(files, merged, window=cfg.window)
        summary["merged"] = merged
        summary["never_presented"] = int(excluded(table).sum())
    if dist.enabled:
        torch.distributed.barrier()
    return summary

"""Runs: train CNNs and record every training example at every presentation.

    easyhard score --dataset fashion-mnist --arch convnet --arch resnet20 --runs 2 --epochs 4 \
        --out runs/

A *run* (train_run) trains one architecture with one seed (channels-last; AMP bf16 on GPU by
default, fp16 with a grad scaler as an option, fp32 on CPU; optional torch.compile; SGD with
momentum/Nesterov and weight decay; label smoothing; step, cosine or one-cycle schedules with
warm-up) and feeds the training step's own logits to the fused op through SampleStats (no extra
forward pass); optionally it records a clean view (eval mode, no augmentation) into its own
statistics, and evaluates on the test split each epoch. Its stages, in order: RunData (datasets
and loaders), Training (model, optimizer, the training step), Recording (statistics and their
side files), restore, then per epoch train_one_epoch, closing the epoch, evaluate and
save_checkpoint (in the background while the next epoch trains). It writes into
``OUT/<arch>-run<k>/``: ``scores.npz`` (its statistics file; and ``scores_clean.npz``),
``metrics.jsonl`` (per epoch: loss, train and test accuracy, images/s), ``config.json`` (the
resolved configuration), ``checkpoint.pt`` (every epoch, atomically; its per-example part is
O(N): the closed epochs' records are appended to ``history.bin`` instead, see
statsfile.HistoryLog) and ``history.bin``; ``resume`` continues a killed run and, on CPU, ends
with bit-identical statistics. A *job* (train_job, the command `easyhard score`) trains every
(architecture, run) and finally merges their scores into ``OUT/merged.npz``
(easyhard.scores.merge_stats_files).

The same engine trains experiment cells (easyhard.experiments): ``train_run`` takes a ``subset`` of
dataset indices (handed to the loader, no copy of the data; in memory or image files) and a
``max_steps`` step budget, both part of the run's identity, so that resume refuses a checkpoint of
another subset or budget.

Multi-GPU / multi-node: launch with torchrun; each rank trains on its shard (DDP; NCCL on GPU,
gloo on CPU) and the per-example accumulators are summed across ranks at the end of each epoch.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import random
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from . import ops
from .config import ConfigError, ScoreConfig
from .datasets import NoTestSplit
from .io import BackgroundWriter, atomic_write, remove_owned
from .loaders import make_loader
from .loaders.common import augmentation_of
from .models import build_model
from .outputs import claim
from .runfolder import (
    CHECKPOINT,
    CLEAN_HISTORY_FILE,
    CLEAN_STATS_FILE,
    HISTORY_FILE,
    JOB_CONFIG,
    MERGED_FILE,
    RUN_CONFIG,
    STATS_FILE,
    check_job_output,
    check_resumable,
    check_resume_target,
    check_same_run,
    check_subset,
    clear_previous,
    config_dict,
    input_paths,
    is_run_folder,
    job_runs,
    other_runs,
    read_metrics,
    run_cost,
    run_folder_name,
    run_identity,
    run_seeds,
    write_job_config,
    write_metrics,
    write_run_config,
)
from .stats import SampleStats, host_copy
from .statsfile import HistoryLog


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
            raise ValueError(
                f"`device` {name} does not exist: {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
    return dev


def amp_dtype(cfg: ScoreConfig, device: torch.device) -> torch.dtype | None:
    mode = cfg.amp
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[mode]


def lr_lambda(
    cfg: ScoreConfig,
    steps_per_epoch: int,
    total_steps: int | None = None,
    planned: Callable[[], int] | None = None,
) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step. The schedule spans cfg.epochs epochs of
    steps_per_epoch steps, or `total_steps` steps when given (then one epoch of the schedule,
    e.g. of the warm-up, lasts total_steps / cfg.epochs steps: a step budget keeps the schedule
    of the full data whatever the size of the subset), or, with `planned` (pruning during
    training), the steps it returns, read at every step: the schedule runs on training progress
    and ends at the last step however the epochs shrink."""

    def lengths() -> tuple[int, int]:
        if planned is not None:
            total = max(1, int(planned()))
            return total, int(cfg.warmup_epochs * total / cfg.epochs)
        if total_steps is None:
            return max(1, cfg.epochs * steps_per_epoch), int(cfg.warmup_epochs * steps_per_epoch)
        return max(1, total_steps), int(cfg.warmup_epochs * total_steps / cfg.epochs)

    def f(step: int) -> float:
        total, warm = lengths()
        if cfg.schedule == "onecycle":  # linear up for 25% of steps, then linear down to 0
            peak = max(1, int(0.25 * total))
            return (
                (step + 1) / peak
                if step < peak
                else max(0.0, (total - step) / max(1, total - peak))
            )
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        return 0.1 ** int(3 * t)  # step: /10 at one and two thirds

    return f


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0)
    )
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

    #: set once this process has joined a group of its own (joined): see end_process
    group_joined = False

    @contextlib.contextmanager
    def joined(self, device: torch.device):
        """The job's process group around the body: joined (nccl on GPUs, gloo on CPUs) unless
        it already is, and left with destroy_process_group when the body returns. A group joined
        by the caller is the caller's to leave; after a failure the group is left to the exit,
        since destroying it while another rank waits in a collective can hang. Leaving does not
        stop gloo's threads once a DistributedDataParallel has used the group (its reducer keeps
        the group alive, pytorch#107298), so a process that joined one ends with end_process."""
        if not self.enabled or torch.distributed.is_initialized():
            yield
            return
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        Dist.group_joined = True
        yield
        torch.distributed.destroy_process_group()

    def from_rank0(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (a broadcast; `obj` itself without torch.distributed):
        every decision read from the output folder is rank 0's, so a job whose nodes have
        folders of their own (only rank 0's is written) resumes from rank 0's."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def end_process(code: int | str | None) -> None:
    """End this process now with exit status `code` (sys.exit's argument) when it joined a
    process group of its own (Dist.joined; the command line calls this on its way out): Python's
    exit handlers run and the output is flushed, but not the interpreter's and the C++ libraries'
    teardown, during which gloo's threads, still running, aborted finished ranks at random
    ("terminate called without an active exception"; CI, 2026-12-07). Otherwise returns."""
    if not Dist.group_joined:
        return
    import atexit

    if isinstance(code, str):
        print(code, file=sys.stderr)
    status = 0 if code is None else code if isinstance(code, int) else 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _maybe_progress(total: int, desc: str, quiet: bool):
    """A progress bar (images/s and ETA) on a terminal; nothing with --quiet or in a log file."""
    if quiet:
        return None
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit="img",
        unit_scale=True,
        dynamic_ncols=True,
        leave=False,
        disable=None,
        mininterval=0.5,
    )
    return None if bar.disable else bar


class DivergedError(RuntimeError):
    """Training produced non-finite losses for too many consecutive steps; no statistics were
    written."""


# ---------------------------------------------------------------------------- the stages of a run
def load_datasets(cfg: ScoreConfig, quiet: bool = True):
    """(train, test) datasets of a configuration; test is None when the data has no test split.
    A held-out split that exists but is wrong (a val/ class the training split has not, one that
    cannot be read) is an error, not a run without evaluation."""
    train = cfg.load_dataset("train")
    try:
        test = cfg.load_dataset("test")
    except NoTestSplit as e:  # e.g. an image folder without val/: train without evaluation
        if not quiet:
            print(f"no test split ({e}); test accuracy is not measured", flush=True)
        test = None
    return train, test


def run_device(cfg: ScoreConfig, dist: Dist) -> torch.device:
    """The device a rank trains on: cfg.device, or its local GPU under torchrun."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


@dataclass(frozen=True)
class CleanView:
    """When a run records the clean view (eval mode, no augmentation) into its own statistics:
    after every `every`-th epoch, and every `steps` steps during the first epoch; each of those
    epochs closes one record. The one place that decides it."""

    every: int = 0
    steps: int = 0

    @property
    def enabled(self) -> bool:
        return bool(self.every or self.steps)

    def during(self, epoch: int, step: int) -> bool:
        """A clean pass after step `step` (0-based) of epoch `epoch`?"""
        return bool(self.steps) and epoch == 0 and (step + 1) % self.steps == 0

    def after(self, epoch: int) -> bool:
        """A clean pass after epoch `epoch` (0-based)?"""
        return bool(self.every) and (epoch + 1) % self.every == 0

    def closes(self, epoch: int) -> bool:
        """Does the clean view's epoch record close with epoch `epoch`?"""
        return self.after(epoch) or (bool(self.steps) and epoch == 0)


@dataclass
class RunData:
    """The loaders of one run: training batches (its shard, or its subset), the test split and,
    when the clean view is recorded, the training examples again without augmentation."""

    train: Any
    loader: Any
    test_loader: Any = None
    clean_loader: Any = None

    @classmethod
    def build(
        cls,
        cfg: ScoreConfig,
        train,
        test,
        device: torch.device,
        dist: Dist,
        data_seed: int,
        subset: np.ndarray | None,
    ) -> "RunData":
        file_kwargs = (
            {}
            if train.in_memory
            else {"crop": cfg.crop, "workers": cfg.workers, "skip_corrupt": cfg.skip_corrupt}
        )
        sub_kwargs = {} if subset is None else {"subset": subset}
        shard = {"rank": dist.rank, "world_size": dist.world_size}
        loader = make_loader(
            train,
            cfg.batch_size,
            device,
            train=True,
            seed=data_seed,
            **shard,
            **file_kwargs,
            **sub_kwargs,
        )
        test_loader = (
            make_loader(test, 1024, device, train=False, **file_kwargs)
            if test is not None
            else None
        )
        clean_loader = None
        if CleanView(cfg.clean_every, cfg.clean_steps).enabled:
            clean_loader = make_loader(
                train, 1024, device, train=False, **shard, **file_kwargs, **sub_kwargs
            )
        return cls(train, loader, test_loader, clean_loader)


@dataclass
class Training:
    """The model and what trains it: one `step` is the scoring run's training step (autocast
    forward, loss, backward with the grad scaler, optimizer and schedule) and returns the step's
    own logits, which the recording takes as they are (no extra forward pass). `easyhard bench
    train` times this same step."""

    model: nn.Module  # the bare model: state_dict, evaluation, clean passes
    forward: Callable  # what trains: the model, DDP-wrapped and/or compiled
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    dtype: torch.dtype | None  # autocast dtype, None for fp32
    device: torch.device
    channels_last: bool = True
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper under torchrun

    @classmethod
    def build(
        cls,
        cfg: ScoreConfig,
        arch: str,
        train,
        device: torch.device,
        dist: Dist,
        *,
        steps_per_epoch: int,
        max_steps: int | None = None,
        channels_last: bool = True,
        planned: Callable[[], int] | None = None,
    ) -> "Training":
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = build_model(arch, train.num_classes, train.channels, train.input_size(cfg.crop))
        model = model.to(device, memory_format=memory_format)
        ddp_model = model
        if dist.enabled:
            ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        decay, no_decay = [], []
        for p in model.parameters():
            (decay if p.ndim > 1 else no_decay).append(p)
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
        else:
            opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(cfg, steps_per_epoch, max_steps, planned)
        )
        dtype = amp_dtype(cfg, device)
        return cls(
            model=model,
            forward=torch.compile(ddp_model) if cfg.compile else ddp_model,
            opt=opt,
            sched=sched,
            scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
            criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing),
            dtype=dtype,
            device=device,
            channels_last=channels_last,
            ddp=ddp_model if dist.enabled else None,
        )

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(
        self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on batch (x, y); returns (logits, loss) of its forward pass.
        `weight` [B]: each example's loss weight (pruning's rescaling), the mean taken after."""
        if not self.channels_last:
            x = x.contiguous()
        with self.autocast():
            logits = self.forward(x)
            if weight is None:
                loss = self.criterion(logits, y)
            else:
                per_example = nn.functional.cross_entropy(
                    logits, y, reduction="none", label_smoothing=self.criterion.label_smoothing
                )
                loss = (per_example * weight).mean()
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return logits, loss

    @property
    def steps_done(self) -> int:
        return self.sched.last_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.scaler.load_state_dict(ck["scaler"])


def train_one_epoch(
    training: Training,
    loader,
    stats: SampleStats,
    *,
    epoch: int,
    max_steps: int | None = None,
    clean_pass: Callable[[], None] | None = None,
    clean: CleanView = CleanView(),
    bar=None,
    weights: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Train one epoch over `loader`, recording every step's own logits in `stats` (the fused op).
    `weights` [N]: per-example loss weights (pruning's rescaling of the kept candidates).

    Stops early once the run has taken max_steps optimizer steps. Nothing synchronises per step:
    the loss and the longest streak of non-finite losses stay on the device, read once at the
    end. Returns the epoch's "loss" (mean), "images", "seconds" and "nonfinite_streak"."""
    device = training.device
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    training.model.train()
    seen, t0 = 0, time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    streak = torch.zeros((), dtype=torch.int64, device=device)  # consecutive non-finite losses
    worst = torch.zeros((), dtype=torch.int64, device=device)
    for step, (x, y, idx) in enumerate(loader):
        logits, loss = training.step(x, y, None if weights is None else weights[idx])
        stats.update(logits, y, idx)  # the training step's own logits
        seen += len(y)
        loss = loss.detach()
        loss_sum += loss.float() * len(y)
        streak = torch.where(torch.isfinite(loss), 0, streak + 1)
        worst = torch.maximum(worst, streak)
        if bar is not None:
            bar.update(len(y))
        if clean_pass is not None and clean.during(epoch, step):
            clean_pass()
        if max_steps is not None and training.steps_done >= max_steps:
            break  # the step budget is spent: this last epoch ends here
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {
        "loss": float(loss_sum) / max(seen, 1),
        "images": seen,
        "seconds": time.perf_counter() - t0,
        "nonfinite_streak": int(worst),
    }


def record_clean_view(training: Training, loader, stats: SampleStats) -> None:
    """Record the clean view: every example of `loader` once, eval mode, no gradients."""
    training.model.eval()
    with torch.no_grad(), training.autocast():
        for x, y, idx in loader:
            stats.update(training.model(x), y, idx)
    training.model.train()


def evaluate(model: nn.Module, loader, autocast) -> tuple[float, int]:
    """Top-1 accuracy of `model` over `loader`, and the examples it counted (fewer than the
    split's when unreadable files were skipped)."""
    model.eval()
    correct = total = 0
    with torch.no_grad(), autocast():
        for x, y, _ in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train()
    return correct / max(total, 1), total


@dataclass
class Recording:
    """A run's per-example statistics (and the clean view's, when recorded) with their side files
    of closed-epoch records (history.bin, history_clean.bin)."""

    stats: SampleStats
    log: HistoryLog
    clean: SampleStats | None = None
    clean_log: HistoryLog | None = None

    @classmethod
    def build(cls, train, device: torch.device, run_dir: str, clean: bool) -> "Recording":
        examples = dict(labels=train.labels, paths=train.paths, fingerprint=train.fingerprint)

        def new() -> SampleStats:
            return SampleStats(len(train), train.num_classes, device, **examples)

        return cls(
            new(),
            HistoryLog(os.path.join(run_dir, HISTORY_FILE), len(train)),
            new() if clean else None,
            HistoryLog(os.path.join(run_dir, CLEAN_HISTORY_FILE), len(train)) if clean else None,
        )

    def state_dicts(self) -> dict[str, Any]:
        """The checkpoint's statistics: O(N), the closed epochs' records being in the side files."""
        return {
            "stats": self.stats.state_dict(history=False),
            "clean": self.clean.state_dict(history=False) if self.clean is not None else None,
        }

    def logged_histories(self, ck: dict[str, Any]) -> dict[str, np.ndarray | None]:
        """The records a checkpoint's statistics need from the side files (read_checkpoint)."""
        return {
            "stats": _logged_history(ck["stats"], self.log),
            "clean": None if self.clean is None else _logged_history(ck["clean"], self.clean_log),
        }

    def load_state_dicts(self, ck: dict[str, Any], logged: dict[str, np.ndarray | None]) -> None:
        self.stats.load_state_dict(ck["stats"], logged["stats"])
        if self.clean is not None:
            self.clean.load_state_dict(ck["clean"], logged["clean"])

    def reserve(self, epochs: int) -> None:
        self.stats.reserve(epochs)
        if self.clean is not None:
            self.clean.reserve(epochs)  # at most one clean record per epoch

    def histories(self) -> list[tuple[HistoryLog, np.ndarray]]:
        """(side file, records it must hold) pairs for save_checkpoint."""
        out = [(self.log, self.stats.history)]
        if self.clean is not None:
            out.append((self.clean_log, self.clean.history))
        return out


def save_checkpoint(
    path: str, state: dict[str, Any], histories: list[tuple[HistoryLog, np.ndarray]]
) -> None:
    """Write a checkpoint: first the side files' records (flushed: a checkpoint never counts
    records not on disk), then the checkpoint itself, atomically."""
    for log, history in histories:
        log.sync(history)
    with atomic_write(path) as f:
        torch.save(state, f)


def _epoch_finished(epoch: int) -> None:
    """Called after each epoch's checkpoint was handed to the writer (tests stop runs here)."""


def read_checkpoint(ckpt_path: str, identity: dict[str, Any], rec: Recording) -> dict[str, Any]:
    """A killed run's checkpoint with the closed epochs' records of its side files (key
    "logged"): refuses a damaged one or one of another run."""
    try:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, garbage, or not a checkpoint at all
        raise ValueError(
            f"{ckpt_path} cannot be read ({type(e).__name__}); it is damaged: "
            "move it away to restart this run from scratch"
        ) from e
    check_same_run(ck.get("identity") if isinstance(ck, dict) else None, identity, ckpt_path)
    ck["logged"] = rec.logged_histories(ck)
    return ck


def resume_point(
    ckpt_path: str, identity: dict[str, Any], rec: Recording, dist: Dist, resume: bool
) -> dict[str, Any] | None:
    """The checkpoint a run continues from (None: it starts afresh), read by rank 0 from its
    folder and sent to every rank; a refusal on rank 0 is raised on every rank."""
    found: tuple[str, Any] = ("none", None)
    if dist.rank == 0 and resume and os.path.exists(ckpt_path):
        try:
            found = ("checkpoint", read_checkpoint(ckpt_path, identity, rec))
        except ValueError as e:
            if not dist.enabled:
                raise
            found = ("refused", str(e))
    kind, value = dist.from_rank0(found)
    if kind == "refused":
        raise ValueError(value)
    return value


def restore(
    ck: dict[str, Any], training: Training, rec: Recording, pruner=None, loader=None
) -> tuple[int, list[dict]]:
    """Continue a killed run from its checkpoint (read_checkpoint); returns (epochs done, their
    metrics). Says so when the statistics were recorded by another kernel than this machine's
    (another CPU path, or the GPU): the resumed sums then differ in their last bits from an
    uninterrupted run's, and the statistics file lists both kernels; and when the epochs so far
    were augmented otherwise than `loader` augments (another loader, or another version of its
    drawing): the epochs from here on then differ from an uninterrupted run's."""
    training.load_state_dict(ck)
    rec.load_state_dicts(ck, ck["logged"])
    if pruner is not None:
        pruner.load_state_dict(ck["pruner"])
    set_rng_state(ck["rng"])
    before = sorted(rec.stats.kernels)
    now = "cuda" if rec.stats.device.type == "cuda" else f"cpu-{ops.cpu_capability()}"
    if before and now not in before:
        print(
            f"note: this run was recorded with the {', '.join(before)} kernel and resumes with "
            f"{now}: its float sums will differ in their last bits from an uninterrupted run's",
            file=sys.stderr,
            flush=True,
        )
    if loader is not None:
        now = augmentation_of(loader)
        before = ck.get("augmentation") or f"{type(loader).__name__} v1"  # before versions
        if before != now:
            print(
                f"note: this run's epochs so far were augmented by {before}, and it resumes with "
                f"{now}: its crops and flips from here on differ from an uninterrupted run's",
                file=sys.stderr,
                flush=True,
            )
    return ck["epoch"], ck["metrics"]


# ---------------------------------------------------------------------------- one run
def train_run(
    cfg: ScoreConfig,
    arch: str,
    run: int,
    out_dir: str,
    *,
    resume: bool = False,
    quiet: bool = False,
    dist: Dist | None = None,
    datasets=None,
    subset: np.ndarray | None = None,
    max_steps: int | None = None,
    run_dir: str | None = None,
    evaluate_every_epoch: bool = True,
    save_scores: bool = True,
) -> str:
    """Train (arch, run) and write its outputs into out_dir/<arch>-run<run>/ (or `run_dir`);
    returns the folder. `datasets`: (train, test) when already loaded (else from cfg).

    For experiments on subsets (easyhard.experiments): `subset`, int [k] dataset indices each at
    most once, trains on these examples only (an index list for the loader, no copy; in-memory
    datasets only; the others are never presented; the test split is evaluated in full);
    `max_steps` trains exactly that many optimizer steps (as many epochs as it takes, the last
    cut short; the schedule spans them); `evaluate_every_epoch=False` measures test accuracy
    after the last epoch only; `save_scores=False` writes no statistics file. Both subset and
    max_steps are part of the run's identity: resume refuses a checkpoint of another.

    The stages: data (RunData), model and optimizer (Training), statistics (Recording),
    restore; per epoch _train_epoch, _check_finite, _close_epoch, evaluate, checkpoint (written
    in the background while the next epoch trains); at the end _save_statistics."""
    dist = dist or Dist()
    device = run_device(cfg, dist)
    seeds = _seeded(cfg, run, max_steps)
    train, test = datasets if datasets is not None else load_datasets(cfg, quiet or dist.rank != 0)
    if subset is not None:
        subset = check_subset(subset, len(train))
    run_dir = run_dir or os.path.join(out_dir, run_folder_name(arch, run))
    ckpt_path = os.path.join(run_dir, CHECKPOINT)
    clean = CleanView(cfg.clean_every, cfg.clean_steps)

    data = RunData.build(cfg, train, test, device, dist, seeds["data_seed"], subset)
    steps_per_epoch = len(data.loader)
    pruner = _pruner(cfg, data, train, device, seeds, dist, max_steps)
    training = Training.build(
        cfg, arch, train, device, dist, steps_per_epoch=steps_per_epoch, max_steps=max_steps,
        planned=None if pruner is None else (lambda: pruner.planned_steps),
    )  # fmt: skip
    rec = Recording.build(train, device, run_dir, clean=data.clean_loader is not None)
    n_epochs = cfg.epochs if max_steps is None else math.ceil(max_steps / max(1, steps_per_epoch))
    identity = run_identity(cfg, arch, run, train.fingerprint, subset=subset, max_steps=max_steps)
    start_epoch, metrics = 0, []
    ck = resume_point(ckpt_path, identity, rec, dist, resume)
    if ck is not None:
        start_epoch, metrics = restore(ck, training, rec, pruner, data.loader)
        del ck
    rec.reserve(n_epochs)  # the history never grows (and copies) mid-run

    is_main = dist.rank == 0
    if is_main:  # says what the run is from its start, and marks the folder as easyhard's
        os.makedirs(run_dir, exist_ok=True)
        write_run_config(run_dir, identity, device, dist, finished=False)
    label = f"{arch} run {run}"
    presented = len(train) if subset is None else len(subset)
    clean_pass = None  # records the clean view, when the run records one
    if rec.clean is not None:
        clean_pass = functools.partial(record_clean_view, training, data.clean_loader, rec.clean)
    writer = BackgroundWriter()
    try:
        for epoch in range(start_epoch, n_epochs):
            show = not quiet and is_main
            plan = _plan_epoch(pruner, data, epoch, training)
            kept = presented if plan is None or plan.kept is None else len(plan.kept)
            m = _train_epoch(training, data, rec, clean, clean_pass, epoch, n_epochs, max_steps,
                             label, kept // dist.world_size, show,
                             None if plan is None else plan.weights)  # fmt: skip
            _check_finite(m, cfg, steps_per_epoch, training, label, epoch)
            _close_epoch(rec, clean, clean_pass, epoch, dist, pruner)
            test = (None, None)  # (accuracy, examples counted)
            if is_main and data.test_loader and (evaluate_every_epoch or epoch + 1 == n_epochs):
                test = evaluate(training.model, data.test_loader, training.autocast)
            metrics.append(_epoch_metrics(m, epoch, rec, test, training, dist, pruner, plan))
            if is_main:
                if show:
                    _print_epoch(label, epoch, n_epochs, metrics[-1])
                write_metrics(run_dir, metrics)
                state = _checkpoint_state(epoch, arch, run, cfg, identity, training, rec, metrics)
                state["augmentation"] = augmentation_of(data.loader)
                state.update({} if pruner is None else {"pruner": pruner.state_dict()})
                writer.submit(save_checkpoint, ckpt_path, state, rec.histories())
            _epoch_finished(epoch + 1)
    finally:
        writer.wait()  # a run that fails still leaves its last epoch's checkpoint complete
    if is_main:
        if save_scores:
            _save_statistics(
                rec, run_dir, cfg, arch, run, seeds, n_epochs, training, dist, identity
            )
        write_run_config(run_dir, identity, device, dist, finished=True)
    return run_dir


def _seeded(cfg: ScoreConfig, run: int, max_steps: int | None) -> dict[str, int]:
    """The run's seeds, with the initialisation's and the global generators' set from them
    (`max_steps` checked first)."""
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}")
    seeds = run_seeds(cfg, run)
    torch.manual_seed(seeds["init_seed"])  # the initialisation (and dropout, if any)
    np.random.seed(cfg.seed + run)
    random.seed(cfg.seed + run)
    return seeds


def _save_statistics(rec, run_dir, cfg, arch, run, seeds, n_epochs, training, dist, identity):
    """A finished run's statistics files (the training view, and the clean view if recorded),
    with the metadata block that says what they are."""
    meta = {
        "dataset": cfg.dataset,
        "arch": arch,
        "run": run,
        "seed": cfg.seed + run,
        **seeds,
        "epochs_trained": n_epochs,
        "view": "train",
        "world_size": dist.world_size,
        "amp": str(training.dtype).replace("torch.", "") if training.dtype else "fp32",
        "config": config_dict(cfg),
        "identity": identity,
    }
    rec.stats.save(os.path.join(run_dir, STATS_FILE), metadata=meta)
    if rec.clean is not None:
        rec.clean.save(os.path.join(run_dir, CLEAN_STATS_FILE), metadata={**meta, "view": "clean"})


def _checkpoint_state(epoch, arch, run, cfg, identity, training, rec, metrics) -> dict:
    """What a checkpoint holds after `epoch`: enough to continue the run exactly."""
    return {
        "epoch": epoch + 1,
        "arch": arch,
        "run": run,
        "config": config_dict(cfg),
        "identity": identity,
        **host_copy(training.state_dict()),
        **rec.state_dicts(),
        "rng": rng_state(),
        "metrics": list(metrics),
    }


def _train_epoch(
    training,
    data,
    rec,
    clean,
    clean_pass,
    epoch,
    n_epochs,
    max_steps,
    label,
    examples,
    show,
    weights=None,
) -> dict[str, Any]:
    """One epoch's training steps (train_one_epoch) with its progress bar; under DDP, ranks
    that run out of batches first join the others' collectives."""
    bar = _maybe_progress(examples, f"{label} epoch {epoch + 1}/{n_epochs}", not show)
    join = (
        nn.parallel.distributed.Join([training.ddp])
        if training.ddp is not None
        else contextlib.nullcontext()
    )
    with join:
        m = train_one_epoch(
            training,
            data.loader,
            rec.stats,
            epoch=epoch,
            max_steps=max_steps,
            clean_pass=clean_pass,
            clean=clean,
            bar=bar,
            weights=weights,
        )
    if bar is not None:
        bar.close()
    return m


def _pruner(cfg, data, train, device, seeds, dist, max_steps):
    """The run's Pruner when the recipe prunes during training (easyhard.prune), else None."""
    if cfg.prune == "none":
        return None
    if max_steps is not None:
        raise ValueError(
            "pruning during training (`prune`) runs on an epoch budget; a step budget "
            "(`max_steps`, the experiments' --budget steps) cannot be combined with it yet"
        )
    from .prune import Pruner

    return Pruner(cfg, data.loader.indices, len(train), device, seeds["data_seed"], dist.world_size)


def _plan_epoch(pruner, data, epoch: int, training):
    """This epoch's kept set, given to the loader (None without pruning)."""
    if pruner is None:
        return None
    plan = pruner.plan(epoch, training.steps_done)
    data.loader.set_subset(pruner.examples if plan.kept is None else plan.kept)
    return plan


def _check_finite(m: dict, cfg: ScoreConfig, steps_per_epoch: int, training, label, epoch) -> None:
    """Stop a run whose loss was NaN or infinite for too many consecutive steps."""
    limit = min(cfg.max_nonfinite_steps, max(1, steps_per_epoch))
    if m["nonfinite_streak"] >= limit:
        advice = "lower `lr`"
        if training.dtype == torch.float16:
            advice += ", or set `amp` to bf16 or fp32 instead of fp16"
        raise DivergedError(
            f"{label} diverged in epoch {epoch + 1}: the loss was NaN or infinite for "
            f"{m['nonfinite_streak']} consecutive steps (the limit, "
            f"`max_nonfinite_steps`, is {limit}; checked at the end of each epoch, so a "
            f"run never waits on the device per step); no scores were written for it: "
            f"{advice}"
        )


def _close_epoch(
    rec: Recording, clean: CleanView, clean_pass, epoch: int, dist: Dist, pruner=None
) -> None:
    """Close the epoch: every rank's presentations summed, one record per example (and the
    clean view's, on the epochs it is recorded); pruning reads the summed epoch first."""
    if dist.enabled:
        rec.stats.all_reduce()
    if pruner is not None:
        pruner.observe(*rec.stats.open_epoch())
    rec.stats.end_epoch()
    if clean.after(epoch):
        clean_pass()
    if clean.closes(epoch):
        if dist.enabled:
            rec.clean.all_reduce()
        rec.clean.end_epoch()


def _epoch_metrics(
    m: dict, epoch: int, rec: Recording, test: tuple, training, dist, pruner=None, plan=None
) -> dict:
    """metrics.jsonl's line of an epoch (with what pruning did, under pruning); `test`: the
    test accuracy and the examples it counted, (None, None) when not measured."""
    hist = rec.stats.history[-1]
    pruning = {}
    if plan is not None:
        kept = len(pruner.examples) if plan.kept is None else len(plan.kept)
        pruning = {"pruned": pruner.prunes(epoch), "kept": kept, "skipped": plan.skipped,
                   "candidates": plan.candidates}  # fmt: skip
    return {
        "epoch": epoch + 1,
        "loss": m["loss"],
        "train_acc": float(hist["correct"].sum()) / max(1, int(hist["presentations"].sum())),
        "test_acc": test[0],
        **({"test_examples": test[1]} if test[1] is not None else {}),
        "images_per_s": m["images"] * dist.world_size / m["seconds"],
        "seconds": m["seconds"],
        "lr": training.sched.get_last_lr()[0],
        "steps": training.steps_done,
        "images": m["images"] * dist.world_size,
        **pruning,
    }


def _print_epoch(label: str, epoch: int, n_epochs: int, m: dict[str, Any]) -> None:
    test_txt = "n/a" if m["test_acc"] is None else f"{m['test_acc']:.4f}"
    print(
        f"{label} epoch {epoch + 1}/{n_epochs}: loss {m['loss']:.4f} train acc "
        f"{m['train_acc']:.4f} test acc {test_txt} ({m['images_per_s']:.0f} images/s)",
        flush=True,
    )


def _logged_history(state: dict, log: "HistoryLog"):
    """The history a checkpointed SampleStats state needs: None when the state holds it (a
    checkpoint of an earlier easyhard), else the first history_epochs records of its side file."""
    if "history" in state:
        return None
    return log.read(int(state["history_epochs"]))


def train_job(
    cfg: ScoreConfig,
    out_dir: str,
    *,
    resume: bool = False,
    quiet: bool = False,
    force: bool = False,
) -> dict:
    """Every (architecture, run) in turn, then the merged scores file. Returns a summary.

    Everything that can be checked (the configuration, the device, the dataset, the output's
    place, that no run folder or merged.npz of the user's is in the way) is checked before
    anything is written or deleted; then `force` (without `resume`) deletes what an earlier job
    wrote in out_dir (runfolder.clear_previous) and nothing else. With `resume`, runs found in
    out_dir continue (unfinished) or are reused (finished) only when they are the same runs:
    configuration, dataset fingerprint and file format (else ValueError saying what differs).
    The output may not overlap the dataset. A job that fails leaves no trace of the runs it had
    not checkpointed."""
    from .io import check_disjoint

    cfg.validate()
    if resume and force:
        raise ValueError(
            "`resume` continues the runs in the output folder and `force` deletes them to start "
            "afresh: give one of them"
        )
    resolve_device(cfg.device)
    dist = Dist.from_env()
    train, test = load_datasets(cfg, quiet or dist.rank != 0)
    steps = math.ceil(math.ceil(len(train) / dist.world_size) / cfg.batch_size)
    if cfg.clean_steps > steps:
        raise ConfigError(
            f"`clean_steps` ({cfg.clean_steps}) is more than the {steps} step(s) of the first "
            f"epoch ({len(train)} examples, `batch_size` {cfg.batch_size}): no clean view would "
            "be recorded"
        )
    check_disjoint(out_dir, input_paths(cfg, train))
    if resume:
        check_resume_target(out_dir)
    # rank 0 writes, and holds the folder's lock while it does: a second job is refused
    with claim(out_dir, "score") if dist.rank == 0 else contextlib.nullcontext():
        return _checked_job(cfg, out_dir, resume, quiet, force, dist, train, test)


def _checked_job(
    cfg: ScoreConfig, out_dir: str, resume: bool, quiet: bool, force: bool, dist: Dist, train, test
) -> dict:
    """train_job's checks of the output, then the job (under the output's lock on rank 0)."""
    check_job_output(cfg, out_dir)
    if resume:
        check_resumable(cfg, out_dir, train.fingerprint, dist.world_size)
    if force and not resume and dist.rank == 0:
        clear_previous(out_dir, job_runs(cfg))  # only the runs this job writes, easyhard's own
    if (force or resume) and dist.rank == 0:
        left = other_runs(out_dir, job_runs(cfg))
        if left:  # said even with --quiet: an analysis of the folder would mix them in
            print(
                f"note: {out_dir} holds {len(left)} earlier run folder(s) this job does not "
                f"name ({', '.join(left[:6])}{' ...' if len(left) > 6 else ''}): "
                + (
                    "merged.npz leaves them out (name their architectures and runs to merge "
                    "them too)"
                    if resume
                    else "--force leaves them"
                )
                + "; analyses of the whole folder read them, so move them away to leave them "
                "out there",
                file=sys.stderr,
                flush=True,
            )
    with dist.joined(resolve_device(cfg.device)):
        return _job_in_group(cfg, out_dir, resume, quiet, dist, train, test)


def _job_in_group(
    cfg: ScoreConfig, out_dir: str, resume: bool, quiet: bool, dist: Dist, train, test
) -> dict:
    """The job's runs in its process group; after a failure rank 0 removes what holds nothing."""
    created = not os.path.exists(out_dir)
    before = set(os.listdir(out_dir)) if not created else set()
    try:
        if dist.rank == 0:
            if dist.enabled and not quiet:
                print(
                    f"rank 0 of {dist.world_size} ({socket.gethostname()}) writes the outputs to "
                    f"{os.path.abspath(out_dir)}; the other ranks write nothing",
                    flush=True,
                )
            os.makedirs(out_dir, exist_ok=True)
            write_job_config(cfg, out_dir)
        return _train_job_runs(cfg, out_dir, resume, quiet, dist, train, test)
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
        if (
            os.path.isdir(path)
            and is_run_folder(path)
            and not os.path.exists(os.path.join(path, CHECKPOINT))
        ):
            remove_owned(path, [RUN_CONFIG], remove_folder=True)
    if created and os.listdir(out_dir) in ([], [JOB_CONFIG]):
        remove_owned(out_dir, [JOB_CONFIG], remove_folder=True)


def _train_job_runs(
    cfg: ScoreConfig, out_dir: str, resume: bool, quiet: bool, dist: Dist, train, test
) -> dict:
    from .scores import excluded, merge_stats_files

    run_dirs, reused = [], 0
    for arch, run in job_runs(cfg):
        done = os.path.join(out_dir, run_folder_name(arch, run), STATS_FILE)
        # finished, and the same run (check_resumable): rank 0's folder decides
        if dist.from_rank0(resume and dist.rank == 0 and os.path.exists(done)):
            run_dirs.append(os.path.dirname(done))
            reused += 1
            continue
        run_dirs.append(
            train_run(
                cfg,
                arch,
                run,
                out_dir,
                resume=resume,
                quiet=quiet,
                dist=dist,
                datasets=(train, test),
            )
        )
    summary = {"runs": run_dirs, "reused": reused, "trained": len(run_dirs) - reused}
    if dist.rank == 0:
        costs = [run_cost(read_metrics(d, missing_ok=True)) for d in run_dirs]
        summary["cost"] = {
            "images": sum(c["images"] for c in costs),
            "seconds": sum(c["seconds"] for c in costs),
            "per_run": dict(zip(run_dirs, costs)),
        }
        files = [os.path.join(d, STATS_FILE) for d in run_dirs]
        merged = os.path.join(out_dir, MERGED_FILE)
        table = merge_stats_files(files, merged, window=cfg.window)
        summary["merged"] = merged
        summary["never_presented"] = int(excluded(table).sum())
    if dist.enabled:
        torch.distributed.barrier()
    return summary

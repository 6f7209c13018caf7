"""`easyhard bench`: throughput users can trust and compare across machines.

    easyhard bench train --arch resnet50 --dataset synthetic --image-size 224 --batch-size 256
    easyhard bench loader --dataset imagefolder --data-dir /data/imagenet

``bench train`` measures the training step of a scoring run (the same model, optimizer, AMP,
channels-last and torch.compile settings as `easyhard score`) with and without the recording
(SampleStats.update on the step's own logits), in alternating blocks of steps over the same
loader so that drift (clocks, caches, thermal) falls on both alike. It reports images/s of each,
the recording overhead, the share of time spent waiting for the next batch (the loader) against
computing, the peak memory, and the time of the first (compiling) step apart from the steady
state. Synthetic data isolates the model; an image folder includes the loader. Under torchrun
every rank trains its shard (DistributedDataParallel) and images/s are summed over ranks.

``bench loader`` measures images/s of every loader that can read the dataset here: for image
files DALI with GPU decoding ("mixed", on a GPU), DALI on the CPU (decoding only the crop's
region, and for contrast whole images), and torch + PIL workers; for in-memory datasets the
device-resident TensorLoader; all with the same thread count.

Both return one JSON-ready dict: ``env`` (GPUs, CUDA, torch, DALI and easyhard versions, CPU
count, threads), ``images_per_s`` (one key per setting), and for train ``overhead_percent``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import resource
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from .config import BenchLoaderConfig, BenchTrainConfig


def environment(device: str) -> dict[str, Any]:
    """What the numbers were measured on: enough to compare two machines (every benchmark of
    benchmarks/ records this too). The CPU paths are the extension's own answer, not read from
    /proc/cpuinfo; the topology tells whether two threads had two cores or one core's two
    hardware threads (which share its vector units: a dense kernel gains less from the second)."""
    import torch

    from . import __version__
    from .loaders import dali_available

    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        **cpu_topology(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "easyhard": __version__,
        "device": device,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        ),
        "dali": None,
    }
    try:
        from . import ops

        env["cpu_paths"] = ops.cpu_capabilities()
        env["cpu_path_default"] = env["cpu_paths"][-1]  # the best this CPU runs
    except ImportError:  # the extension is not built: the loader benchmark runs without it
        pass
    if dali_available():
        import nvidia.dali

        env["dali"] = nvidia.dali.__version__
    return env


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_topology(root: str = "/sys/devices/system/cpu") -> dict[str, int]:
    """{"cpu_cores": physical cores, "cpu_threads_per_core": hardware threads a core} of the
    CPUs this process may run on (Linux sysfs); {} where that is not readable."""
    cores: dict[tuple[str, str], int] = {}
    try:
        for cpu in sorted(os.sched_getaffinity(0)):
            topology = os.path.join(root, f"cpu{cpu}", "topology")
            with open(os.path.join(topology, "physical_package_id")) as f:
                package = f.read().strip()
            with open(os.path.join(topology, "core_id")) as f:
                core = f.read().strip()
            cores[(package, core)] = cores.get((package, core), 0) + 1
    except (OSError, AttributeError):  # no sysfs, or no sched_getaffinity (macOS)
        return {}
    if not cores:
        return {}
    return {"cpu_cores": len(cores), "cpu_threads_per_core": max(cores.values())}


def batch_used(asked: int, examples: int) -> dict[str, int]:
    """The batch size a bench result reports: the one its batches had. A batch larger than the
    examples a process reads is all of them (the asked size recorded beside it), not what it
    claims to be."""
    if asked <= examples:
        return {"batch_size": asked}
    return {"batch_size": examples, "batch_size_asked": asked}


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device) -> dict[str, float]:
    import torch

    out = {"peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_device_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _batches(loader) -> Iterator:
    """The loader's batches without end: epoch after epoch."""
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the loader gave no batch: the dataset is smaller than one batch?")
        epoch += 1


def _timed_next(it: Iterator, clock: dict) -> Any:
    t0 = time.perf_counter()
    batch = next(it)
    clock["wait"] += time.perf_counter() - t0
    return batch


def _bench_loader(cfg, train, device, dist):
    """The training loader `easyhard score` would use for this data, this process's shard."""
    from .loaders import make_loader

    file_kwargs = (
        {}
        if train.in_memory
        else {"crop": cfg.crop, "workers": cfg.workers, "skip_corrupt": cfg.skip_corrupt}
    )
    return make_loader(
        train,
        cfg.batch_size,
        device,
        train=True,
        seed=0,
        rank=dist.rank,
        world_size=dist.world_size,
        **file_kwargs,
    )


def _timed_blocks(step, it, clock, blocks: int, per_block: int, device, say):
    """Alternate blocks of recording and plain steps (recording, plain, recording, ...: drift
    falls on both alike); returns seconds, data-wait seconds and images, each by recording."""
    _sync(device)
    seconds = {True: 0.0, False: 0.0}
    wait = {True: 0.0, False: 0.0}
    images = {True: 0, False: 0}
    for b in range(2 * blocks):
        record = b % 2 == 0
        say(f"block {b + 1}/{2 * blocks} ({'recording' if record else 'plain'}, {per_block} steps)")
        clock["wait"] = 0.0
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(per_block):
            x, y, idx = _timed_next(it, clock)
            step(x, y, idx, record)
            images[record] += len(y)
        _sync(device)
        seconds[record] += time.perf_counter() - t0
        wait[record] += clock["wait"]
    return seconds, wait, images


def bench_train(
    cfg: "BenchTrainConfig", progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Images/s of the scoring step with and without the recording (see the module docstring)."""
    import torch

    from .train import Dist, run_device

    cfg.validate()
    dist = Dist.from_env()
    device = run_device(cfg, dist)  # as `easyhard score` picks it: the local GPU under torchrun
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with dist.joined(device):
        return _measure_train(cfg, dist, device, progress or (lambda s: None))


def _measure_train(cfg: "BenchTrainConfig", dist, device, say: Callable[[str], None]) -> dict:
    """bench_train's measurement, in the job's process group."""
    import torch

    from .config import ScoreConfig
    from .stats import SampleStats
    from .train import Training

    torch.manual_seed(0)
    train = cfg.load_dataset("train")
    loader = _bench_loader(cfg, train, device, dist)
    size = train.input_size(cfg.crop)
    # the training step of `easyhard score` with its default recipe (optimizer, schedule, loss)
    recipe = ScoreConfig(
        dataset=cfg.dataset,
        archs=(cfg.arch,),
        amp=cfg.amp,
        compile=cfg.compile,
        crop=cfg.crop,
        device=cfg.device,
        batch_size=cfg.batch_size,
    )
    training = Training.build(
        recipe,
        cfg.arch,
        train,
        device,
        dist,
        steps_per_epoch=len(loader),
        channels_last=cfg.channels_last,
    )
    dtype = training.dtype
    stats = SampleStats(len(train), train.num_classes, device, labels=train.labels)

    def step(x, y, idx, record: bool) -> None:
        logits, _ = training.step(x, y)
        if record:
            stats.update(logits, y, idx)

    it, clock = _batches(loader), {"wait": 0.0}
    say(f"warm-up: {cfg.warmup} step(s){' (the first compiles)' if cfg.compile else ''}")
    _sync(device)
    t0 = time.perf_counter()
    x, y, idx = _timed_next(it, clock)
    step(x, y, idx, True)
    _sync(device)
    first_step = time.perf_counter() - t0
    for i in range(1, cfg.warmup):
        step(*_timed_next(it, clock), record=i % 2 == 0)
    blocks, per_block = cfg.blocks, max(1, cfg.steps // cfg.blocks)
    seconds, wait, images = _timed_blocks(step, it, clock, blocks, per_block, device, say)
    stats.end_epoch()  # raises if the CUDA kernels recorded bad labels or indices
    rates = {"recording": images[True] / seconds[True], "plain": images[False] / seconds[False]}
    if dist.enabled:  # images/s summed over ranks
        t = torch.tensor([rates["recording"], rates["plain"]], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        rates = {"recording": float(t[0]), "plain": float(t[1])}
    total = seconds[True] + seconds[False]
    return {
        "command": "train",
        "env": environment(str(device)),
        "config": {
            "arch": cfg.arch,
            "dataset": cfg.dataset,
            **batch_used(cfg.batch_size, math.ceil(len(train) / dist.world_size)),
            "amp": str(dtype).replace("torch.", "") if dtype else "fp32",
            "channels_last": cfg.channels_last,
            "compile": cfg.compile,
            "steps": per_block * blocks,
            "blocks": blocks,
            "warmup": cfg.warmup,
            "world_size": dist.world_size,
            "image_size": size,
            "loader": type(loader).__name__,
        },
        "images_per_s": rates,
        "overhead_percent": 100 * (rates["plain"] / rates["recording"] - 1),
        "data_wait_percent": 100 * (wait[True] + wait[False]) / total,
        "compute_percent": 100 * (1 - (wait[True] + wait[False]) / total),
        "first_step_seconds": first_step,
        "steady_step_seconds": total / (2 * blocks * per_block),
        **_peak_memory_mb(device),
    }


def loader_choices(dataset, device) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(name, backend, device, options) of every loader that can read `dataset` on this machine;
    for DALI on the CPU also the full decode (decoding whole images, then cropping) beside the
    default region-of-interest decoding, which shows what the latter gains."""
    from .loaders import dali_available

    if dataset.in_memory:
        where = "GPU-resident" if device.type == "cuda" else "CPU"
        return [(f"tensors ({where})", "auto", device, {})]
    out = []
    if dali_available():
        if device.type == "cuda":
            out.append(("DALI mixed (GPU decoding)", "dali", device, {}))
        out.append(("DALI CPU", "dali", "cpu", {}))
        out.append(("DALI CPU, full decode", "dali", "cpu", {"roi_decode": False}))
    out.append(("torch + PIL", "torch", "cpu", {}))
    return out


def bench_loader(
    cfg: "BenchLoaderConfig", progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Images/s of each available loader on the dataset, same threads and batch size."""
    import torch

    from .loaders import make_loader
    from .train import Dist, resolve_device

    say = progress or (lambda s: None)
    cfg.validate()
    if Dist.from_env().enabled:  # each rank would time its own loaders: numbers summed nowhere
        raise ValueError(
            "bench loader measures the loaders of one process: start it without torchrun"
        )
    device = resolve_device(cfg.device)
    train = cfg.load_dataset("train")
    rates: dict[str, float] = {}
    first: dict[str, float] = {}
    skipped: set[int] = set()  # unreadable files a loader dropped (skip_corrupt)
    for name, backend, where, options in loader_choices(train, device):
        kwargs = (
            {}
            if train.in_memory
            else {
                "crop": cfg.crop,
                "workers": cfg.workers,
                "skip_corrupt": cfg.skip_corrupt,
                **options,
            }
        )
        say(f"{name}: {cfg.warmup} warm-up and {cfg.steps} timed batches")
        t0 = time.perf_counter()
        loader = make_loader(
            train, cfg.batch_size, where, train=True, seed=0, backend=backend, **kwargs
        )
        it = _batches(loader)
        next(it)
        first[name] = time.perf_counter() - t0
        for _ in range(cfg.warmup - 1):
            next(it)
        dev = torch.device(where)
        _sync(dev)
        t0, n = time.perf_counter(), 0
        for _ in range(cfg.steps):
            x, y, idx = next(it)
            n += len(y)
        _sync(dev)
        rates[name] = n / (time.perf_counter() - t0)
        skipped.update(loader.skipped)
        del it, loader
    return {
        "command": "loader",
        "env": environment(str(device)),
        "config": {
            "dataset": cfg.dataset,
            **batch_used(cfg.batch_size, len(train) - len(skipped)),
            "workers": cfg.workers,
            "crop": cfg.crop,
            "steps": cfg.steps,
            "warmup": cfg.warmup,
            "examples": len(train),
            "skipped": len(skipped),
        },
        "images_per_s": rates,
        "first_batch_seconds": first,
    }


def format_table(result: dict[str, Any]) -> str:
    """The terminal table of a bench result."""
    env, c = result["env"], result["config"]
    gpus = ", ".join(env["gpus"]) or (
        f"CPU ({env.get('cpu_model', env['cpu'])}, {env['cpu_count']} logical cores, "
        f"{env['torch_threads']} threads)"
    )
    if "batch_size_asked" in c:  # the data is smaller than the batch asked for
        c = {**c, "batch_size": f"{c['batch_size']} (all the data; {c['batch_size_asked']} asked)"}
    lines = [
        f"easyhard bench {result['command']}: {gpus}; torch {env['torch']}, "
        f"easyhard {env['easyhard']}" + (f", DALI {env['dali']}" if env["dali"] else "")
    ]
    if result["command"] == "train":
        lines.append(
            f"{c['arch']} on {c['dataset']} ({c['image_size']} px, {c['loader']}), batch "
            f"{c['batch_size']}, {c['amp']}, channels-last {c['channels_last']}, compile "
            f"{c['compile']}, {c['steps']} timed steps per setting in {c['blocks']} "
            f"alternating blocks, world size {c['world_size']}"
        )
        lines += [
            f"  images/s with recording  {result['images_per_s']['recording']:12.1f}",
            f"  images/s without         {result['images_per_s']['plain']:12.1f}",
            f"  recording overhead       {result['overhead_percent']:+11.2f}%",
            f"  waiting for data         {result['data_wait_percent']:11.1f}%",
            f"  first step{' (compile)' if c['compile'] else '          '}     "
            f"{result['first_step_seconds']:11.2f} s",
            f"  steady step              {result['steady_step_seconds']:11.4f} s",
        ]
        if "peak_device_mb" in result:
            lines.append(f"  peak device memory       {result['peak_device_mb']:11.1f} MB")
        lines.append(f"  peak host memory (RSS)   {result['peak_host_rss_mb']:11.1f} MB")
    else:
        unread = f"; {c['skipped']} unreadable, skipped" if c.get("skipped") else ""
        lines.append(
            f"{c['dataset']} ({c['examples']} examples{unread}), batch {c['batch_size']}, "
            f"{c['workers']} threads/workers, {c['steps']} timed batches"
        )
        width = max(len(k) for k in result["images_per_s"])
        for name, rate in result["images_per_s"].items():
            lines.append(
                f"  {name:<{width}}  {rate:12.1f} images/s  (first batch "
                f"{result['first_batch_seconds'][name]:.2f} s)"
            )
    return "\n".join(lines)

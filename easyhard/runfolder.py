"""A run's folder and a job's output folder: what a run is (its identity, checked before a
resume), the files a run writes and the markers that make them easyhard's own (config.json,
score-config.toml), and the deletion of only those files (``--force``).

    OUT/score-config.toml            the job's resolved configuration (write_job_config)
    OUT/<arch>-run<k>/config.json    what the run is, finished or not (its identity)
    OUT/<arch>-run<k>/...            RUN_FILES: statistics files, metrics, checkpoint, history
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from . import __version__
from .config import DataConfig, ScoreConfig, settings
from .io import atomic_write, read_json_object, remove_owned, remove_stale_temps

if TYPE_CHECKING:
    from .datasets import Dataset
    from .scores import ScoreTable


def config_dict(cfg: ScoreConfig) -> dict[str, Any]:
    """A configuration as a JSON-ready dict (what config.json, checkpoints and identities hold)."""
    d = settings(cfg)
    d["archs"] = list(d["archs"])
    return d


RUN_FORMAT = "easyhard.run"
#: Fields that say which runs a job holds or how they are read, not what one run is: a finished
#: or killed run can be resumed under a job that differs in them.
JOB_ONLY_FIELDS = ("archs", "runs", "window", "workers")
#: The files of a run folder (every module names them through these), all written by train_run.
STATS_FILE, CLEAN_STATS_FILE = "scores.npz", "scores_clean.npz"  # training view, clean view
HISTORY_FILE, CLEAN_HISTORY_FILE = "history.bin", "history_clean.bin"
METRICS, RUN_CONFIG, CHECKPOINT = "metrics.jsonl", "config.json", "checkpoint.pt"
#: What a run folder holds: --force deletes these and nothing else.
RUN_FILES = (
    STATS_FILE,
    CLEAN_STATS_FILE,
    METRICS,
    RUN_CONFIG,
    CHECKPOINT,
    HISTORY_FILE,
    CLEAN_HISTORY_FILE,
)
MERGED_FILE = "merged.npz"  # a job's merged scores file, beside its run folders


def run_seeds(cfg: ScoreConfig, run: int) -> dict[str, int]:
    """The effective seeds of run `run`: init_seed and data_seed default to the run's seed."""
    seed = cfg.seed + run
    return {
        "init_seed": seed if cfg.init_seed is None else cfg.init_seed,
        "data_seed": seed if cfg.data_seed is None else cfg.data_seed,
    }


def run_identity(
    cfg: ScoreConfig,
    arch: str,
    run: int,
    fingerprint: str,
    *,
    subset: np.ndarray | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Everything that makes one run what it is: resume refuses a run whose identity differs.
    A run on a subset adds the subset's size and digest (`subset_digest`), a run with a step
    budget its `max_steps`."""
    from .statsfile import FORMAT_VERSION

    config = {k: v for k, v in config_dict(cfg).items() if k not in JOB_ONLY_FIELDS}
    identity = {
        "arch": arch,
        "run": run,
        "seed": cfg.seed + run,
        **run_seeds(cfg, run),
        "dataset_fingerprint": fingerprint,
        "score_format_version": FORMAT_VERSION,
        "config": config,
    }
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
        raise ValueError(
            f"`subset` must be a 1-D array of dataset indices, got {arr.dtype} of shape {arr.shape}"
        )
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


#: Settings that say where the data lies, not what it is (the identity's dataset fingerprint
#: says that): a run resumes with the same data given by another path.
LOCATION_FIELDS = ("data_dir", "file_list")


def identity_differences(
    old: dict[str, Any], new: dict[str, Any], ignore: Sequence[str] = ()
) -> list[str]:
    """Human-readable 'field: old -> new' lines for two run identities (configuration fields
    named in `ignore` left out)."""

    def flat(d: dict[str, Any]) -> dict[str, Any]:
        return {
            **{k: v for k, v in d.items() if k != "config"},
            **{f"config.{k}": v for k, v in d.get("config", {}).items()},
        }

    a, b = flat(old), flat(new)
    skip = {f"config.{k}" for k in ignore}
    lines = [
        f"{k.removeprefix('config.')}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k) and k not in skip
    ]
    return list(dict.fromkeys(lines))  # `seed` is both the run's and the configuration's


def identity_changes(found: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """`identity_differences` of a recorded identity and this one, where the data's location
    (LOCATION_FIELDS) counts only when the dataset fingerprints differ: the same data given by
    another path (moved, copied to a node's local disk, spelled relatively) is the same job."""
    same_data = found.get("dataset_fingerprint") == identity.get("dataset_fingerprint")
    return identity_differences(found, identity, LOCATION_FIELDS if same_data else ())


def without_location(identity: dict[str, Any]) -> dict[str, Any]:
    """`identity` with LOCATION_FIELDS left out of its configuration: what names a training by
    its data's content (the fingerprint), not by where the data lay."""
    config = {k: v for k, v in identity.get("config", {}).items() if k not in LOCATION_FIELDS}
    return {**identity, "config": config}


def check_same_run(found: dict[str, Any] | None, identity: dict[str, Any], where: str) -> None:
    """Refuse to resume from `where` unless it recorded `identity`: the same run of the same data,
    wherever that data lies now (identity_changes)."""
    if not isinstance(found, dict):
        raise ValueError(
            f"{where} was written by an easyhard that did not record the run's "
            "identity, so resuming cannot be checked: use a new output folder"
        )
    diff = identity_changes(found, identity)
    if diff:
        raise ValueError(
            f"{where} belongs to another configuration ({'; '.join(diff[:6])}"
            f"{'; ...' if len(diff) > 6 else ''}): resume it with the same settings, "
            "or use a new output folder"
        )


def write_run_config(
    run_dir: str, identity: dict[str, Any], device, dist, *, finished: bool
) -> None:
    import torch

    record = {
        "format": RUN_FORMAT,
        "finished": finished,
        "arch": identity["arch"],
        "run": identity["run"],
        "seed": identity["seed"],
        "easyhard_version": __version__,
        "torch_version": torch.__version__,
        "device": str(device),
        "world_size": dist.world_size,
        "dataset_fingerprint": identity["dataset_fingerprint"],
        "identity": identity,
        **identity["config"],
    }
    with atomic_write(os.path.join(run_dir, RUN_CONFIG), "w") as f:
        json.dump(record, f, indent=1)


def read_run_record(path: str) -> dict:
    """A run folder's config.json as a dict ({} when it is missing, unreadable or not an
    object): input like any other, checked by whoever reads a key of it."""
    return read_json_object(os.path.join(path, RUN_CONFIG)) or {}


def is_run_folder(path: str) -> bool:
    """Whether `path` is a run folder written by easyhard (its config.json says so)."""
    return read_run_record(path).get("format") == RUN_FORMAT


def run_folder_name(arch: str, run: int) -> str:
    """The folder of run `run` of `arch` inside a job's output folder."""
    return f"{arch}-run{run}"


def job_runs(cfg: ScoreConfig) -> list[tuple[str, int]]:
    """The (architecture, run) pairs a job trains, in order."""
    return [(arch, run) for arch in cfg.archs for run in range(cfg.runs)]


def check_job_output(cfg: ScoreConfig, out_dir: str) -> None:
    """Before a job writes anything: no run folder it will write into holds a file of a run's
    names (RUN_FILES) that easyhard did not write (the folder's config.json says whose it is),
    and merged.npz is absent or an easyhard merged scores file. Those are refused, never
    written over; a user's other files in a run folder stay beside the run's."""
    from .statsfile import check_merged_output

    for arch, run in job_runs(cfg):
        path = os.path.join(out_dir, run_folder_name(arch, run))
        if not os.path.lexists(path):
            continue
        if not os.path.isdir(path) or os.path.islink(path):
            raise ValueError(
                f"{path} exists and is not a run folder easyhard wrote; move it "
                "away or choose another output folder"
            )
        mine = [f for f in RUN_FILES if os.path.lexists(os.path.join(path, f))]
        if mine and not is_run_folder(path):  # the run would write over these
            raise ValueError(
                f"{path} holds {mine[0]}, which easyhard did not write (the folder has no "
                "config.json of a run): move it away or choose another output folder"
            )
    check_merged_output(os.path.join(out_dir, MERGED_FILE))


ANY_WINDOW = object()


def _epochs_phrase(window) -> str:
    return "every epoch" if window is None else f"the first {window} epoch(s)"


def run_files(
    inputs, view: str = "train", *, also: str = "", window: Any = ANY_WINDOW
) -> list[str]:
    """The statistics files of INPUTs, each once: a statistics file stays; a run folder gives its
    file of `view` (scores.npz, or scores_clean.npz for "clean"); an `easyhard score` output
    folder gives every run in it (sorted); a merged scores file, the runs it was merged from
    (merged_runs). Refuses a run given twice, by path or as a copy (it would count twice), and
    anything that is none of these, naming it (a folder of no run: `also` added to the message)."""
    from .io import first_repeat
    from .statsfile import MERGED_FORMAT, read_metadata_block

    name = STATS_FILE if view == "train" else CLEAN_STATS_FILE

    def runs_in(folder: str, item: str) -> list[str]:
        found = sorted(
            os.path.join(folder, d, name)
            for d in os.listdir(folder)
            if os.path.isfile(os.path.join(folder, d, name))
        )
        if not found:
            raise ValueError(
                f"{item} holds no run with a {name} (give statistics files, run folders or an "
                f"`easyhard score` output folder){also}"
            )
        return found

    files: list[str] = []
    given: list[str] = []  # what the user gave, for each file
    for item in map(str, inputs):
        before = len(files)
        if os.path.isfile(item):
            meta = read_metadata_block(item) or {}
            if meta.get("format") == MERGED_FORMAT:  # stands for the runs it was merged from
                if window is not ANY_WINDOW and meta.get("window") != window:
                    raise ValueError(
                        f"{item} was merged over {_epochs_phrase(meta.get('window'))}; its runs "
                        f"would be read over {_epochs_phrase(window)}: give `window` "
                        f"{meta.get('window') or 'all'}, or the runs themselves"
                    )
                files.extend(merged_runs(item, meta, name))
            else:
                files.append(item)
        elif os.path.isdir(item) and os.path.isfile(os.path.join(item, name)):
            files.append(os.path.join(item, name))
        elif os.path.isdir(item):
            files.extend(runs_in(item, item))
        else:
            raise ValueError(f"{item} does not exist")
        given += [item] * (len(files) - before)
    repeat = first_repeat(files)
    if repeat:
        i, j, copy = repeat
        p, q = files[i], files[j]
        how = " (a copy: the same bytes)" if copy else ""
        where = f"{p}, in {given[i]}" if given[i] != p else p
        also = f"{q}, in {given[j]}" if given[j] != q else q
        raise ValueError(f"{where} is given twice{how}, as {also}: each run counts once")
    return files


def merged_runs(path: str, meta: dict[str, Any], name: str = STATS_FILE) -> list[str]:
    """The runs a merged scores file was merged from (its metadata lists their files), as files
    of `name`: where it recorded them, or beside it as `easyhard score` lays them out."""
    runs = meta.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"{path} is a merged scores file that does not list its runs")
    found = []
    for run in runs:
        recorded = str(run.get("file", "")) if isinstance(run, dict) else ""
        folder = os.path.basename(os.path.dirname(recorded))
        candidates = [
            os.path.join(os.path.dirname(recorded), name),
            os.path.join(os.path.dirname(os.path.abspath(path)), folder, name),
        ]
        hit = next((c for c in candidates if folder and os.path.isfile(c)), None)
        if hit is None:
            raise ValueError(
                f"{path} was merged from {recorded or 'a run it does not name'}, which is no "
                f"longer there (nor a {folder or 'run'}/{name} beside it): give the runs "
                "themselves"
            )
        found.append(hit)
    return found


def check_resumable(cfg: ScoreConfig, out_dir: str, fingerprint: str, world_size: int = 1) -> None:
    """Before a resumed job trains anything: each of its run folders already in out_dir must be
    that very run (`check_same_run`), whether finished (its statistics file's metadata), killed
    after an epoch, or killed before its first epoch ended (its config.json, written when the run
    started and matching its checkpoint's); an unfinished one must go on with the number of
    processes (`world_size`) it started with. Else ValueError naming what differs."""
    from .statsfile import check_stats_metadata, read_metadata_block

    for arch, run in job_runs(cfg):
        path = os.path.join(out_dir, run_folder_name(arch, run))
        identity = run_identity(cfg, arch, run, fingerprint)
        done = os.path.join(path, STATS_FILE)
        if os.path.exists(done):
            meta = check_stats_metadata(read_metadata_block(done), done)
            check_same_run(meta.get("identity"), identity, done)
        elif is_run_folder(path):
            where = os.path.join(path, RUN_CONFIG)
            with open(where, encoding="utf-8") as f:
                found = json.load(f)
            check_same_run(found.get("identity"), identity, where)
            _check_same_processes(found.get("world_size"), world_size, cfg.batch_size, path)


def _check_same_processes(before, now: int, batch_size: int, path: str) -> None:
    """Refuse to continue a run on another number of processes: the batch size is per process,
    so the steps per epoch, the global batch and the learning-rate schedule (fitted to the run's
    steps when it started) would all change mid-run, silently (found by a careless-user helper:
    2 -> 1 processes ended at lr 0.08 instead of 0). Folders that did not record it pass."""
    if not isinstance(before, int) or before == now:
        return
    raise ValueError(
        f"{path} was trained by {before} process(es) (a global batch of {before * batch_size}) "
        f"and this resume runs {now}: the batch size is per process, so its steps per epoch and "
        f"learning-rate schedule would change mid-run; resume it with {before} process(es), or "
        "start a new output folder"
    )


def check_resume_target(out_dir: str) -> None:
    """`resume` continues an easyhard scoring job: refuse a folder that holds files but no job
    (its config.json or a run folder), instead of writing runs in among someone's files (a
    non-empty folder is refused without `resume` too). An absent or empty folder starts afresh."""
    if not os.path.isdir(out_dir):
        return
    names = [n for n in os.listdir(out_dir) if not n.startswith(".")]
    if not names or JOB_CONFIG in names:
        return
    if any(is_run_folder(os.path.join(out_dir, n)) for n in names):
        return
    raise ValueError(
        f"{out_dir} holds files but no easyhard scoring job ({JOB_CONFIG} or a run folder) to "
        "resume: choose an empty or a new output folder"
    )


def other_runs(out_dir: str, runs: list[tuple[str, int]]) -> list[str]:
    """The easyhard run folders in out_dir that are not among `runs` (a job's job_runs): what
    `--force` leaves in place, and what an analysis of the whole folder would still read."""
    if not os.path.isdir(out_dir):
        return []
    own = {run_folder_name(arch, run) for arch, run in runs}
    return sorted(
        name
        for name in os.listdir(out_dir)
        if name not in own and is_run_folder(os.path.join(out_dir, name))
    )


def clear_previous(out_dir: str, runs: list[tuple[str, int]]) -> list[str]:
    """Delete what an earlier `score` of this job wrote in out_dir, recognised by its own markers:
    the folders of `runs` ((arch, run) pairs: the ones this job writes, job_runs) whose
    config.json says easyhard wrote them (only the files a run writes, and the stale temporary
    files of their atomic writes; a folder left with anything else in it stays), and merged.npz
    when it is an easyhard merged file. Everything else stays, other easyhard run folders too (a
    renamed copy the job never writes). Returns what was deleted."""
    from .statsfile import MERGED_FORMAT, read_metadata_block

    removed = []
    if not os.path.isdir(out_dir):
        return removed
    for arch, run in runs:
        path = os.path.join(out_dir, run_folder_name(arch, run))
        if os.path.isdir(path) and not os.path.islink(path) and is_run_folder(path):
            remove_stale_temps(path, RUN_FILES)  # what a killed atomic write of them left
            # the marker goes last: a deletion killed part-way leaves a folder still marked as
            # easyhard's, which the next --force recognises and finishes
            remove_owned(path, [f for f in RUN_FILES if f != RUN_CONFIG])
            remove_owned(path, [RUN_CONFIG], remove_folder=True)  # stays if not empty
            removed.append(path)
    merged = os.path.join(out_dir, MERGED_FILE)
    if os.path.isfile(merged) and not os.path.islink(merged):
        if (read_metadata_block(merged) or {}).get("format") == MERGED_FORMAT:
            remove_owned(out_dir, [MERGED_FILE])
            removed.append(merged)
    return removed


def write_metrics(run_dir: str, metrics: list[dict]) -> None:
    """A run's metrics.jsonl: one JSON object per finished epoch."""
    with atomic_write(os.path.join(run_dir, METRICS), "w") as f:
        f.writelines(json.dumps(m) + "\n" for m in metrics)


def run_cost(metrics: list[dict]) -> dict[str, Any]:
    """What a run's training cost, from its metrics.jsonl rows: images processed (forward and
    backward, every process) and seconds of training steps, summed over its epochs."""
    return {
        "images": int(sum(int(m.get("images") or 0) for m in metrics)),
        "seconds": float(sum(float(m.get("seconds") or 0.0) for m in metrics)),
    }


def read_metrics(run_dir: str, *, missing_ok: bool = False) -> list[dict]:
    """The per-epoch rows of a run's metrics.jsonl ([] when it is absent and `missing_ok`);
    a line that is not a JSON object is refused, naming the file and line."""
    path = os.path.join(run_dir, METRICS)
    if missing_ok and not os.path.isfile(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {e.start}): not a run's metrics file"
        ) from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno} is not a JSON object: not a run's metrics file")
        rows.append(row)
    return rows


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
    text = to_toml(
        cfg,
        f"{_JOB_HEADER} {__version__}: the resolved configuration of this job.\n"
        f"Repeat or continue it: easyhard score --config <a copy> --out "
        f"<folder> [--resume]",
    )
    if os.path.lexists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            old = f.read()
        if not old.startswith(f"# {_JOB_HEADER}"):
            raise ValueError(
                f"{path} exists and easyhard did not write it; move it away or "
                "choose another output folder"
            )
        if old == text:
            return
    with atomic_write(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------- score inputs
def _run_metadata(score_file: str, meta: dict) -> dict:
    """A statistics file's metadata as is; for a merged file, that of the first run it was
    merged from (merged_runs), when that is still there."""
    from .statsfile import read_metadata_block

    if "config" in meta or "runs" not in meta:
        return meta
    try:
        return read_metadata_block(merged_runs(score_file, meta)[0]) or meta
    except ValueError:  # the runs moved: say what is known
        return meta


def check_same_data(score_file: str, table: ScoreTable, cfg: DataConfig, dataset: Dataset) -> None:
    """Refuse scores of other data than `dataset`, saying what the scores were made on (from a
    statistics file's metadata) so that the user can give those dataset options."""
    if table.fingerprint == dataset.fingerprint:
        return
    meta = _run_metadata(score_file, table.metadata or {})
    run_cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    name = meta.get("dataset") or run_cfg.get("dataset")
    made_on, keys = "", []
    if name:
        keys = [k for k, kinds in DataConfig.DATASET_ONLY.items() if name in kinds]
        opts = ", ".join(f"{k}={run_cfg[k]!r}" for k in keys if run_cfg.get(k) is not None)
        made_on = f" ({name}{': ' + opts if opts else ''})"
    said = (
        f"{score_file} was scored on dataset fingerprint {table.fingerprint!r}{made_on}, but "
        f"{cfg.dataset} ({dataset.root or 'generated'}) has fingerprint {dataset.fingerprint!r}"
    )
    same_options = name == cfg.dataset and all(
        _same_option(run_cfg.get(k), getattr(cfg, k, None)) for k in keys
    )
    if same_options:  # the options are the scores': the data itself changed since
        counts = (
            f" ({len(table.labels)} examples scored, {len(dataset)} now)"
            if len(table.labels) != len(dataset)
            else " (as many examples, some of them other files or labels)"
        )
        raise ValueError(
            f"{said}: the data changed since scoring{counts}; score it again, or restore it"
        )
    raise ValueError(
        f"{said}: the scores belong to other data; give the dataset options the scores were "
        "made with"
    )


def _same_option(recorded, given) -> bool:
    """A dataset option recorded with the scores against the one given now (paths compared as
    absolute paths: the scores record what their run was given)."""
    if isinstance(recorded, str) and isinstance(given, str):
        return os.path.abspath(recorded) == os.path.abspath(given) or recorded == given
    return recorded == given

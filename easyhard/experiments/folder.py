"""An experiment's folder: what it holds (experiment.json, each kind's files, cells/<id>/), the
locks that let several workers share it, and what `force` may replace (only what an experiment
wrote, by name and manifest; io.remove_owned is the only deletion). Several kinds of experiment
share one folder and its cells."""

from __future__ import annotations

import contextlib
import json
import os
import re

from ..io import (
    OutputExistsError,
    check_replaceable,
    existing_folder,
    is_own_temp,
    remove_owned,
    remove_stale_temps,
    seal_output,
)
from ..runfolder import CHECKPOINT, HISTORY_FILE, METRICS, RUN_CONFIG

FORMAT, MANIFEST = "easyhard.experiment", "experiment.json"
CELLS, CELL_RESULT = "cells", "result.json"
#: The experiments one folder can hold; they share its cells (dropping the easiest 30% is keeping
#: the hardest 70%: one training).
KINDS = ("removal", "compression")
#: What each experiment writes at the top of its folder (besides the shared manifest): its
#: resolved configuration, results, summary and figures.
KIND_FILES = {
    "removal": ("removal-config.toml", "results.jsonl", "summary.md", "removal.png"),
    "compression": (
        "compression-config.toml",
        "compression-results.jsonl",
        "compression-summary.md",
        "compression.png",
        "compression-cost.png",
    ),
}
#: Everything an experiment writes at the top of its folder, and in a cell folder.
TOP_FILES = (MANIFEST,) + tuple(f for k in KINDS for f in KIND_FILES[k])
CELL_FILES = (RUN_CONFIG, METRICS, CHECKPOINT, HISTORY_FILE, CELL_RESULT)  # a cell is a run folder


def read_manifest(out: str) -> dict | None:
    try:
        with open(os.path.join(out, MANIFEST), encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


_LOCK = re.compile(r"^[0-9a-f]{16}\.lock$")  # cells/<id>.lock: held while a worker trains <id>


def cell_folders(out: str) -> list[str]:
    """The entries of OUT/cells but the cells' lock files."""
    cells = os.path.join(out, CELLS)
    if not os.path.isdir(cells) or os.path.islink(cells):
        return []
    return sorted(
        os.path.join(cells, n)
        for n in os.listdir(cells)
        if not (
            _LOCK.match(n)
            and os.path.isfile(os.path.join(cells, n))
            and not os.path.islink(os.path.join(cells, n))
        )
    )


def _lock_files(out: str) -> list[str]:
    cells = os.path.join(out, CELLS)
    if not os.path.isdir(cells) or os.path.islink(cells):
        return []
    return [
        os.path.join(cells, n)
        for n in os.listdir(cells)
        if _LOCK.match(n)
        and os.path.isfile(os.path.join(cells, n))
        and not os.path.islink(os.path.join(cells, n))
    ]


@contextlib.contextmanager
def cell_lock(out: str, cid: str, wait: bool):
    """Hold OUT/cells/<cid>.lock (an advisory lock, released when the process dies): yields True
    when held, False when another worker holds it and `wait` is False. Lets several workers (the
    same command started more than once, or a removal and a compression experiment) share one
    folder: each trains the cells nobody else is training."""
    import fcntl

    fd = os.open(os.path.join(out, CELLS, f"{cid}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _only_own_files(out: str) -> str | None:
    """None when everything in `out` is what an experiment writes (TOP_FILES, cell folders of
    CELL_FILES, and the temporary files of a killed atomic write); else the first other path."""
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name)
        if name == CELLS and os.path.isdir(path) and not os.path.islink(path):
            continue
        if not (name in TOP_FILES or is_own_temp(name, TOP_FILES)) or not os.path.isfile(path):
            return path
    from ..runfolder import is_run_folder

    for cell in cell_folders(out):
        if os.path.isdir(cell) and not os.path.islink(cell) and not os.listdir(cell):
            continue  # emptied by a deletion killed before it removed the folder
        if os.path.islink(cell) or not os.path.isdir(cell) or not is_run_folder(cell):
            return cell
        for name in sorted(os.listdir(cell)):
            path = os.path.join(cell, name)
            if (
                not (name in CELL_FILES or is_own_temp(name, CELL_FILES))
                or not os.path.isfile(path)
                or os.path.islink(path)
            ):
                return path
    return None


def _remove_experiment(out: str) -> None:
    """Delete what an experiment wrote in `out` (checked by _only_own_files first): the files of
    its own names, by the rules that recognise them, and the folders they leave empty. The
    markers go last (each cell's config.json after its other files, experiment.json after
    everything), so that a deletion killed part-way leaves a folder the next --force still
    recognises as an experiment's and finishes."""
    from ..runfolder import RUN_CONFIG

    files, markers = [os.path.relpath(lock, out) for lock in _lock_files(out)], []
    for cell in cell_folders(out):
        for name in os.listdir(cell):
            (markers if name == RUN_CONFIG else files).append(
                f"{CELLS}/{os.path.basename(cell)}/{name}"
            )
    top = [n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))]
    files += [n for n in top if n != MANIFEST]
    remove_owned(out, files)
    remove_owned(out, markers)
    for cell in cell_folders(out):  # those a killed deletion emptied earlier
        remove_owned(cell, [], remove_folder=True)
    remove_owned(out, [n for n in top if n == MANIFEST])


def remove_stale_temps_of(out: str) -> None:
    """Temporary files that a killed atomic write left (never complete files); recent ones may
    be another worker's write in progress and stay."""
    for folder, owners in [(out, TOP_FILES)] + [(c, CELL_FILES) for c in cell_folders(out)]:
        remove_stale_temps(folder, owners)


def experiments_of(record: dict | None) -> dict[str, dict]:
    """The experiments an experiment.json records, by kind (format 1 held one, at the top)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return {}
    exps = record.get("experiments")
    if isinstance(exps, dict):
        return {k: v for k, v in exps.items() if k in KINDS and isinstance(v, dict)}
    kind = record.get("experiment")
    if kind not in KINDS:
        return {}
    return {
        kind: {
            k: v
            for k, v in record.items()
            if k not in ("format", "format_version", "entries", "file_count")
        }
    }


def write_manifest(out: str, kind: str, entry: dict) -> None:
    """experiment.json with `entry` as the record of the `kind` experiment, the records of the
    other experiments in the folder kept (they share its cells)."""
    exps = experiments_of(read_manifest(out))
    exps[kind] = entry
    seal_output(
        out,
        MANIFEST,
        {
            "format": FORMAT,
            "format_version": 2,
            "experiments": {k: exps[k] for k in KINDS if k in exps},
        },
    )


def prepare_output(
    out: str,
    identity: dict,
    force: bool,
    kind: str = "removal",
    sources: dict[str, str] | None = None,
    grows: str = "a larger grid",
) -> str:
    """May the `kind` experiment go to `out`? "new" (absent or empty), "continued" (an earlier
    `kind` experiment of the same identity: the same recipe, dataset and scores), "joined" (the
    folder holds the other kind of experiment: cells are shared) or "replaced" (an earlier
    easyhard experiment, deleted, with `force`; when the folder also holds the other kind, only
    this kind's files go, the cells stay). `sources`: label -> sha256 of the scores inputs; a
    continued experiment may add labels, never change the content of one. `grows`: what adds
    cells, for the message. Refuses anything else, before any change."""
    from ..runfolder import identity_changes

    names = existing_folder(out)
    if names is None:
        return "new"
    if all(is_own_temp(n, TOP_FILES) for n in names):  # empty, or killed before its manifest
        # a recent temporary file is another worker writing its first manifest: it stays
        remove_stale_temps(out, TOP_FILES)
        return "new"
    record = read_manifest(out)
    exps = experiments_of(record)
    if force:
        if any(k != kind for k in exps):  # keep the other experiment and the shared cells
            other = _only_own_files(out)
            if other:
                raise OutputExistsError(
                    f"{out} holds {other}, which easyhard did not write; "
                    "`force=True` does not delete it: move it or choose "
                    "another folder"
                )
            remove_owned(out, list(KIND_FILES[kind]))
            return "replaced"
        try:
            check_replaceable(out, MANIFEST, FORMAT, True)
        except OutputExistsError:
            # A killed experiment holds files written after its manifest (a cell's checkpoint):
            # replace it when everything in it is what an experiment writes, by name.
            if record is None or record.get("format") != FORMAT or _only_own_files(out):
                raise
        other = _only_own_files(out)
        if other:
            raise OutputExistsError(
                f"{out} holds {other}, which easyhard did not write; "
                "`force=True` does not delete it: move it or choose another "
                "folder"
            )
        _remove_experiment(out)
        return "replaced"
    if record is None or record.get("format") != FORMAT or not exps:
        raise OutputExistsError(
            f"{out} is not empty and holds no easyhard experiment "
            f"({MANIFEST}): choose another `out`"
        )
    if kind not in exps:
        return "joined"
    diff = identity_changes(exps[kind].get("identity") or {}, identity)
    before = exps[kind].get("sources") or {}
    diff += [
        f"the scores input labelled {label!r} has other content (sha256 "
        f"{before[label][:12]}... there, {sha[:12]}... now)"
        for label, sha in (sources or {}).items()
        if label in before and before[label] != sha
    ]
    if diff:
        raise ValueError(
            f"{out} holds a {kind} experiment with other settings "
            f"({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}): repeat its "
            f"settings to continue it ({grows} add cells), or use a new `out`, or "
            "`force=True` to replace it"
        )
    return "continued"


def check_test_split(out: str, kind: str, fingerprint: str, force: bool) -> None:
    """Refuse to add to `out` cells measured on another test split than `fingerprint`: the
    scores' fingerprint covers the training split only, and a continued experiment whose val/
    changed would put accuracies of two test sets into one paired table. `force` replaces an
    experiment whole (cells too) only when no other kind shares its cells. Folders written
    before the test split was recorded are not checked."""
    exps = experiments_of(read_manifest(out) if os.path.isdir(out) else None)
    before = {e.get("test_fingerprint") for e in exps.values()} - {None, fingerprint}
    if not before or (force and set(exps) == {kind}):
        return
    raise ValueError(
        f"{out} holds cells measured on another test split (fingerprint "
        f"{sorted(before)[0]!r}; now {fingerprint!r}): the test split changed since, and their "
        "accuracies and new ones would be compared as one; restore it, or use a new `out`"
        + ("" if set(exps) - {kind} else ", or `force=True` to start again")
    )


# ---------------------------------------------------------------------------- the report's view
def read_record(folder: str) -> dict | None:
    """experiment.json of an experiment folder, or None when `folder` holds none."""
    record = read_manifest(folder)
    return record if (record or {}).get("format") == FORMAT else None


def record_fingerprint(record: dict) -> str | None:
    """The dataset fingerprint the folder's experiments trained on."""
    found = {
        (entry.get("identity") or {}).get("dataset_fingerprint")
        for entry in experiments_of(record).values()
    }
    return next(iter(found - {None}), None)


def report_blocks(folder: str, record: dict) -> list[tuple]:
    """The report's section for one experiment folder, as blocks: per kind of experiment in it,
    its summary (the paragraphs and tables of its own summary file) and its figures."""
    blocks: list[tuple] = []
    for kind, entry in experiments_of(record).items():
        partial = "" if entry.get("finished", True) else " (not finished: partial results)"
        blocks.append(("text", f"{folder}: {kind} experiment{partial}."))
        for name in KIND_FILES[kind]:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            if name.endswith(".md"):
                with open(path, encoding="utf-8") as f:
                    blocks += markdown_blocks(f.read())
            elif name.endswith(".png"):
                blocks.append(("figure", path, f"{os.path.basename(folder)}/{name}"))
    return blocks


def _plain(text: str) -> str:
    """A line of a summary file without its Markdown marks (headings' #, **bold**, `code`): the
    report escapes its text blocks, so the marks showed as typed."""
    return text.strip().lstrip("#").strip().replace("**", "").replace("`", "")


def markdown_blocks(text: str) -> list[tuple]:
    """A summary file written by summary_markdown (paragraphs, headings, pipe tables) as blocks."""
    blocks: list[tuple] = []
    table: list[str] = []

    def flush_table() -> None:
        rows = [
            [_plain(c) for c in line.strip().strip("|").split("|")]
            for line in table
            if not set(line.replace("|", "").strip()) <= set("-: ")
        ]
        if rows:
            blocks.append(("table", rows[0], rows[1:]))
        table.clear()

    for line in text.splitlines():
        if line.strip().startswith("|"):
            table.append(line)
            continue
        if table:
            flush_table()
        if line.strip():
            blocks.append(("text", _plain(line)))
    if table:
        flush_table()
    return blocks

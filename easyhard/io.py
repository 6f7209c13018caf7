"""File conventions shared by every easyhard output: atomic writes and safe loading.

A killed process never leaves a half-written file under the final name: data goes to a temporary
file in the same folder, is flushed to disk, and is renamed over the target in one step.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from typing import IO, Any, Callable, Iterator, Sequence


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than a moment)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync it and rename it to `path`.

    On any exception the temporary file is removed and `path` is left as it was. What a killed
    write of `path` left beside it (a stale temporary file) goes when `path` is written again.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    remove_stale_temps(folder, [os.path.basename(path)])
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files whatever the umask
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_owned(folder, [os.path.basename(tmp)])
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


_TEMP = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+\.tmp$")  # atomic_write's temporary files
STALE_SECONDS = 120  # an atomic write takes well under a second: older temporaries are stale


def is_own_temp(name: str, owners: Sequence[str]) -> bool:
    """Whether file `name` is atomic_write's temporary file for one of the files `owners`."""
    m = _TEMP.match(name)
    return bool(m) and m.group(1) in owners


def remove_stale_temps(folder: str, owners: Sequence[str]) -> list[str]:
    """Delete the temporary files that killed atomic writes of `owners` left in `folder` (never
    complete files); recent ones may be a write in progress and stay. Returns what was deleted."""
    import time

    if not os.path.isdir(folder):
        return []
    now = time.time()
    stale = []
    for name in os.listdir(folder):
        if is_own_temp(name, owners):
            with contextlib.suppress(OSError):
                if now - os.path.getmtime(os.path.join(folder, name)) > STALE_SECONDS:
                    stale.append(name)
    left = remove_owned(folder, stale)
    return [os.path.join(folder, n) for n in stale if os.path.join(folder, n) not in left]


class BackgroundWriter:
    """Runs writes on a thread, one at a time, in the order given, so that the caller goes on
    (a training run's epoch-end checkpoint is written while the next epoch trains).

    ``submit(fn, *args)`` first waits for the previous write; ``wait()`` waits for the last one.
    Both raise the error of a write that failed (once). The thread is not a daemon: a process
    ending on an exception still finishes the write it had started. Hand it copies (snapshots),
    never state the caller goes on changing."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            fn(*args)
        except BaseException as e:  # raised in the caller's thread by wait()
            self._error = e

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(fn, args), name="easyhard-writer")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


# ---------------------------------------------------------------------------- nothing lost
def real(path: str | os.PathLike) -> str:
    """The absolute path with every symbolic link resolved (spelling-independent identity)."""
    return os.path.realpath(os.path.abspath(os.fspath(path)))


def inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether `path` is `folder` or lies under it, however either is spelled."""
    p, f = real(path), real(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def check_disjoint(output: str | os.PathLike, inputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that is, contains or lies inside any input (`inputs`: what -> path).

    Raises ValueError naming both, so that no run can write into, or replace, what it reads."""
    for what, src in inputs.items():
        if src is None:
            continue
        if real(output) == real(src):
            raise ValueError(
                f"the output {output} is the {what} (an input is never an output): write elsewhere"
            )
        if inside(output, src):
            raise ValueError(
                f"the output {output} lies inside the {what} {src} (an input is never "
                "an output): write elsewhere"
            )
        if inside(src, output):
            raise ValueError(
                f"the {what} {src} lies inside the output {output}: writing there "
                "could replace it; choose an output folder that holds no input"
            )


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (resolving links; hard links included)."""
    if real(a) == real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def same_contents(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two files hold the same bytes (sizes first: a full read only when they match)."""
    import filecmp

    try:
        return os.path.getsize(a) == os.path.getsize(b) and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def first_repeat(paths: Sequence[str | os.PathLike]) -> tuple[int, int, bool] | None:
    """The first (i, j < i) such that paths[i] is paths[j], as the same file or as a copy (the
    same bytes); with whether it is a copy. None when every path is a different file."""
    for i, p in enumerate(paths):
        for j, q in enumerate(paths[:i]):
            if same_file(p, q):
                return i, j, False
            if same_contents(p, q):
                return i, j, True
    return None


class OutputExistsError(FileExistsError):
    """An output folder that holds something easyhard may not replace; the message says what."""


def plain_relative(rel: object) -> bool:
    """Whether `rel` is a plain relative path that stays inside the folder it is relative to: a
    non-empty string, not absolute, no "." or ".." component, no NUL, no backslash."""
    if not isinstance(rel, str) or not rel or "\0" in rel or "\\" in rel:
        return False
    if os.path.isabs(rel) or rel.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


def remove_owned(
    folder: str | os.PathLike, files: Sequence[str] | dict[str, int], *, remove_folder: bool = False
) -> list[str]:
    """The one place easyhard deletes anything under a path it was given: the files `files`
    (relative paths, each plain and inside `folder`; with sizes, {path: size}, only a file that
    still has its recorded size) under `folder`, then the folders they leave empty, `folder`
    itself too when `remove_folder` and nothing is left in it. A name that is not plain, not a
    file (a folder, a missing path) or of another size is left alone. Returns the paths it left
    that were asked for (files of another size, or not files), and `folder` when it stays
    although `remove_folder` asked for it to go."""
    folder = os.fspath(folder)
    sizes = files if isinstance(files, dict) else None
    left, parents = [], set()
    for rel in files:
        path = os.path.join(folder, rel)
        if not plain_relative(rel):
            left.append(path)
            continue
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode) or (sizes is not None and st.st_size != sizes[rel]):
            left.append(path)
            continue
        os.unlink(path)
        parts = rel.split("/")[:-1]
        for i in range(len(parts), 0, -1):
            parents.add("/".join(parts[:i]))
    for rel in sorted(parents, key=lambda r: -r.count("/")):  # deepest first
        with contextlib.suppress(OSError):  # only an empty folder goes
            os.rmdir(os.path.join(folder, rel))
    if remove_folder:
        try:
            os.rmdir(folder)
        except FileNotFoundError:
            pass
        except OSError:
            left.append(folder)
    return left


def folder_files(folder: str | os.PathLike) -> dict[str, int]:
    """Every file under `folder` as {relative path: size} ("/"-separated; a symbolic link counts
    as a file of its own, never followed)."""
    folder = os.fspath(folder)
    found = {}
    for dirpath, dirnames, files in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        for name in files + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            with contextlib.suppress(OSError):
                found[rel] = os.lstat(os.path.join(dirpath, name)).st_size
    return found


def manifest_files(record: dict, folder: str) -> dict[str, int] | None:
    """The files a manifest says easyhard wrote ({relative path: size}); None for a manifest of an
    easyhard before 0.2 that listed top-level names only. A manifest is input like any other: one
    naming anything but plain relative paths inside the folder, with whole sizes, is refused."""
    files = record.get("files")
    if files is None:
        return None
    if not isinstance(files, dict):
        raise OutputExistsError(
            f"the manifest of {folder} does not list its files as easyhard does: it is not an "
            "easyhard output; choose another folder"
        )
    for rel, size in files.items():
        if not plain_relative(rel) or isinstance(size, bool) or not isinstance(size, int):
            raise OutputExistsError(
                f"the manifest of {folder} names {rel!r}, which is not a file inside the folder: "
                "it is not an easyhard output (easyhard only ever removes files inside the "
                "folders it wrote); choose another folder"
            )
    return dict(files)


def _newer_files(folder: str, than: str) -> list[str]:
    """Files under `folder` modified after `than` (the manifest, written last): most likely the
    ones a user added. Hard-linked or copied sources keep older times."""
    limit = os.stat(than).st_mtime
    found = []
    for dirpath, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                if os.lstat(path).st_mtime > limit and path != than:
                    found.append(path)
    return sorted(found)


def seal_output(
    folder: str, manifest_name: str, record: dict, transient: tuple[str, ...] = ()
) -> dict:
    """Write `record` as the folder's manifest (JSON, atomically), adding the exact list of files
    the folder holds (``files``: relative path -> size) so that a later ``--force`` replaces those
    and nothing else (``entries`` and ``file_count`` too, as easyhard before 0.2 read them). Call it
    last, when everything else is written; top-level files named in `transient` are about to be
    removed and are not listed."""
    files = {
        rel: size
        for rel, size in folder_files(folder).items()
        if rel not in transient and rel != manifest_name
    }
    record = {
        **record,
        "files": dict(sorted(files.items())),
        "mtimes": {rel: _mtime_ns(os.path.join(folder, rel)) for rel in sorted(files)},
        "entries": sorted({rel.split("/")[0] for rel in files} | {manifest_name}),
        "file_count": len(files) + 1,
    }
    with atomic_write(os.path.join(folder, manifest_name), "w") as f:
        json.dump(record, f, indent=1)
    return record


def _mtime_ns(path: str) -> int | None:
    try:
        return os.lstat(path).st_mtime_ns
    except OSError:
        return None


def _edited(folder: str, record: dict, here: dict[str, int]) -> list[str]:
    """The files of `here` whose modification time differs from the one the manifest recorded
    (``mtimes``, since 0.3: an edit that kept the size); a manifest without them is not
    checked this way, one whose times are not integers is refused."""
    mtimes = record.get("mtimes")
    if mtimes is None:
        return []
    if not isinstance(mtimes, dict) or any(
        isinstance(t, bool) or not isinstance(t, (int, type(None))) for t in mtimes.values()
    ):
        raise OutputExistsError(
            f"the manifest of {folder} does not record its files' times as easyhard does: it is "
            "not an easyhard output; choose another folder"
        )
    return sorted(
        rel for rel in here if rel in mtimes and mtimes[rel] != _mtime_ns(os.path.join(folder, rel))
    )


def read_json_object(path: str) -> dict | None:
    """A JSON file holding an object (an output's manifest); None when it is missing, unreadable
    or something else."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def existing_folder(folder: str) -> list[str] | None:
    """The names in an output folder (None when it does not exist yet); refuses a path that is
    a symbolic link or not a folder: easyhard writes only into real folders, so that what it
    replaces is what it wrote."""
    if not os.path.lexists(folder):
        return None
    if os.path.islink(folder):
        raise OutputExistsError(
            f"{folder} is a symbolic link (to {os.readlink(folder)}); easyhard writes only into "
            "real folders, so that what it replaces is what it wrote: give the folder itself"
        )
    if not os.path.isdir(folder):
        raise OutputExistsError(f"{folder} exists and is not a folder; choose another output")
    return os.listdir(folder)


def check_replaceable(folder: str, manifest_name: str, fmt: str, force: bool) -> dict[str, int]:
    """May an output go to `folder`? Yes if it does not exist or is empty; with `force`, also if it
    is an earlier easyhard output of format `fmt` that holds exactly the files its manifest lists
    (none added, none changed in size; a listed file that was removed is fine). Returns the files
    a replacement may delete ({relative path: size}, the manifest included; empty for a new or
    empty folder); raises OutputExistsError otherwise, naming what is in the way."""
    names = existing_folder(folder)
    if not names:
        return {}
    if not force:
        raise OutputExistsError(
            f"{folder} exists and is not empty; choose another folder, or pass "
            "`force=True` to replace an earlier easyhard output there"
        )
    manifest = os.path.join(folder, manifest_name)
    record = read_json_object(manifest)
    if record is None or record.get("format") != fmt:
        other = _easyhard_format(folder, names)
        if other:
            raise OutputExistsError(
                f"{folder} holds another kind of easyhard output ({other}), not an earlier "
                f"{fmt}; `force=True` only replaces an earlier output of the same kind: choose "
                "another folder"
            )
        raise OutputExistsError(
            f"{folder} is not empty and is not an earlier easyhard output "
            f"(no {manifest_name} of format {fmt}); `force=True` only replaces "
            "easyhard's own outputs: choose another folder"
        )
    here = folder_files(folder)
    here.pop(manifest_name, None)
    listed = manifest_files(record, folder)
    if listed is None:
        listed = _legacy_files(folder, record, manifest_name, here)
    extra = sorted(set(here) - set(listed))
    if extra:
        newer = [p for p in _newer_files(folder, manifest) if os.path.relpath(p, folder) in extra]
        example = os.path.join(folder, extra[0])
        raise OutputExistsError(
            f"{folder} holds {example}, which easyhard did not write"
            + (f" ({len(extra)} such files)" if len(extra) > 1 else "")
            + (", added after it was written" if newer else "")
            + "; `force=True` does not delete it: move it or choose another folder"
        )
    changed = sorted(rel for rel, size in here.items() if listed[rel] != size)
    if changed:
        raise OutputExistsError(
            f"{os.path.join(folder, changed[0])} was changed since easyhard wrote it (its size "
            "differs); `force=True` does not delete a file someone edited: move it or choose "
            "another folder"
        )
    edited = _edited(folder, record, here)
    if edited:
        raise OutputExistsError(
            f"{os.path.join(folder, edited[0])} was modified since easyhard wrote it (its "
            "modification time differs: edited, or copied without keeping times); `force=True` "
            "does not delete a file someone may have edited: move it or choose another folder"
        )
    return {**here, manifest_name: os.lstat(manifest).st_size}


def _legacy_files(folder: str, record: dict, manifest_name: str, here: dict) -> dict[str, int]:
    """The files of an output written before manifests listed them (``entries``: top-level names,
    ``file_count``): accepted as easyhard's when the names and the count match and no file is
    newer than the manifest; then what is there is what it wrote."""
    entries, count = record.get("entries"), record.get("file_count")
    if not isinstance(entries, list):
        raise OutputExistsError(
            f"{folder} was written by an older easyhard that did not list its "
            "files; remove it yourself or choose another folder"
        )
    bad = next((e for e in entries if not plain_relative(e) or "/" in e), None)
    if bad is not None or isinstance(count, bool) or not isinstance(count, int):
        what = (
            f"names {bad!r}, which is not a file of the folder"
            if bad is not None
            else ("gives no file count")
        )
        raise OutputExistsError(
            f"the manifest of {folder} {what}: it is not an easyhard output (easyhard only ever "
            "removes files inside the folders it wrote); choose another folder"
        )
    extra = sorted({rel.split("/")[0] for rel in here} - set(entries))
    if extra:
        raise OutputExistsError(
            f"{folder} holds {os.path.join(folder, extra[0])}, which easyhard "
            "did not write; `force=True` does not delete it: move it or choose "
            "another folder"
        )
    newer = _newer_files(folder, os.path.join(folder, manifest_name))
    if len(here) + 1 != record.get("file_count") or newer:
        hint = f", e.g. {newer[0]}, added after it was written" if newer else ""
        raise OutputExistsError(
            f"{folder} holds files easyhard did not write (it wrote "
            f"{record.get('file_count')}, there are {len(here) + 1}{hint}); "
            "`force=True` does not delete them: choose another folder"
        )
    return here


def _easyhard_format(folder: str, names: list[str]) -> str | None:
    """The format of an easyhard manifest among a folder's top-level JSON files, if any."""
    for name in sorted(n for n in names if n.endswith(".json")):
        record = read_json_object(os.path.join(folder, name))
        if record and str(record.get("format", "")).startswith("easyhard."):
            return str(record["format"])
    return None


# ---------------------------------------------------------------------------- placing files
LINK_MODES = ("hard", "symlink", "copy")  # how a source file enters an output


def place(src: str, dst: str, mode: str) -> str:
    """Put `src` at `dst` by `mode`; returns the mode used."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if mode == "hard":
        try:
            os.link(src, dst)
        except OSError as e:
            raise OSError(
                f"cannot hard-link {src} into the output ({e.strerror}); use "
                "`link='copy'` or `link='symlink'` (e.g. across file systems)"
            ) from e
    elif mode == "symlink":
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copy2(src, dst)
    return mode


def place_tree(src: str, dst: str, link: str) -> None:
    """Put the tree `src` at `dst` (a new folder), every file by `link` (see place)."""
    os.makedirs(dst)
    for dirpath, dirnames, files in os.walk(src, followlinks=True):
        rel = os.path.relpath(dirpath, src)
        for d in dirnames:
            os.makedirs(os.path.join(dst, rel, d), exist_ok=True)
        for f in files:
            place(os.path.join(dirpath, f), os.path.join(dst, rel, f), link)


def same_device(a: str, b: str) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev

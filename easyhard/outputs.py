"""Output folders: who may write one, what a command may replace in it, and how it is replaced.

Every command that writes a folder goes through here, so that the rules are one piece of code:

- ``claim(out)``: an exclusive lock held while a command writes `out` (a hidden lock file beside
  the folder, ``.NAME.lock``, removed on release; the kernel releases a killed holder's lock). A
  second writer is refused at once with OutputBusyError, naming the process that holds it.
- ``Output(out, manifest, format, force=..., command=...)``: for commands that write a whole folder
  (select, compress, analyze overlap, analyze similarity, report). Entering it takes the lock,
  repairs what a killed earlier write left (below) and checks, before any work, that `out` is new,
  empty, or, with `force`, an earlier output of the same kind holding exactly the files its
  manifest lists (io.check_replaceable: a manifest is input, only plain relative paths inside the
  folder are taken from it). ``write(build)`` then builds the new output in a hidden folder beside
  `out` (``.NAME.partial-*``), seals its manifest with the exact list of files (io.seal_output),
  checks `out` again at the moment of the swap (a file that appeared meanwhile stops it: nothing
  is replaced), renames the old folder aside (``.NAME.old-*``) and the new one into place, and
  deletes from the old one exactly the files it had (io.remove_owned; anything else stays, and
  the folder with it, named in a warning).
- A write killed at any moment leaves the old output in place (before the swap) or the new one
  (after it), plus hidden leftovers that the next claim of `out` clears: a partial build is
  discarded, an old folder whose swap completed is emptied of its own files, and an old folder
  whose new one never arrived (killed between the two renames) is put back.

io.remove_owned is the one function that deletes anything under a path a user gave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from typing import Callable, Iterator

from .io import (
    OutputExistsError,
    check_replaceable,
    folder_files,
    manifest_files,
    read_json_object,
    remove_owned,
    seal_output,
    umask,
)

PARTIAL_MARKER = ".easyhard-partial"  # in a build folder until its output is sealed


class OutputBusyError(OutputExistsError):
    """Another easyhard process is writing the same output folder."""


def _lock_path(out: str) -> str:
    return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.lock")


@contextlib.contextmanager
def claim(out: str | os.PathLike, command: str = "easyhard") -> Iterator[None]:
    """Hold the exclusive lock of output folder `out` (see the module docstring); refuses with
    OutputBusyError when another process holds it. The folder's parent is created if needed, and
    removed again on release when the command left it empty (a refused command leaves nothing)."""
    out = os.path.abspath(os.fspath(out))
    created = []  # the parent folders made here: removed on release when left empty
    parent = os.path.dirname(out)
    while not os.path.isdir(parent):
        created.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    path = _lock_path(out)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputBusyError(
                f"{out} is being written by another easyhard command ({holder}); wait for it to "
                "finish or choose another output folder"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file its holder removed just before we locked it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{command}, pid {os.getpid()}".encode(), 0)
        yield
    finally:
        # Remove the file before releasing it: a process that opened it meanwhile finds, once it
        # holds the lock, that it is no longer the file at that path, and tries again.
        remove_owned(os.path.dirname(path), [os.path.basename(path)])
        os.close(fd)
        for folder in created:  # deepest first; one that holds anything stays
            remove_owned(folder, [], remove_folder=True)


def _before_swap(out: str) -> None:
    """Called right before a new output is swapped into place (tests act or stop here)."""


def _after_set_aside(out: str) -> None:
    """Called between the two renames of a swap (tests stop here, as a kill would)."""


def _siblings(out: str, kind: str) -> list[str]:
    parent, base = os.path.dirname(out), os.path.basename(out)
    prefix = f".{base}.{kind}-"
    return sorted(
        os.path.join(parent, n)
        for n in os.listdir(parent)
        if n.startswith(prefix) and os.path.isdir(os.path.join(parent, n))
    )


def _discard_build(work: str) -> None:
    """Delete a build folder this module made (mkdtemp: nobody else has its name) while it still
    holds the partial marker or nothing at all."""
    names = os.listdir(work)
    if names and PARTIAL_MARKER not in names:
        return
    remove_owned(work, folder_files(work), remove_folder=True)


def _empty_set_aside(trash: str, manifest: str, warn: bool = True) -> None:
    """Delete an old output set aside by a swap: exactly the files its manifest lists."""
    old = os.path.join(trash, "old")
    record = read_json_object(os.path.join(old, manifest)) or {}
    try:
        listed = manifest_files(record, old)
    except OutputExistsError:
        listed = None
    files = dict(listed or {})
    if listed is not None:
        files[manifest] = os.lstat(os.path.join(old, manifest)).st_size
    left = remove_owned(old, files, remove_folder=True)
    if left or os.path.exists(old):
        if warn:
            print(
                f"note: {old} holds files easyhard did not write (they appeared while it was "
                "replaced); they were kept there",
                file=sys.stderr,
            )
        return
    remove_owned(trash, [], remove_folder=True)


def recover(out: str, manifest: str) -> None:
    """Repair what a killed write of `out` left beside it (see the module docstring)."""
    for work in _siblings(out, "partial"):
        _discard_build(work)
    for trash in _siblings(out, "old"):
        old = os.path.join(trash, "old")
        if not os.path.lexists(out) and os.path.isfile(os.path.join(old, manifest)):
            os.rename(old, out)  # the swap was killed before the new output arrived
            remove_owned(trash, [], remove_folder=True)
        elif os.path.isdir(old):
            _empty_set_aside(trash, manifest)


class Output:
    """A whole-folder output, written by build-and-swap (see the module docstring).

    with Output(out, "report.json", "easyhard.report", force=force, command="report") as output:
        ...  # the command's work; refusals before this point change nothing
        record = output.write(lambda work: {...write files into work, return the manifest...})
    """

    def __init__(
        self, out: str | os.PathLike, manifest: str, fmt: str, *, force: bool, command: str
    ) -> None:
        self.out = os.path.abspath(os.fspath(out))
        self.manifest, self.fmt, self.force, self.command = manifest, fmt, force, command
        self.owned: dict[str, int] = {}
        self._claim = None

    def __enter__(self) -> "Output":
        self._claim = claim(self.out, self.command)
        self._claim.__enter__()
        try:
            recover(self.out, self.manifest)
            self.owned = check_replaceable(self.out, self.manifest, self.fmt, self.force)
        except BaseException:
            self._claim.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._claim.__exit__(*exc)

    def write(self, build: Callable[[str], dict]) -> dict:
        """Build the output with `build(folder)` (it writes every file into the folder it is
        given and returns the manifest record), seal it and swap it into place; returns the
        sealed record."""
        parent, base = os.path.dirname(self.out), os.path.basename(self.out)
        work = tempfile.mkdtemp(prefix=f".{base}.partial-", dir=parent)
        try:
            os.chmod(work, 0o777 & ~umask())  # mkdtemp makes 0700 folders whatever the umask
            open(os.path.join(work, PARTIAL_MARKER), "w").close()
            record = seal_output(work, self.manifest, build(work), transient=(PARTIAL_MARKER,))
            remove_owned(work, [PARTIAL_MARKER])
            _before_swap(self.out)
            self._swap(work)
        except BaseException:
            if os.path.isdir(work):
                open(os.path.join(work, PARTIAL_MARKER), "a").close()
                _discard_build(work)
            raise
        return record

    def _swap(self, work: str) -> None:
        try:  # the folder must still be what was checked before the work began
            now = check_replaceable(self.out, self.manifest, self.fmt, self.force)
        except OutputExistsError:
            now = None
        if now != self.owned:
            here = folder_files(self.out) if os.path.isdir(self.out) else {}
            new = sorted(set(here) - set(self.owned))
            what = f"{os.path.join(self.out, new[0])} appeared" if new else "its files changed"
            raise OutputExistsError(
                f"{self.out} changed while easyhard {self.command} was writing it ({what}), so "
                "nothing was replaced or deleted: move what is in the way, or choose another "
                "folder, and run the command again"
            )
        if not os.path.lexists(self.out):
            os.rename(work, self.out)
            return
        parent, base = os.path.dirname(self.out), os.path.basename(self.out)
        trash = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
        old = os.path.join(trash, "old")
        os.rename(self.out, old)
        try:
            _after_set_aside(self.out)
            os.rename(work, self.out)
        except BaseException:
            os.rename(old, self.out)  # put the old output back: nothing was replaced
            remove_owned(trash, [], remove_folder=True)
            raise
        left = remove_owned(old, self.owned, remove_folder=True)
        if left or os.path.exists(old):
            print(
                f"note: files appeared in {self.out} while easyhard {self.command} replaced it; "
                f"easyhard did not write them and kept them in {old}",
                file=sys.stderr,
            )
            return
        remove_owned(trash, [], remove_folder=True)

"""Tests of easyhard.outputs and io.remove_owned: who may write an output folder, what --force may
replace, the swap into place, and the repair of a killed write. Races are made deterministic with
the module's hooks (_before_swap, _after_set_aside), never with sleeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from easyhard import outputs
from easyhard.io import OutputExistsError, check_replaceable, remove_owned, seal_output

FMT, MANIFEST = "easyhard.test-output", "out.json"


def write(out, force=False, text="new"):
    """A tiny whole-folder output: a.txt and sub/b.txt."""

    def build(work):
        os.makedirs(os.path.join(work, "sub"))
        with open(os.path.join(work, "a.txt"), "w") as f:
            f.write(text)
        with open(os.path.join(work, "sub", "b.txt"), "w") as f:
            f.write(text * 2)
        return {"format": FMT}

    with outputs.Output(out, MANIFEST, FMT, force=force, command="test") as o:
        return o.write(build)


def hidden(folder):
    return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_the_manifest_lists_every_file_and_force_replaces_exactly_those(tmp_path):
    out = tmp_path / "out"
    record = write(out, text="old")
    assert record["files"] == {"a.txt": 3, "sub/b.txt": 6}
    write(out, force=True, text="new")
    assert (out / "a.txt").read_text() == "new"
    assert hidden(tmp_path) == []  # no lock, build or trash folder left
    with pytest.raises(OutputExistsError, match="not empty"):
        write(out)  # without force


def test_force_compares_the_exact_files_not_their_count(tmp_path):
    """Remove one file easyhard wrote and add one of the same count: the user's file is named
    and kept (the count alone matched)."""
    out = tmp_path / "out"
    write(out)
    (out / "sub" / "b.txt").unlink()
    (out / "sub" / "annotations.csv").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"sub/annotations\.csv, which easyhard did not"):
        write(out, force=True)
    assert (out / "sub" / "annotations.csv").read_text() == "mine"
    # a file easyhard wrote that someone edited is not deleted either
    (out / "sub" / "annotations.csv").unlink()
    (out / "a.txt").write_text("my edits")
    with pytest.raises(OutputExistsError, match="was changed since easyhard wrote it"):
        write(out, force=True)
    assert (out / "a.txt").read_text() == "my edits"


def test_force_keeps_an_edit_that_kept_the_size(tmp_path):
    """Only sizes were compared: a same-size edit (a typo fixed) was deleted by --force (found
    by a careless-user helper). The manifest records each file's modification time; a manifest
    without them (0.2) is still checked by size alone."""
    out = tmp_path / "out"
    record = write(out, text="old")
    assert set(record["mtimes"]) == {"a.txt", "sub/b.txt"}
    (out / "sub" / "b.txt").write_text("OLDOLD")
    with pytest.raises(OutputExistsError, match=r"b\.txt was modified since easyhard wrote it"):
        write(out, force=True)
    assert (out / "sub" / "b.txt").read_text() == "OLDOLD"
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["mtimes"]  # as 0.2 wrote it
    (out / MANIFEST).write_text(json.dumps(manifest))
    write(out, force=True)
    assert (out / "a.txt").read_text() == "new"
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["mtimes"]["a.txt"] = "yesterday"  # a manifest is input: not trusted
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(OutputExistsError, match="does not record its files' times"):
        write(out, force=True)


@pytest.mark.parametrize("bad", ["/abs/path/a.txt", "../victim.txt", "sub/../../victim.txt", ""])
def test_a_crafted_manifest_deletes_nothing_outside(tmp_path, bad):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    outside = tmp_path / "abs.txt"
    outside.write_text("keep me too")
    out = tmp_path / "out"
    write(out)
    record = json.loads((out / MANIFEST).read_text())
    record["files"][bad.replace("/abs/path/a.txt", str(outside))] = 10
    (out / MANIFEST).write_text(json.dumps(record))
    with pytest.raises(OutputExistsError, match="which is not a file inside the folder"):
        write(out, force=True)
    assert victim.read_text() == "keep me" and outside.read_text() == "keep me too"
    assert (out / "a.txt").exists()


def test_remove_owned_deletes_only_plain_listed_files_of_their_size(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "d" / "e" / "x").write_text("12345")
    (tmp_path / "d" / "keep").write_text("k")
    (tmp_path / "y").write_text("1")
    (tmp_path.parent / "outside.txt").write_text("o")
    left = remove_owned(
        tmp_path, {"d/e/x": 5, "y": 99, "../outside.txt": 1, "/etc/passwd": 1, "d": 0}
    )
    assert not (tmp_path / "d" / "e").exists()  # emptied, so removed
    assert (tmp_path / "d" / "keep").exists() and (tmp_path / "y").exists()  # other size
    assert (tmp_path.parent / "outside.txt").exists()
    assert str(tmp_path / "y") in left and str(tmp_path / "d") in left


def test_a_file_that_appears_during_the_run_stops_the_swap(tmp_path, monkeypatch):
    """A user file created in --out while the command works: nothing is replaced or deleted."""
    out = tmp_path / "out"
    write(out)

    def user_adds_a_file(path):
        os.makedirs(os.path.join(path, "mine"))
        with open(os.path.join(path, "mine", "thesis.tex"), "w") as f:
            f.write("chapter 1")

    monkeypatch.setattr(outputs, "_before_swap", user_adds_a_file)
    with pytest.raises(OutputExistsError, match="changed while easyhard test was writing it"):
        write(out, force=True, text="newer")
    assert (out / "mine" / "thesis.tex").read_text() == "chapter 1"
    assert (out / "a.txt").read_text() == "new"  # the old output, untouched
    assert hidden(tmp_path) == []
    # a new folder the user fills meanwhile: refused the same way
    monkeypatch.setattr(outputs, "_before_swap", user_adds_a_file)
    with pytest.raises(OutputExistsError, match="changed while"):
        write(tmp_path / "fresh")
    assert (tmp_path / "fresh" / "mine" / "thesis.tex").exists()
    assert not (tmp_path / "fresh" / "a.txt").exists()


def test_a_second_writer_is_refused(tmp_path):
    out = tmp_path / "out"
    with outputs.claim(out, "first"):
        with pytest.raises(outputs.OutputBusyError, match=r"being written by .*first, pid"):
            write(out)
    write(out)  # released


def test_a_writer_in_another_process_is_refused(tmp_path):
    out = tmp_path / "out"
    code = (
        "import sys, time; from easyhard import outputs\n"
        f"with outputs.claim({str(out)!r}, 'other'):\n"
        "    print('held', flush=True); sys.stdin.readline()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().strip() == "held"
        with pytest.raises(outputs.OutputBusyError, match="other"):
            write(out)
    finally:
        p.communicate("\n", timeout=60)
    write(out)


class Killed(BaseException):
    """Raised at a hook, as a SIGKILL would end the process there (no cleanup runs)."""


def kill_at(monkeypatch, hook):
    def stop(path):
        raise Killed(hook)

    monkeypatch.setattr(outputs, hook, stop)
    # a kill runs no except clause: neither the build folder nor the set-aside output is tidied
    monkeypatch.setattr(outputs, "_discard_build", lambda work: None)
    real_rename = os.rename

    def rename(src, dst):
        if "old-" in os.fspath(src):  # the put-back of the except clause
            raise Killed("no cleanup")
        real_rename(src, dst)

    monkeypatch.setattr(outputs.os, "rename", rename)


@pytest.mark.parametrize("hook", ["_before_swap", "_after_set_aside"])
def test_a_killed_rewrite_leaves_a_state_the_next_run_repairs(tmp_path, monkeypatch, hook):
    """Killed before the swap: the old output stays in place. Killed between the two renames
    (the old output set aside, the new one not yet in place): the next claim puts it back.
    Either way the next --force run replaces it and leaves nothing hidden behind."""
    out = tmp_path / "out"
    write(out, text="old")
    with monkeypatch.context() as m:
        kill_at(m, hook)
        with pytest.raises(Killed):
            write(out, force=True, text="new")
    assert hidden(tmp_path)  # leftovers: a build folder, and a set-aside output
    outputs.recover(str(out), MANIFEST)
    assert (out / "a.txt").read_text() == "old"  # the old result, whole
    check_replaceable(str(out), MANIFEST, FMT, True)
    write(out, force=True, text="new")
    assert (out / "a.txt").read_text() == "new" and hidden(tmp_path) == []


def test_a_set_aside_output_of_a_completed_swap_is_emptied_of_its_own_files_only(tmp_path):
    out = tmp_path / "out"
    write(out)
    trash = tmp_path / ".out.old-xyz"
    (trash / "old" / "sub").mkdir(parents=True)
    (trash / "old" / "a.txt").write_text("new")
    (trash / "old" / "sub" / "b.txt").write_text("newnew")
    seal_output(str(trash / "old"), MANIFEST, {"format": FMT})
    (trash / "old" / "late.txt").write_text("a user's file, written into the old folder")
    outputs.recover(str(out), MANIFEST)
    assert sorted(os.listdir(trash / "old")) == ["late.txt"]
    (trash / "old" / "late.txt").unlink()
    outputs.recover(str(out), MANIFEST)
    assert hidden(tmp_path) == []


def test_an_output_of_the_previous_version_is_still_replaceable(tmp_path):
    """Manifests written before 0.2 list top-level names and a count: still replaced when they
    match and nothing is newer than the manifest, refused otherwise."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("old")
    (out / "sub" / "b.txt").write_text("old")
    record = {"format": FMT, "entries": ["a.txt", MANIFEST, "sub"], "file_count": 3}
    (out / MANIFEST).write_text(json.dumps(record))
    for f in (out / "a.txt", out / "sub" / "b.txt"):
        os.utime(f, (1e9, 1e9))
    assert set(check_replaceable(str(out), MANIFEST, FMT, True)) == {"a.txt", "sub/b.txt", MANIFEST}
    (out / "sub" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="notes.txt, added after it was written"):
        write(out, force=True)
    (out / "sub" / "notes.txt").unlink()
    write(out, force=True)
    assert "files" in json.loads((out / MANIFEST).read_text())


def test_similarity_force_never_trusts_its_manifest(tmp_path):
    """The issue's case: a similarity folder whose manifest names files outside it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    sim = tmp_path / "sim"
    sim.mkdir()
    from easyhard.similarity import write_outputs

    for entries in ([str(victim), "similarity.json"], ["../victim.txt", "similarity.json"]):
        record = {"format": "easyhard.similarity", "entries": entries, "file_count": 2}
        (sim / "similarity.json").write_text(json.dumps(record))
        with pytest.raises(OutputExistsError, match="which is not a file of the folder"):
            write_outputs(None, str(sim), force=True)
        assert victim.read_text() == "keep" and (sim / "similarity.json").exists()

"""Folders written by an earlier version (tests/data/c8db64d.tar.gz, made by
tests/data/make_fixtures.py with easyhard at commit c8db64d) are read, resumed and reported by this
one: a finished study, score job and experiments resume without training anything, the killed ones
finish, and one report covers them all."""

from __future__ import annotations

import importlib.util
import json
import os
import tarfile
import tomllib

import numpy as np
import pytest
from click.testing import CliRunner

import easyhard
from easyhard.cli import main

HERE = os.path.join(os.path.dirname(__file__), "data")
_spec = importlib.util.spec_from_file_location(
    "make_fixtures", os.path.join(HERE, "make_fixtures.py")
)
made = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(made)  # the very commands that made the fixtures


@pytest.fixture
def old(tmp_path, monkeypatch):
    """The fixtures, unpacked into a fresh folder that is the working directory (they were made
    with relative paths)."""
    with tarfile.open(os.path.join(HERE, "c8db64d.tar.gz")) as tar:
        tar.extractall(tmp_path, filter="data")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> str:
    r = CliRunner().invoke(main, [*args, "--quiet"])
    assert r.exit_code == 0, r.output
    return r.output


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file under `folder` but the merged scores file (re-derived on every run of a job),
    TOML files by their settings (the job's resolved configuration is rewritten, its settings in
    the order of this version's fields): what resuming a finished job must leave as it was."""
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            if f == "merged.npz":
                continue
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = (
                    tomllib.load(fh) if f.endswith(".toml") else fh.read()
                )
    return out


def metrics(run: str) -> list[dict]:
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_old_files_are_read(old):
    from easyhard.scores import load_scores
    from easyhard.statsfile import read_metadata_block

    tables = [
        load_scores(p) for p in ("study/runs/resnet8-run0/scores.npz", "study/runs/merged.npz")
    ]
    for table in tables:
        assert len(table.labels) == 240 and np.isfinite(table.scores["easiness"]).all()
    assert tables[0].fingerprint == tables[1].fingerprint is not None
    assert read_metadata_block("study/runs/resnet8-run0/scores.npz")["dataset"] == "synthetic"
    out = json.loads(
        cli("analyze", "overlap", "study/runs", "study/seeds", "--out", "ov", "--json")
    )
    assert len(out["pairs"]) == 1 and os.path.exists("ov/overlap.json")


VARYING = ("created", "checkpoint", "run", "file", "score_file", "scoring_runs", "easyhard_version",
           "versions")  # fmt: skip


def same_record(a, b, where: str = "") -> None:
    """Two analysis records agree: every value of the older one, numbers to 1e-4 (another CPU
    rounds convolutions differently), paths, times and the versions that wrote it excepted."""
    if isinstance(a, dict):
        for k, v in a.items():
            if k not in VARYING:
                assert k in b, f"{where}/{k} is gone"
                same_record(v, b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same_record(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-9, nan_ok=True), where
    else:
        assert a == b, where


def test_finished_study_resumes_without_training_and_reports(old):
    before = {r: snapshot(f"study/{r}") for r in ("runs", "seeds")}
    analyses = {a: json.load(open(f"study/{a}/{a}.json")) for a in ("overlap", "similarity")}
    study = ["study", *made.DATA, "--arch", "resnet8", "--seed-runs", "1", "--out", "study"]
    cli(*study, "--resume")
    for r in ("runs", "seeds"):  # the runs, their config.json included, are as they were
        assert snapshot(f"study/{r}") == before[r]
    for a, record in analyses.items():  # the analyses, redone, find what they found
        same_record(record, json.load(open(f"study/{a}/{a}.json")), a)
    report = json.loads(open("study/report/report.json").read())
    assert report["sections"]["overlap"] and report["sections"]["similarity"]


def test_killed_study_and_score_job_finish(old):
    study = ["study", *made.DATA, "--arch", "resnet8", "--seed-runs", "1", "--epochs", "3"]
    config_before = open("study-killed/seeds/resnet8-run0/config.json").read()
    cli(*study, "--resume", "--out", "study-killed")
    after = json.loads(open("study-killed/seeds/resnet8-run0/config.json").read())
    expect = {**json.loads(config_before), "finished": True}
    assert after.pop("easyhard_version") == easyhard.__version__  # the version that finished it
    expect.pop("easyhard_version")
    assert after == expect
    assert [m["epoch"] for m in metrics("study-killed/seeds/resnet8-run0")][-1] == 3
    assert os.path.exists("study-killed/report/report.html")
    run0 = snapshot("score-killed/resnet8-run0")
    cli("score", *made.DATA, *made.RECIPE, "--runs", "2", "--epochs", "3", "--resume", "--out",
        "score-killed")  # fmt: skip
    assert snapshot("score-killed/resnet8-run0") == run0  # finished: not trained again
    assert [m["epoch"] for m in metrics("score-killed/resnet8-run1")][-1] == 3
    assert os.path.exists("score-killed/resnet8-run1/scores.npz")


def test_old_experiments_continue_and_report(old):
    cells = sorted(os.listdir("experiments/cells"))
    results = open("experiments/results.jsonl").read()
    compression = open("experiments/compression-results.jsonl").read()
    cli(*made.REMOVAL, "--out", "experiments")  # finished: nothing is trained
    cli(*made.COMPRESSION, "--out", "experiments")
    assert sorted(os.listdir("experiments/cells")) == cells
    assert open("experiments/results.jsonl").read() == results
    assert open("experiments/compression-results.jsonl").read() == compression
    # the killed one trains its missing cell and ends with every row
    cli(*made.REMOVAL, "--out", "experiments-killed")
    rows = [json.loads(line) for line in open("experiments-killed/results.jsonl")]
    assert {r["order"] for r in rows} == {
        json.loads(line)["order"] for line in results.splitlines()
    }
    assert not any(n.endswith(".lock") for n in os.listdir("experiments-killed/cells"))
    record = json.loads(
        cli(
            "report",
            "study/runs",
            "study/seeds",
            "study/overlap",
            "study/similarity",
            "experiments",
            "experiments-killed",
            "--out",
            "rep",
            "--json",
        )  # fmt: skip
    )
    assert all(record["sections"][k] for k in ("overlap", "similarity", "experiments"))
    assert "Compression" in open("rep/report.md").read()
    assert os.path.exists("rep/report.html")


def test_a_damaged_metrics_file_is_named(old):
    """metrics.jsonl is read by one function (runfolder.read_metrics) for the report, the
    experiments and the cost of scoring; a damaged one is one sentence naming file and line."""
    from easyhard.runfolder import read_metrics

    run = "study/runs/resnet8-run0"
    assert [m["epoch"] for m in read_metrics(run)] == [1, 2]
    with open(f"{run}/metrics.jsonl", "a") as f:
        f.write("[1, 2]\n")
    r = CliRunner().invoke(main, ["report", run, "--out", "rep"])
    assert r.exit_code == 1 and "metrics.jsonl:3 is not a JSON object" in r.output, r.output
    with open(f"{run}/metrics.jsonl", "wb") as f:
        f.write(b'{"epoch": 1}\n\xff\n')
    r = CliRunner().invoke(main, ["report", run, "--out", "rep"])
    assert r.exit_code == 1 and "is not UTF-8 text" in r.output, r.output
    assert not os.path.exists("rep")
    assert read_metrics("nowhere", missing_ok=True) == []


def test_an_old_resolved_configuration_is_read_back(old):
    """removal-config.toml of the previous version holds ScoreConfig's settings that are not an
    experiment's (archs, runs, clean_every, clean_steps): as --config it still continues the
    experiment; a value that version could not have written is refused, naming it."""
    rows = open("experiments/results.jsonl").read()
    with open("experiments/removal-config.toml") as f:
        text = f.read()
    assert "runs = 1" in text and "archs = " in text
    with open("old.toml", "w") as f:
        f.write(text)
    cli("experiment", "removal", made.SCORES, "--config", "old.toml",
        "--out", "experiments")  # fmt: skip
    assert open("experiments/results.jsonl").read() == rows
    with open("edited.toml", "w") as f:
        f.write(text.replace("runs = 1", "runs = 2"))
    r = CliRunner().invoke(main, ["experiment", "removal", made.SCORES, "--config", "edited.toml",
                                  "--out", "experiments"])  # fmt: skip
    assert r.exit_code == 1 and "runs = 2 is not a setting of the removal experiment" in r.output


def test_a_crafted_analysis_record_is_named(old):
    """An analysis record is input too: one that its module cannot read (edited: no set sizes,
    a group without its overlaps; a similarity record whose classes are a number) is refused
    naming the file (it was "min() arg is an empty sequence"), and no report is written."""
    record = json.load(open("study/overlap/overlap.json"))
    record.update(ps=[], groups={"seed": {"pairs": 1}})
    json.dump(record, open("study/overlap/overlap.json", "w"))
    r = CliRunner().invoke(main, ["report", "study/overlap", "--out", "rep"])
    assert r.exit_code == 1, r.output
    assert "overlap/overlap.json is not an overlap record this version can read" in r.output
    assert not os.path.exists("rep")
    record = json.load(open("study/similarity/similarity.json"))
    record["per_class"] = 7
    json.dump(record, open("study/similarity/similarity.json", "w"))
    r = CliRunner().invoke(main, ["report", "study/similarity", "--out", "rep"])
    assert r.exit_code == 1 and "similarity.json is not a similarity record" in r.output, r.output


def _writers():
    """Every command that writes an output, as (arguments that make it write to --out from the
    fixtures' inputs, takes --force, an input folder or file that --out may not be)."""
    scores, run, runs = made.SCORES, os.path.dirname(made.SCORES), "study/runs"
    return {
        "score": (["score", *made.DATA, *made.RECIPE], True, None),  # synthetic: no input
        "merge": (["merge", scores], False, scores),
        "select": (["select", scores, "--keep", "0.5"], True, run),
        "compress": (["compress", scores, *made.DATA[:8], "--keep", "0.5"], True, run),
        "analyze overlap": (["analyze", "overlap", "study/runs", "study/seeds"], True, runs),
        "analyze similarity": (["analyze", "similarity", scores, *made.DATA], True, run),
        "experiment removal": (made.REMOVAL, True, run),
        "experiment compression": (made.COMPRESSION, True, run),
        "report": (["report", runs], True, runs),
        "study": (["study", *made.DATA, "--arch", "resnet8"], False, None),
    }


@pytest.mark.parametrize("command", sorted(_writers()))
def test_no_command_replaces_what_it_did_not_write(old, command):
    """The promise, command by command: an output that holds a file easyhard did not write is
    refused with one sentence and left exactly as it was; with --force too (score's --force
    starts afresh beside the file and leaves it as it was); an output that is an input, or the
    folder holding one, is refused and the inputs are left as they were."""
    args, force, source = _writers()[command]
    out = "mine/out.npz" if command == "merge" else "mine"
    os.makedirs("mine")
    with open("mine/out.npz" if command == "merge" else "mine/notes.txt", "w") as f:
        f.write("a user's file\n")
    before = snapshot("mine")
    r = CliRunner().invoke(main, [*args, "--out", out])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert snapshot("mine") == before
    if force:
        r = CliRunner().invoke(main, [*args, "--out", out, "--force", "--quiet"])
        assert r.exit_code == (0 if command == "score" else 1), r.output
        after = snapshot("mine")
        assert after == before if command != "score" else after["notes.txt"] == before["notes.txt"]
    if source is not None:
        inputs = snapshot("study")
        r = CliRunner().invoke(main, [*args, "--out", source, *(["--force"] if force else [])])
        assert r.exit_code == 1, r.output
        assert snapshot("study") == inputs


@pytest.mark.parametrize(
    "command",
    ["score", "select", "compress", "analyze overlap", "analyze similarity", "report", "study"],
)
def test_a_second_writer_is_refused(old, command):
    """While another easyhard command holds an output folder (its lock), a second writer is
    refused in one sentence before writing anything. (The experiments share their folder by
    design: their workers take turns cell by cell.)"""
    from easyhard.outputs import claim

    args, _, _ = _writers()[command]
    with claim("busy/out", "another"):
        r = CliRunner().invoke(main, [*args, "--out", "busy/out"])
    assert r.exit_code == 1 and "is being written by another easyhard command" in r.output, r.output
    assert not os.path.exists("busy/out")


@pytest.mark.parametrize("command", sorted(_writers()))
def test_settings_are_checked_before_any_folder_is_made(old, command):
    """A setting the inputs cannot satisfy (a window beyond the epochs recorded, a clean view
    beyond the epochs trained) is refused in one sentence, and not even the output's parent
    folders are made."""
    args, _, _ = _writers()[command]
    bad = ["--clean-every", "5"] if command in ("score", "study") else ["--window", "99"]
    out = "new/deeper/out.npz" if command == "merge" else "new/deeper/out"
    r = CliRunner().invoke(main, [*args, *bad, "--out", out])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert not os.path.exists("new")


@pytest.mark.parametrize("command", ["train", "loader"])
def test_bench_refuses_in_one_sentence_and_writes_nothing(old, command):
    """`easyhard bench` writes no output; its bad settings are one sentence with exit status 1
    like every other command's, and it leaves the working folder as it was."""
    before = sorted(os.listdir("."))
    bad = ["--arch", "nope"] if command == "train" else ["--workers", "0"]
    r = CliRunner().invoke(main, ["bench", command, *made.DATA[:8], *bad])
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert sorted(os.listdir(".")) == before


@pytest.mark.parametrize(
    "command, manifest",
    [
        ("select", "selection.json"),
        ("compress", "manifest.json"),
        ("analyze overlap", "overlap.json"),
        ("analyze similarity", "similarity.json"),
        ("report", "report.json"),
        ("experiment removal", "experiment.json"),
        ("experiment compression", "experiment.json"),
    ],
)
def test_a_crafted_manifest_deletes_nothing_outside(old, command, manifest):
    """A manifest is input: an earlier output whose manifest was edited to list files outside
    the folder (../victim.txt, an absolute path) is replaced with --force, or refused, but
    those files are never touched."""
    args, _, _ = _writers()[command]
    r = CliRunner().invoke(main, [*args, "--out", "mine", "--quiet"])
    assert r.exit_code == 0, r.output
    victims = [os.path.abspath("victim.txt"), os.path.abspath("elsewhere/victim.txt")]
    os.makedirs("elsewhere")
    for v in victims:
        with open(v, "w") as f:
            f.write("the user's\n")
    record = json.load(open(f"mine/{manifest}"))
    crafted = ["../victim.txt", victims[1]]
    if isinstance(record.get("files"), dict):
        record["files"].update({name: 11 for name in crafted})
    record["entries"] = [*record.get("entries", []), *crafted]
    json.dump(record, open(f"mine/{manifest}", "w"))
    r = CliRunner().invoke(main, [*args, "--out", "mine", "--force", "--quiet"])
    assert r.exit_code in (0, 1), r.output
    for v in victims:
        assert open(v).read() == "the user's\n", (v, r.output)


@pytest.mark.parametrize(
    "command", ["select", "compress", "analyze overlap", "analyze similarity", "report",
                "experiment removal", "experiment compression", "score", "study"],
)  # fmt: skip
def test_a_user_file_nested_in_an_earlier_output_survives_force(old, command):
    """An earlier output of the command with a user's file added inside one of its own
    sub-folders (report's figures/, compress's class folders, a run folder, a cell, a study's
    analysis): --force (study: --resume, which rewrites its analyses and report) refuses in one
    sentence or replaces the rest, and the user's file is kept byte for byte."""
    args, _, _ = _writers()[command]
    r = CliRunner().invoke(main, [*args, "--out", "mine", "--quiet"])
    assert r.exit_code == 0, r.output
    deepest = max((d for d, _, _ in os.walk("mine")), key=lambda d: d.count(os.sep))
    mine = os.path.join(deepest, "thesis.tex")
    with open(mine, "w") as f:
        f.write("the user's\n")
    again = "--resume" if command == "study" else "--force"
    r = CliRunner().invoke(main, [*args, "--out", "mine", again, "--quiet"])
    assert r.exit_code == 0 or len(r.output.strip().splitlines()) == 1, r.output
    assert open(mine).read() == "the user's\n", (mine, r.output)


class Killed(BaseException):
    """What a kill -9 does to a command, as far as this process can: it stops, running no
    clean-up (the monkeypatches below block the ones easyhard would run)."""


@pytest.mark.parametrize("hook", ["_before_swap", "_after_set_aside"])
@pytest.mark.parametrize(
    "command", ["select", "compress", "analyze overlap", "analyze similarity", "report"]
)
def test_a_killed_rewrite_is_repaired_by_the_next_run(old, monkeypatch, command, hook):
    """Every whole-folder output killed while --force rewrites it (before the swap, or between
    its two renames): the next run with --force repairs and replaces it, its result complete,
    nothing left hidden beside it."""
    from easyhard import outputs

    args, _, _ = _writers()[command]
    assert CliRunner().invoke(main, [*args, "--out", "mine", "--quiet"]).exit_code == 0
    with monkeypatch.context() as m:
        m.setattr(outputs, hook, lambda out: (_ for _ in ()).throw(Killed(out)))
        real_rename = os.rename
        m.setattr(outputs.os, "rename", lambda a, b: (_ for _ in ()).throw(Killed())
                  if ".old-" in os.fspath(a) else real_rename(a, b))  # fmt: skip
        m.setattr(outputs, "_discard_build", lambda work: None)
        with pytest.raises(Killed):
            CliRunner().invoke(main, [*args, "--out", "mine", "--force", "--quiet"])
    assert [n for n in os.listdir(".") if n.startswith(".mine.")]  # what the kill left
    r = CliRunner().invoke(main, [*args, "--out", "mine", "--force", "--quiet"])
    assert r.exit_code == 0, r.output
    assert [n for n in os.listdir(".") if n.startswith(".mine")] == []
    assert any(n.endswith(".json") for n in os.listdir("mine"))

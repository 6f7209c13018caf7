"""Tests of `easyhard study`, the main job: every step's output, the report's sections, resume."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import synthetic

from easyhard.cli import main
from easyhard.report import SECTIONS

SMALL = synthetic(240, 3, batch=64, epochs=2, device="cpu", quiet=True)


def test_study_runs_every_step_and_ends_on_the_report(tmp_path):
    r = CliRunner().invoke(main, ["study", *SMALL, "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith(str(tmp_path / "s" / "report" / "report.html"))
    out = tmp_path / "s"
    assert (out / "runs" / "resnet8-run0" / "scores.npz").exists()
    assert (out / "runs" / "convnet-run0" / "scores.npz").exists()
    assert (out / "seeds" / "resnet8-run0" / "scores.npz").exists()
    overlap = json.loads((out / "overlap" / "overlap.json").read_text())
    assert {p["group"] for p in overlap["pairs"]} == {"arch", "seed", "arch+seed"}
    sim = json.loads((out / "similarity" / "similarity.json").read_text())
    assert sim["format"] == "easyhard.similarity" and sim["feature_model"]["arch"] == "convnet"
    report = json.loads((out / "report" / "report.json").read_text())
    filled = {k for k, v in report["sections"].items() if v}
    assert filled == set(SECTIONS) - {"experiments"}  # all but the experiments study does not run
    # a second call without --resume is refused; with it, runs are reused and analyses redone
    again = CliRunner().invoke(main, ["study", *SMALL, "--out", str(out)])
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = CliRunner().invoke(main, ["study", *SMALL, "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.slow
def test_a_study_killed_while_rewriting_an_analysis_resumes(tmp_path, monkeypatch):
    """A kill during `study --resume`'s rewrite of an analysis (its old folder set aside, the new
    one not yet in place) leaves a state the next `study --resume` repairs: it ends on the report
    and leaves nothing hidden behind."""
    import os

    from easyhard import outputs

    out = tmp_path / "s"
    assert CliRunner().invoke(main, ["study", *SMALL, "--out", str(out)]).exit_code == 0

    class Killed(BaseException):
        pass

    def killed(path):
        if path.endswith("overlap"):
            raise Killed(path)

    with monkeypatch.context() as m:
        m.setattr(outputs, "_after_set_aside", killed)
        real_rename = os.rename
        m.setattr(  # a kill runs no clean-up: the old folder is not put back
            outputs.os,
            "rename",
            lambda a, b: (
                (_ for _ in ()).throw(Killed()) if ".old-" in os.fspath(a) else real_rename(a, b)
            ),
        )
        m.setattr(outputs, "_discard_build", lambda work: None)
        with pytest.raises(Killed):
            CliRunner().invoke(main, ["study", *SMALL, "--resume", "--out", str(out)])
    assert not (out / "overlap").exists()  # set aside, the new one never arrived
    r = CliRunner().invoke(main, ["study", *SMALL, "--resume", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "overlap" / "overlap.json").exists() and (out / "report" / "report.html").exists()
    assert [n for n in os.listdir(out) if n.startswith(".")] == []


def test_force_starts_an_earlier_study_afresh_and_deletes_nothing_else(tmp_path):
    """`study --force` (there was none: a changed study needed the folder deleted by hand) goes
    through each step's own force; it refuses, before deleting anything, a folder holding what a
    study does not write or runs this study does not name."""
    import os

    from easyhard import SampleStats

    out = tmp_path / "s"

    def study(*extra):
        return CliRunner().invoke(main, ["study", *SMALL, *extra, "--out", str(out)])

    assert study().exit_code == 0
    r = study("--resume", "--force")
    assert r.exit_code == 1 and "give one of them" in r.output, r.output

    def snapshot():
        return sorted(
            (os.path.relpath(os.path.join(d, f), out), os.path.getmtime(os.path.join(d, f)))
            for d, _, files in os.walk(out)
            for f in files
        )

    before = snapshot()
    refusals = [
        (("--arch", "resnet8", "--arch", "resnet20"), "does not name (convnet-run0)"),
        (("--seed-runs", "0"), "runs of more seeds, which this study does not train"),
    ]
    for extra, message in refusals:
        r = study("--force", *extra)
        assert r.exit_code == 1 and message in r.output, r.output
    (out / "notes.txt").write_text("mine")
    r = study("--force")
    assert r.exit_code == 1 and "holds notes.txt, which a study does not write" in r.output
    (out / "notes.txt").unlink()
    (out / "overlap" / "mine.txt").write_text("mine")
    r = study("--force")
    assert r.exit_code == 1 and "overlap" in r.output and "not empty" not in r.output, r.output
    # --resume too, before scoring (it was refused after the scoring; found by a careless-user
    # helper)
    r = study("--resume")
    assert r.exit_code == 1 and "mine.txt" in r.output, r.output
    (out / "overlap" / "mine.txt").unlink()
    assert snapshot() == before  # every refusal came before anything was written or deleted
    r = study("--force", "--epochs", "1", "--window", "1")
    assert r.exit_code == 0, r.output
    for folder in ("runs/resnet8-run0", "runs/convnet-run0", "seeds/resnet8-run0"):
        assert SampleStats.load(out / folder / "scores.npz").epochs == 1
    assert json.loads((out / "report" / "report.json").read_text())["sections"]
    # every step counts the study's window, the similarity too (it counted every epoch)
    assert json.loads((out / "similarity" / "similarity.json").read_text())["window"] == 1
    assert json.loads((out / "overlap" / "overlap.json").read_text())["window"] == 1
    # a resume naming fewer runs analyses its own runs only (the overlap read every run in the
    # folder, the dropped architecture's too; found by a careless-user helper)
    r = study("--resume", "--epochs", "1", "--window", "1", "--arch", "resnet8")
    assert r.exit_code == 0, r.output
    runs = json.loads((out / "overlap" / "overlap.json").read_text())["runs"]
    assert sorted(os.path.basename(os.path.dirname(r["file"])) for r in runs) == [
        "resnet8-run0",
        "resnet8-run0",
    ]  # runs/ and seeds/
    report = json.loads((out / "report" / "report.json").read_text())
    assert len(report["provenance"]["runs"]) == 2

"""Tests of `easyhard study`, the main job: every step's output, the report's sections, resume."""

from __future__ import annotations

import json

from click.testing import CliRunner

from easyhard.cli import main

SMALL = [
    "--dataset",
    "synthetic",
    "--num-samples",
    "240",
    "--num-classes",
    "3",
    "--image-size",
    "8",
    "--batch-size",
    "64",
    "--epochs",
    "2",
    "--device",
    "cpu",
    "--quiet",
]


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
    assert all(
        report["sections"][k]
        for k in (
            "summary",
            "learning-curves",
            "easiness",
            "data-map",
            "examples",
            "overlap",
            "similarity",
            "provenance",
        )
    )
    # a second call without --resume is refused; with it, runs are reused and analyses redone
    again = CliRunner().invoke(main, ["study", *SMALL, "--out", str(out)])
    assert again.exit_code == 1 and "--resume" in again.output
    resumed = CliRunner().invoke(main, ["study", *SMALL, "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output

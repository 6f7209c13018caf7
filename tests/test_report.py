"""Tests of `easyhard report`: every section from real (tiny) runs and an overlap analysis, every
embedded image decodes, the page is self-contained, Markdown beside it, refusals."""

from __future__ import annotations

import base64
import io
import json
import os
import re

import pytest
from click.testing import CliRunner
from PIL import Image

from easyhard.cli import main
from easyhard.report import SECTIONS, TITLES

RUNS = [
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


def run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    assert (
        run(
            ["score", *RUNS, "--arch", "convnet", "--arch", "resnet20", "--out", root / "runs"]
        ).exit_code
        == 0
    )
    assert (
        run(["score", *RUNS, "--arch", "convnet", "--seed", "1", "--out", root / "runs2"]).exit_code
        == 0
    )
    r = run(["analyze", "overlap", root / "runs", root / "runs2", "--out", root / "overlap"])
    assert r.exit_code == 0, r.output
    return root


def embedded_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


def test_report_has_every_section_and_images_decode(study):
    r = run(["report", study / "runs", study / "runs2", study / "overlap", "--out", study / "rep"])
    assert r.exit_code == 0, r.output
    assert "report.html" in r.output
    page = (study / "rep" / "report.html").read_text()
    for key in SECTIONS:
        assert f'<section id="{key}">' in page and TITLES[key] in page
    images = embedded_images(page)
    assert len(images) >= 6  # curves, easiness, data map, examples, overlap x2
    for png in images:
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
    # self-contained: no external resource is loaded
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script" not in page
    md = (study / "rep" / "report.md").read_text()
    for key in SECTIONS:
        assert f"## {TITLES[key]}" in md
    for name in re.findall(r"\(figures/([^)]+)\)", md):
        with Image.open(study / "rep" / "figures" / name) as im:
            im.verify()
    record = json.loads((study / "rep" / "report.json").read_text())
    assert record["format"] == "easyhard.report"
    filled = {k for k, v in record["sections"].items() if v}
    assert filled >= {
        "summary",
        "learning-curves",
        "easiness",
        "data-map",
        "examples",
        "overlap",
        "provenance",
    }
    assert "convnet seed 0" in page and "resnet20 seed 0" in page
    assert "Runs differing in arch" in page and "fingerprint" in page


def test_empty_sections_say_what_fills_them(study):
    r = run(["report", study / "overlap", "--out", study / "rep2"])
    assert r.exit_code == 0, r.output
    page = (study / "rep2" / "report.html").read_text()
    assert "Nothing here: give score runs" in page
    assert "analyze similarity" in page


def test_report_refusals(study, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run(["report", tmp_path / "empty", "--out", tmp_path / "r"])
    assert r.exit_code == 1 and "holds no run" in r.output and "nor is it an easyhard" in r.output
    r = run(["report", study / "runs", "--out", study / "runs" / "rep"])
    assert r.exit_code == 1 and "inside the input" in r.output
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("mine")
    r = run(["report", study / "runs", "--out", tmp_path / "taken", "--force"])
    assert r.exit_code == 1 and (tmp_path / "taken" / "x.txt").read_text() == "mine"
    r = run(
        [
            "score",
            "--dataset",
            "synthetic",
            "--num-samples",
            "50",
            "--num-classes",
            "3",
            "--image-size",
            "8",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--quiet",
            "--arch",
            "convnet",
            "--out",
            tmp_path / "other",
        ]
    )
    assert r.exit_code == 0
    r = run(["report", study / "runs", tmp_path / "other", "--out", tmp_path / "mixed"])
    assert r.exit_code == 1 and "one report covers one dataset" in r.output
    # one run twice (a folder and its file), and a window longer than the runs
    one = study / "runs" / "convnet-run0"
    r = run(["report", one, one / "scores.npz", "--out", tmp_path / "twice"])
    assert r.exit_code == 1 and "is given twice" in r.output
    r = run(["report", study / "runs", "--window", "9", "--out", tmp_path / "w"])
    assert r.exit_code == 1 and "window must be between 1 and the 2 epochs" in r.output
    assert not (tmp_path / "twice").exists() and not (tmp_path / "w").exists()


def test_report_reads_the_runs_it_is_given(study, tmp_path):
    """A merged.npz stands for the runs of its folder (it was an OS error); a statistics file not
    named scores.npz is read itself (the folder's scores.npz was read instead)."""
    r = run(["report", study / "runs" / "merged.npz", "--no-examples", "--json", "--quiet",
             "--out", tmp_path / "m"])  # fmt: skip
    assert r.exit_code == 0, r.output
    runs = json.loads((tmp_path / "m" / "report.json").read_text())["provenance"]["runs"]
    assert sorted(os.path.basename(r["folder"]) for r in runs) == ["convnet-run0", "resnet20-run0"]
    # a merged file of some of a folder's runs stands for those runs only
    one = study / "runs" / "convnet-run0" / "scores.npz"
    assert run(["merge", one, "--out", tmp_path / "convnet.npz"]).exit_code == 0
    r = run(["report", tmp_path / "convnet.npz", "--no-examples", "--quiet", "--out",
             tmp_path / "m1"])  # fmt: skip
    assert r.exit_code == 0, r.output
    runs = json.loads((tmp_path / "m1" / "report.json").read_text())["provenance"]["runs"]
    assert [r["statistics_file"] for r in runs] == [str(one)]
    (tmp_path / "elsewhere").mkdir()
    copy = tmp_path / "elsewhere" / "mine.npz"
    copy.write_bytes((study / "runs2" / "convnet-run0" / "scores.npz").read_bytes())
    r = run(["report", copy, "--no-examples", "--quiet", "--out", tmp_path / "c"])
    assert r.exit_code == 0, r.output
    runs = json.loads((tmp_path / "c" / "report.json").read_text())["provenance"]["runs"]
    assert [r["statistics_file"] for r in runs] == [str(copy)]


def test_report_shows_removal_and_compression_from_one_folder(study, tmp_path):
    """An experiment folder holding both kinds: each one's table and figures are on the page
    with the full-data reference line; every image decodes."""
    scores = study / "runs" / "convnet-run0" / "scores.npz"
    data = [
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
        "1",
        "--device",
        "cpu",
        "--seeds",
        "1",
        "--quiet",
    ]
    exp = tmp_path / "exp"
    r = run(["experiment", "removal", scores, *data, "--fractions", "0.5", "--out", exp])
    assert r.exit_code == 0, r.output
    r = run(
        [
            "experiment",
            "compression",
            scores,
            *data,
            "--keep",
            "0.5",
            "--strategies",
            "hardest,random",
            "--out",
            exp,
        ]
    )
    assert r.exit_code == 0, r.output
    r = run(["report", exp, "--out", tmp_path / "rep"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "removal experiment" in page and "compression experiment" in page
    assert "full data" in page and "Δ vs random" in page
    names = re.findall(r"exp/([a-z-]+\.png)", page)
    assert {"removal.png", "compression.png", "compression-cost.png"} <= set(names)
    for png in embedded_images(page):
        with Image.open(io.BytesIO(png)) as im:
            im.verify()

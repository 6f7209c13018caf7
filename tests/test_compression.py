"""Tests of the compression experiment (easyhard.experiments.compression, `easyhard experiment
compression`): every axis combination trains and is reported; scoring cost from the runs'
metrics; external scores accepted and checked; transfer across architectures; cells shared with
the removal experiment in one folder; kill -9 and the same command give the same results;
refusals."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from helpers import ONE_THREAD_ENV, cli, score_job, synthetic, tiny_config

from easyhard.experiments.compression import (
    COST_FIGURE,
    FIGURE,
    RESULTS,
    ROW_FIELDS,
    SUMMARY,
    TIMING_FIELDS,
    scoring_cost,
    source_labels,
    summarize,
)
from easyhard.experiments.folder import CELLS, MANIFEST
from easyhard.experiments.harness import read_results, without_timing
from easyhard.experiments.removal import RESULTS as REMOVAL_RESULTS
from easyhard.scores import load_scores
from easyhard.train import train_job

DATA = synthetic(160, 4, batch=32, device="cpu", epochs=2)
ENV = ONE_THREAD_ENV


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def scored(tiny_scored):
    """One convnet scoring run of the tiny synthetic data, 2 epochs: its folder."""
    return tiny_scored


def compression(files, out, *extra):
    return cli(["experiment", "compression", *files, *DATA, *extra, "--out", out])


def test_every_axis_with_cost_and_external_scores(tmp_path, scored):
    run = scored / "convnet-run0" / "scores.npz"
    ease = load_scores(str(run)).scores["easiness"]
    np.save(tmp_path / "mine.npy", ease)  # higher = easier, like easiness itself
    np.save(tmp_path / "flipped.npy", -ease)  # higher = harder
    out = tmp_path / "exp"
    r = compression(
        [run],
        out,
        "--window",
        "1,2",
        "--score",
        "easiness,margin",
        "--keep",
        "0.5",
        "--seeds",
        "2",
        "--external",
        f"mine={tmp_path / 'mine.npy'}",
        "--external",
        f"flip:harder={tmp_path / 'flipped.npy'}",
        "--json",
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    rows = read_results(out / RESULTS)
    assert all(set(ROW_FIELDS) <= row.keys() for row in rows)
    # easiness over 2 windows, margin (which has no window: every epoch) once, and 2
    # externals: 5 rankings; per ranking and seed: the full data and 4 strategies at one fraction
    rankings = {row["ranking"] for row in rows}
    assert summary["rankings"] == 5 and len(rankings) == 5
    assert rankings == {
        "easiness (convnet-run0, 1 epoch)",
        "easiness (convnet-run0, 2 epochs)",
        "margin (convnet-run0, 2 epochs)",
        "mine (external)",
        "flip (external)",
    }
    assert len(rows) == 5 * 2 * 5
    combos = {(row["ranking"], row["strategy"], row["keep"], row["seed"]) for row in rows}
    assert len(combos) == len(rows)
    assert {row["strategy"] for row in rows} == {
        "none",
        "hardest",
        "easiest",
        "random",
        "stratified",
    }
    assert {row["kept"] for row in rows if row["strategy"] != "none"} == {80}
    # scoring cost: the scoring run's epochs from its metrics.jsonl; none for random and full
    metrics = [
        json.loads(x) for x in (scored / "convnet-run0" / "metrics.jsonl").read_text().splitlines()
    ]
    first, both = metrics[0]["seconds"], metrics[0]["seconds"] + metrics[1]["seconds"]
    for row in rows:
        if row["strategy"] in ("none", "random"):
            assert row["scoring_seconds"] == 0.0
        elif row["source"] == "external":
            assert row["scoring_seconds"] is None and row["total_seconds"] is None
        else:
            want = first if row["window"] == 1 else both
            assert row["scoring_seconds"] == pytest.approx(want, abs=1e-3)
            assert row["scoring_epochs"] == (1 if row["window"] == 1 else 2)
            assert row["scoring_arch"] == "convnet" and row["scoring_runs"] == 1
            assert row["total_seconds"] == pytest.approx(
                row["scoring_seconds"] + row["training_seconds"], abs=2e-3
            )
            # images processed: the machine-independent cost (160 examples per scoring epoch)
            assert row["scoring_images"] == 160 * row["scoring_epochs"]
            assert row["total_images"] == row["scoring_images"] + row["training_images"]
    for row in rows:  # a subset's training processes its kept examples once per epoch
        assert row["training_images"] == row["kept"] * row["epochs"]

    # an external array is a ranking like any other: easiness given as a file (either way
    # round) selects exactly what easiness over all epochs selects, so the cells are the same
    def cell(ranking_prefix, strategy, seed=0):
        return {
            row["cell"]
            for row in rows
            if row["ranking"].startswith(ranking_prefix)
            and row["strategy"] == strategy
            and row["seed"] == seed
        }

    for strategy in ("hardest", "easiest"):
        assert (
            cell("mine (external)", strategy)
            == cell("flip (external)", strategy)
            == cell("easiness (convnet-run0, 2 epochs)", strategy)
        )
    # random selection and the full data are one cell per seed whatever the ranking
    assert len({row["cell"] for row in rows if row["strategy"] == "random"}) == 2
    assert len({row["cell"] for row in rows if row["strategy"] == "none"}) == 2
    assert summary["cells"] == summary["trained"] == len(os.listdir(out / CELLS))
    # statistics: paired against random at the same kept fraction, intervals over 2 seeds
    stats = summarize(rows)
    hard = next(e for e in stats if e["strategy"] == "hardest")
    assert hard["acc_n"] == 2 and hard["vs_random"]["n"] == 2 and hard["vs_full"]["n"] == 2
    text = (out / SUMMARY).read_text()
    assert "## Rankings" in text and "| 50% | stratified | 80 | 2 |" in text
    assert "## mine (external), budget: epochs" in text
    for name in (FIGURE, COST_FIGURE):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    record = json.loads((out / MANIFEST).read_text())["experiments"]["compression"]
    assert record["finished"] and set(record["sources"]) == {
        "convnet-run0",
        "external:mine",
        "external:flip",
    }


def test_shares_cells_with_the_removal_experiment_and_transfers(tmp_path, scored):
    merged = scored / "merged.npz"
    out = tmp_path / "exp"
    removal = ["experiment", "removal", merged, *DATA, "--fractions", "0.3", "--orders",
               "easiest,random", "--seeds", "1", "--json", "--out", out]  # fmt: skip
    r = cli(removal)
    assert r.exit_code == 0, r.output
    removal_cells = {row["cell"] for row in read_results(out / REMOVAL_RESULTS)}
    # keeping the hardest 70% is removing the easiest 30%; a random 70% the same draw
    r = compression(
        [merged], out, "--keep", "0.7", "--strategies", "hardest,random", "--seeds", "1", "--json"
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["state"] == "joined" and summary["trained"] == 0
    assert {row["cell"] for row in read_results(out / RESULTS)} == removal_cells
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest["experiments"]) == {"removal", "compression"}
    # the removal experiment continues in the same folder, its record kept
    r = cli(removal)
    assert r.exit_code == 0 and json.loads(r.output)["state"] == "continued"
    # transfer: scores of a convnet, subsets trained by another architecture
    r = compression(
        [merged],
        tmp_path / "transfer",
        "--arch",
        "resnet20",
        "--keep",
        "0.5",
        "--strategies",
        "hardest",
        "--seeds",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = read_results(tmp_path / "transfer" / RESULTS)
    assert {(row["arch"], row["scoring_arch"]) for row in rows} == {("resnet20", "convnet")}
    cfg = json.loads((tmp_path / "transfer" / CELLS / rows[0]["cell"] / "config.json").read_text())
    assert "resnet20" in json.dumps(cfg)
    # --force replaces the compression experiment only: the removal one and the cells stay
    r = compression(
        [merged],
        out,
        "--keep",
        "0.7",
        "--strategies",
        "hardest",
        "--seeds",
        "1",
        "--balanced",
        "--force",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert (out / REMOVAL_RESULTS).exists() and removal_cells <= set(os.listdir(out / CELLS))
    assert all(row["balanced"] for row in read_results(out / RESULTS))


def test_external_scores_are_checked(tmp_path, scored):
    merged = scored / "merged.npz"
    labels = load_scores(str(merged)).labels
    cases = {
        "short.npy": (np.zeros(159), "one number per training example (160"),
        "nan.npy": (
            np.r_[np.zeros(159), np.nan],
            "non-finite values (the first at dataset index 159)",
        ),
        "text.npy": (np.array(["a"] * 160), "one number per training example"),
    }
    for name, (arr, message) in cases.items():
        np.save(tmp_path / name, arr)
        r = compression([merged], tmp_path / "out", "--external", f"x={tmp_path / name}")
        assert r.exit_code == 1 and message in r.output, (name, r.output)
    np.savez(tmp_path / "shuffled.npz", scores=np.zeros(160), labels=labels[::-1])
    r = compression([merged], tmp_path / "out", "--external", f"x={tmp_path / 'shuffled.npz'}")
    assert r.exit_code == 1 and "not the dataset's labels in dataset order" in r.output
    np.savez(tmp_path / "index.npz", scores=np.zeros(160), index=np.arange(160)[::-1])
    r = compression([merged], tmp_path / "out", "--external", f"x={tmp_path / 'index.npz'}")
    assert r.exit_code == 1 and "dataset order" in r.output
    (tmp_path / "scores.txt").write_text("0.1\n" * 160)  # numpy would speak of pickles
    r = compression([merged], tmp_path / "out", "--external", f"x={tmp_path / 'scores.txt'}")
    assert r.exit_code == 1 and "not a .npy or .npz array file (write one with numpy.save" in (
        r.output
    )
    assert "pickle" not in r.output
    np.savez(tmp_path / "none.npz", values=np.zeros(160))
    r = compression([merged], tmp_path / "out", "--external", f"x={tmp_path / 'none.npz'}")
    assert r.exit_code == 1 and "holds no array named 'scores'" in r.output
    for bad, message in (
        ("x", "takes NAME=FILE"),
        ("easiness=f.npy", "is taken"),
        ("x:up=f.npy", ":easier or :harder"),
    ):
        r = compression([merged], tmp_path / "out", "--external", bad)
        assert r.exit_code == 1 and message in r.output, (bad, r.output)
    r = compression([], tmp_path / "out")
    assert r.exit_code == 1 and "no ranking" in r.output
    r = compression([tmp_path / "missing.npz"], tmp_path / "out")
    assert r.exit_code == 1 and "does not exist" in r.output
    r = compression([merged], tmp_path / "out", "--keep", "0.5,1")
    assert r.exit_code == 1 and "--keep must lie in (0, 1)" in r.output
    r = compression([merged], tmp_path / "out", "--strategies", "hardest,best")
    assert r.exit_code == 1 and "--strategies must be among" in r.output
    r = compression([merged], tmp_path / "out", "--window", "0")
    assert r.exit_code == 1 and "--window must count at least 1 epoch" in r.output
    assert not (tmp_path / "out").exists()  # refused before anything was written
    # accepted: an .npz in dataset order with the dataset's labels
    np.savez(tmp_path / "good.npz", scores=np.arange(160.0), labels=labels, index=np.arange(160))
    r = compression(
        [],
        tmp_path / "out",
        "--external",
        f"good={tmp_path / 'good.npz'}",
        "--keep",
        "0.5",
        "--strategies",
        "hardest",
        "--seeds",
        "1",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = read_results(tmp_path / "out" / RESULTS)
    assert {row["ranking"] for row in rows} == {"good (external)"}


def test_continue_adds_cells_and_refuses_changes(tmp_path, scored):
    merged = scored / "merged.npz"
    out = tmp_path / "exp"
    base = ["--keep", "0.5", "--strategies", "hardest", "--seeds", "1", "--json"]
    r = compression([merged], out, *base)
    assert r.exit_code == 0 and json.loads(r.output)["trained"] == 2
    r = compression(
        [merged], out, "--keep", "0.5,0.7", "--strategies", "hardest", "--seeds", "2", "--json"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reused"] == 2 and json.loads(r.output)["trained"] == 4
    r = compression([merged], out, *base[:-1], "--lr", "0.1")
    assert r.exit_code == 1 and "lr: 0.2 -> 0.1" in r.output and "--force" in r.output
    # a statistics file of the same label with other content is refused, naming the label
    other = tmp_path / "other"
    cfg = tiny_config(160, 4, seed=5)
    train_job(cfg, str(other), quiet=True)
    r = compression([f"merged={other / 'merged.npz'}"], out, *base)
    assert r.exit_code == 1 and "labelled 'merged' has other content" in r.output
    # ... and added under a label of its own
    r = compression([merged, f"seed5={other / 'merged.npz'}"], out, *base)
    assert r.exit_code == 0, r.output
    assert {row["source"] for row in read_results(out / RESULTS)} == {"merged", "seed5"}


@pytest.mark.slow
def test_kill_then_the_same_command_gives_the_same_results(tmp_path, kill_midway):
    score_job(tmp_path / "scores", 800, 4, 12, batch=50, epochs=1)
    args = [
        "experiment",
        "compression",
        str(tmp_path / "scores" / "merged.npz"),
        *synthetic(800, 4, 12, batch=50, device="cpu", epochs=3),
        "--keep",
        "0.5",
        "--strategies",
        "hardest,stratified",
        "--seeds",
        "1",
    ]
    killed = tmp_path / "killed"
    kill_midway([sys.executable, "-m", "easyhard", *args, "--quiet", "--out", str(killed)], killed)
    again = cli([*args, "--out", killed])
    assert again.exit_code == 0, again.output
    assert "resuming from its checkpoint" in again.output
    assert cli([*args, "--quiet", "--out", tmp_path / "whole"]).exit_code == 0
    a, b = read_results(killed / RESULTS), read_results(tmp_path / "whole" / RESULTS)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]

    assert len(a) == 3 and strip(a) == strip(b)


def test_scoring_cost_and_labels(tmp_path, scored):
    run = scored / "convnet-run0" / "scores.npz"
    merged = scored / "merged.npz"
    metrics = [
        json.loads(x) for x in (scored / "convnet-run0" / "metrics.jsonl").read_text().splitlines()
    ]
    cost = scoring_cost(str(merged), load_scores(str(merged)), None)
    assert cost["runs"] == 1 and cost["epochs"] == 2 and cost["arch"] == "convnet"
    assert cost["seconds"] == pytest.approx(sum(m["seconds"] for m in metrics), abs=1e-3)
    # a copy without its run folder's metrics: the cost is unknown, not 0
    (tmp_path / "lone").mkdir()
    (tmp_path / "lone" / "scores.npz").write_bytes(run.read_bytes())
    lone = str(tmp_path / "lone" / "scores.npz")
    assert scoring_cost(lone, load_scores(lone), 1)["seconds"] is None
    labels = source_labels([str(run), str(merged), f"mine={merged}", str(merged)])
    assert [label for label, _ in labels] == ["convnet-run0", "merged", "mine", "merged#2"]


def test_cut_hardest_drops_the_very_hardest_first(tmp_path, scored):
    """--cut-hardest: the hardest and stratified strategies never keep the hardest fraction;
    random selection is untouched (the baseline stays the removal experiment's)."""
    merged = scored / "merged.npz"
    r = compression(
        [merged],
        tmp_path / "exp",
        "--keep",
        "0.5",
        "--strategies",
        "hardest,stratified,random",
        "--cut-hardest",
        "0.25",
        "--seeds",
        "1",
        "--global",
        "--json",
    )
    assert r.exit_code == 0, r.output
    rows = read_results(tmp_path / "exp" / RESULTS)
    cut = {row["strategy"]: row["cut_hardest"] for row in rows}
    assert cut == {"none": 0.0, "hardest": 0.25, "stratified": 0.25, "random": 0.0}
    # the kept examples avoid the hardest quarter (the subset the cell trained on)
    from easyhard.experiments.compression import Ranking, compression_subset
    from easyhard.scores import hardness

    table = load_scores(str(merged))
    h = hardness("easiness", table.scores["easiness"])
    ranking = Ranking("easiness", "easiness", "merged", None, h, {})
    hardest_quarter = set(np.argsort(-h, kind="stable")[:40].tolist())
    alive = np.ones(160, dtype=bool)
    for strategy in ("hardest", "stratified"):
        idx, info = compression_subset(
            ranking, alive, table.labels, 4, strategy, 0.5, False, 0.25, 0, 0
        )
        assert len(idx) == 80 and not hardest_quarter & set(idx.tolist())
    idx, _ = compression_subset(ranking, alive, table.labels, 4, "hardest", 0.5, False, 0.0, 0, 0)
    assert hardest_quarter <= set(idx.tolist())  # without the cut they are the first kept
    r = compression(
        [merged],
        tmp_path / "exp2",
        "--keep",
        "0.9",
        "--strategies",
        "hardest",
        "--cut-hardest",
        "0.25",
        "--seeds",
        "1",
    )
    assert r.exit_code == 1 and "more than is left" in r.output


def test_a_label_that_would_break_the_tables_is_refused(tmp_path, scored):
    """A scores input's label is a table cell of the summary (and a legend entry): one with a
    | or a line break is refused, naming it, before anything is written."""
    run = scored / "convnet-run0" / "scores.npz"
    for given in (f"a|b={run}", f"x`y={run}"):
        with pytest.raises(ValueError, match="would break the summary's tables"):
            source_labels([given])
    r = compression([f"a|b={run}"], tmp_path / "o")
    assert r.exit_code == 1 and "label 'a|b' holds '|'" in r.output, r.output
    assert not (tmp_path / "o").exists()
    # a label matplotlib would read as (invalid) mathtext is drawn as typed, in both figures
    r = compression([f"$^$={run}"], tmp_path / "m", "--keep", "0.5", "--strategies", "hardest",
                    "--seeds", "1", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "## easiness ($^$, 2 epochs), budget: epochs" in (tmp_path / "m" / SUMMARY).read_text()
    for name in (FIGURE, COST_FIGURE):
        assert (tmp_path / "m" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dynamic_strategies_beside_the_static_ones(tmp_path, scored):
    """Pruning during training as strategies of the experiment: the full data pruned by each
    rule, one cell per (rule, seed) whatever the ranking, no scoring cost, the images each saved
    (from the cell's own metrics), paired against the full data and the random control, in the
    rows, the summary and both figures."""
    run = scored / "convnet-run0" / "scores.npz"
    out = tmp_path / "exp"
    strategies = "random,stratified,prune-easiness,prune-loss,prune-random"
    r = compression([run], out, "--strategies", strategies, "--keep", "0.5", "--seeds", "2",
                    "--epochs", "4", "--prune-window", "1", "--prune-threshold", "0.3",
                    "--window", "1,2", "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = read_results(out / RESULTS)
    full = {row["seed"]: row for row in rows if row["strategy"] == "none"}
    dynamic = [row for row in rows if row["strategy"].startswith("prune-")]
    assert len(dynamic) == 3 * 2 * 2  # rules x seeds x rankings (windows 1 and 2)
    # one training per rule and seed, shared by both rankings, none of them the full data's
    cells = {(row["strategy"], row["seed"]): row["cell"] for row in dynamic}
    assert len(cells) == 6 == len({row["cell"] for row in dynamic})
    assert not set(cells.values()) & {row["cell"] for row in full.values()}
    for row in dynamic:
        assert row["keep"] == 1.0 and row["kept"] == 160 and row["order"] is None
        assert row["scoring_images"] == 0 and row["scoring_seconds"] == 0.0
        assert row["total_images"] == row["training_images"] <= full[row["seed"]]["training_images"]
        metrics = [json.loads(x) for x in (out / CELLS / row["cell"] / "metrics.jsonl")
                   .read_text().splitlines()]  # fmt: skip
        assert row["training_images"] == sum(m["images"] for m in metrics)
        assert row["epochs"] == len(metrics) == 4 and metrics[0]["kept"] == 160
    loss = [row for row in dynamic if row["strategy"] == "prune-loss"]
    assert all(row["training_images"] < 4 * 160 for row in loss), "the loss rule pruned nothing"
    stats = summarize(rows)
    for e in stats:
        if e["strategy"] in ("prune-easiness", "prune-loss"):
            assert e["vs_full"]["n"] == 2 and e["vs_random"]["n"] == 2  # vs prune-random
        if e["strategy"] == "prune-random":
            assert "vs_random" not in e
    by = {(e["ranking"], e["strategy"]): e for e in stats}
    e = by[("easiness (convnet-run0, 1 epoch)", "prune-loss")]
    assert e["images_share"] == pytest.approx(
        np.mean([row["training_images"] for row in loss if row["window"] == 1]) / (4 * 160)
    )
    s = by[("easiness (convnet-run0, 1 epoch)", "stratified")]
    assert s["images_share"] == pytest.approx((160 + 4 * 80) / (4 * 160))  # scoring included
    text = (out / SUMMARY).read_text()
    assert "| dynamic | prune-loss | 160 | 2 |" in text and "images % of full" in text
    assert "Dynamic strategies (prune-*)" in text
    for name in (FIGURE, COST_FIGURE):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--prune", "easiness"], "leave --prune at none"),
        (["--budget", "steps"], "add epochs to --budget"),
        (["--strategies", "prune-often"], "--strategies must be among"),
    ],
)
def test_dynamic_strategies_refused_where_they_cannot_run(tmp_path, scored, extra, message):
    run = scored / "convnet-run0" / "scores.npz"
    args = ["--strategies", "random,prune-easiness", *extra]
    r = compression([run], tmp_path / "exp", *args)
    assert r.exit_code == 1 and message in r.output, r.output
    assert not (tmp_path / "exp").exists()


def test_pruning_settings_belong_to_the_dynamic_trainings_only(tmp_path, scored):
    """The pruning settings (--prune-ratio, ...) act on the dynamic strategies' trainings only:
    the static cells are the same whatever they are; continuing with other pruning settings is
    refused naming them (it would show other trainings than those finished), --no-train too; and
    an experiment without dynamic strategies refuses them as changing nothing."""
    run = scored / "convnet-run0" / "scores.npz"
    out = tmp_path / "exp"
    args = ("--keep", "0.5", "--strategies", "random,prune-loss", "--seeds", "1", "--quiet")
    assert compression([run], out, *args).exit_code == 0
    cells = {row["strategy"]: row["cell"] for row in read_results(out / RESULTS)}
    for extra in ((), ("--no-train",)):
        r = compression([run], out, *args, "--prune-ratio", "0.3", *extra)
        assert r.exit_code == 1 and "prune_ratio: None -> 0.3" in r.output, r.output
    other = tmp_path / "other"
    assert compression([run], other, *args, "--prune-ratio", "0.3").exit_code == 0
    again = {row["strategy"]: row["cell"] for row in read_results(other / RESULTS)}
    assert again["random"] == cells["random"] and again["none"] == cells["none"]
    assert again["prune-loss"] != cells["prune-loss"]
    r = compression([run], tmp_path / "static", "--strategies", "random", "--prune-ratio", "0.3")
    assert r.exit_code == 1 and "--prune-ratio is set, but --prune is none" in r.output, r.output
    assert not (tmp_path / "static").exists()


def test_the_tables_seconds_are_not_rounded_away():
    from easyhard.experiments.compression import _seconds

    assert [_seconds(x) for x in (None, 0.11, 9.94, 10.4, 359.6)] == [
        "n/a",
        "0.1",
        "9.9",
        "10",
        "360",
    ]


def test_an_image_folder_trains_its_cells_on_subsets_of_its_files(tmp_path):
    """Scored and compressed like an in-memory set: every cell trains through the file loader
    on its kept files only, the dynamic ones too; a file unreadable in scoring (skipped with
    --skip-corrupt, never presented) is in no ranking, so no subset holds it (a cell's images
    are exactly its kept examples times the epochs: one dropped file would show). An unreadable
    test image is not counted in the test split's size; a test split changed since is refused
    when continuing (both found by a careless-user helper)."""
    from test_datasets import make_folder

    root = tmp_path / "imgs"
    make_folder(root / "train", classes=("a", "b"), per_class=10, size=(16, 16))
    make_folder(root / "val", classes=("a", "b"), per_class=3, size=(16, 16))
    (root / "train" / "a" / "img9.jpg").write_bytes(b"not an image")
    (root / "val" / "a" / "bad.jpg").write_bytes(b"not an image")  # 6 readable test images
    data = ["--dataset", "imagefolder", "--data-dir", root, "--crop", "16", "--batch-size", "8",
            "--epochs", "3", "--device", "cpu", "--workers", "1", "--skip-corrupt"]  # fmt: skip
    assert cli(["score", *data, "--quiet", "--out", tmp_path / "scored"]).exit_code == 0
    r = cli(["experiment", "compression", tmp_path / "scored" / "merged.npz", *data, "--keep",
             "0.5", "--strategies", "hardest,random,prune-easiness", "--seeds", "1", "--quiet",
             "--out", tmp_path / "exp"])  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = read_results(tmp_path / "exp" / RESULTS)
    assert {row["strategy"] for row in rows} == {"none", "hardest", "random", "prune-easiness"}
    assert "full test split (6 examples)" in (tmp_path / "exp" / SUMMARY).read_text()
    for row in rows:
        kept = 19 if row["strategy"] in ("none", "prune-easiness") else 9  # of 19 readable
        assert row["kept"] == kept, row
    cells = list((tmp_path / "exp" / CELLS).iterdir())
    results = [json.loads((c / "result.json").read_text()) for c in cells]
    assert len(results) == 4
    assert sorted(res["kept"] for res in results) == [9, 9, 19, 19]
    for res in results:
        if res["identity"]["config"].get("prune"):  # pruning skipped some presentations
            assert res["images"] < 19 * 3, res
        else:  # the full data and the static subsets: every kept file, every epoch
            assert res["images"] == res["kept"] * 3, res
    # the scores' fingerprint covers train/ only: a changed val/ is refused when continuing
    # (the cells' accuracies and new ones would be compared as one), before anything is written
    manifest = (tmp_path / "exp" / MANIFEST).read_bytes()
    (root / "val" / "b" / "img2.jpg").unlink()
    again = ["experiment", "compression", tmp_path / "scored" / "merged.npz", *data, "--keep",
             "0.5", "--strategies", "hardest,random,prune-easiness", "--quiet", "--out",
             tmp_path / "exp"]  # fmt: skip
    r = cli([*again, "--seeds", "2"])
    assert r.exit_code == 1 and "another test split" in r.output, r.output
    # --no-train too: its manifest would record the new split over cells of the old one
    assert cli([*again, "--seeds", "1", "--no-train"]).exit_code == 1
    assert (tmp_path / "exp" / MANIFEST).read_bytes() == manifest
    assert cli([*again, "--seeds", "1", "--force"]).exit_code == 0  # starts again, cells too
    # the folder changed since scoring, its options did not: said so (not "give the options")
    (root / "train" / "b" / "img0.jpg").unlink()
    r = cli([*again, "--seeds", "1"])
    assert r.exit_code == 1 and "changed since scoring (20 examples scored, 19 now)" in r.output


def test_a_moved_image_folder_continues_its_experiment(tmp_path):
    """Cells are named by the data's fingerprint, not its path: the same data at another path
    (moved, copied to a node's local disk) continues the experiment and retrains nothing, where
    it was refused as "other settings (data_dir: ...)". An experiment of easyhard <= 0.2.0, whose
    cell names included the path, is continued too: its cells are found by the identity they
    recorded, finished or not, and keep their names."""
    import shutil

    from test_datasets import make_folder

    root, moved = tmp_path / "imgs", tmp_path / "local" / "imgs"
    make_folder(root / "train", classes=("a", "b"), per_class=6, size=(16, 16))
    make_folder(root / "val", classes=("a", "b"), per_class=2, size=(16, 16))

    def data(where):
        return ["--dataset", "imagefolder", "--data-dir", where, "--crop", "16", "--batch-size",
                "8", "--epochs", "1", "--device", "cpu", "--workers", "1"]  # fmt: skip

    assert cli(["score", *data(root), "--quiet", "--out", tmp_path / "scored"]).exit_code == 0

    def experiment(where, keep):
        return cli(["experiment", "compression", tmp_path / "scored" / "merged.npz",
                    *data(where), "--keep", keep, "--strategies", "hardest", "--seeds", "1",
                    "--out", tmp_path / "exp"])  # fmt: skip

    assert experiment(root, "0.5").exit_code == 0
    shutil.move(root, moved)
    r = experiment(moved, "0.5,0.75")
    assert r.exit_code == 0, r.output
    assert "(continued)" in r.output and "2 finished earlier" in r.output, r.output
    assert "1 to train" in r.output

    def rows():  # the cells' names aside
        return [{k: v for k, v in row.items() if k != "cell"}
                for row in without_timing(read_results(tmp_path / "exp" / RESULTS))]  # fmt: skip

    before = rows()
    # an older easyhard's names (a digest with the path in it); one cell half-done
    cells = tmp_path / "exp" / CELLS
    for i, cell in enumerate(sorted(p for p in cells.iterdir() if p.is_dir())):
        cell.rename(cells / f"{i:016x}")
    (cells / f"{0:016x}" / "result.json").unlink()
    r = experiment(moved, "0.5,0.75")
    assert r.exit_code == 0, r.output
    assert "2 finished earlier" in r.output and "1 to train" in r.output, r.output
    assert f"cell {0:016x}" in r.output  # trained where it was begun
    assert sorted(p.name for p in cells.iterdir() if p.is_dir()) == [f"{i:016x}" for i in range(3)]
    assert rows() == before  # the half-done cell trained again gives the same result
    r = experiment(moved, "0.5,0.75")
    assert "3 finished earlier" in r.output and "0 to train" in r.output, r.output

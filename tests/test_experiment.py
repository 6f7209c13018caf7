"""Tests of the removal experiment (easyhard.experiments.removal, `easyhard experiment removal`):
every cell trains and the outputs are complete; a kill -9 and the same command give the same
results; refusals; the step budget; shared cells trained once; the statistics against scipy."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ONE_THREAD_ENV, cli, killed_after_deleting, score_job, synthetic, tiny_config

from easyhard import SampleStats
from easyhard.experiments.folder import CELLS, MANIFEST
from easyhard.experiments.harness import read_results, without_timing
from easyhard.experiments.removal import FIGURE, RESULTS, ROW_FIELDS, SUMMARY, summarize
from easyhard.experiments.stats import t_interval, t_quantile
from easyhard.train import train_job, train_run

DATA = synthetic(160, 4, batch=32, device="cpu")
ENV = ONE_THREAD_ENV


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def scores(tiny_scored):
    """A statistics file of the tiny synthetic dataset (conftest.tiny_scored's merged file)."""
    return tiny_scored / "merged.npz"


def removal(scores, out, *extra):
    return cli(["experiment", "removal", scores, *DATA, "--epochs", "2", *extra, "--out", out])


def test_every_cell_trains_once_and_the_outputs_are_complete(tmp_path, scores):
    out = tmp_path / "exp"
    grid = ["--fractions", "0.5", "--seeds", "2", "--score", "easiness,easiness_plain",
            "--budget", "epochs,steps"]  # fmt: skip
    r = removal(scores, out, *grid, "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    rows = read_results(out / RESULTS)
    # 2 scores x 2 budgets x 2 seeds x (the reference + 3 orders at one fraction)
    assert len(rows) == 32 and all(set(ROW_FIELDS) <= row.keys() for row in rows)
    assert all(0 <= row["test_acc"] <= 1 and row["arch"] == "convnet" for row in rows)
    ref = [row for row in rows if row["order"] == "none"]
    assert len(ref) == 8 and {row["fraction"] for row in ref} == {0.0}
    assert {row["kept"] for row in ref} == {160}
    assert {row["kept"] for row in rows if row["order"] != "none"} == {80}
    # identical cells train once: the reference is one cell per seed (both scores, both
    # budgets), random removal one per (seed, budget) whatever the score
    assert len({row["cell"] for row in ref}) == 2
    rand = [row for row in rows if row["order"] == "random"]
    assert len({row["cell"] for row in rand}) == 4
    cells = {row["cell"] for row in rows}
    assert summary["cells"] == summary["trained"] == len(cells) == 22
    assert sorted(os.listdir(out / CELLS)) == sorted(cells)
    assert not any((out / CELLS / c / "checkpoint.pt").exists() for c in cells)
    # the step budget: every subset gets the full data's steps (2 epochs x 5 batches), over
    # more epochs; the epoch budget: fewer steps for the half
    steps = [row for row in rows if row["budget"] == "steps"]
    assert {row["steps"] for row in steps} == {10}
    assert {row["epochs"] for row in steps if row["kept"] == 80} == {4}
    epochs = [row for row in rows if row["budget"] == "epochs"]
    assert {row["epochs"] for row in epochs} == {2}
    assert {row["steps"] for row in epochs if row["kept"] == 80} == {6}
    for row in rows:  # the engine's own record agrees
        metrics = [
            json.loads(x)
            for x in (out / CELLS / row["cell"] / "metrics.jsonl").read_text().splitlines()
        ]
        assert metrics[-1]["steps"] == row["steps"] and len(metrics) == row["epochs"]
        assert metrics[-1]["test_acc"] == row["test_acc"]
    # statistics, table and figure
    stats = summarize(rows)
    easiest = next(
        e
        for e in stats
        if e["order"] == "easiest" and e["budget"] == "steps" and e["score"] == "easiness"
    )
    assert easiest["acc_n"] == 2 and easiest["vs_random"]["n"] == 2
    text = (out / SUMMARY).read_text()
    assert "## easiness_plain, budget: steps" in text and "| 50% | easiest | 80 | 2 |" in text
    png = (out / FIGURE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    manifest = json.loads((out / MANIFEST).read_text())["experiments"]["removal"]
    assert manifest["finished"] and manifest["cells"]["unique"] == 22
    # the same command again trains nothing and gives the same file, timing included
    before = (out / RESULTS).read_text()
    r = removal(scores, out, *grid)
    assert r.exit_code == 0, r.output
    assert "22 finished earlier (by any experiment in the folder), 0 to train" in r.output
    assert "| 50% | hardest |" in r.output
    assert (out / RESULTS).read_text() == before


@pytest.mark.slow
def test_kill_then_the_same_command_gives_the_same_results(tmp_path, kill_midway):
    score_job(tmp_path / "scores", 800, 4, 12, batch=50, epochs=1)
    args = [
        "experiment",
        "removal",
        str(tmp_path / "scores" / "merged.npz"),
        *synthetic(800, 4, 12, batch=50, device="cpu", epochs=3),
        "--fractions",
        "0.5",
        "--orders",
        "easiest,random",
        "--seeds",
        "1",
    ]
    killed = tmp_path / "killed"
    finished, half = kill_midway(
        [sys.executable, "-m", "easyhard", *args, "--quiet", "--out", str(killed)], killed
    )
    assert not (killed / SUMMARY).exists()
    shutil.copytree(killed, tmp_path / "killed-copy")
    done = {n: (killed / CELLS / n / "result.json").stat().st_mtime_ns for n in finished}
    again = cli([*args, "--out", killed])  # the same command (same single thread) continues
    assert again.exit_code == 0, again.output
    assert "resuming from its checkpoint" in again.output
    assert {n: (killed / CELLS / n / "result.json").stat().st_mtime_ns for n in finished} == done
    assert cli([*args, "--quiet", "--out", tmp_path / "whole"]).exit_code == 0
    a, b = read_results(killed / RESULTS), read_results(tmp_path / "whole" / RESULTS)
    assert len(a) == 3 and without_timing(a) == without_timing(b)
    # --force replaces a killed experiment (its leftovers are all easyhard's), with a new recipe
    r = cli([*args, "--epochs", "1", "--quiet", "--force", "--out", tmp_path / "killed-copy"])
    assert r.exit_code == 0, r.output
    assert {row["epochs"] for row in read_results(tmp_path / "killed-copy" / RESULTS)} == {1}


def test_continue_adds_cells_and_refuses_a_changed_recipe(tmp_path, scores):
    out = tmp_path / "exp"
    base = ["--fractions", "0.5", "--orders", "easiest", "--seeds", "1", "--json"]
    r = removal(scores, out, *base)
    assert r.exit_code == 0 and json.loads(r.output)["trained"] == 2
    r = removal(
        scores, out, "--fractions", "0.25,0.5", "--orders", "easiest", "--seeds", "2", "--json"
    )  # more seeds and fractions: new cells beside the two finished ones
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reused"] == 2 and json.loads(r.output)["trained"] == 4
    assert len(read_results(out / RESULTS)) == 6
    r = cli(["experiment", "removal", scores, *DATA, "--epochs", "3", *base, "--out", out])
    assert r.exit_code == 1
    assert "epochs: 2 -> 3" in r.output and "--force" in r.output and "--out" in r.output
    r = removal(scores, out, *base, "--balanced")
    assert r.exit_code == 1 and "balanced: False -> True" in r.output
    r = removal(scores, out, *base, "--force", "--balanced")  # replaces it
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["state"] == "replaced"
    assert all(row["balanced"] for row in read_results(out / RESULTS))
    # a folder that is not an experiment is refused, with --force too; nothing is deleted
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for extra in ([], ["--force"]):
        r = removal(scores, tmp_path / "mine", *base, *extra)
        assert r.exit_code == 1 and "mine" in r.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (out / CELLS / "notes.txt").write_text("mine")  # a user's file among the cells
    r = removal(scores, out, *base, "--force")
    assert r.exit_code == 1 and (out / CELLS / "notes.txt").exists()


def test_refusals(tmp_path, scores):
    r = removal(scores, tmp_path / "a", "--fractions", "0.5,1")
    assert r.exit_code == 1 and "--fractions must lie in [0, 1)" in r.output
    r = removal(scores, tmp_path / "a", "--orders", "easiest,middle")
    assert r.exit_code == 1 and "--orders must be among" in r.output
    r = removal(scores, tmp_path / "a", "--budget", "time")
    assert r.exit_code == 1 and "--budget must be among epochs, steps" in r.output
    r = removal(scores, tmp_path / "a", "--score", "variability")
    assert r.exit_code == 1 and "--score must be among" in r.output
    r = removal(scores, tmp_path / "a", "--synthetic-seed", "1")
    assert r.exit_code == 1 and "belong to other data" in r.output
    r = removal(scores, scores.parent)
    assert r.exit_code == 1 and "lies inside the output" in r.output
    r = removal(scores, tmp_path / "a", "--window", "3")
    assert r.exit_code == 1 and "window" in r.output
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_score_run_on_a_subset_with_a_step_budget(tmp_path):
    cfg = tiny_config(160, 4)
    subset = np.arange(0, 160, 3)  # 54 examples: 2 batches per epoch
    run = train_run(
        cfg, "convnet", 0, str(tmp_path), subset=subset, max_steps=7, evaluate_every_epoch=False
    )
    metrics = [json.loads(x) for x in open(os.path.join(run, "metrics.jsonl"))]
    assert [m["steps"] for m in metrics] == [2, 4, 6, 7]
    assert [m["test_acc"] is None for m in metrics] == [True, True, True, False]
    pres = SampleStats.load(os.path.join(run, "scores.npz")).totals()["presentations"]
    # three whole epochs over the 54 and one batch of 32: 4 epochs, the last cut at step 7
    assert sorted(set(pres[subset].tolist())) == [3, 4] and (pres[subset] == 4).sum() == 32
    assert pres[np.setdiff1d(np.arange(160), subset)].sum() == 0
    with pytest.raises(ValueError, match="another configuration"):
        train_run(cfg, "convnet", 0, str(tmp_path), subset=subset[1:], max_steps=7, resume=True)
    with pytest.raises(ValueError, match="more than once"):
        train_run(cfg, "convnet", 0, str(tmp_path / "b"), subset=[1, 1, 2])


def test_t_statistics_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (*range(1, 31), 57, 100, 1000):
        for p in (0.9, 0.975, 0.995):
            assert math.isclose(t_quantile(p, df), stats.t.ppf(p, df), rel_tol=1e-9), (p, df)
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        v = rng.normal(0.01, 0.02, n)
        got = t_interval(v)
        lo, hi = stats.t.interval(0.95, n - 1, loc=v.mean(), scale=stats.sem(v))
        assert got["n"] == n and math.isclose(got["low"], lo, rel_tol=1e-9)
        assert math.isclose(got["high"], hi, rel_tol=1e-9)
        assert math.isclose(got["std"], v.std(ddof=1))
    assert t_interval([0.5])["low"] is None and t_interval([])["mean"] is None
    # paired differences: same seed, same fraction, against random
    rows = [
        {
            "score": "easiness",
            "budget": "epochs",
            "fraction": f,
            "order": o,
            "seed": s,
            "test_acc": acc,
            "kept": 1,
        }
        for (f, o, s, acc) in [
            (0.0, "none", 0, 0.90),
            (0.0, "none", 1, 0.92),
            (0.0, "none", 2, 0.91),
            (0.3, "random", 0, 0.88),
            (0.3, "random", 1, 0.89),
            (0.3, "random", 2, 0.87),
            (0.3, "easiest", 0, 0.89),
            (0.3, "easiest", 1, 0.91),
            (0.3, "easiest", 2, 0.885),
        ]
    ]
    e = next(x for x in summarize(rows) if x["order"] == "easiest")
    d = np.array([0.01, 0.02, 0.015])
    lo, hi = stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d))
    assert e["vs_random"]["n"] == 3 and math.isclose(e["vs_random"]["mean"], d.mean())
    assert math.isclose(e["vs_random"]["low"], lo) and math.isclose(e["vs_random"]["high"], hi)
    full = np.array([0.89 - 0.90, 0.91 - 0.92, 0.885 - 0.91])
    assert math.isclose(e["vs_full"]["mean"], full.mean())


def test_lists_from_a_config_file(tmp_path, scores):
    (tmp_path / "exp.toml").write_text(
        'fractions = [0.5]\norders = ["random"]\nseeds = 1\nbudget = ["steps"]\n'
    )
    r = removal(scores, tmp_path / "out", "--config", tmp_path / "exp.toml", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)["rows"]
    assert [(row["order"], row["fraction"], row["budget"]) for row in rows] == [
        ("none", 0.0, "steps"),
        ("random", 0.5, "steps"),
    ]
    assert 'fractions = "0.5"' in (tmp_path / "out" / "removal-config.toml").read_text()


@pytest.mark.slow
def test_two_workers_share_one_folder(tmp_path):
    """The same command started twice on one folder: each cell is trained by one of them (the
    other skips it while it is locked and reads its result), and the results are those of one
    worker alone."""
    cfg = tiny_config(400, 4, 10, batch=50, epochs=1)
    train_job(cfg, str(tmp_path / "scores"), quiet=True)
    args = [
        sys.executable,
        "-m",
        "easyhard",
        "experiment",
        "removal",
        str(tmp_path / "scores" / "merged.npz"),
        *synthetic(400, 4, 10, batch=50, device="cpu", epochs=2),
        "--fractions",
        "0.25,0.5",
        "--seeds",
        "1",
    ]
    out = tmp_path / "shared"
    workers = [
        subprocess.Popen(
            [*args, "--out", str(out)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    logs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), logs
    rows = read_results(out / RESULTS)
    cells = {row["cell"] for row in rows}
    assert len(cells) == 7 and sorted(
        n for n in os.listdir(out / CELLS) if not n.endswith(".lock")
    ) == sorted(cells)
    trained = [
        line for log in logs for line in log.splitlines() if line.startswith("    test acc ")
    ]
    assert len(trained) == 7, logs  # every cell trained once, by one worker or the other
    for c in cells:  # one training each: one line per epoch in its metrics
        metrics = (out / CELLS / c / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == next(r["epochs"] for r in rows if r["cell"] == c)
    alone = subprocess.run([*args, "--quiet", "--out", str(tmp_path / "alone")], env=ENV)
    assert alone.returncode == 0
    assert without_timing(rows) == without_timing(read_results(tmp_path / "alone" / RESULTS))
    # the lock files are the experiment's own: --force replaces the folder
    r = cli([*args[3:], "--force", "--quiet", "--seeds", "1", "--out", out])
    assert r.exit_code == 0, r.output


def test_no_train_reports_what_has_finished(tmp_path, scores):
    out = tmp_path / "exp"
    r = removal(
        scores, out, "--fractions", "0.5", "--orders", "easiest", "--seeds", "1", "--no-train"
    )
    assert r.exit_code == 1 and "holds no experiment yet" in r.output and not out.exists()
    r = removal(scores, out, "--fractions", "0.5", "--orders", "easiest", "--seeds", "1")
    assert r.exit_code == 0, r.output
    cells_before = sorted(os.listdir(out / CELLS))
    # more seeds, --no-train: nothing trains; the tables hold the finished seed, marked partial
    r = removal(
        scores,
        out,
        "--fractions",
        "0.5",
        "--orders",
        "easiest",
        "--seeds",
        "2",
        "--no-train",
        "--json",
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["trained"] == 0 and sorted(os.listdir(out / CELLS)) == cells_before
    assert summary["reused"] == 2  # it said 4: every cell, finished or not
    # said as such (it said "4 finished earlier, 0 to train"; found by a careless-user helper)
    r = removal(scores, out, "--fractions", "0.5", "--orders", "easiest", "--seeds", "2",
                "--no-train")  # fmt: skip
    assert "2 finished earlier (by any experiment in the folder), 2 unfinished, not trained" in (
        r.output
    ), r.output
    assert {row["seed"] for row in read_results(out / RESULTS)} == {0}
    assert "**Partial**: 2 of 4 distinct trainings" in (out / SUMMARY).read_text()
    manifest = json.loads((out / MANIFEST).read_text())["experiments"]["removal"]
    assert not manifest["finished"] and manifest["cells"]["finished"] == 2
    r = removal(scores, out, "--fractions", "0.5", "--seeds", "1", "--no-train", "--force")
    assert r.exit_code == 1 and "does not go with --force" in r.output


def test_another_workers_first_manifest_write_is_left_alone(tmp_path):
    """A folder holding only a fresh temporary file of experiment.json is another worker writing
    its first manifest: the folder counts as new and the file stays (deleting it made that
    worker's rename fail, seen when two workers started together); a stale one goes."""
    import time

    from easyhard.experiments.folder import prepare_output

    out = tmp_path / "shared"
    out.mkdir()
    fresh = out / ".experiment.json.00aioe9t.tmp"
    fresh.write_text("{")
    assert prepare_output(str(out), {}, False) == "new" and fresh.exists()
    old = time.time() - 24 * 3600
    os.utime(fresh, (old, old))
    assert prepare_output(str(out), {}, False) == "new" and not fresh.exists()


@pytest.mark.parametrize("killed_at", ["metrics.jsonl", "config.json", "results.jsonl"])
def test_a_force_killed_while_deleting_is_finished_by_the_next(tmp_path, scores, monkeypatch,
                                                               killed_at):  # fmt: skip
    """--force deletes an earlier experiment file by file: killed after any of those deletions
    (a cell's files, its marker config.json, the outputs), what is left is still recognised as
    an experiment's (the markers go last) and the next --force replaces it."""
    out = tmp_path / "exp"
    args = ("--fractions", "0.5", "--orders", "random", "--seeds", "1", "--quiet")
    assert removal(scores, out, *args).exit_code == 0
    with killed_after_deleting(monkeypatch, killed_at):
        removal(scores, out, *args, "--force")
    r = removal(scores, out, *args, "--force")
    assert r.exit_code == 0, r.output
    assert len(read_results(out / RESULTS)) == 2


def test_subsets_that_lose_a_class_are_said(tmp_path, scores, caplog):
    """A subset so small that a class's share rounds to nothing trains without that class: said
    once, even with --quiet, as `select` says it (a careless-user helper found it silent); a
    grid whose subsets all hold every class says nothing."""
    from easyhard.experiments.harness import emptied_classes

    alive = np.ones(6, bool)
    labels = np.array([0, 0, 1, 1, 2, 2])

    def cell(kept):
        return SimpleNamespace(id=str(kept), selection={"kept_per_class": kept, "kept": sum(kept)})

    cells = {c.id: c for c in (cell([2, 2, 2]), cell([1, 1, 0]), cell([0, 1, 1]))}
    said = emptied_classes(cells, labels, alive)
    assert said.startswith("2 of the 3 trainings' subsets keep no example of a class")
    assert "class 2 in a subset of 2 examples" in said
    assert emptied_classes({"x": cells["[2, 2, 2]"]}, labels, alive) is None
    alive[4:] = False  # class 2 takes no part (never presented): not lost by any subset
    assert emptied_classes({"a": cells["[1, 1, 0]"]}, labels, alive) is None
    caplog.set_level("WARNING", logger="easyhard.experiments")
    r = removal(scores, tmp_path / "tiny", "--fractions", "0.99", "--orders", "easiest",
                "--balanced", "--quiet")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "keep no example of a class" in caplog.text

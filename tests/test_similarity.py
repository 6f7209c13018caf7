"""`easyhard analyze similarity` (issue 12): the metrics against hand-computed values, the controls
(class-matched random sets, subsamples without replacement, never-presented examples left out),
constructed data whose answer is known (tight clusters of easy examples; scores independent of
the images), feature extraction from a checkpoint, the default feature model, the outputs, and
every refused input with one clear sentence."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from helpers import cli, synthetic, tiny_config

from easyhard.config import ConfigError, SimilarityConfig
from easyhard.datasets import ArrayDataset
from easyhard.ranks import rankdata, spearman
from easyhard.scores import ScoreTable
from easyhard.similarity import (
    SELF_SCORED_NOTE,
    _feature_caption,
    analyze,
    build_plan,
    class_matched_random,
    easiest_first,
    extract_features,
    find_feature_model,
    knn_distance,
    load_feature_model,
    score_source,
    spread,
    summarize,
)

DATA = synthetic(240, 3)
FAST = [
    "--device",
    "cpu",
    "--sample-size",
    "10",
    "--repeats",
    "10",
    "--pool-size",
    "40",
    "--grid-examples",
    "2",
]


run = cli


def assert_one_sentence(result, *needles):
    out = result.output
    assert result.exit_code == 1, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out
    for needle in needles:
        assert needle in lines[0], (needle, out)


# ---------------------------------------------------------------------------- metrics
def test_spread_by_hand():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])
    pairwise, centroid = spread(x)
    assert float(pairwise) == pytest.approx((5 + 4 + 3) / 3)  # pairs i != j only
    cx = torch.tensor([1.0, 8 / 3])
    assert float(centroid) == pytest.approx(float((x - cx).norm(dim=1).mean()))
    assert float(centroid) == pytest.approx((math.sqrt(73) + math.sqrt(52) + 5) / 9)
    # two points: the pairwise mean is their distance (no self-pair halves it)
    assert float(spread(torch.tensor([[0.0], [2.0]]))[0]) == pytest.approx(2.0)


def test_identical_vectors_have_zero_spread():
    x = torch.full((50, 784), 0.37) + torch.randn(784)
    pairwise, centroid = spread(x)
    assert float(pairwise) == pytest.approx(0.0, abs=1e-9)
    assert float(centroid) == pytest.approx(0.0, abs=1e-9)


def test_spread_is_batched_and_translation_invariant():
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    p, c = spread(x)
    for i in range(4):
        d = torch.cdist(x[i], x[i])
        assert float(p[i]) == pytest.approx(float(d.sum() / (7 * 6)))
        assert float(c[i]) == pytest.approx(float((x[i] - x[i].mean(0)).norm(dim=1).mean()))
    p2, c2 = spread(x + 1000.0)
    assert torch.allclose(p, p2) and torch.allclose(c, c2)
    with pytest.raises(ValueError):
        spread(torch.zeros(1, 3))


def test_knn_distance_by_hand():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_distance(x, 1).tolist() == pytest.approx([1, 1, 2, 4])
    assert knn_distance(x, 2).tolist() == pytest.approx([2, 1.5, 2.5, 5])
    assert knn_distance(x, 2, chunk=1).tolist() == pytest.approx([2, 1.5, 2.5, 5])
    assert knn_distance(x, 10).tolist() == pytest.approx([11 / 3, 3, 3, 17 / 3])  # k capped
    # an exact duplicate is a neighbour at distance 0; an example is never its own neighbour
    assert knn_distance(torch.tensor([[5.0], [5.0], [9.0]]), 1).tolist() == pytest.approx([0, 0, 4])
    assert math.isnan(float(knn_distance(torch.zeros(1, 3), 2)[0]))


def test_rank_correlation():
    assert rankdata(np.array([10, 20, 20, 30])).tolist() == [1, 2.5, 2.5, 4]
    assert spearman(np.arange(5), np.arange(5)[::-1]) == pytest.approx(-1)
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(0.8)
    assert math.isnan(spearman(np.ones(5), np.arange(5)))  # a constant side
    assert spearman(np.array([1, 2, np.nan, 3]), np.array([3, 2, 9, 1])) == pytest.approx(-1)
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200).astype(float), rng.normal(size=200)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic)


def test_summarize():
    s = summarize(np.r_[np.arange(1, 101), np.nan])
    assert s["mean"] == pytest.approx(50.5) and s["n"] == 100
    assert s["low"] == pytest.approx(np.percentile(np.arange(1, 101), 2.5))
    assert s["high"] == pytest.approx(np.percentile(np.arange(1, 101), 97.5))
    assert summarize([np.nan])["mean"] is None


# ---------------------------------------------------------------------------- sets and draws
def test_ties_are_ordered_at_random_not_by_index():
    ease = np.zeros(100)
    a = easiest_first(ease, np.arange(100), np.random.default_rng(0))
    b = easiest_first(ease, np.arange(100), np.random.default_rng(1))
    assert sorted(a) == list(range(100))
    assert not np.array_equal(a, np.arange(100)) and not np.array_equal(a, b)
    ease = np.array([0.1, 0.9, 0.5])
    assert easiest_first(ease, np.arange(3), np.random.default_rng(0)).tolist() == [1, 2, 0]


def test_class_matched_random():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 50)
    pools = {c: np.flatnonzero(labels == c) for c in range(3)}
    want = np.array([0, 0, 2, 1, 2, 2, 0])
    got = class_matched_random(rng, want, pools)
    assert labels[got].tolist() == want.tolist()  # the same class at every position
    assert len(set(got.tolist())) == len(got)  # without replacement


def plan_inputs(n=600, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    ease = rng.random(n)
    valid = np.ones(n, bool)
    valid[rng.choice(n, 30, replace=False)] = False
    return ease, labels, valid


def test_plan_sets_draws_and_controls():
    ease, labels, valid = plan_inputs()
    plan = build_plan(
        ease,
        labels,
        valid,
        3,
        fraction=0.1,
        sample_size=8,
        repeats=12,
        pool_size=60,
        max_classes=10,
        seed=3,
    )
    assert plan.classes == [0, 1, 2]
    for c in plan.classes:  # the easiest / hardest 10% of the class's valid examples
        members = np.flatnonzero(valid & (labels == c))
        k = round(0.1 * len(members))
        assert sorted(plan.easy[c]) == sorted(members[np.argsort(-ease[members])][:k])
        assert sorted(plan.hard[c]) == sorted(members[np.argsort(ease[members])][:k])
        assert set(plan.pools[c]) <= set(members) and len(plan.pools[c]) == 60
    k = round(0.1 * valid.sum())
    assert sorted(plan.easy["all"]) == sorted(np.flatnonzero(valid)[np.argsort(-ease[valid])][:k])
    keys = {(c.key, c.which) for c in plan.comparisons}
    assert keys == {(k, w) for k in ["all", 0, 1, 2] for w in ("easy", "hard")}
    for comp in plan.comparisons:
        the_set = plan.easy[comp.key] if comp.which == "easy" else plan.hard[comp.key]
        assert comp.subsamples.shape == (12, 8) and comp.randoms.shape == (12, 8)
        for sub, rand in zip(comp.subsamples, comp.randoms):
            assert len(set(sub.tolist())) == len(sub)  # without replacement: no self-pairs
            assert len(set(rand.tolist())) == len(rand)
            assert set(sub.tolist()) <= set(the_set.tolist())
            assert labels[rand].tolist() == labels[sub].tolist()  # matched by class
            assert valid[sub].all() and valid[rand].all()  # never-presented: never drawn
        assert len({tuple(s) for s in comp.subsamples}) > 1  # subsamples differ
    assert valid[plan.needed()].all()


def test_plan_budget_and_small_sets():
    ease, labels, valid = plan_inputs(n=2000, classes=40)
    plan = build_plan(
        ease,
        labels,
        valid,
        40,
        fraction=0.05,
        sample_size=20,
        repeats=5,
        pool_size=20,
        max_classes=7,
        seed=0,
    )
    assert len(plan.classes) == 7  # per-class statistics for at most max_classes
    assert plan.skipped  # classes of ~50 have easy sets of ~2: no subsamples of 2 from half
    for comp in plan.comparisons:  # at most half of each set per subsample
        assert comp.subsamples.shape[1] <= comp.set_size // 2
    with pytest.raises(ValueError, match="pool_size"):
        build_plan(
            ease,
            labels,
            valid,
            40,
            fraction=0.1,
            sample_size=30,
            repeats=5,
            pool_size=20,
            max_classes=7,
        )
    with pytest.raises(ConfigError, match="pool_size"):
        SimilarityConfig(sample_size=30, pool_size=20).validate()


# ---------------------------------------------------------------------------- known answers
def constructed(n_per_class=200, classes=3, size=8, tight=0.15, seed=0):
    """Images per class around a prototype: the first `tight` fraction of each class are near
    copies of it (noise 2), the rest diverse (noise 60). Returns (dataset, is_tight)."""
    rng = np.random.default_rng(seed)
    images, labels, tight_flags = [], [], []
    for c in range(classes):
        proto = rng.integers(60, 196, (size, size, 1))
        n_tight = int(tight * n_per_class)
        for i in range(n_per_class):
            noise = 2 if i < n_tight else 60
            images.append(np.clip(proto + rng.normal(0, noise, proto.shape), 0, 255))
            labels.append(c)
            tight_flags.append(i < n_tight)
    order = rng.permutation(len(labels))
    images = np.array(images, dtype=np.uint8)[order]
    ds = ArrayDataset(
        "synthetic",
        "train",
        images,
        np.array(labels)[order],
        [f"class {c}" for c in range(classes)],
    )
    return ds, np.array(tight_flags)[order]


def table_for(ds, ease, never=None):
    never = np.zeros(len(ds), bool) if never is None else never
    ease = np.where(never, np.nan, ease)
    return ScoreTable(
        {"easiness": ease, "never_presented": never.astype(float)},
        ds.labels,
        ds.num_classes,
        ds.fingerprint,
        None,
        {},
    )


def test_tight_easy_examples_look_alike():
    ds, tight = constructed()
    rng = np.random.default_rng(1)
    ease = np.where(tight, 0.9, 0.1) + rng.random(len(ds)) * 0.05  # the near-copies are easy
    res = analyze(
        table_for(ds, ease), ds, fraction=0.1, sample_size=10, repeats=30, pool_size=150, seed=0
    )
    easy = res.record["pixel"]["easy_over_random"]
    assert easy["high"] < 1  # alike: the interval excludes 1 (overall: three prototypes)
    for pc in res.record["per_class"]:
        assert pc["pixel"]["easy_over_random"]["high"] < 0.2  # near-copies of one prototype
        assert pc["pixel"]["centroid"]["easy_over_random"]["high"] < 1
    assert res.record["features"] is None and "no feature model" in res.record["note"]
    # the near-copies sit in dense regions: sparsity falls with easiness
    assert res.record["density"]["pixel"]["mean_per_class"] < -0.3


def test_scores_independent_of_images_give_ratios_near_one():
    ds, _ = constructed(tight=0.0)
    ease = np.random.default_rng(2).random(len(ds))
    res = analyze(
        table_for(ds, ease), ds, fraction=0.2, sample_size=15, repeats=40, pool_size=150, seed=0
    )
    for key in ("easy_over_random", "hard_over_random"):
        s = res.record["pixel"][key]
        assert s["low"] < 1 < s["high"], (key, s)
        assert abs(s["mean"] - 1) < 0.1


def test_random_control_is_class_matched():
    # classes of very different spread: easy = all of the tight class. An unmatched random set
    # would mix in the diverse classes and call the easy set "alike"; the matched one does not.
    rng = np.random.default_rng(0)
    proto = rng.integers(60, 196, (1, 8, 8, 1))
    noise = np.where(np.arange(300)[:, None, None, None] < 100, 5, 80)
    images = np.clip(proto + rng.normal(0, 1, (300, 8, 8, 1)) * noise, 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(3), 100)
    ds = ArrayDataset("synthetic", "train", images, labels, ["tight", "wide", "wider"])
    ease = np.where(labels == 0, 1.0, 0.0) + rng.random(300) * 0.01
    res = analyze(
        table_for(ds, ease), ds, fraction=0.3, sample_size=20, repeats=30, pool_size=100, seed=0
    )
    s = res.record["pixel"]["easy_over_random"]  # overall easy set = class "tight" only
    assert s["low"] < 1 < s["high"], s


def test_never_presented_examples_are_left_out_and_counted():
    ds, tight = constructed()
    never = np.zeros(len(ds), bool)
    never[::17] = True
    ease = np.where(tight, 0.9, 0.1)
    res = analyze(
        table_for(ds, ease, never),
        ds,
        fraction=0.1,
        sample_size=10,
        repeats=10,
        pool_size=100,
        seed=0,
    )
    assert res.record["excluded"] == int(never.sum())
    assert res.record["examples_used"] == len(ds) - int(never.sum())
    shown = np.concatenate([g[w]["index"] for g in res.grid.values() for w in ("easy", "hard")])
    assert not never[shown].any()


# ---------------------------------------------------------------------------- feature models
def save_checkpoint(model, path, fingerprint, arch="convnet"):
    torch.save(
        {
            "model": model.state_dict(),
            "arch": arch,
            "epoch": 1,
            "config": {"crop": 224},
            "identity": {"dataset_fingerprint": fingerprint},
        },
        path,
    )
    return str(path)


def test_features_from_checkpoint_equal_the_model_called_directly(tmp_path):
    from easyhard.loaders import channel_stats
    from easyhard.models import build_model

    ds, _ = constructed(n_per_class=40)
    torch.manual_seed(0)
    model = build_model("convnet", 3, 1, 8)
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
    ckpt = save_checkpoint(model, tmp_path / "checkpoint.pt", ds.fingerprint)
    loaded, info = load_feature_model(ckpt, ds, "cpu")
    assert info["arch"] == "convnet" and not loaded.training
    idx = np.random.default_rng(0).permutation(len(ds))[:50]  # any order comes back in order
    feats, preds = extract_features(loaded, ds, idx, "cpu", batch_size=16)
    mean, std = channel_stats(ds.images)
    x = torch.from_numpy(ds.images[idx]).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean / 255).float().view(1, -1, 1, 1)) / torch.tensor(
        np.maximum(std, 1e-3) / 255
    ).float().view(1, -1, 1, 1)
    model.eval()
    with torch.no_grad():
        want = model[:-1](x)
        logits = model(x)
    assert feats.shape == (50, 128)
    assert torch.allclose(feats, want, atol=1e-5)
    assert preds.tolist() == logits.argmax(1).tolist()


def test_feature_model_of_other_data_is_refused(tmp_path):
    from easyhard.models import build_model

    ds, _ = constructed(n_per_class=20)
    ckpt = save_checkpoint(build_model("convnet", 3, 1, 8), tmp_path / "c.pt", "0123456789abcdef")
    with pytest.raises(ValueError, match="other data") as e:
        load_feature_model(ckpt, ds)
    assert "0123456789abcdef" in str(e.value) and ds.fingerprint in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read as a checkpoint"):
        load_feature_model(str(bad), ds)


# ---------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real score output folder: two convnet runs on small synthetic data (1 epoch each)."""
    from easyhard.train import train_job

    out = tmp_path_factory.mktemp("score") / "runs"
    cfg = tiny_config(240, 3, batch=64, runs=2, epochs=1)
    train_job(cfg, str(out), quiet=True)
    return out


def test_default_feature_model_is_another_run(runs):
    from easyhard.scores import load_scores

    run0 = str(runs / "convnet-run0" / "scores.npz")
    table = load_scores(run0)
    fs = find_feature_model(None, score_source(run0, table.metadata), table.fingerprint)
    assert fs.run.endswith("convnet-run1") and not fs.self_scored
    merged = str(runs / "merged.npz")  # both runs made it: the only models are scoring runs
    table = load_scores(merged)
    fs = find_feature_model(None, score_source(merged, table.metadata), table.fingerprint)
    assert fs.self_scored and fs.run.endswith("convnet-run0")
    assert SELF_SCORED_NOTE in fs.describe()


def test_command_writes_table_json_and_figures(runs, tmp_path):
    out = tmp_path / "sim"
    r = run(["analyze", "similarity", runs / "convnet-run0", *DATA, *FAST, "--out", out])
    assert r.exit_code == 0, r.output
    assert "easy/random" in r.output and "convnet-run1" in r.output and "NOTE" not in r.output
    rec = json.loads((out / "similarity.json").read_text())
    for space in ("pixel", "features"):
        for key in ("easy_over_random", "hard_over_random"):
            assert set(rec[space][key]) >= {"mean", "low", "high"}
            assert rec[space][key]["low"] <= rec[space][key]["mean"] <= rec[space][key]["high"]
    assert len(rec["per_class"]) == 3 and rec["per_class"][0]["features"] is not None
    assert rec["density"]["features"]["per_class"] and rec["density"]["k"] == 10
    assert rec["feature_model"]["run"].endswith("convnet-run1")
    assert rec["feature_model"]["self_scored"] is False and rec["excluded"] == 0
    assert rec["score_file"].endswith("scores.npz")
    for name in ("ratios.png", "grid.png", "mean_images.png", "density.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert set(rec["figures"]) == {"ratios.png", "grid.png", "mean_images.png", "density.png"}
    # the same command again: refused; with --force: replaced; a user's file: never deleted
    r = run(["analyze", "similarity", runs / "convnet-run0", *DATA, *FAST, "--out", out])
    assert_one_sentence(r, "not empty", "--force")
    r = run(
        [
            "analyze",
            "similarity",
            runs / "convnet-run0",
            *DATA,
            *FAST,
            "--out",
            out,
            "--force",
            "--quiet",
        ]
    )
    assert r.exit_code == 0 and r.output == "", r.output
    (out / "notes.txt").write_text("mine")
    r = run(["analyze", "similarity", runs / "convnet-run0", *DATA, *FAST, "--out", out, "--force"])
    assert_one_sentence(r, "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"


def test_self_scored_features_are_said_everywhere(runs, tmp_path):
    out = tmp_path / "sim"
    r = run(["analyze", "similarity", runs, *DATA, *FAST, "--grid-examples", "2", "--out", out])
    assert r.exit_code == 0, r.output
    assert "NOTE" in r.output and 'confidence defined "easy"' in r.output
    # both runs fed the merged scores: not "no other run in the score folder" (a careless-user
    # helper read that as false)
    assert "one of the runs that produced these scores (every run in the score folder" in r.output
    rec = json.loads((out / "similarity.json").read_text())
    assert rec["feature_model"]["self_scored"] is True and rec["note"] == SELF_SCORED_NOTE
    assert rec["score_file"].endswith("merged.npz")
    assert 'confidence defined "easy"' in _feature_caption(rec)  # every figure's title
    # the density's correlation names the score it ranks by (it said "easiness" for el2n; found
    # by a careless-user helper)
    r = run(["analyze", "similarity", runs / "convnet-run0" / "scores.npz", *DATA, *FAST,
             "--score", "el2n", "--window", "1", "--grid-examples", "2", "--out",
             tmp_path / "el2n"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "Spearman with el2n (oriented: higher is easier)" in r.output, r.output
    rec = json.loads((tmp_path / "el2n" / "similarity.json").read_text())
    assert "with el2n oriented so that higher is easier" in rec["density"]["correlation"]
    assert rec["window"] == 1


def test_json_output(runs, tmp_path):
    r = run(
        [
            "analyze",
            "similarity",
            runs / "convnet-run0" / "scores.npz",
            *DATA,
            *FAST,
            "--features",
            runs / "convnet-run0",
            "--json",
            "--out",
            tmp_path / "sim",
        ]
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["feature_model"]["self_scored"] is True  # given, but it made the scores
    assert rec["format"] == "easyhard.similarity"
    assert set(rec["cross_class_pairs"]) == {"easy", "hard"}
    assert all(0 <= v <= 1 for v in rec["cross_class_pairs"].values())


def test_cross_class_pairs_counts_pairs_of_different_classes():
    from easyhard.similarity import cross_class_pairs

    assert cross_class_pairs(np.array([0, 0, 1, 1])) == pytest.approx(8 / 12)
    assert cross_class_pairs(np.array([3, 3, 3])) == 0.0
    assert cross_class_pairs(np.array([0, 1, 2])) == 1.0
    assert cross_class_pairs(np.array([5])) == 0.0


def test_refused_inputs_give_one_sentence(runs, tmp_path):
    base = ["analyze", "similarity"]
    r = run([*base, tmp_path / "nothing.npz", *DATA, "--out", tmp_path / "o"])
    assert_one_sentence(r, "nothing.npz", "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([*base, empty, *DATA, "--out", tmp_path / "o"])
    assert_one_sentence(r, "neither scores.npz")
    r = run([*base, runs / "convnet-run0", *DATA, "--features", empty, "--out", tmp_path / "o"])
    assert_one_sentence(r, "holds no checkpoint.pt", "--features")
    r = run(
        [
            *base,
            runs / "convnet-run0",
            *DATA,
            "--features",
            tmp_path / "gone",
            "--out",
            tmp_path / "o",
        ]
    )
    assert_one_sentence(r, "does not exist", "--features")
    from easyhard.models import build_model

    other = save_checkpoint(
        build_model("convnet", 3, 3, 8), tmp_path / "other.pt", "fedcba9876543210"
    )
    r = run([*base, runs / "convnet-run0", *DATA, "--features", other, "--out", tmp_path / "o"])
    assert_one_sentence(r, "fedcba9876543210", "other data")
    r = run(
        [
            *base,
            runs / "convnet-run0",
            *synthetic(240, 3, synthetic_seed=1),
            "--out",
            tmp_path / "o",
        ]
    )
    assert_one_sentence(r, "scores.npz", "fingerprint", "other data")
    r = run([*base, runs / "convnet-run0", *DATA, "--out", runs / "convnet-run0"])
    assert_one_sentence(r, "lies inside the output")
    r = run(
        [
            *base,
            runs / "convnet-run0",
            *DATA,
            "--sample-size",
            "50",
            "--pool-size",
            "20",
            "--out",
            tmp_path / "o",
        ]
    )
    assert_one_sentence(r, "--pool-size", "--sample-size")
    assert not os.path.exists(tmp_path / "o")  # nothing written by a refused command


def test_sets_too_small_to_compare_are_refused_before_any_work(runs, tmp_path):
    """--fraction 0.001 of 240 examples is one example per set: refused in one sentence before
    anything is read (it computed everything, then failed inside matplotlib)."""
    out = tmp_path / "sim"
    r = run(["analyze", "similarity", runs / "convnet-run0", *DATA, *FAST, "--fraction", "0.001",
             "--out", out])  # fmt: skip
    assert r.exit_code == 1 and "too small to compare" in r.output and "--fraction" in r.output
    errors = [line for line in r.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and errors[0] == r.output.strip().splitlines()[-1]
    assert not out.exists()

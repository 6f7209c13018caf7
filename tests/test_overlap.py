"""Tests of `easyhard analyze overlap` (easyhard.overlap): metrics against hand-computed values and
scipy, chance against simulation, grouping by differing fields, the tie rule, outputs, errors."""

from __future__ import annotations

import itertools
import json
import os
import shutil

import numpy as np
import pytest
import scipy.stats
import torch
from click.testing import CliRunner

from easyhard import SampleStats
from easyhard.cli import main
from easyhard.overlap import (
    Ranking,
    analyze_overlap,
    chance_jaccard,
    differing_fields,
    group_name,
    jaccard,
    set_size,
)


def write_run(path, correct_prob, labels, *, fingerprint="fp", metadata=None, absent=()):
    """A statistics file whose true-class probability per epoch is `correct_prob` [E, N] (a fixed,
    known ranking): logits log(p) for the label, log(1-p) shared by the others."""
    E, N = correct_prob.shape
    C = int(labels.max()) + 1
    stats = SampleStats(N, C, labels=labels, fingerprint=fingerprint)
    present = torch.tensor([i for i in range(N) if i not in set(absent)])
    y = torch.from_numpy(labels)
    for e in range(E):
        p = torch.from_numpy(correct_prob[e]).double().clamp(1e-6, 1 - 1e-6)
        logits = torch.log((1 - p) / (C - 1)).unsqueeze(1).repeat(1, C)
        logits[torch.arange(N), y] = torch.log(p)
        stats.update(logits[present].float(), y[present], present)
        stats.end_epoch()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stats.save(path, metadata=metadata or {})
    return str(path)


def meta(arch="convnet", seed=0, init=None, data=None, **config):
    init = seed if init is None else init
    data = seed if data is None else data
    cfg = {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.2, **config}
    return {
        "arch": arch,
        "seed": seed,
        "init_seed": init,
        "data_seed": data,
        "view": "train",
        "identity": {
            "arch": arch,
            "seed": seed,
            "init_seed": init,
            "data_seed": data,
            "config": cfg,
        },
    }


def test_jaccard_and_chance_by_hand():
    a = np.array([1, 1, 0, 0, 1], bool)
    b = np.array([0, 1, 1, 0, 1], bool)
    assert jaccard(a, b) == 2 / 4
    assert chance_jaccard(0.1) == pytest.approx(0.1 / 1.9)
    assert set_size(0.1, 95) == 10 and set_size(0.001, 10) == 1


def test_chance_matches_simulation_of_independent_rankings():
    rng = np.random.default_rng(0)
    N = 2000
    labels = np.zeros(N, np.int64)
    for p in (0.05, 0.2, 0.5):
        k = set_size(p, N)
        js = []
        for t in range(300):
            ra = Ranking(rng.random(N), labels, 1, t)
            rb = Ranking(rng.random(N), labels, 1, t + 1000)
            js.append(jaccard(ra.easy(k), rb.easy(k)))
        assert np.mean(js) == pytest.approx(chance_jaccard(k / N), rel=0.05)


def test_pairwise_metrics_against_hand_sets_and_scipy(tmp_path):
    rng = np.random.default_rng(1)
    N, E = 400, 2
    labels = np.repeat(np.arange(4), N // 4)
    base = rng.random(N)
    probs = [1 / (1 + np.exp(-4 * (base - 0.5 + rng.normal(0, s, N)))) for s in (0.0, 0.1, 0.5)]
    files = [
        write_run(
            tmp_path / f"r{i}" / "scores.npz", np.stack([p] * E), labels, metadata=meta(seed=i)
        )
        for i, p in enumerate(probs)
    ]
    res = analyze_overlap(files, score="easiness", ps=(0.1, 0.5), kendall_max=10_000)
    from easyhard.scores import compute_scores

    ease = [compute_scores(SampleStats.load(f))["easiness"] for f in files]
    for pr in res["pairs"]:
        ea, eb = ease[pr["a"]], ease[pr["b"]]
        assert pr["spearman"] == pytest.approx(scipy.stats.spearmanr(ea, eb).statistic, abs=1e-9)
        assert pr["kendall"] == pytest.approx(scipy.stats.kendalltau(ea, eb).statistic, abs=1e-9)
        for o in pr["overlap"]:
            k = set_size(o["p"], N)
            pick = (
                (lambda e: set(np.argsort(-e)[:k]))
                if o["set"] == "easy"
                else (lambda e: set(np.argsort(e)[:k]))
            )
            sa, sb = pick(ea), pick(eb)
            assert o["jaccard"] == pytest.approx(len(sa & sb) / len(sa | sb))
            assert o["chance"] == pytest.approx(chance_jaccard(k / N))
            assert o["tied"] == 0.0
    # the identical-probability pair is perfectly shared, the noisy one much less
    p01 = next(p for p in res["pairs"] if (p["a"], p["b"]) == (0, 1))
    p02 = next(p for p in res["pairs"] if (p["a"], p["b"]) == (0, 2))
    assert p01["spearman"] > p02["spearman"]
    # consistency: the intersection of all top-10% sets, by hand
    k = set_size(0.1, N)
    shared = set.intersection(*[set(np.argsort(-e)[:k]) for e in ease])
    top = next(t for t in res["consistency"]["top"] if t["p"] == 0.1 and t["set"] == "easy")
    assert top["shared"] == len(shared) and top["chance"] == pytest.approx(N * (k / N) ** 3)
    # per class: mean over pairs of the within-class Jaccard
    pc = next(
        c for c in res["per_class"] if c["class"] == 2 and c["p"] == 0.1 and c["set"] == "easy"
    )
    idx = np.flatnonzero(labels == 2)
    kc = set_size(0.1, len(idx))
    sets = [set(idx[np.argsort(-e[idx])[:kc]]) for e in ease]
    want = np.mean([len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)])
    assert pc["jaccard"] == pytest.approx(want)


def test_all_tied_scores_give_chance_overlap_not_one(tmp_path):
    """Two runs whose scores are all tied: the tie rule (a different permutation per run) gives
    chance-level overlap and reports the sets as tied, never 1.0 by dataset index."""
    N = 3000
    labels = np.repeat(np.arange(3), N // 3)
    files = [
        write_run(
            tmp_path / f"t{i}" / "scores.npz", np.full((2, N), 0.9), labels, metadata=meta(seed=i)
        )
        for i in range(2)
    ]
    res = analyze_overlap(files, score="easiness_plain", ps=(0.1, 0.3))
    for o in res["pairs"][0]["overlap"]:
        assert o["tied"] == 1.0
        assert o["jaccard"] == pytest.approx(o["chance"], abs=0.03)
    assert res["consistency"]["threshold"]["always_easy"]["per_run"] == [N, N]


def test_grouping_by_what_differs():
    a = meta("convnet", 0)["identity"]

    def flat(m):
        return {
            "arch": m["arch"],
            "init_seed": m["init_seed"],
            "data_seed": m["data_seed"],
            **m["config"],
        }

    cases = [
        (meta("resnet20", 0), ["arch"], "arch"),
        (meta("convnet", 1), ["data_seed", "init_seed"], "seed"),
        (meta("convnet", 0, init=5), ["init_seed"], "init_seed"),
        (meta("convnet", 0, data=5), ["data_seed"], "data_seed"),
        (meta("convnet", 0, optimizer="adamw"), ["optimizer"], "optimizer"),
        (meta("resnet20", 1), ["arch", "data_seed", "init_seed"], "arch+seed"),
        (meta("convnet", 0, batch_size=128), ["batch_size"], "batch_size"),
    ]
    for other, differs, group in cases:
        d = differing_fields(flat(a), flat(other["identity"]))
        assert d == differs and group_name(d) == group
    assert group_name([]) == "identical"


def test_command_outputs_and_groups(tmp_path):
    rng = np.random.default_rng(2)
    N = 300
    labels = np.repeat(np.arange(3), N // 3)
    base = rng.random(N)
    runs = tmp_path / "job"
    for arch, seed in (("convnet", 0), ("convnet", 1), ("resnet20", 0)):
        p = np.clip(base + rng.normal(0, 0.2, N), 0.01, 0.99)
        write_run(
            runs / f"{arch}-run{seed}" / "scores.npz",
            np.stack([p, p]),
            labels,
            metadata=meta(arch, seed),
            absent=(7,) if arch == "resnet20" else (),
        )
    r = CliRunner().invoke(
        main,
        [
            "analyze",
            "overlap",
            str(runs),
            "--p",
            "0.1",
            "--p",
            "0.3",
            "--window",
            "1",
            "--out",
            str(tmp_path / "an"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "Jaccard of the easiest / hardest p" in r.output and "1 never presented" in r.output
    res = json.loads((tmp_path / "an" / "overlap.json").read_text())
    assert res["format"] == "easyhard.overlap" and res["compared"] == N - 1
    assert [r["arch"] for r in res["runs"]] == ["convnet", "convnet", "resnet20"]
    assert {p["group"] for p in res["pairs"]} == {"seed", "arch", "arch+seed"}
    pair = res["pairs"][0]
    assert set(pair) >= {"a", "b", "differs", "group", "spearman", "kendall", "overlap"}
    assert set(pair["overlap"][0]) >= {"p", "set", "jaccard", "chance", "tied"}
    assert set(res["groups"]) == {"seed", "arch", "arch+seed"} and res["per_class"]
    for name in ("pairs.png", "overlap.png", "overlap.txt"):
        assert (tmp_path / "an" / name).stat().st_size > 0
    again = CliRunner().invoke(
        main, ["analyze", "overlap", str(runs), "--out", str(tmp_path / "an")]
    )
    assert again.exit_code != 0 and "not empty" in again.output
    forced = CliRunner().invoke(
        main, ["analyze", "overlap", str(runs), "--force", "--out", str(tmp_path / "an")]
    )
    assert forced.exit_code == 0, forced.output


def _cli(*args):
    r = CliRunner().invoke(main, ["analyze", "overlap", *map(str, args)])
    return r.exit_code, r.output


def test_errors_are_one_sentence(tmp_path):
    labels = np.repeat(np.arange(2), 50)
    a = write_run(tmp_path / "a" / "scores.npz", np.full((2, 100), 0.7), labels, fingerprint="A")
    b = write_run(tmp_path / "b" / "scores.npz", np.full((2, 100), 0.6), labels, fingerprint="A")
    (tmp_path / "copy").mkdir()
    shutil.copy(a, tmp_path / "copy" / "scores.npz")
    c = write_run(tmp_path / "c" / "scores.npz", np.full((2, 100), 0.7), labels, fingerprint="B")
    for args, needle in [
        ((a, c), "runs of different data cannot be compared"),
        ((a,), "give at least two"),
        ((a, b, "--score", "variability"), "Invalid value for '--score'"),
        ((a, b, "--window", "5"), "window must be between 1 and the 2"),
        ((a, b, "--p", "0"), "Invalid value for '--p'"),
        ((tmp_path / "a", tmp_path / "b", "--view", "clean"), "holds no run"),
        # one run twice would compare it with itself (Jaccard 1): refused, as a folder too
        ((a, a), "is given twice"),
        ((tmp_path / "a", a), "is given twice"),
        ((a, tmp_path / "copy"), "is given twice (a copy: the same bytes)"),
    ]:
        code, out = _cli(*args, "--out", tmp_path / "o")
        assert code in (1, 2) and needle in out and "Traceback" not in out, (args, out)
        assert not (tmp_path / "o").exists()
    code, out = _cli(a, b, "--out", tmp_path / "a")
    assert code == 1 and "inside the output" in out


def test_the_table_says_how_many_examples_each_set_holds():
    """--p 1e-9 asks for a set smaller than one example: the table says each set's size and
    that such a set holds the single easiest or hardest example (it looked like a fraction)."""
    from easyhard.overlap import format_table

    result = {
        "never_presented": 0,
        "runs": [],
        "compared": 240,
        "score": "easiness",
        "window": None,
        "view": "train",
        "ps": [1e-9, 0.1],
        "groups": {},
        "consistency": {
            "top": [],
            "threshold": {
                k: {"per_run": [0], "shared": 0, "chance": 0.0}
                for k in ("always_easy", "never_learned")
            },
        },
    }
    table = format_table(result)
    assert "examples in each set: p=1e-09: 1, p=0.1: 24" in table
    assert "p=1e-09 of 240 examples rounds to none" in table


def test_the_architecture_verdict_needs_several_pairs_in_each_group():
    """The "is it SGD?" sentence: a verdict and the spread over pairs when each group has several
    pairs; with one pair in a group, the ratio without a verdict."""
    from easyhard.overlap import findings

    def group(pairs, mean, low, high):
        cells = [
            {"set": w, "p": 0.1, "ratio": mean / 0.1, "chance": 0.1,
             "jaccard": {"mean": mean, "min": low, "max": high}}
            for w in ("easy", "hard")
        ]  # fmt: skip
        return {"pairs": pairs, "overlap": cells}

    def result(arch, seed):
        return {"ps": [0.1], "groups": {"arch": arch, "seed": seed}}

    many = findings(result(group(4, 0.3, 0.25, 0.35), group(3, 0.6, 0.55, 0.65)))[-1]
    assert "the architecture changes which examples" in many
    assert "every architecture pair overlaps less than every seed pair" in many
    alike = findings(result(group(4, 0.58, 0.5, 0.7), group(3, 0.6, 0.55, 0.65)))[-1]
    assert "about as shared across architectures" in alike and "ranges over pairs overlap" in alike
    one = findings(result(group(4, 0.3, 0.25, 0.35), group(1, 0.6, 0.6, 0.6)))[-1]
    assert "0.50x (easiest)" in one and "so no verdict" in one
    assert "the architecture changes" not in one

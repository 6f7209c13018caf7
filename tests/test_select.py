"""Tests of easyhard.scores and easyhard.select: score directions, budgets, strategies."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from easyhard import SampleStats
from easyhard.scores import DIRECTION, compute_scores, hardness
from easyhard.select import class_budgets, resolve_keep, select


def scripted_stats():
    """4 examples, 2 classes, 3 epochs with known outcomes:
    0: always right (easy), 1: right, wrong, right (one forgetting event),
    2: wrong, right, right (learned at epoch 1), 3: never right."""
    outcomes = [[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    stats = SampleStats(4, 2, labels=[0, 1, 0, 1])
    for epoch in outcomes:
        logits = []
        for i, ok in enumerate(epoch):
            right = [0.0, 0.0]
            right[[0, 1, 0, 1][i]] = 3.0 if ok else -3.0
            logits.append(right)
        stats.update(torch.tensor(logits), torch.tensor([0, 1, 0, 1]), torch.arange(4))
        stats.end_epoch()
    return stats


def test_scores_on_a_scripted_run():
    s = compute_scores(scripted_stats())
    assert s["never_learned"].tolist() == [False, False, False, True]
    assert s["forgetting"].tolist() == [0, 1, 0, 3]  # never learned -> number of epochs
    assert s["first_learned"].tolist() == [0, 0, 1, 3]
    e = s["easiness"]
    assert e[0] > e[1] and e[0] > e[2] and min(e[1], e[2]) > e[3]
    assert ((e >= 0) & (e <= 1)).all()
    assert s["margin"][0] > 0 > s["margin"][3]
    assert s["el2n"][0] < s["el2n"][3] and s["confidence"][0] > s["confidence"][3]
    assert s["variability"][0] < s["variability"][1]
    early = compute_scores(scripted_stats(), window=1)["easiness"]
    assert early[1] > early[3] and abs(early[1] - early[0]) < 1e-3  # identical in epoch 0
    with pytest.raises(ValueError, match="window must be between 1 and the 3"):
        compute_scores(scripted_stats(), window=4)


def test_a_window_counts_the_first_epochs_of_every_score_that_has_one():
    """`window` was easiness's only, while every output labelled the other scores with it too
    (an EL2N ranked "over the first epoch" counted every epoch; found by a careless-user helper).
    Now every score the per-epoch record can give for its first epochs counts the window;
    forgetting and margin, kept only in total, refuse one."""
    from easyhard.config import ConfigError, OverlapConfig, SelectConfig
    from easyhard.scores import WINDOWED, check_window

    stats = scripted_stats()
    whole, first = compute_scores(stats), compute_scores(stats, window=1)
    hist = stats.history
    np.testing.assert_allclose(first["el2n"], hist["el2n"][0].astype(np.float64))
    np.testing.assert_allclose(first["confidence"], hist["prob"][0], rtol=1e-6)
    assert first["variability"].tolist() == [0.0] * 4  # one epoch: no spread
    assert first["first_learned"].tolist() == [0, 0, 1, 1]  # example 2 not within 1 epoch
    assert whole["first_learned"].tolist() == [0, 0, 1, 3]
    np.testing.assert_allclose(  # two epochs: the per-epoch means averaged (float16: 1e-3)
        compute_scores(stats, window=2)["el2n"], hist["el2n"][:2].astype(np.float64).mean(0)
    )
    np.testing.assert_allclose(  # the whole window is the exact sums, not the float16 means
        compute_scores(stats, window=3)["el2n"], whole["el2n"], rtol=0, atol=0
    )
    for name in ("forgetting", "margin"):  # no window: not in a windowed table, refused
        assert name in whole and name not in first and name not in WINDOWED
        with pytest.raises(ValueError, match=f"{name} is counted over every presentation"):
            compute_scores(stats, window=1, names=[name])
        with pytest.raises(ValueError, match=f"{name} is counted over every presentation"):
            check_window(name, 1)
        with pytest.raises(ConfigError, match="has no `window`"):
            OverlapConfig(score=name, window=1).validate()
        with pytest.raises(ConfigError, match="has no `window`"):
            SelectConfig(keep="0.5", score=name, window=2).validate()
    check_window(["easiness", "el2n"], 1)
    OverlapConfig(score="forgetting").validate()  # no window: fine
    # a selection from windowed scores records their window (it recorded None), and one by a
    # score the table cannot hold says why (found by a careless-user helper)
    import easyhard

    sel = easyhard.select_subset(stats.scores(window=1), "el2n", keep=0.5, balanced=False)
    assert sel.info["window"] == 1
    with pytest.raises(
        ValueError, match="counted over the first 1 epoch.*forgetting has no window"
    ):
        easyhard.select_subset(stats.scores(window=1), "forgetting", keep=0.5)


def test_easiness_is_graded():
    """Examples correct at every observation are ordered by their probability, not tied."""
    g = torch.Generator().manual_seed(0)
    N, C = 2000, 10
    labels = torch.randint(0, C, (N,), generator=g)
    stats = SampleStats(N, C, labels=labels)
    for _ in range(2):
        logits = torch.randn(N, C, generator=g)
        logits[torch.arange(N), labels] += 4  # almost all correct
        stats.update(logits, labels, torch.arange(N))
        stats.end_epoch()
    e = compute_scores(stats)["easiness"]
    top = np.sort(e)[::-1]
    k = N // 10
    assert (e == top[k - 1]).sum() / N < 0.01  # fewer than 1% tie at the 10% boundary


def test_hardness_orientation():
    assert DIRECTION["easiness"] == "higher_easier"
    np.testing.assert_array_equal(hardness("easiness", np.array([0.9, 0.1])), [-0.9, -0.1])
    np.testing.assert_array_equal(hardness("forgetting", np.array([0, 2])), [0, 2])
    with pytest.raises(ValueError, match="no easy/hard direction"):
        hardness("variability", np.zeros(2))
    with pytest.raises(ValueError, match="unknown score"):
        hardness("loss", np.zeros(2))


@pytest.mark.parametrize(
    "keep, n, want",
    [
        (0.7, 10, 7),
        ("70%", 10, 7),
        (0.25, 10, 3),
        (0.05, 10, 1),
        ("3", 10, 3),
        (3, 10, 3),
        (1.0, 10, 10),
    ],
)
def test_resolve_keep(keep, n, want):
    assert resolve_keep(keep, n) == want


@pytest.mark.parametrize(
    "keep, message",
    [
        (0, "keep must be positive"),
        (11, "count must be"),
        (1.5, r"fraction must be in \(0, 1\]"),
        ("abc", "fraction .* or a count"),
        ("1", "ambiguous: write 1.0 or 100%"),
        ("01", "keep 01 is ambiguous"),
        (1, "ambiguous"),
        ("+5", "keep \\+5 is ambiguous: write a count as digits"),
        ("1e3", "keep 1e3 is ambiguous"),
        ("inf", "keep inf is ambiguous"),
        ("-0.5", "keep must be positive: .* got -0.5"),  # was "ambiguous"
        (-3, "keep must be positive"),
        ("0%", "keep must be positive"),
    ],
)
def test_resolve_keep_refused(keep, message):
    with pytest.raises(ValueError, match=message):
        resolve_keep(keep, 10)


def test_class_budgets_largest_remainder():
    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)
    assert class_budgets(labels, 5, 3).tolist() == [3, 1, 1]  # quotas 2.5, 1.5, 1.0
    assert class_budgets(labels, 10, 3).tolist() == [5, 3, 2]
    assert class_budgets(labels, 0, 3).tolist() == [0, 0, 0]


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=12), frac=st.floats(0, 1))
def test_class_budgets_exact_and_capped(sizes, frac):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    k = int(frac * len(labels))
    b = class_budgets(labels, k, len(sizes))
    assert b.sum() == k and (b <= np.array(sizes)).all() and (b >= 0).all()
    quota = k * np.array(sizes) / max(len(labels), 1)
    assert (np.abs(b - quota) < 1).all()


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    h = rng.random(100)
    return h, labels


def test_hardest_easiest_global(problem):
    h, labels = problem
    hard = select(h, labels, 4, 0.3, strategy="hardest")
    np.testing.assert_array_equal(hard.indices, np.sort(np.argsort(-h)[:30]))
    easy = select(h, labels, 4, 0.3, strategy="easiest")
    np.testing.assert_array_equal(easy.indices, np.sort(np.argsort(h)[:30]))
    assert hard.ratio == pytest.approx(100 / 30) and hard.kept_per_class.sum() == 30


def test_balanced_and_cut(problem):
    h, labels = problem
    sel = select(h, labels, 4, 0.5, strategy="hardest", balanced=True)
    assert sel.kept_per_class.tolist() == [20, 15, 10, 5]
    for c in range(4):
        members = np.flatnonzero(labels == c)
        want = members[np.argsort(-h[members])[: sel.kept_per_class[c]]]
        assert set(sel.indices[labels[sel.indices] == c]) == set(want)
    cut = select(h, labels, 4, 0.5, strategy="hardest", cut_hardest=0.1)
    hardest10 = np.argsort(-h)[:10]
    # keep counts every example (50 of 100), chosen from the 90 the cut left
    assert not set(hardest10) & set(cut.indices) and len(cut.indices) == 50
    assert cut.indices.tolist() == np.sort(np.argsort(-h)[10:60]).tolist()
    assert cut.info["emptied_classes"] == []
    with pytest.raises(ValueError, match="more than the 50 left: lower `cut_hardest` or `keep`"):
        select(h, labels, 4, 0.6, strategy="hardest", cut_hardest=0.5)


def test_a_class_the_cut_empties_is_named(problem):
    h, labels = problem
    h = h + 10 * (labels == 3)  # class 3 (10 examples) is the hardest tenth
    sel = select(h, labels, 4, 0.5, strategy="stratified", balanced=True, cut_hardest=0.1)
    assert sel.kept_per_class[3] == 0 and sel.info["emptied_classes"] == [3]
    assert len(sel.indices) == 50


@pytest.mark.parametrize("balanced", [False, True])
def test_random_and_stratified_are_seeded_and_exact(problem, balanced):
    h, labels = problem
    for strategy in ("random", "stratified"):
        a = select(h, labels, 4, 0.37, strategy=strategy, balanced=balanced, seed=1, bins=5)
        b = select(h, labels, 4, 0.37, strategy=strategy, balanced=balanced, seed=1, bins=5)
        c = select(h, labels, 4, 0.37, strategy=strategy, balanced=balanced, seed=2, bins=5)
        assert a.indices.tolist() == b.indices.tolist() != c.indices.tolist()
        assert len(a.indices) == 37 and len(set(a.indices)) == 37
        if balanced:
            assert a.kept_per_class.tolist() == class_budgets(labels, 37, 4).tolist()


def test_stratified_covers_the_score_range():
    h = np.concatenate([np.zeros(900), np.linspace(1, 10, 100)])  # most mass at one value
    labels = np.zeros(1000, dtype=np.int64)
    sel = select(h, labels, 1, 100, strategy="stratified", bins=10, seed=0)
    assert (h[sel.indices] > 0).sum() >= 80  # hard tail kept, not swamped by the mode


def test_select_refuses_bad_input(problem):
    h, labels = problem
    with pytest.raises(ValueError, match="strategy must be one of"):
        select(h, labels, 4, 0.5, strategy="best")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        select(h, labels, 3, 0.5)
    with pytest.raises(ValueError, match=r"cut_hardest must be in \[0, 1\)"):
        select(h, labels, 4, 0.5, cut_hardest=1.0)


def test_tie_seed_breaks_ties_at_random_not_by_index():
    """All-tied scores: by index the lowest indices win; with a tie seed the pick is a seeded
    random subset (different seeds, different subsets), exact in size, per class too."""
    N = 1000
    labels = np.arange(N) % 4
    flat = np.zeros(N)
    by_index = select(flat, labels, 4, 100).indices
    assert by_index.tolist() == list(range(100))
    a = select(flat, labels, 4, 100, tie_seed=1).indices
    b = select(flat, labels, 4, 100, tie_seed=2).indices
    assert len(a) == len(b) == 100 and (np.diff(a) > 0).all()
    assert a.tolist() != b.tolist() and a.max() > 500
    np.testing.assert_array_equal(a, select(flat, labels, 4, 100, tie_seed=1).indices)
    bal = select(flat, labels, 4, 100, balanced=True, tie_seed=3)
    assert bal.kept_per_class.tolist() == [25] * 4 and bal.indices.max() > 500
    # untied scores are ranked the same with or without a tie seed
    h = np.random.default_rng(0).random(N)
    np.testing.assert_array_equal(
        select(h, labels, 4, 100).indices, select(h, labels, 4, 100, tie_seed=9).indices
    )


def test_easiness_plain_is_the_fraction_correct():
    from easyhard import SampleStats
    from easyhard.scores import compute_scores

    stats = SampleStats(3, 2, labels=[0, 1, 0])
    logits = torch.tensor([[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    for epoch in range(4):
        right = torch.tensor([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
        stats.update(right if epoch % 2 else logits, torch.tensor([0, 1, 0]), torch.arange(3))
        stats.end_epoch()
    s = compute_scores(stats, window=3)
    np.testing.assert_allclose(s["easiness_plain"], [1.0, 1 / 3, 1 / 3])


def test_the_command_line_warns_of_an_emptied_class(problem, capsys):
    from easyhard.cli.select import _report

    h, labels = problem
    h = h + 10 * (labels == 3)
    sel = select(h, labels, 4, 0.5, strategy="hardest", balanced=True, cut_hardest=0.1)
    for as_json, quiet in [(False, False), (False, True)]:
        _report(sel, as_json, quiet)
        err = capsys.readouterr().err
        assert "1 class(es) keep no example (3): --cut-hardest is global" in err
    _report(sel, True, False)
    out = capsys.readouterr()
    assert json.loads(out.out)["emptied_classes"] == [3] and out.err == ""
    # no cut: a class whose share of a small budget rounds to none is not blamed on the cut
    few = select(h, labels, 4, 3, strategy="hardest", balanced=True)
    assert few.info["emptied_classes"] == [3] and few.info["emptied_by_cut"] == []
    _report(few, False, True)
    err = capsys.readouterr().err
    assert "keep no example (3): the share of 3 rounds to none" in err and "cut" not in err

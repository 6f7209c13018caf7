"""Pruning during training (easyhard.prune, `--prune` in the training recipe): each rule end to end
on tiny synthetic data, checked against the record itself (kept counts per epoch recomputed from
the history, the skipped examples' rows, forgetting across skipped epochs), the schedule on
training progress, resume after a kill, two gloo processes, and the settings refused."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import ONE_THREAD_ENV, cli, free_port, kill_node, score_job, synthetic, tiny_config

from easyhard import SampleStats, ops
from easyhard.config import ConfigError, RemovalConfig
from easyhard.prune import Pruner
from easyhard.train import train_run

N, C, EPOCHS = 240, 3, 8
RECIPE = {"epochs": EPOCHS, "prune_threshold": 0.6, "lr": 0.1}


def scored(tmp_path, rule: str, **recipe):
    out = score_job(tmp_path / rule, N, C, batch=40, prune=rule, **{**RECIPE, **recipe})
    run = os.path.join(out, "convnet-run0")
    with open(os.path.join(run, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    return SampleStats.load(os.path.join(run, "scores.npz")), metrics


def learned_from_history(history: np.ndarray, before: int, K: int = 2, threshold: float = 0.6):
    """The easiness rule recomputed from the record alone: correct at each of the last K
    presented epochs before `before`, their mean probability at least the threshold."""
    learned = np.zeros(history.shape[1], bool)
    for n in range(history.shape[1]):
        rows = [history[e, n] for e in range(before) if history[e, n]["presentations"] > 0][-K:]
        if len(rows) == K:
            ok = all(r["correct"] == r["presentations"] for r in rows)
            learned[n] = ok and np.mean([r["prob"] for r in rows]) >= threshold
    return learned


def pruned_epochs(epochs=EPOCHS, anneal=0.125):
    return [e for e in range(epochs) if 1 <= e < (1 - anneal) * epochs]


@pytest.mark.parametrize("rule", ["easiness", "random"])
def test_kept_counts_follow_the_record_exactly(tmp_path, rule):
    stats, metrics = scored(tmp_path, rule)
    h = stats.history
    assert [e for e in range(EPOCHS) if metrics[e]["pruned"]] == pruned_epochs()
    for e in range(EPOCHS):
        shown = h[e]["presentations"]
        assert set(np.unique(shown)) <= {0, 1}  # once or not at all
        if e not in pruned_epochs():
            assert (shown == 1).all(), e  # the first epoch and the annealing ones: full data
            continue
        learned = learned_from_history(h, e)
        k = math.floor(0.5 * learned.sum() + 0.5)
        skipped = shown == 0
        assert skipped.sum() == k == metrics[e]["skipped"], e
        assert metrics[e]["kept"] == N - k and metrics[e]["images"] == N - k
        if rule == "easiness":
            assert not (skipped & ~learned).any(), "only learned examples are skipped"
            assert metrics[e]["candidates"] == learned.sum()
    assert sum(m["skipped"] for m in metrics if "skipped" in m) > 0, "nothing was ever pruned"
    skipped_sets = [tuple(np.flatnonzero(h[e]["presentations"] == 0)) for e in pruned_epochs()]
    assert len(set(s for s in skipped_sets if s)) > 1, "the same examples every epoch"


def test_the_loss_rule_skips_below_mean_at_random_and_rescales(tmp_path):
    stats, metrics = scored(tmp_path, "loss")
    h = stats.history
    for e in pruned_epochs():
        m = metrics[e]
        assert 0 < m["skipped"] < m["candidates"] < N, (e, m)  # about r of the candidates
        assert (h[e]["presentations"] == 0).sum() == m["skipped"]
    assert (h[-1]["presentations"] == 1).all()


def test_the_schedule_ends_exactly_at_the_last_step(tmp_path):
    for schedule in ("onecycle", "cosine"):
        _, metrics = scored(tmp_path / schedule, "easiness", schedule=schedule)
        steps = [m["steps"] for m in metrics]
        per_epoch = np.diff([0, *steps])
        assert list(per_epoch) == [math.ceil(m["kept"] / 40) for m in metrics]
        lrs = [m["lr"] for m in metrics]
        assert all(lr > 0 for lr in lrs[:-1]), lrs  # never ends early
        assert lrs[-1] == pytest.approx(0.0, abs=1e-12), lrs  # nor overruns: 0 after the last step


def test_history_and_scores_of_skipped_examples(tmp_path):
    stats, _ = scored(tmp_path, "easiness")
    h, t = stats.history, stats.totals()
    pres, ok = h["presentations"], h["correct"] > 0
    skipped_somewhere = (pres == 0).any(0)
    assert skipped_somewhere.any()
    # forgetting compares consecutive presentations: a skipped epoch between them is no event
    events = np.zeros(N, np.int64)
    for n in range(N):
        seq = ok[pres[:, n] > 0, n]
        events[n] = int((seq[:-1] & ~seq[1:]).sum())
    np.testing.assert_array_equal(t["forgetting_events"], events)
    scores = stats.scores()
    first = np.where((pres > 0) & ok, np.arange(EPOCHS)[:, None], EPOCHS).min(0)
    np.testing.assert_array_equal(scores["first_learned"], np.minimum(first, EPOCHS))
    seen_prob = np.where(pres > 0, h["prob"].astype(np.float64), np.nan)
    np.testing.assert_allclose(scores["confidence"], np.nanmean(seen_prob, 0), rtol=1e-6)
    np.testing.assert_array_equal(t["presentations"], pres.sum(0))  # easiness counts these


def test_a_killed_pruned_run_resumes_to_the_same_record(tmp_path, killed_after_epoch):
    cfg = tiny_config(N, C, batch=40, prune="easiness", **RECIPE)
    whole = train_run(cfg, "convnet", 0, str(tmp_path / "whole"), quiet=True)
    with killed_after_epoch(4):
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True)
    cut = train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True, resume=True)
    a = SampleStats.load(os.path.join(whole, "scores.npz"))
    b = SampleStats.load(os.path.join(cut, "scores.npz"))
    np.testing.assert_array_equal(a.history, b.history)
    for k, v in a.totals().items():
        np.testing.assert_array_equal(v, b.totals()[k], err_msg=k)


def test_the_pruner_is_a_function_of_seed_epoch_and_record():
    cfg = tiny_config(64, 2, prune="easiness", epochs=8, prune_threshold=0.5)
    make = lambda: Pruner(cfg, torch.arange(64), 64, torch.device("cpu"), seed=3)  # noqa: E731
    a, b = make(), make()
    counts = torch.zeros(64, len(ops.COUNT_FIELDS), dtype=torch.int32)
    sums = torch.zeros(64, len(ops.SUM_FIELDS), dtype=torch.float32)
    counts[:, ops.PRESENTATIONS] = 1
    counts[:40, ops.CORRECT] = 1  # 40 correct, confident examples
    sums[:, ops.PROB_SUM] = torch.where(torch.arange(64) < 40, 0.95, 0.2)
    sums[:, ops.LOSS_SUM] = 1.0
    for p in (a, b):
        p.observe(counts, sums)
    assert a.learned().sum() == 0  # one presentation: K = 2 not reached
    for p in (a, b):
        p.observe(counts, sums)
    assert a.learned().sum() == 40
    plans = [p.plan(3, steps_done=10) for p in (a, b)]
    assert torch.equal(plans[0].kept, plans[1].kept) and plans[0].skipped == 20
    assert set(range(40, 64)) <= set(plans[0].kept.tolist())  # the unlearned are all kept
    w = plans[0].weights
    assert (w[plans[0].kept] == torch.where(plans[0].kept < 40, 2.0, 1.0)).all()
    assert not torch.equal(a.plan(4, 10).kept, plans[0].kept)  # another epoch, another draw
    c = make()
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.plan(5, 10).kept, a.plan(5, 10).kept)
    assert a.plan(0, 0).kept is None and a.plan(7, 0).kept is None  # first epoch, annealing


def test_settings_that_cannot_prune_are_refused(tmp_path):
    r = cli(["score", *synthetic(40, 2), "--prune", "sometimes", "--out", tmp_path / "a"])
    assert r.exit_code != 0 and "sometimes" in r.output
    r = cli(["score", *synthetic(40, 2), "--prune-ratio", "1", "--out", tmp_path / "b"])
    assert r.exit_code != 0
    with pytest.raises(ConfigError, match="epoch budget"):
        RemovalConfig(arch="convnet", prune="loss", budget="epochs,steps").validate()
    RemovalConfig(arch="convnet", prune="loss", budget="epochs").validate()
    cfg = tiny_config(40, 2, prune="easiness")
    with pytest.raises(ValueError, match="step budget"):
        train_run(cfg, "convnet", 0, str(tmp_path / "c"), quiet=True, max_steps=3)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # pruning's settings without a rule would change nothing: refused, naming the first
    r = cli(["score", *synthetic(40, 2), "--prune-window", "3", "--out", tmp_path / "d"])
    assert r.exit_code == 1 and "--prune-window is set, but --prune is none" in r.output, r.output
    with pytest.raises(ConfigError, match="`prune_ratio` is set, but `prune` is none"):
        RemovalConfig(arch="convnet", prune_ratio=0.3).validate()
    assert not (tmp_path / "d").exists()


def test_runs_without_pruning_keep_their_identity():
    """Folders written before pruning existed resume: with prune none the identity holds no
    prune settings at all."""
    from easyhard.runfolder import run_identity

    plain = run_identity(tiny_config(40, 2), "convnet", 0, "fp")
    assert not any(k.startswith("prune") for k in plain["config"])
    pruned = run_identity(tiny_config(40, 2, prune="loss"), "convnet", 0, "fp")
    assert pruned["config"]["prune"] == "loss" and "prune_ratio" in pruned["config"]


@pytest.mark.slow
def test_two_processes_keep_the_same_sets_and_resume_to_themselves(tmp_path):
    """torchrun, two gloo processes: every epoch's record presents each kept example exactly
    once (the ranks agree on the set and shard it), and a job killed (SIGKILL, both processes)
    after a checkpoint resumes to the statistics of the uninterrupted one."""
    n = 3000
    job = ["score", *synthetic(n, C, batch=40), "--arch", "convnet", "--device", "cpu",
           "--epochs", str(EPOCHS), "--prune", "easiness", "--prune-threshold", "0.6",
           "--lr", "0.1", "--quiet"]  # fmt: skip

    def torchrun(out, *extra) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-port", str(free_port()), "-m", "easyhard", *job, "--out",
               str(out)]  # fmt: skip
        return subprocess.Popen(
            [*cmd, *extra], env=ONE_THREAD_ENV, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip

    def finished(p):
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out[-3000:]

    finished(torchrun(tmp_path / "whole"))
    run = tmp_path / "whole" / "convnet-run0"
    whole = SampleStats.load(run / "scores.npz")
    with open(run / "metrics.jsonl") as f:
        metrics = [json.loads(line) for line in f]
    for e, m in enumerate(metrics):
        shown = whole.history[e]["presentations"]
        assert set(np.unique(shown)) <= {0, 1} and shown.sum() == m.get("kept", n), e
    assert sum(m.get("skipped", 0) for m in metrics) > 0
    cut = tmp_path / "cut" / "convnet-run0"
    p = torchrun(tmp_path / "cut")
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:  # kill once 3 epochs are checkpointed
        if (cut / "metrics.jsonl").exists() and len(
            (cut / "metrics.jsonl").read_text().splitlines()
        ) >= 3:
            break
        time.sleep(0.02)
    kill_node(p)
    assert not (cut / "scores.npz").exists(), "the job finished before the kill"
    finished(torchrun(tmp_path / "cut", "--resume"))
    resumed = SampleStats.load(cut / "scores.npz")
    np.testing.assert_array_equal(resumed.history, whole.history)
    for k, v in whole.totals().items():
        np.testing.assert_array_equal(v, resumed.totals()[k], err_msg=k)


@pytest.mark.parametrize("backend", ["torch", "dali"])
def test_image_folders_prune_and_resume_to_the_same_record(
    tmp_path, monkeypatch, killed_after_epoch, backend
):
    """Image files through each loader (DALI's CPU pipeline; torch + PIL with DALI hidden): every
    epoch presents exactly its kept set (each kept example once, the skipped ones not at all, as
    many as metrics.jsonl says), and a run killed mid-way resumes to the same record."""
    from test_loaders import jpeg_folder

    from easyhard import loaders
    from easyhard.config import ScoreConfig

    if backend == "dali" and not loaders.dali_available():
        pytest.skip("NVIDIA DALI not installed")
    if backend == "torch":
        monkeypatch.setattr(loaders, "dali_available", lambda: False)
    jpeg_folder(tmp_path / "data", classes=3, per_class=10)
    cfg = ScoreConfig(dataset="imagefolder", data_dir=str(tmp_path / "data"), archs=("convnet",),
                      epochs=6, crop=16, batch_size=8, device="cpu", workers=1, prune="loss",
                      prune_anneal=0.2, lr=0.05)  # fmt: skip
    whole = train_run(cfg, "convnet", 0, str(tmp_path / "whole"), quiet=True)
    with open(os.path.join(whole, "metrics.jsonl")) as f:
        metrics = [json.loads(line) for line in f]
    h = SampleStats.load(os.path.join(whole, "scores.npz")).history
    assert set(np.unique(h["presentations"])) <= {0, 1}
    for e, m in enumerate(metrics):
        skipped = int((h[e]["presentations"] == 0).sum())
        assert skipped == (m["skipped"] if m["pruned"] else 0), (e, m)
        assert m["images"] == m["kept"] == 30 - skipped
    assert sum(m["skipped"] for m in metrics) > 0, "nothing was pruned"
    assert (h[-1]["presentations"] == 1).all()  # the annealing epoch: the full data
    with killed_after_epoch(2):
        train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True)
    cut = train_run(cfg, "convnet", 0, str(tmp_path / "cut"), quiet=True, resume=True)
    np.testing.assert_array_equal(h, SampleStats.load(os.path.join(cut, "scores.npz")).history)


def test_a_resume_with_other_augmentation_says_so(tmp_path, monkeypatch, killed_after_epoch,
                                                  capsys):  # fmt: skip
    """The checkpoint records which loader (and version of its drawing) augmented the epochs so
    far: a resume through the same one says nothing, through another (DALI gone, or a checkpoint
    of DaliLoader's earlier drawing, which recorded no version) says that the crops and flips
    from there on differ from an uninterrupted run's."""
    import torch
    from test_loaders import jpeg_folder

    from easyhard import loaders
    from easyhard.config import ScoreConfig

    monkeypatch.setattr(loaders, "dali_available", lambda: False)  # TorchImageLoader
    jpeg_folder(tmp_path / "data", classes=2, per_class=6)
    cfg = ScoreConfig(dataset="imagefolder", data_dir=str(tmp_path / "data"), archs=("convnet",),
                      epochs=4, crop=16, batch_size=4, device="cpu", workers=1)  # fmt: skip
    with killed_after_epoch(1):
        train_run(cfg, "convnet", 0, str(tmp_path / "a"), quiet=True)
    ckpt = tmp_path / "a" / "convnet-run0" / "checkpoint.pt"
    assert torch.load(ckpt, weights_only=True)["augmentation"] == "TorchImageLoader v1"
    capsys.readouterr()
    with killed_after_epoch(2):
        train_run(cfg, "convnet", 0, str(tmp_path / "a"), quiet=True, resume=True)
    assert "augmented by" not in capsys.readouterr().err
    state = torch.load(ckpt, weights_only=True)
    state["augmentation"] = "DaliLoader v2"
    torch.save(state, ckpt)
    train_run(cfg, "convnet", 0, str(tmp_path / "a"), quiet=True, resume=True)
    err = capsys.readouterr().err
    assert "augmented by DaliLoader v2, and it resumes with TorchImageLoader v1" in err

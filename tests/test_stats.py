"""Tests of easyhard.SampleStats: totals, history, checkpoints and the score file."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from easyhard import HISTORY_DTYPE, SampleStats, ops, reference
from easyhard.stats import epoch_record

N, C, B = 50, 7, 16


def epoch_batches(seed: int, n: int = N, c: int = C, b: int = B):
    """One epoch: every index exactly once, in batches, with random logits and fixed labels."""
    g = torch.Generator().manual_seed(seed)
    labels_all = torch.arange(n) % c
    order = torch.randperm(n, generator=g)
    for start in range(0, n, b):
        idx = order[start : start + b]
        yield torch.randn(len(idx), c, generator=g) * 2, labels_all[idx], idx


def test_history_record_is_8_bytes():
    assert HISTORY_DTYPE.itemsize == 8
    # ImageNet-1k for 90 epochs stays under 1 GB.
    assert 1_281_167 * 90 * HISTORY_DTYPE.itemsize < 1e9


def test_totals_and_history_match_reference():
    stats = SampleStats(N, C)
    state = ops.new_state(N)
    epochs = 3
    per_epoch = []
    for e in range(epochs):
        before = state["counts"].clone(), state["sums"].clone()
        for logits, labels, idx in epoch_batches(e):
            stats.update(logits, labels, idx)
            reference.accumulate_stats(logits, labels, idx, **state)
        per_epoch.append((state["counts"] - before[0], state["sums"] - before[1]))
        stats.end_epoch()
    tot = stats.totals()
    assert stats.epochs == epochs
    np.testing.assert_array_equal(tot["presentations"], np.full(N, epochs))
    for i, name in enumerate(ops.COUNT_FIELDS):
        np.testing.assert_array_equal(tot[name], state["counts"][:, i].numpy(), err_msg=name)
    for i, name in enumerate(ops.SUM_FIELDS):
        np.testing.assert_allclose(tot[name], state["sums"][:, i].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(tot["last_correct"], (state["flags"] & 1).bool().numpy())
    hist = stats.history
    assert hist.shape == (epochs, N) and hist.dtype == HISTORY_DTYPE
    for e, (counts, sums) in enumerate(per_epoch):
        np.testing.assert_array_equal(hist[e]["presentations"], 1)
        np.testing.assert_array_equal(hist[e]["correct"], counts[:, 1].numpy())
        np.testing.assert_allclose(hist[e]["prob"], sums[:, 0].numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(hist[e]["el2n"], sums[:, 4].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(stats.labels, np.arange(N) % C)


def test_totals_include_open_epoch():
    stats = SampleStats(N, C)
    logits, labels, idx = next(epoch_batches(0))
    stats.update(logits, labels, idx)
    tot = stats.totals()
    assert tot["presentations"].sum() == len(idx)
    assert stats.epochs == 0


def test_scores_count_the_closed_epochs_only(tmp_path):
    """A record saved (or scored) with an epoch still open, e.g. before the last end_epoch:
    forgetting, EL2N and margin counted the open epoch's presentations while easiness and the
    history did not, so one file's scores disagreed (found by a careless-user helper). Every
    score counts the closed epochs now, live and from the file."""
    x = torch.tensor([[3.0, -3.0], [-3.0, 3.0], [3.0, -3.0], [-3.0, 3.0]])
    lab, idx = torch.tensor([0, 1, 0, 1]), torch.arange(4)
    closed = SampleStats(4, 2, labels=lab, fingerprint="fp")
    open_ = SampleStats(4, 2, labels=lab, fingerprint="fp")
    for e in range(3):
        for s in (closed, open_) if e < 2 else (open_,):
            s.update(x if e < 2 else -x, lab, idx)  # learned, then all wrong in the open epoch
            if e < 2:
                s.end_epoch()
    assert open_.totals()["presentations"].tolist() == [3] * 4  # the open epoch is still there
    open_.save(tmp_path / "open.npz")
    from easyhard.scores import read_scores

    want = closed.scores()
    for got in (open_.scores(), read_scores(tmp_path / "open.npz")):
        for name in ("forgetting", "el2n", "margin", "easiness", "first_learned"):
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert want["forgetting"].tolist() == [0.0] * 4  # not 1: the open epoch's forgetting
    with pytest.raises(ValueError, match="no closed epoch.*end_epoch"):
        SampleStats(4, 2).scores()


def test_an_empty_epoch_is_said():
    """end_epoch twice (in the loop and in a hook) closes an empty epoch: recorded, with a
    warning, since it shifts first_learned and the window (found by a careless-user helper)."""
    stats = SampleStats(N, C)
    logits, labels, idx = next(epoch_batches(0))
    stats.update(logits, labels, idx)
    stats.end_epoch()
    with pytest.warns(UserWarning, match="epoch 1 is empty"):
        stats.end_epoch()
    assert stats.epochs == 2


def test_epoch_record_saturates_keeping_fraction():
    counts = np.array([[1000, 250, 0, 0], [0, 0, 0, 0], [3, 3, 0, 1]], dtype=np.int64)
    sums = np.array([[500.0, 0, 2000.0, 0, 100.0], [0] * 5, [2.7, 0, 9.0, 0, 0.2]])
    rec = epoch_record(counts, sums)
    assert rec["presentations"].tolist() == [255, 0, 3]
    assert rec["correct"].tolist() == [64, 0, 3]  # 250/1000 of 255
    np.testing.assert_allclose(rec["prob"], [0.5, 0.0, 0.9], rtol=1e-3)
    np.testing.assert_allclose(rec["el2n"], [0.1, 0.0, 0.1], rtol=1e-3)  # finite rows only


def test_labels_given_up_front_and_refused_when_bad():
    labels = np.arange(N) % C
    stats = SampleStats(N, C, labels=labels)
    np.testing.assert_array_equal(stats.labels, labels)
    with pytest.raises(ValueError, match=r"labels\[3\] = 9 is outside \[0, 7\)"):
        SampleStats(N, C, labels=np.where(np.arange(N) == 3, 9, 0))
    with pytest.raises(ValueError, match=r"labels must have shape \[50\]"):
        SampleStats(N, C, labels=np.zeros(3))
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        SampleStats(N, 1)
    with pytest.raises(ValueError, match="num_samples must be at least 1"):
        SampleStats(0, C)


def test_update_refuses_bad_rows_on_cpu():
    stats = SampleStats(4, 3)
    with pytest.raises(RuntimeError, match=r"indices\[1\] = 4 is outside \[0, 4\)"):
        stats.update(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([0, 4]))
    assert stats.totals()["presentations"].sum() == 0


def test_update_accepts_int32_and_detaches():
    stats = SampleStats(4, 3)
    logits = torch.randn(2, 3, requires_grad=True)
    stats.update(
        logits, torch.tensor([0, 1], dtype=torch.int32), torch.tensor([2, 3], dtype=torch.int32)
    )
    assert stats.totals()["presentations"].tolist() == [0, 0, 1, 1]


def presentations(stats: SampleStats) -> list[int]:
    return stats.totals()["presentations"].tolist()


def test_update_refuses_logits_of_another_class_count():
    stats = SampleStats(4, 3)
    with pytest.raises(ValueError, match=r"logits has 4 classes.*num_classes=3"):
        stats.update(torch.randn(2, 4), torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"logits must be 2-D"):
        stats.update(torch.randn(3), torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))
    assert presentations(stats) == [0, 0, 0, 0]


def test_update_refuses_labels_that_differ_from_the_given_ones():
    stats = SampleStats(4, 3, labels=[0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"labels\[1\] = 2 but example 3 has label 0"):
        stats.update(torch.randn(2, 3), torch.tensor([1, 2]), torch.tensor([1, 3]))
    assert presentations(stats) == [0, 0, 0, 0]  # refused before anything was written
    stats.update(torch.randn(2, 3), torch.tensor([1, 0]), torch.tensor([1, 3]))
    assert presentations(stats) == [0, 1, 0, 1]


@pytest.mark.parametrize("name", ["labels", "indices"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bool])
def test_update_refuses_non_integer_labels_and_indices(name, dtype):
    stats = SampleStats(4, 3)
    args = dict(labels=torch.tensor([0, 1]), indices=torch.tensor([0, 1]))
    args[name] = args[name].to(dtype)
    with pytest.raises(TypeError, match=rf"{name} must be an integer tensor, got {dtype}"):
        stats.update(torch.randn(2, 3), **args)
    assert presentations(stats) == [0, 0, 0, 0]


def test_update_does_not_truncate_fractional_labels():
    stats = SampleStats(4, 5)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        stats.update(torch.randn(3, 5), torch.tensor([0.5, 1.9, 3.99]), torch.tensor([0, 1, 2]))
    assert presentations(stats) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "labels",
            torch.tensor([[0], [1]]),
            r"labels must have shape \[2\] \(one per row of logits\), got \[2, 1\]",
        ),
        ("labels", torch.tensor([0, 1, 2]), r"labels must have shape \[2\]"),
        ("indices", torch.tensor(1), r"indices must have shape \[2\]"),
        ("indices", torch.tensor([0, 1, 2]), r"indices must have shape \[2\]"),
        ("labels", [0, 1], "labels must be a torch.Tensor, got list"),
        ("labels", torch.tensor([0, 1], device="meta"), "labels is on meta but logits is on cpu"),
        ("indices", torch.tensor([0, 1], device="meta"), "indices is on meta but logits is on cpu"),
        (
            "logits",
            torch.randn(2, 3, device="meta"),
            "logits is on meta but this SampleStats is on cpu",
        ),
    ],
)
def test_update_refuses_bad_shapes_and_devices(name, value, message):
    stats = SampleStats(4, 3)
    args = dict(logits=torch.randn(2, 3), labels=torch.tensor([0, 1]), indices=torch.tensor([0, 1]))
    args[name] = value
    with pytest.raises((ValueError, TypeError), match=message):
        stats.update(**args)
    assert presentations(stats) == [0, 0, 0, 0]


@pytest.mark.parametrize(
    "labels",
    [
        np.arange(N) % C * 1.0,
        [0.5] * N,
        torch.arange(N).float(),
        np.ones(N, dtype=bool),
    ],
)
def test_constructor_refuses_non_integer_labels(labels):
    with pytest.raises(TypeError, match="labels must be integers"):
        SampleStats(N, C, labels=labels)


def test_load_state_dict_refuses_non_integer_labels():
    for given in (np.arange(N) % C, None):
        sd = SampleStats(N, C).state_dict()
        sd["labels"] = sd["labels"].double() + 0.5
        with pytest.raises(TypeError, match="labels must be integers"):
            SampleStats(N, C, labels=given).load_state_dict(sd)


def run_epochs(stats: SampleStats, first: int, last: int) -> None:
    for e in range(first, last):
        for logits, labels, idx in epoch_batches(e):
            stats.update(logits, labels, idx)
        stats.end_epoch()


def assert_same(a: SampleStats, b: SampleStats) -> None:
    ta, tb = a.totals(), b.totals()
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    np.testing.assert_array_equal(a.history, b.history)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_state_dict_resume_is_exact(tmp_path):
    straight = SampleStats(N, C)
    run_epochs(straight, 0, 4)
    first = SampleStats(N, C)
    run_epochs(first, 0, 2)
    logits, labels, idx = next(epoch_batches(99))
    first.update(logits, labels, idx)  # mid-epoch state survives too
    straight_mid = SampleStats(N, C)
    straight_mid.load_state_dict(first.state_dict())
    torch.save(first.state_dict(), tmp_path / "ckpt.pt")
    resumed = SampleStats(N, C)
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert_same(resumed, first)
    # And continuing from a clean epoch boundary gives the uninterrupted result exactly.
    boundary = SampleStats(N, C)
    run_epochs(boundary, 0, 2)
    torch.save(boundary.state_dict(), tmp_path / "b.pt")
    cont = SampleStats(N, C)
    cont.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True))
    run_epochs(cont, 2, 4)
    assert_same(cont, straight)


def test_load_state_dict_refuses_other_data():
    """A state carries its dataset fingerprint, and its labels must agree with the ones given:
    a record resumed onto other data of the same size took the new data's fingerprint and the
    old labels silently (found by a careless-user helper). A refused state changes nothing."""
    a = SampleStats(N, C, fingerprint="A", labels=np.arange(N) % C)
    run_epochs(a, 0, 1)
    state = a.state_dict()
    b = SampleStats(N, C, fingerprint="B")
    with pytest.raises(ValueError, match="fingerprint 'A'.*'B'"):
        b.load_state_dict(state)
    other = (np.arange(N) + 1) % C
    c = SampleStats(N, C, fingerprint="A", labels=other)
    with pytest.raises(ValueError, match="example 0 label 0.*say 1"):
        c.load_state_dict(state)
    assert c.epochs == 0 and (c.labels == other).all()
    with pytest.raises(ValueError, match="not a SampleStats state_dict"):  # was a KeyError
        SampleStats(N, C).load_state_dict({"weight": torch.zeros(2)})
    d = SampleStats(N, C)  # no fingerprint of its own: takes the state's
    d.load_state_dict(state)
    assert d.fingerprint == "A" and d.epochs == 1
    e = SampleStats(N, C, fingerprint="A", labels=np.arange(N) % C)
    e.load_state_dict(SampleStats(N, C).state_dict())  # unseen labels (-1) contradict nothing
    assert (e.labels == np.arange(N) % C).all()


def test_load_state_dict_refuses_other_sizes():
    sd = SampleStats(N, C).state_dict()
    with pytest.raises(ValueError, match="state is for 50 examples and 7 classes"):
        SampleStats(N + 1, C).load_state_dict(sd)


def test_save_load_round_trip(tmp_path):
    paths = [f"class{i % C}/img{i:04d}.jpg" for i in range(N)]
    stats = SampleStats(N, C, paths=paths, fingerprint="fp-123")
    run_epochs(stats, 0, 2)
    logits, labels, idx = next(epoch_batches(7))
    stats.update(logits, labels, idx)
    out = tmp_path / "scores.npz"
    stats.save(out, metadata={"arch": "resnet18", "seed": 3, "view": "train"})
    loaded = SampleStats.load(out, expect_fingerprint="fp-123")
    assert_same(loaded, stats)
    assert loaded.paths == paths and loaded.fingerprint == "fp-123"
    meta = loaded.metadata
    assert meta["arch"] == "resnet18" and meta["seed"] == 3 and meta["epochs"] == 2
    assert meta["torch_version"] == torch.__version__ and meta["format"] == "easyhard.scores"
    # The file is plain NumPy, readable without pickle, in dataset order.
    with np.load(out, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["index"], np.arange(N))
        assert json.loads(str(z["metadata"]))["num_samples"] == N
    assert [p for p in os.listdir(tmp_path) if p != "scores.npz"] == []


def test_load_refuses_other_dataset_and_bad_files(tmp_path):
    stats = SampleStats(N, C, fingerprint="aaa")
    out = tmp_path / "s.npz"
    stats.save(out)
    with pytest.raises(ValueError, match="fingerprint 'aaa'.*'bbb'"):
        SampleStats.load(out, expect_fingerprint="bbb")
    SampleStats(N, C).save(tmp_path / "none.npz")  # said as such, not as "fingerprint None"
    with pytest.raises(ValueError, match="records no dataset fingerprint.*'bbb'"):
        SampleStats.load(tmp_path / "none.npz", expect_fingerprint="bbb")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(out.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a readable easyhard statistics file"):
        SampleStats.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="no metadata block"):
        SampleStats.load(other)
    with pytest.raises(FileNotFoundError):
        SampleStats.load(tmp_path / "missing.npz")


def test_save_replaces_only_an_earlier_statistics_file(tmp_path):
    """save() replaced any file at its path, a user's too, and said "IsADirectoryError: ...
    '.d.2_s8ta_x.tmp' -> 'd'" for a folder (found by a careless-user helper)."""
    stats = SampleStats(N, C)
    run_epochs(stats, 0, 1)
    mine = tmp_path / "thesis.txt"
    mine.write_text("my thesis")
    with pytest.raises(
        FileExistsError, match="not an easyhard statistics file: it is not replaced"
    ):
        stats.save(mine)
    assert mine.read_text() == "my thesis"
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FileExistsError):
        stats.save(other)
    with pytest.raises(IsADirectoryError, match="is a folder: give the statistics file's path"):
        stats.save(tmp_path)
    (tmp_path / "link.npz").symlink_to(mine)
    with pytest.raises(FileExistsError):
        stats.save(tmp_path / "link.npz")
    assert mine.read_text() == "my thesis"
    stats.save(tmp_path / "s.npz")
    run_epochs(stats, 1, 2)
    stats.save(tmp_path / "s.npz")  # an earlier statistics file: saved again
    assert SampleStats.load(tmp_path / "s.npz").epochs == 2
    # another data's record is not replaced either (a CLI run's scores.npz was)
    other = SampleStats(N + 1, C, fingerprint="theirs")
    with pytest.raises(FileExistsError, match="holds the statistics of other data"):
        other.save(tmp_path / "s.npz")
    SampleStats(N, C, fingerprint="theirs").save(tmp_path / "fp.npz")
    with pytest.raises(FileExistsError, match="fingerprint 'theirs'"):
        SampleStats(N, C, fingerprint="mine").save(tmp_path / "fp.npz")
    assert SampleStats.load(tmp_path / "s.npz").epochs == 2
    assert sorted(os.listdir(tmp_path)) == [
        "fp.npz",
        "link.npz",
        "other.npz",
        "s.npz",
        "thesis.txt",
    ]


def test_save_refuses_reserved_metadata(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        SampleStats(N, C).save(tmp_path / "s.npz", metadata={"epochs": 3})


def test_save_is_atomic(tmp_path, monkeypatch):
    stats = SampleStats(N, C)
    out = tmp_path / "scores.npz"
    stats.save(out)
    good = out.read_bytes()
    run_epochs(stats, 0, 1)

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt  # a run killed mid-write

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        stats.save(out)
    assert out.read_bytes() == good  # the previous file is intact
    assert os.listdir(tmp_path) == ["scores.npz"]  # no temporary left behind


@pytest.mark.cuda
def test_cuda_sample_stats_matches_cpu_and_reports_bad_rows():
    cpu, gpu = SampleStats(N, C), SampleStats(N, C, "cuda")
    for e in range(2):
        for logits, labels, idx in epoch_batches(e):
            cpu.update(logits.bfloat16(), labels, idx)
            gpu.update(logits.bfloat16().cuda(), labels.cuda(), idx.cuda())
        cpu.end_epoch()
        gpu.end_epoch()
    tc, tg = cpu.totals(), gpu.totals()
    for k in tc:
        np.testing.assert_allclose(tg[k], tc[k], rtol=1e-4, atol=1e-4, err_msg=k)
    gpu.update(
        torch.randn(2, C, device="cuda"),
        torch.tensor([0, C], device="cuda"),
        torch.tensor([0, 1], device="cuda"),
    )
    with pytest.raises(RuntimeError, match=r"label outside \[0, 7\).*batch row 1"):
        gpu.check()


@pytest.mark.cuda
def test_cuda_epoch_end_state_round_trip():
    """On the GPU the totals are folded on the device; the epoch-end state (no accumulators,
    int32 counts) comes to the host and loads back to the same statistics."""
    gpu = SampleStats(N, C, "cuda")
    for e in range(2):
        for logits, labels, idx in epoch_batches(e):
            gpu.update(logits.cuda(), labels.cuda(), idx.cuda())
        gpu.end_epoch()
    state = gpu.state_dict()
    assert "counts" not in state and state["total_counts"].dtype == torch.int32
    assert all(t.device.type == "cpu" for t in state.values() if isinstance(t, torch.Tensor))
    again = SampleStats(N, C, "cuda")
    again.load_state_dict(state)
    for name, value in gpu.totals().items():
        np.testing.assert_array_equal(again.totals()[name], value, err_msg=name)
    np.testing.assert_array_equal(again.history, gpu.history)


@pytest.mark.cuda
def test_cuda_label_mismatch_reported_without_sync():
    labels = torch.arange(N) % C
    stats = SampleStats(N, C, "cuda", labels=labels)
    idx = torch.tensor([5, 9, 2], device="cuda")
    given = labels[[5, 9, 2]].cuda()
    given[1] = (given[1] + 1) % C
    stats.update(torch.randn(3, C, device="cuda"), given, idx)  # no synchronisation, no raise yet
    expected = rf"example 9 has label {int(labels[9])} .*a batch gave {int(given[1])}"
    with pytest.raises(ValueError, match=expected):
        stats.check()
    with pytest.raises(ValueError, match=expected):
        stats.end_epoch()
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match=expected):  # the poll raises at the next step
        stats.update(
            torch.randn(1, C, device="cuda"), labels[:1].cuda(), torch.tensor([0], device="cuda")
        )
    clean = SampleStats(N, C, "cuda", labels=labels)
    for logits, batch_labels, idx in epoch_batches(0):
        clean.update(logits.cuda(), batch_labels.cuda(), idx.cuda())
    clean.end_epoch()  # matching labels are accepted
    assert clean.totals()["presentations"].tolist() == [1] * N


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_cuda_error_poll_uses_the_statistics_device(monkeypatch):
    recorded = []
    original = torch.cuda.Event.record

    def spy(self, stream=None):
        recorded.append(stream)
        return original(self, stream)

    monkeypatch.setattr(torch.cuda.Event, "record", spy)
    with torch.cuda.device(0):
        stats = SampleStats(N, C, "cuda:1")
        side = torch.cuda.Stream(device="cuda:1")
        with torch.cuda.stream(side), torch.cuda.device(0):
            stats.update(
                torch.randn(2, C, device="cuda:1"),
                torch.tensor([0, C], device="cuda:1"),
                torch.tensor([0, 1], device="cuda:1"),
            )
        assert recorded and recorded[-1] is not None
        assert recorded[-1].device == torch.device("cuda:1") and recorded[-1] == side
        torch.cuda.synchronize(1)
        with pytest.raises(RuntimeError, match=r"label outside \[0, 7\).*batch row 1"):
            stats.update(
                torch.randn(1, C, device="cuda:1"),
                torch.tensor([0], device="cuda:1"),
                torch.tensor([0], device="cuda:1"),
            )


def test_history_grows_without_copying_every_epoch():
    """The history is a growing buffer: 40 epochs (past two growth steps) keep every record, a
    view taken earlier is unchanged by later epochs, and views are read-only."""
    from easyhard.stats import HISTORY_GROWTH

    N, C = 50, 3
    stats = SampleStats(N, C, labels=np.arange(N) % C)
    g = torch.Generator().manual_seed(0)
    seen = []
    for e in range(2 * HISTORY_GROWTH + 8):
        stats.update(torch.randn(N, C, generator=g), torch.arange(N) % C, torch.arange(N))
        stats.end_epoch()
        seen.append(stats.history[e].copy())
        if e == 3:
            early = stats.history
    assert stats.epochs == len(seen) == stats.history.shape[0]
    for e, rec in enumerate(seen):
        np.testing.assert_array_equal(stats.history[e], rec)
    assert early.shape[0] == 4
    np.testing.assert_array_equal(early, np.stack(seen[:4]))
    with pytest.raises(ValueError):
        stats.history[0]["correct"] = 7
    restored = SampleStats(N, C, labels=np.arange(N) % C)
    restored.load_state_dict(stats.state_dict())
    np.testing.assert_array_equal(restored.history, stats.history)
    restored.update(torch.randn(N, C, generator=g), torch.arange(N) % C, torch.arange(N))
    restored.end_epoch()
    assert restored.epochs == stats.epochs + 1

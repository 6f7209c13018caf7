"""Tests of easyhard's custom ops against easyhard.reference (CPU here; CUDA under `cuda`)."""

from __future__ import annotations

import os
import re
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from easyhard import ops, reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 2), (7, 3), (64, 10), (33, 1000), (5, 1537)]


def make_batch(B, C, N, dtype, seed, *, duplicates=False, device="cpu", scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, C, generator=g) * scale).to(dtype)
    labels = torch.randint(0, C, (B,), generator=g)
    if duplicates:
        indices = torch.randint(0, max(1, min(N, B // 2 + 1)), (B,), generator=g)
    else:
        indices = torch.randperm(N, generator=g)[:B]
    return logits.to(device), labels.to(device), indices.to(device)


def run(fn, batches, N, device="cpu", flags=None):
    state = ops.new_state(N, device)
    if flags is not None:
        state["flags"].copy_(flags)
    for logits, labels, indices in batches:
        fn(logits, labels, indices, state["counts"], state["sums"], state["flags"], state["errors"])
    return state


def assert_states_match(got, want, rtol=2e-5, atol=2e-5):
    torch.testing.assert_close(got["counts"], want["counts"], rtol=0, atol=0)
    torch.testing.assert_close(got["flags"], want["flags"], rtol=0, atol=0)
    torch.testing.assert_close(got["sums"], want["sums"], rtol=rtol, atol=atol)


class TestAccumulateStats:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize("duplicates", [False, True])
    def test_matches_reference(self, dtype, shape, duplicates):
        B, C = shape
        N = 2 * B + 3
        # A digest, not hash(): torch.dtype hashes by identity, so hash() differed per process.
        seed = zlib.crc32(repr((str(dtype), shape, duplicates)).encode()) % 10_000
        # Several batches, so that last-correct flags and forgetting events come into play.
        batches = [make_batch(B, C, N, dtype, seed + k, duplicates=duplicates) for k in range(4)]
        got = run(ops.accumulate_stats, batches, N)
        want = run(reference.accumulate_stats, batches, N)
        assert_states_match(got, want)
        assert int(got["counts"][:, 0].sum()) == 4 * B
        assert got["errors"].tolist() == [0, -1]

    def test_forgetting_sequence(self):
        # Example 0: correct, correct, wrong, correct, wrong -> two forgetting events.
        seq = [True, True, False, True, False]
        state = ops.new_state(1)
        for ok in seq:
            logits = torch.tensor([[2.0, 0.0]]) if ok else torch.tensor([[0.0, 2.0]])
            ops.accumulate_stats(logits, torch.tensor([0]), torch.tensor([0]), **state)
        counts = state["counts"][0].tolist()
        assert counts == [5, 3, 2, 0]
        assert int(state["flags"][0]) == 0

    def test_hand_computed_values(self):
        logits = torch.tensor([[1.0, 3.0, 0.5], [2.0, 2.0, -1.0]])
        state = ops.new_state(2)
        ops.accumulate_stats(logits, torch.tensor([1, 1]), torch.tensor([0, 1]), **state)
        p = torch.softmax(logits, 1)
        # Row 0: correct; row 1: a tie between classes 0 and 1, resolved to 0 as torch.argmax does.
        assert state["counts"][:, 1].tolist() == [1, 0]
        torch.testing.assert_close(state["sums"][0, 0], p[0, 1])
        torch.testing.assert_close(state["sums"][0, 2], torch.tensor(2.0))  # 3 - 1
        torch.testing.assert_close(state["sums"][1, 2], torch.tensor(0.0))  # tie: margin 0
        torch.testing.assert_close(state["sums"][0, 3], -torch.log(p[0, 1]))
        el2n = (p[1] - torch.tensor([0.0, 1.0, 0.0])).norm()
        torch.testing.assert_close(state["sums"][1, 4], el2n)

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    def test_nonfinite_rows_are_isolated(self, bad):
        logits, labels, _ = make_batch(6, 5, 6, torch.float32, 7)
        logits[2, 3] = bad
        labels[2] = 3
        indices = torch.arange(6)
        state = ops.new_state(6)
        state["flags"][2] = 1  # was correct: a non-finite row is incorrect -> forgetting event
        ops.accumulate_stats(logits, labels, indices, **state)
        assert state["counts"][2].tolist() == [1, 0, 1, 1]
        assert state["sums"][2].tolist() == [0.0] * 5
        assert torch.isfinite(state["sums"]).all()
        clean = ops.new_state(6)
        keep = torch.tensor([0, 1, 3, 4, 5])
        ops.accumulate_stats(logits[keep], labels[keep], keep, **clean)
        torch.testing.assert_close(state["sums"][keep], clean["sums"][keep], rtol=0, atol=0)

    def test_duplicates_form_one_observation(self):
        # Example 0 appears three times in one batch, once wrongly: one forgetting event, flag 0.
        logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0]])
        state = ops.new_state(2)
        state["flags"][0] = 1
        ops.accumulate_stats(logits, torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]), **state)
        assert state["counts"][0].tolist() == [3, 2, 1, 0]
        assert int(state["flags"][0]) == 0
        # All rows correct: the flag becomes 1, no event.
        ops.accumulate_stats(logits[[0, 2]], torch.tensor([0, 0]), torch.tensor([1, 1]), **state)
        assert int(state["flags"][1]) == 1 and int(state["counts"][1, 2]) == 0

    def test_strided_logits(self):
        big, labels, indices = make_batch(16, 40, 16, torch.float32, 3)
        view = big[:, ::2]  # non-contiguous
        got = run(ops.accumulate_stats, [(view, labels % 20, indices)], 16)
        want = run(reference.accumulate_stats, [(view.contiguous(), labels % 20, indices)], 16)
        assert_states_match(got, want)

    def test_empty_batch(self):
        state = ops.new_state(4)
        ops.accumulate_stats(
            torch.zeros(0, 3),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
            **state,
        )
        assert int(state["counts"].sum()) == 0

    # ---------------------------------------------------------------- bad input
    @pytest.mark.parametrize(
        "labels, indices, message",
        [
            ([0, 3], [0, 1], r"labels\[1\] = 3 is outside \[0, 3\)"),
            ([-1, 0], [0, 1], r"labels\[0\] = -1 is outside \[0, 3\)"),
            ([0, 1], [0, 4], r"indices\[1\] = 4 is outside \[0, 4\)"),
            ([0, 1], [-2, 1], r"indices\[0\] = -2 is outside \[0, 4\)"),
        ],
    )
    def test_out_of_range_refused_without_writing(self, labels, indices, message):
        state = ops.new_state(4)
        before = {k: v.clone() for k, v in state.items()}
        with pytest.raises(RuntimeError, match=message):
            ops.accumulate_stats(
                torch.randn(2, 3), torch.tensor(labels), torch.tensor(indices), **state
            )
        for k in state:
            assert torch.equal(state[k], before[k]), k

    @pytest.mark.parametrize(
        "change, message",
        [
            (dict(logits=torch.randn(4)), "logits must be 2-D"),
            (dict(logits=torch.randn(2, 1)), "at least 2 classes"),
            (dict(logits=torch.randn(2, 3, dtype=torch.float64)), "logits must be float32"),
            (dict(logits=torch.ones(2, 3, dtype=torch.int64)), "logits must be float32"),
            (dict(labels=torch.tensor([0, 1, 2])), r"labels must have shape \[2\]"),
            (dict(labels=torch.tensor([0, 1], dtype=torch.int32)), "labels must be int64"),
            (dict(indices=torch.tensor([[0, 1]])), r"indices must have shape \[2\]"),
            (dict(indices=torch.tensor([0.0, 1.0])), "indices must be int64"),
            (dict(counts=torch.zeros(4, 3, dtype=torch.int32)), r"counts must have shape \[N, 4\]"),
            (dict(counts=torch.zeros(4, 4)), "counts must be int32"),
            (dict(sums=torch.zeros(5, 5)), r"sums must have shape \[4, 5\]"),
            (dict(sums=torch.zeros(4, 5, dtype=torch.float64)), "sums must be float32"),
            (dict(flags=torch.zeros(3, dtype=torch.int32)), r"flags must have shape \[4\]"),
            (dict(flags=torch.zeros(4, dtype=torch.int64)), "flags must be int32"),
            (dict(errors=torch.zeros(3, dtype=torch.int64)), "errors must be an int64 tensor"),
            (dict(errors=torch.zeros(2)), "errors must be an int64 tensor"),
            (dict(errors=torch.zeros(1, 2, dtype=torch.int64)), "errors must be an int64 tensor"),
            (dict(labels=torch.tensor([False, True])), "labels must be int64"),
            (dict(labels=torch.tensor([0.0, 1.0])), "labels must be int64"),
            (dict(indices=torch.tensor([0, 1], dtype=torch.int32)), "indices must be int64"),
            (dict(sums=torch.zeros(5, 4).t()), "must be contiguous"),
        ],
    )
    def test_bad_arguments_refused(self, change, message):
        args = dict(
            logits=torch.randn(2, 3),
            labels=torch.tensor([0, 1]),
            indices=torch.tensor([0, 1]),
            **ops.new_state(4),
        )
        args.update(change)
        with pytest.raises(RuntimeError, match=message):
            ops.accumulate_stats(**args)

    @pytest.mark.parametrize("name", ["labels", "indices"])
    def test_reference_refuses_non_integer_rows(self, name):
        args = dict(
            logits=torch.randn(2, 3),
            labels=torch.tensor([0, 1]),
            indices=torch.tensor([0, 1]),
            **ops.new_state(4),
        )
        args[name] = args[name].float() + 0.5
        with pytest.raises(TypeError, match=f"{name} must be int64"):
            reference.accumulate_stats(**args)

    @pytest.mark.parametrize("name", ["labels", "indices", "counts", "sums", "flags", "errors"])
    def test_argument_on_another_device_refused(self, name):
        # A meta tensor among CPU ones routes the call to the fake kernel, which must refuse it
        # as the real kernels do (it used to return without writing anything).
        args = dict(
            logits=torch.randn(2, 3),
            labels=torch.tensor([0, 1]),
            indices=torch.tensor([0, 1]),
            **ops.new_state(4),
        )
        args[name] = args[name].to("meta")
        with pytest.raises(RuntimeError, match=f"{name} is on meta but logits is on cpu"):
            ops.accumulate_stats(**args)

    # ---------------------------------------------------------------- dispatcher integration
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_opcheck(self, dtype):
        logits, labels, indices = make_batch(8, 10, 12, dtype, 11, duplicates=True)
        state = ops.new_state(12)
        opcheck_accumulate(logits, labels, indices, state)

    def test_torch_compile_fullgraph(self):
        model = torch.nn.Linear(6, 5)

        @torch.compile(fullgraph=True)
        def step(x, labels, indices, counts, sums, flags, errors):
            logits = model(x)
            ops.accumulate_stats(logits, labels, indices, counts, sums, flags, errors)
            return logits.sum()

        x = torch.randn(16, 6)
        labels, indices = torch.randint(0, 5, (16,)), torch.randperm(20)[:16]
        got, want = ops.new_state(20), ops.new_state(20)
        with torch.no_grad():
            step(x, labels, indices, **got)
            reference.accumulate_stats(model(x), labels, indices, **want)
        assert_states_match(got, want)

    # ---------------------------------------------------------------- properties
    @settings(max_examples=60, deadline=None)
    @given(
        B=st.integers(0, 40),
        C=st.integers(2, 30),
        N=st.integers(1, 25),
        seed=st.integers(0, 2**31 - 1),
        steps=st.integers(1, 4),
        dtype=st.sampled_from(DTYPES),
    )
    def test_counts_add_up(self, B, C, N, seed, steps, dtype):
        g = torch.Generator().manual_seed(seed)
        state = ops.new_state(N)
        for _ in range(steps):
            logits = (torch.randn(B, C, generator=g) * 4).to(dtype)
            labels = torch.randint(0, C, (B,), generator=g)
            indices = torch.randint(0, N, (B,), generator=g)
            ops.accumulate_stats(logits, labels, indices, **state)
        c = state["counts"]
        assert int(c[:, 0].sum()) == B * steps
        assert (c[:, 1] <= c[:, 0]).all() and (c[:, 2] <= c[:, 0]).all()
        assert (c[:, 1] + c[:, 2] <= c[:, 0] + c[:, 1]).all()
        assert set(state["flags"].unique().tolist()) <= {0, 1}
        s = state["sums"]
        assert ((s[:, 0] >= 0) & (s[:, 0] <= c[:, 0] + 1e-4)).all()  # probabilities in [0, 1]
        assert (s[:, 3] >= -1e-5).all() and (s[:, 4] <= 1.4143 * c[:, 0] + 1e-4).all()


PATHS = ["baseline", "avx2", "avx512"]


@pytest.fixture(params=PATHS)
def cpu_path(request, monkeypatch):
    """Each CPU instruction-set path in turn (EASYHARD_CPU_CAPABILITY), skipped with the reason
    where this CPU cannot run it."""
    path = request.param
    if path not in ops.cpu_capabilities():
        pytest.skip(f"this CPU cannot run the {path} path (it runs {ops.cpu_capabilities()})")
    monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", path)
    assert ops.cpu_capability() == path
    return path


class TestCpuPaths:
    """Every path this CPU runs, against the reference: counts exact, sums within its tolerance,
    the exponential's error bound (and its flush to zero), the argmax rule at chunk edges."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize(
        "shape",
        [(1, 2), (7, 3), (64, 10), (9, 16), (33, 17), (20, 31), (33, 1000), (5, 1537), (1100, 64)],
    )
    @pytest.mark.parametrize("duplicates", [False, True])
    def test_matches_reference(self, cpu_path, dtype, shape, duplicates):
        B, C = shape
        N = 2 * B + 3
        seed = zlib.crc32(repr((cpu_path, str(dtype), shape, duplicates)).encode()) % 10_000
        batches = [make_batch(B, C, N, dtype, seed + k, duplicates=duplicates) for k in range(3)]
        # the label in the last chunk and the tail too, where masking it out is its own case
        batches.append((batches[0][0], torch.full((B,), C - 1), batches[0][2]))
        got = run(ops.accumulate_stats, batches, N)
        want = run(reference.accumulate_stats, batches, N)
        assert_states_match(got, want)
        # the scatter shares examples between threads on large batches: the same on one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            single = run(ops.accumulate_stats, batches, N)
        finally:
            torch.set_num_threads(threads)
        assert_states_match(got, single, rtol=0, atol=0)

    def test_exp_error_bound_and_flush_to_zero(self, cpu_path):
        """Rows [0, d] with label 0: the loss is log1p(exp(d)) computed from the kernel's own
        exp(d). Within 2 ulp of float64 for d >= -87, exactly 0 below (the kernel flushes)."""
        d = torch.cat([torch.linspace(-120, 0, 200_001), torch.tensor([-87.0, -87.00001])])
        logits = torch.stack([torch.zeros_like(d), d], 1)
        state = ops.new_state(len(d))
        labels = torch.zeros(len(d), dtype=torch.long)
        ops.accumulate_stats(logits, labels, torch.arange(len(d)), **state)
        loss = state["sums"][:, ops.LOSS_SUM].double()
        want = torch.log1p(torch.exp(d.double()))
        kept = d >= -87
        rel = ((loss - want).abs() / want)[kept]
        assert float(rel.max()) <= 2 * torch.finfo(torch.float32).eps, float(rel.max())
        assert (loss[~kept] == 0).all()
        # EL2N = sqrt(2) e / (1 + e) uses exp(2d) too: where e^2 is a normal float (d > -43)
        el2n = state["sums"][:, ops.EL2N_SUM].double()
        square = d > -43
        e = want.expm1()
        torch.testing.assert_close(el2n[square], (2**0.5 * e / (1 + e))[square], rtol=1e-6, atol=0)

    def test_first_maximum_wins_at_every_lane(self, cpu_path):
        """torch.argmax's rule (the first maximum) with the tie in every position of a row that
        spans several chunks and a tail: the label's correctness must match."""
        C = 37
        rows, labels = [], []
        for label in range(C):
            for other in range(C):
                row = torch.zeros(C)
                row[label] = row[other] = 5.0
                rows.append(row)
                labels.append(label)
        logits, labels = torch.stack(rows), torch.tensor(labels)
        state = ops.new_state(len(labels))
        ops.accumulate_stats(logits, labels, torch.arange(len(labels)), **state)
        want = (logits.argmax(1) == labels).int()
        assert torch.equal(state["counts"][:, ops.CORRECT], want)

    def test_nonfinite_rows_are_isolated(self, cpu_path):
        logits, labels, _ = make_batch(6, 45, 6, torch.float32, 9)
        logits[1, 44] = float("nan")  # in the tail
        logits[3, 2] = float("inf")  # in the first chunk
        state = ops.new_state(6)
        ops.accumulate_stats(logits, labels, torch.arange(6), **state)
        assert state["counts"][:, ops.NONFINITE].tolist() == [0, 1, 0, 1, 0, 0]
        assert torch.isfinite(state["sums"]).all()

    @pytest.mark.parametrize(
        "C, path, narrower",
        [(10, "avx512", "avx2"), (15, "avx512", "avx2"), (5, "avx2", "baseline"),
         (3, "avx512", "baseline")],
    )  # fmt: skip
    def test_rows_narrower_than_a_vector_take_a_narrower_paths_code(self, monkeypatch, C, path,
                                                                    narrower):  # fmt: skip
        """A row shorter than the path's vector (C = 10 under AVX-512's 16 lanes) is computed by
        the widest narrower path whose vector it fills: bit for bit that path's result."""
        if path not in ops.cpu_capabilities():
            pytest.skip(f"this CPU cannot run the {path} path")
        batch = make_batch(300, C, 300, torch.float32, 11)
        states = {}
        for p in (path, narrower):
            monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", p)
            states[p] = run(ops.accumulate_stats, [batch], 300)
        assert_states_match(states[path], states[narrower], rtol=0, atol=0)

    def test_the_paths_agree_to_rounding(self, monkeypatch):
        logits, labels, indices = make_batch(64, 1000, 64, torch.float32, 5)
        results = {}
        for path in ops.cpu_capabilities():
            monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", path)
            results[path] = run(ops.accumulate_stats, [(logits, labels, indices)], 64)
        first = results.pop("baseline")
        for state in results.values():
            assert_states_match(state, first, rtol=1e-6, atol=1e-6)

    def test_a_bad_capability_name_is_refused(self, monkeypatch):
        monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", "sse9")
        with pytest.raises(ValueError, match="EASYHARD_CPU_CAPABILITY=sse9 is not a CPU path"):
            ops.cpu_capability()
        logits, labels, indices = make_batch(2, 3, 2, torch.float32, 1)
        state = ops.new_state(2)
        with pytest.raises(RuntimeError, match="use baseline, avx2, avx512 or auto"):
            ops.accumulate_stats(logits, labels, indices, **state)
        assert int(state["counts"].sum()) == 0
        monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", "auto")
        assert ops.cpu_capability() == ops.cpu_capabilities()[-1]

    def test_a_path_this_cpu_cannot_run_is_refused(self, monkeypatch):
        missing = [p for p in PATHS if p not in ops.cpu_capabilities()]
        if not missing:
            pytest.skip(f"this CPU runs every path ({PATHS})")
        monkeypatch.setenv("EASYHARD_CPU_CAPABILITY", missing[-1])
        with pytest.raises(ValueError, match="names a path this CPU cannot run"):
            ops.cpu_capability()

    def test_statistics_files_record_the_kernel(self, cpu_path, tmp_path):
        from easyhard import SampleStats

        stats = SampleStats(8, 3)
        logits, labels, indices = make_batch(8, 3, 8, torch.float32, 2)
        stats.update(logits, labels, indices)
        stats.end_epoch()
        stats.save(tmp_path / "s.npz")
        again = SampleStats.load(tmp_path / "s.npz")
        assert again.metadata["kernels"] == [f"cpu-{cpu_path}"]
        assert again.kernels == {f"cpu-{cpu_path}"}
        restored = SampleStats(8, 3)
        restored.load_state_dict(stats.state_dict())
        assert restored.kernels == {f"cpu-{cpu_path}"}


@pytest.mark.cuda
class TestAccumulateStatsCUDA:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("shape", SHAPES + [(1024, 1000), (512, 10), (3, 21841)])
    @pytest.mark.parametrize("duplicates", [False, True])
    def test_cuda_matches_cpu(self, dtype, shape, duplicates):
        B, C = shape
        N = 2 * B + 3
        batches = [make_batch(B, C, N, dtype, 100 + k, duplicates=duplicates) for k in range(3)]
        cpu = run(ops.accumulate_stats, batches, N)
        gpu_batches = [tuple(t.cuda() for t in b) for b in batches]
        gpu = run(ops.accumulate_stats, gpu_batches, N, device="cuda")
        assert_states_match({k: v.cpu() for k, v in gpu.items()}, cpu, rtol=1e-4, atol=1e-4)
        assert gpu["errors"].tolist() == [0, -1]

    def test_cuda_unaligned_rows(self):
        # C = 1001 defeats the 16-byte vector loads; a sliced view starts off-alignment.
        logits, labels, indices = make_batch(64, 1002, 64, torch.bfloat16, 5)
        view = logits[:, 1:]
        cpu = run(ops.accumulate_stats, [(view, labels % 1001, indices)], 64)
        gpu = run(
            ops.accumulate_stats,
            [(view.cuda(), (labels % 1001).cuda(), indices.cuda())],
            64,
            device="cuda",
        )
        assert_states_match({k: v.cpu() for k, v in gpu.items()}, cpu, rtol=1e-4, atol=1e-4)

    def test_cuda_invalid_rows_recorded_not_written(self):
        logits, labels, indices = make_batch(8, 5, 8, torch.float32, 9, device="cuda")
        labels[3] = 5
        indices[6] = 8
        state = ops.new_state(8, "cuda")
        ops.accumulate_stats(logits, labels, indices, **state)
        errors = state["errors"].tolist()
        assert errors == [ops.ERROR_LABEL | ops.ERROR_INDEX, 3]
        assert int(state["counts"][:, 0].sum()) == 6

    def test_cuda_mixed_devices_refused(self):
        state = ops.new_state(4, "cuda")
        with pytest.raises(RuntimeError, match="labels is on cpu but logits is on cuda"):
            ops.accumulate_stats(
                torch.randn(2, 3, device="cuda"),
                torch.tensor([0, 1]),
                torch.tensor([0, 1], device="cuda"),
                **state,
            )

    def test_cuda_opcheck_and_compile(self):
        logits, labels, indices = make_batch(8, 10, 12, torch.bfloat16, 11, device="cuda")
        state = ops.new_state(12, "cuda")
        opcheck_accumulate(logits, labels, indices, state)
        fn = torch.compile(ops.accumulate_stats, fullgraph=True)
        fn(logits, labels, indices, **ops.new_state(12, "cuda"))


def tied_scores(N, seed, dtype=torch.float32, levels=7, nan_frac=0.0):
    """Scores with many ties (few distinct values), some -0.0/0.0 and optional NaNs."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randint(-levels, levels + 1, (N,), generator=g).to(dtype) / 2
    s[s == 0] = torch.where(torch.rand(int((s == 0).sum()), generator=g) < 0.5, -0.0, 0.0).to(dtype)
    if nan_frac:
        s[torch.rand(N, generator=g) < nan_frac] = float("nan")
    return s


def balanced_budgets(labels, C, frac):
    sizes = np.bincount(labels.numpy(), minlength=C)
    return torch.from_numpy(np.floor(sizes * frac).astype(np.int64))


FLOATS_ONLY = "scores must be float32 or float64"


def opcheck_accumulate(logits, labels, indices, state) -> None:
    """torch.library.opcheck of accumulate_stats on one batch and a new_state."""
    fields = ("counts", "sums", "flags", "errors")
    torch.library.opcheck(
        torch.ops.easyhard.accumulate_stats.default,
        (logits, labels, indices, *(state[f] for f in fields)),
    )


def per_class(k, labels, budgets, scores=None) -> dict:
    """topk_select's arguments for a per-class call over three scores (lists become int64)."""
    as_tensor = lambda x: x if isinstance(x, torch.Tensor) else torch.tensor(x)  # noqa: E731
    scores = torch.zeros(3) if scores is None else scores
    return dict(scores=scores, k=k, labels=as_tensor(labels), budgets=as_tensor(budgets))


class TestTopkSelect:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("largest", [True, False])
    @pytest.mark.parametrize("N, k", [(1, 1), (50, 0), (50, 50), (1000, 137), (4097, 2000)])
    def test_global_matches_reference(self, dtype, largest, N, k):
        s = tied_scores(N, N + k, dtype, nan_frac=0.05)
        got = ops.topk_select(s, k, largest)
        want = reference.topk_select(s.numpy(), k, largest)
        assert got.dtype == torch.int64 and got.tolist() == want.tolist()

    @pytest.mark.parametrize("largest", [True, False])
    @pytest.mark.parametrize("C", [1, 3, 100])
    def test_per_class_matches_reference(self, largest, C):
        N = 3000
        s = tied_scores(N, C, nan_frac=0.02)
        labels = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(C))
        budgets = balanced_budgets(labels, C, 0.3)
        k = int(budgets.sum())
        got = ops.topk_select(s, k, largest, labels, budgets)
        want = reference.topk_select(s.numpy(), k, largest, labels.numpy(), budgets.numpy())
        assert got.tolist() == want.tolist()
        per_class = np.bincount(labels[got].numpy(), minlength=C)
        assert per_class.tolist() == budgets.tolist()

    def test_ties_broken_by_index_and_nan_last(self):
        s = torch.tensor([1.0, float("nan"), 3.0, 3.0, -0.0, 0.0, 3.0])
        assert ops.topk_select(s, 2, True).tolist() == [2, 3]
        assert ops.topk_select(s, 3, False).tolist() == [0, 4, 5]
        assert ops.topk_select(s, 7, True).tolist() == list(range(7))
        assert 1 not in ops.topk_select(s, 6, False).tolist()  # NaN is the last one left

    def test_large_n(self):
        N = 3_000_000
        s = torch.rand(N, generator=torch.Generator().manual_seed(0))
        got = ops.topk_select(s, 1000, True)
        want = torch.topk(s, 1000).indices.sort().values
        assert torch.equal(got, want)

    @pytest.mark.slow
    def test_imagenet21k_scale(self):
        """14.2M examples, 21,841 classes: per-class budgets exact, global top-k as torch.topk."""
        N, C = 14_200_000, 21_841
        g = torch.Generator().manual_seed(0)
        s, labels = torch.rand(N, generator=g), torch.randint(0, C, (N,), generator=g)
        budgets = (torch.bincount(labels, minlength=C).double() * 0.3).floor().long()
        k = int(budgets.sum())
        got = ops.topk_select(s, k, True, labels, budgets)
        assert torch.equal(torch.bincount(labels[got], minlength=C), budgets)
        assert torch.equal(
            ops.topk_select(s, 1000, True), torch.topk(s, 1000).indices.sort().values
        )

    @pytest.mark.parametrize(
        "args, message",
        [
            (dict(scores=torch.zeros(3, 2), k=1), "scores must be 1-D"),
            (dict(scores=torch.zeros(3, dtype=torch.int64), k=1), FLOATS_ONLY),
            (dict(scores=torch.zeros(3), k=4), r"k=4 must be in \[0, N=3\]"),
            (dict(scores=torch.zeros(3), k=-1), r"k=-1 must be in"),
            (dict(scores=torch.zeros(3), k=1, labels=torch.tensor([0, 1, 1])),
             "labels and budgets go together"),
            (per_class(1, [0, 1], [1, 0]), r"labels must have shape \[3\]"),
            (per_class(1, [0, 2, 1], [1, 0]), r"labels\[1\] = 2 is outside \[0, 2\)"),
            (per_class(2, [0, 0, 1], [0, 2]),
             r"budgets\[1\] = 2 exceeds the 1 examples of class 1"),
            (per_class(2, [0, 0, 1], [1, 0]), "budgets sum to 1 but k=2"),
            (per_class(0, [0, 0, 1], [-1, 1]), r"budgets\[0\] = -1 is negative"),
            (per_class(1, torch.tensor([0, 0, 1], dtype=torch.int32), [1, 0]),
             "labels must be int64"),
            (per_class(1, torch.tensor([0.0, 0.0, 1.0]), [1, 0]), "labels must be int64"),
            (per_class(1, [0, 0, 1], torch.tensor([1, 0], dtype=torch.int32)),
             "budgets must be int64"),
            (per_class(1, [0, 0, 1], torch.tensor([1.0, 0.0])), "budgets must be int64"),
            (per_class(1, [0, 0, 1], [[1, 0]]), r"budgets must be 1-D \[C\]"),
            (per_class(0, [0, 0, 1], torch.zeros(0, dtype=torch.int64)),
             r"budgets must be 1-D \[C\]"),
            (dict(scores=torch.zeros(3, dtype=torch.float16), k=1), FLOATS_ONLY),
            (dict(scores=torch.zeros(3, dtype=torch.bool), k=1), FLOATS_ONLY),
            # k = 0 validates like any other k.
            (per_class(0, [0, 5, 1], [0, 0]), r"labels\[1\] = 5 is outside \[0, 2\)"),
            (per_class(0, [0, 0, 1], [1, 0]), "budgets sum to 1 but k=0"),
            (per_class(0, torch.zeros(0, dtype=torch.int64), [1], scores=torch.zeros(0)),
             r"budgets\[0\] = 1 exceeds the 0 examples of class 0"),
            # A meta tensor among CPU ones routes the call to the fake kernel: it refuses, as the
            # real kernels do (it used to return an uninitialised result).
            (per_class(1, torch.tensor([0, 0, 1], device="meta"), [1, 0]),
             "labels is on meta but scores is on cpu"),
            (per_class(1, [0, 0, 1], torch.tensor([1, 0], device="meta")),
             "budgets is on meta but must be on the CPU or on scores' device"),
        ],
    )  # fmt: skip
    def test_bad_input_refused(self, args, message):
        largest = args.pop("largest", True)
        with pytest.raises(RuntimeError, match=message):
            ops.topk_select(args.pop("scores"), args.pop("k"), largest, **args)

    @pytest.mark.parametrize(
        "k, largest, message",
        [
            (True, True, "k must be an integer, got bool"),
            (2.0, True, "k must be an integer, got float"),
            (torch.tensor(2.7), True, "k must be an integer, got Tensor"),
            (torch.tensor(2), True, "k must be an integer, got Tensor"),
            (2, None, "largest must be a bool, got NoneType"),
            (2, 1, "largest must be a bool, got int"),
            (2, "yes", "largest must be a bool, got str"),
        ],
    )
    def test_k_and_largest_not_cast(self, k, largest, message):
        with pytest.raises(TypeError, match=message):
            ops.topk_select(torch.rand(5), k, largest)

    @pytest.mark.parametrize(
        "args, message",
        [
            (dict(k=1.0), "k must be an integer"),
            (dict(k=True), "k must be an integer"),
            (
                dict(k=1, labels=np.array([0.0, 1.9, 1.0]), budgets=np.array([1, 0])),
                "labels must be integers",
            ),
            (
                dict(k=1, labels=np.array([0, 1, 1]), budgets=np.array([1.0, 0.0])),
                "budgets must be integers",
            ),
        ],
    )
    def test_reference_does_not_truncate(self, args, message):
        with pytest.raises(TypeError, match=message):
            reference.topk_select(np.zeros(3), args.pop("k"), True, **args)

    def test_numpy_scalars_accepted(self):
        s = torch.tensor([0.5, 2.0, 1.0])
        assert ops.topk_select(s, np.int64(2), np.bool_(True)).tolist() == [1, 2]

    def test_opcheck_and_compile(self):
        s = tied_scores(200, 1)
        labels = torch.arange(200) % 4
        budgets = torch.tensor([5, 6, 7, 8])
        torch.library.opcheck(
            torch.ops.easyhard.topk_select.default, (s, 26, True, labels, budgets)
        )
        torch.library.opcheck(torch.ops.easyhard.topk_select.default, (s, 10, False, None, None))
        fn = torch.compile(lambda x: ops.topk_select(x * 2, 10, True), fullgraph=True)
        assert fn(s).tolist() == reference.topk_select((s * 2).numpy(), 10, True).tolist()

    @settings(max_examples=80, deadline=None)
    @given(
        N=st.integers(1, 300),
        C=st.integers(1, 12),
        frac=st.floats(0, 1),
        seed=st.integers(0, 2**31 - 1),
        largest=st.booleans(),
    )
    def test_sizes_are_exact(self, N, C, frac, seed, largest):
        s = tied_scores(N, seed, levels=3, nan_frac=0.1)
        labels = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(seed))
        budgets = balanced_budgets(labels, C, frac)
        k = int(budgets.sum())
        got = ops.topk_select(s, k, largest, labels, budgets)
        assert len(got) == k and len(set(got.tolist())) == k
        assert np.bincount(labels[got].numpy(), minlength=C).tolist() == budgets.tolist()
        kg = int(frac * N)
        assert len(ops.topk_select(s, kg, largest)) == kg


@pytest.mark.cuda
class TestTopkSelectCUDA:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
    @pytest.mark.parametrize("largest", [True, False])
    def test_cuda_matches_cpu(self, dtype, largest):
        N, C = 200_003, 1000
        s = tied_scores(N, 5, dtype, levels=50, nan_frac=0.01)
        labels = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(1))
        budgets = balanced_budgets(labels, C, 0.37)
        k = int(budgets.sum())
        cpu = ops.topk_select(s, k, largest, labels, budgets)
        gpu = ops.topk_select(s.cuda(), k, largest, labels.cuda(), budgets.cuda())
        assert torch.equal(gpu.cpu(), cpu)
        assert torch.equal(
            ops.topk_select(s.cuda(), 5000, largest).cpu(), ops.topk_select(s, 5000, largest)
        )

    def test_cuda_validates_before_returning_for_k0(self):
        s = torch.zeros(3, device="cuda")
        lab = torch.tensor([0, 0, 1], device="cuda")
        with pytest.raises(RuntimeError, match=r"budgets\[0\] = -1 is negative"):
            ops.topk_select(s, 0, True, lab, torch.tensor([-1, 1]))
        with pytest.raises(RuntimeError, match="budgets sum to 1 but k=0"):
            ops.topk_select(s, 0, True, lab, torch.tensor([1, 0], device="cuda"))
        with pytest.raises(RuntimeError, match=r"labels\[1\] = 5 is outside \[0, 2\)"):
            ops.topk_select(
                s, 0, True, torch.tensor([0, 5, 1], device="cuda"), torch.tensor([0, 0])
            )
        with pytest.raises(RuntimeError, match=r"exceeds the 0 examples of class 0"):
            ops.topk_select(
                torch.zeros(0, device="cuda"),
                0,
                True,
                torch.zeros(0, dtype=torch.int64, device="cuda"),
                torch.tensor([1]),
            )
        with pytest.raises(RuntimeError, match="labels is on cpu but scores is on cuda"):
            ops.topk_select(s, 0, True, lab.cpu(), torch.tensor([0, 0]))
        assert ops.topk_select(s, 0, True, lab, torch.tensor([0, 0])).shape == (0,)

    def test_cuda_refuses_bad_budgets(self):
        s = torch.zeros(3, device="cuda")
        with pytest.raises(RuntimeError, match="exceeds the 1 examples of class 1"):
            ops.topk_select(
                s, 2, True, torch.tensor([0, 0, 1], device="cuda"), torch.tensor([0, 2])
            )
        with pytest.raises(RuntimeError, match=r"labels must be in \[0, 2\)"):
            ops.topk_select(
                s, 1, True, torch.tensor([0, 5, 1], device="cuda"), torch.tensor([1, 0])
            )


def test_column_names_mirror_the_cpp_header():
    """ops' column indices are those of csrc/accumulate_stats.h, by name."""
    header = open(
        os.path.join(os.path.dirname(__file__), "..", "csrc", "accumulate_stats.h")
    ).read()
    consts = {m[0]: int(m[1]) for m in re.findall(r"constexpr int64_t (k\w+) = (\d+);", header)}
    pairs = {
        "kPresentations": ops.PRESENTATIONS,
        "kCorrect": ops.CORRECT,
        "kForgetting": ops.FORGETTING,
        "kNonFinite": ops.NONFINITE,
        "kNumCounts": len(ops.COUNT_FIELDS),
        "kProbSum": ops.PROB_SUM,
        "kProbSqSum": ops.PROB_SQ_SUM,
        "kMarginSum": ops.MARGIN_SUM,
        "kLossSum": ops.LOSS_SUM,
        "kEl2nSum": ops.EL2N_SUM,
        "kNumSums": len(ops.SUM_FIELDS),
    }
    assert {k: consts[k] for k in pairs} == pairs
    assert ops.COUNT_FIELDS[ops.FORGETTING] == "forgetting_events"
    assert ops.SUM_FIELDS[ops.EL2N_SUM] == "el2n_sum"

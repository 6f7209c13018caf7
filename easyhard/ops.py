"""Python wrappers of easyhard's custom ops: the only module that touches torch.ops.easyhard.

Each op has a wrapper with its documentation here and a fake (meta) kernel registered beside it,
so that the ops trace under torch.compile(fullgraph=True) and pass torch.library.opcheck. The
pure-PyTorch reference of each op lives in easyhard.reference under the same name.
"""

from __future__ import annotations

import operator

import numpy as np
import torch

from . import _extension

try:
    from . import _C  # registers the ops under torch.ops.easyhard
except (ImportError, OSError) as e:
    raise ImportError(
        f"easyhard's compiled extension failed to load ({e}). " + _extension.REBUILD
    ) from e
if not _extension.same_release(_C.torch_version, torch.__version__):
    raise ImportError(
        f"easyhard's extension was built against torch {_C.torch_version}, but torch "
        f"{torch.__version__} is imported. " + _extension.REBUILD
    )

# Columns of the per-example state (mirrors csrc/accumulate_stats.h).
COUNT_FIELDS = ("presentations", "correct", "forgetting_events", "nonfinite")
SUM_FIELDS = ("prob_sum", "prob_sq_sum", "margin_sum", "loss_sum", "el2n_sum")
# Column indices by name, as kPresentations ... kNonFinite and kProbSum ... kEl2nSum in C++.
PRESENTATIONS, CORRECT, FORGETTING, NONFINITE = range(len(COUNT_FIELDS))
PROB_SUM, PROB_SQ_SUM, MARGIN_SUM, LOSS_SUM, EL2N_SUM = range(len(SUM_FIELDS))
LAST_CORRECT = 1  # bit of `flags` that holds the running last-correct flag
ERROR_LABEL, ERROR_INDEX = 1, 2  # bits of errors[0]


def new_state(num_samples: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Zeroed per-example state for accumulate_stats: counts int32 [N, 4], sums float32 [N, 5],
    flags int32 [N] and errors int64 [2] (errors[0] = 0: no error; errors[1] = -1: no row)."""
    return {
        "counts": torch.zeros(num_samples, len(COUNT_FIELDS), dtype=torch.int32, device=device),
        "sums": torch.zeros(num_samples, len(SUM_FIELDS), dtype=torch.float32, device=device),
        "flags": torch.zeros(num_samples, dtype=torch.int32, device=device),
        "errors": torch.tensor([0, -1], dtype=torch.int64, device=device),
    }


def accumulate_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    flags: torch.Tensor,
    errors: torch.Tensor,
) -> None:
    """Add one batch's per-example statistics into the epoch accumulators, in place.

    Args:
        logits: [B, C] float32/float16/bfloat16, C >= 2. Any strides.
        labels: [B] int64 in [0, C).
        indices: [B] int64 dataset indices in [0, N).
        counts: [N, 4] int32, columns ``COUNT_FIELDS``: presentations, correct (argmax == label,
            ties broken as torch.argmax: first maximum), forgetting events (last-correct before,
            incorrect now), non-finite rows.
        sums: [N, 5] float32, columns ``SUM_FIELDS``: true-class softmax probability, its square,
            margin (true logit minus the largest other logit), cross-entropy, EL2N
            (||softmax - onehot||_2). All computed in float32.
        flags: [N] int32; bit 0 is the running last-correct flag, other bits are zero between
            calls.
        errors: [2] int64, ``[0, -1]`` when clean. See below.

    Rows with a NaN or infinite logit count as incorrect with probability 0: they add 1 to
    presentations and nonfinite and nothing to the sums, so margin, loss and EL2N means are over
    finite rows (``sum / (presentations - nonfinite)``).

    Duplicate indices in one batch: counts are exact and every row adds to the sums (on CUDA float
    sums are exact up to the order of additions). For the order-dependent fields, all rows of one
    example in one batch form a single observation: the example is last-correct after the batch only
    if every one of its rows was correct, and at most one forgetting event is counted per batch.

    Invalid labels or indices: on CPU the call raises (RuntimeError naming the argument and row)
    before writing anything. On CUDA, checking would need a device synchronisation, so invalid rows
    are skipped (never dereferenced) and recorded: ``errors[0]`` gets bit ``ERROR_LABEL`` and/or
    ``ERROR_INDEX``, ``errors[1]`` the smallest offending batch row. easyhard.SampleStats inspects
    it asynchronously and raises. Shapes, dtypes and devices are checked on every backend.
    """
    _require_kernel("accumulate_stats", logits.device)
    torch.ops.easyhard.accumulate_stats.default(
        logits, labels, indices, counts, sums, flags, errors
    )


def _require_kernel(op: str, device: torch.device) -> None:
    """One sentence saying how to rebuild, instead of the dispatcher's error, when a CUDA tensor
    reaches a build without CUDA kernels."""
    if device.type == "cuda" and not _CUDA_KERNELS[op]:
        raise RuntimeError(f"{op}: the tensors are on {device}, but " + _extension.REBUILD_CUDA)


def _check_dtype(op: str, name: str, t: torch.Tensor, allowed: tuple[torch.dtype, ...]) -> None:
    if t.dtype not in allowed:
        names = " or ".join(str(d).removeprefix("torch.") for d in allowed)
        raise RuntimeError(f"{op}: {name} must be {names}, got {t.dtype}")


# The fake kernels run under torch.compile and on meta tensors; they repeat the kernels' checks of
# dtypes and devices (messages as in csrc/<op>.h), so that a meta tensor mixed with real ones (the
# dispatcher then picks the fake kernel) is refused rather than silently ignored.
@torch.library.register_fake("easyhard::accumulate_stats")
def _accumulate_stats_fake(logits, labels, indices, counts, sums, flags, errors) -> None:
    op = "accumulate_stats"
    torch._check(logits.dim() == 2, lambda: "accumulate_stats: logits must be 2-D [B, C]")
    torch._check(labels.shape == logits.shape[:1], lambda: "accumulate_stats: labels must be [B]")
    torch._check(indices.shape == logits.shape[:1], lambda: "accumulate_stats: indices must be [B]")
    _check_dtype(op, "logits", logits, (torch.float32, torch.float16, torch.bfloat16))
    for name, t, dtype in (
        ("labels", labels, torch.int64),
        ("indices", indices, torch.int64),
        ("counts", counts, torch.int32),
        ("sums", sums, torch.float32),
        ("flags", flags, torch.int32),
        ("errors", errors, torch.int64),
    ):
        _check_dtype(op, name, t, (dtype,))
        if t.device != logits.device:
            raise RuntimeError(
                f"{op}: {name} is on {t.device} but logits is on {logits.device}; "
                "move every argument to one device"
            )
    return None


def topk_select(
    scores: torch.Tensor,
    k: int,
    largest: bool = True,
    labels: torch.Tensor | None = None,
    budgets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Indices of the k best-ranked examples, ascending (int64 [k], on scores' device).

    Args:
        scores: float32 or float64 [N], in dataset order.
        k: how many to select, 0 <= k <= N (with budgets: their sum).
        largest: rank the largest scores first (else the smallest).
        labels: optional int64 [N] in [0, C); with `budgets` (int64 [C]) selects the best
            budgets[c] examples of every class c in one segmented call.

    Ranking is total and identical on CPU and CUDA: equal scores rank by smaller dataset index;
    -0.0 equals 0.0; NaN ranks after every number in both directions (selected only when nothing
    else is left). Refused with a message naming the argument: k that is not an integer
    (TypeError; a bool, float or tensor is not cast) or outside [0, N], largest that is not a bool
    (TypeError), labels out of range, a negative budget, a budget above its class's size, budgets
    not summing to k; and a wrong dtype, shape or device of any tensor.
    """
    if isinstance(k, (bool, torch.Tensor)) or not (isinstance(k, torch.SymInt) or _is_index(k)):
        raise TypeError(f"topk_select: k must be an integer, got {type(k).__name__} ({k!r})")
    if not isinstance(largest, (bool, np.bool_)):
        raise TypeError(
            f"topk_select: largest must be a bool, got {type(largest).__name__} ({largest!r})"
        )
    _require_kernel("topk_select", scores.device)
    return torch.ops.easyhard.topk_select.default(scores, k, largest, labels, budgets)


def _is_index(k) -> bool:
    try:
        operator.index(k)  # int and numpy integers; not float, not str
    except TypeError:
        return False
    return True


@torch.library.register_fake("easyhard::topk_select")
def _topk_select_fake(scores, k, largest, labels=None, budgets=None):
    op = "topk_select"
    torch._check(scores.dim() == 1, lambda: "topk_select: scores must be 1-D [N]")
    _check_dtype(op, "scores", scores, (torch.float32, torch.float64))
    torch._check(0 <= k, lambda: f"topk_select: k={k} must be in [0, N]")
    torch._check(k <= scores.shape[0], lambda: f"topk_select: k={k} must be in [0, N]")
    if (labels is None) != (budgets is None):
        raise RuntimeError(
            "topk_select: labels and budgets go together (per-class selection) or not at all"
        )
    if labels is not None:
        _check_dtype(op, "labels", labels, (torch.int64,))
        _check_dtype(op, "budgets", budgets, (torch.int64,))
        torch._check(labels.shape == scores.shape, lambda: "topk_select: labels must be [N]")
        torch._check(budgets.dim() == 1, lambda: "topk_select: budgets must be 1-D [C]")
        if labels.device != scores.device:
            raise RuntimeError(
                f"topk_select: labels is on {labels.device} but scores is on {scores.device}"
            )
        if budgets.device != scores.device and budgets.device.type != "cpu":
            raise RuntimeError(
                f"topk_select: budgets is on {budgets.device} but must be on the "
                f"CPU or on scores' device ({scores.device})"
            )
    return scores.new_empty((k,), dtype=torch.int64)


def has_kernel(op: str, backend: str) -> bool:
    """Whether easyhard::<op> has a kernel for `backend` ("CPU" or "CUDA") in this build."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"easyhard::{op}", backend)


def cpu_capability() -> str:
    """The instruction-set path the CPU kernels run now: "avx512", "avx2" or "baseline" (SSE2 on
    x86-64, NEON on aarch64). The best this CPU runs, or the one the environment variable
    EASYHARD_CPU_CAPABILITY names (read at every call; for tests and benchmarks). Float sums
    differ between paths in their last bits, so statistics files record the paths they used.
    Raises ValueError for a name that is not a path or one this CPU cannot run."""
    return _C.cpu_capability()


def cpu_capabilities() -> list[str]:
    """Every CPU path this machine can run, baseline first (the last is the default)."""
    return _C.cpu_capabilities()


# Which ops this build has CUDA kernels for, read once (a constant under torch.compile).
_CUDA_KERNELS = {op: has_kernel(op, "CUDA") for op in ("accumulate_stats", "topk_select")}


def build() -> dict[str, object]:
    """How the loaded extension was built: torch version, CUDA version and archs, backends."""
    return {
        "torch_version": _C.torch_version,
        "cuda_version": _C.cuda_version or None,
        "cuda_archs": _C.cuda_archs or None,
        "cpu_capabilities": cpu_capabilities(),
        "cpu_capability": cpu_capability(),
        "backends": [
            b
            for b in ("CPU", "CUDA")
            if all(has_kernel(op, b) for op in ("accumulate_stats", "topk_select"))
        ],
    }

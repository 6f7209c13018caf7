"""Pure-PyTorch references of easyhard's ops, with the same semantics (tests compare against them).

Each function has the name and signature of its easyhard.ops counterpart. They are vectorised
eager compositions, also used by the benchmarks as "what a user would write without the op".
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .ops import COUNT_FIELDS, LAST_CORRECT


def _integers(name: str, x) -> np.ndarray:
    """x as an int64 array; refuses floating point and bool values rather than truncating them."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def accumulate_stats(
    logits: torch.Tensor,
    labels: torch.Tensor,
    indices: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    flags: torch.Tensor,
    errors: torch.Tensor,
    validate: bool = True,
) -> None:
    """Reference of easyhard.ops.accumulate_stats (same arguments, same in-place semantics).

    Raises ValueError for out-of-range labels or indices (the CPU kernel's behaviour) unless
    `validate` is False (the benchmarks time the bare composition); `errors` is left untouched.
    """
    for name, t in (("labels", labels), ("indices", indices)):
        if t.dtype != torch.int64:
            raise TypeError(f"{name} must be int64, got {t.dtype}")
    B, C = logits.shape
    N = counts.shape[0]
    if validate and B and not bool(((labels >= 0) & (labels < C)).all()):
        raise ValueError(f"labels outside [0, {C})")
    if validate and B and not bool(((indices >= 0) & (indices < N)).all()):
        raise ValueError(f"indices outside [0, {N})")
    x = logits.float()
    finite = torch.isfinite(x).all(dim=1)
    x = torch.where(finite[:, None], x, torch.zeros_like(x))  # keep non-finite rows out of the math
    logp = torch.log_softmax(x, dim=1)
    p = logp.exp()
    y = labels[:, None]
    correct = (x.argmax(dim=1) == labels) & finite
    prob = p.gather(1, y).squeeze(1)
    loss = -logp.gather(1, y).squeeze(1)
    other = x.scatter(1, y, float("-inf")).amax(dim=1)
    margin = x.gather(1, y).squeeze(1) - other
    el2n = (p - F.one_hot(labels, C).float()).norm(dim=1)
    zero = torch.zeros_like(prob)
    prob, loss, margin, el2n = (torch.where(finite, v, zero) for v in (prob, loss, margin, el2n))

    ones = torch.ones_like(labels, dtype=torch.int32)
    batch_counts = torch.stack(
        [ones, correct.int(), torch.zeros_like(ones), (~finite).int()], dim=1
    )
    counts.index_add_(0, indices, batch_counts)
    sums.index_add_(0, indices, torch.stack([prob, prob * prob, margin, loss, el2n], dim=1))

    # All rows of one example in this batch form one observation: correct only if all are.
    touched, inverse = torch.unique(indices, return_inverse=True)
    incorrect = torch.zeros(len(touched), dtype=torch.int32, device=flags.device)
    incorrect = incorrect.scatter_reduce_(0, inverse, (~correct).int(), reduce="amax").bool()
    was_correct = (flags[touched] & LAST_CORRECT).bool()
    counts[touched, COUNT_FIELDS.index("forgetting_events")] += (incorrect & was_correct).int()
    flags[touched] = (~incorrect).int() * LAST_CORRECT


def topk_select(scores, k: int, largest: bool = True, labels=None, budgets=None) -> np.ndarray:
    """Reference of easyhard.ops.topk_select with numpy's stable sorts (int64 [k], ascending)."""
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer, got {type(k).__name__}")
    s = np.asarray(scores, dtype=np.float64)
    nan = np.isnan(s)
    key = np.where(nan, 0.0, -s if largest else s) + 0.0  # + 0.0 turns -0.0 into 0.0
    order = np.lexsort((np.arange(len(s)), key, nan))  # NaN last, then by key, then by index
    if labels is None:
        return np.sort(order[:k]).astype(np.int64)
    labels = _integers("labels", labels)
    budgets = _integers("budgets", budgets)
    grouped = order[np.argsort(labels[order], kind="stable")]
    sizes = np.bincount(labels, minlength=len(budgets))
    starts = np.cumsum(sizes) - sizes
    rank = np.arange(len(s)) - starts[labels[grouped]]
    return np.sort(grouped[rank < budgets[labels[grouped]]]).astype(np.int64)

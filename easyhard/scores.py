"""Difficulty scores derived from a run's per-example log (SampleStats / score file).

Every score is a float64 array [N] in dataset order. ``DIRECTION[name]`` says which end is easy:
"higher_easier", "higher_harder", or "neither" (variability). Ranges are in each docstring line.

- easiness (higher_easier, [0, 1]): the paper's notion, the fraction of observations in a window
  of early epochs in which the example was classified correctly, graded by the mean true-class
  probability over the same observations: (correct + mean_prob) / (observations + 1). Within a
  count of correct observations the probability orders examples, so examples correct every time
  are not one big tie. Window: the first ``window`` epochs (default: all recorded epochs).
- forgetting (higher_harder, [0, epochs]): forgetting events (correct, then incorrect at the next
  presentation) over all presentations; examples never classified correctly get the number of
  epochs, as in Toneva et al. (2019).
- first_learned (higher_harder, [0, epochs]): the first epoch with a correct presentation;
  never-learned examples get the number of epochs.
- el2n (higher_harder, [0, sqrt 2]): mean EL2N over finite presentations (Paul et al., 2021).
- margin (higher_easier, real): mean margin over finite presentations: the area under the margin
  (AUM, Pleiss et al., 2020) divided by presentations.
- confidence (higher_easier, [0, 1]): mean over epochs of the epoch's mean true-class probability
  (dataset cartography, Swayamdipta et al., 2020).
- variability (neither, [0, 0.5]): standard deviation over epochs of that probability.
- never_learned: bool, never classified correctly (not a ranking score).
"""
from __future__ import annotations

import numpy as np

from .stats import SampleStats

DIRECTION = {
    "easiness": "higher_easier",
    "forgetting": "higher_harder",
    "first_learned": "higher_harder",
    "el2n": "higher_harder",
    "margin": "higher_easier",
    "confidence": "higher_easier",
    "variability": "neither",
}
SCORES = tuple(DIRECTION)


def compute_scores(stats: SampleStats, window: int | None = None) -> dict[str, np.ndarray]:
    """All scores of one run (see the module docstring). `window`: epochs counted by easiness."""
    hist = stats.history  # [E, N]
    tot = stats.totals()
    E = hist.shape[0]
    if E == 0:
        raise ValueError("the score file has no completed epoch: nothing to score")
    w = E if window is None else int(window)
    if not 1 <= w <= E:
        raise ValueError(f"window must be between 1 and the {E} recorded epochs, got {window}")
    early = hist[:w]
    pres = early["presentations"].astype(np.float64).sum(0)
    correct = early["correct"].astype(np.float64).sum(0)
    prob = (early["prob"].astype(np.float64) * early["presentations"]).sum(0)
    mean_prob = np.divide(prob, pres, out=np.zeros_like(prob), where=pres > 0)
    easiness = (correct + mean_prob) / (pres + 1)

    never = tot["correct"] == 0
    learned = hist["correct"] > 0
    first = np.where(learned.any(0), learned.argmax(0), E).astype(np.float64)
    forgetting = np.where(never, E, tot["forgetting_events"]).astype(np.float64)
    finite = (tot["presentations"] - tot["nonfinite"]).astype(np.float64)
    safe = np.maximum(finite, 1)
    seen = hist["presentations"] > 0
    epoch_prob = np.where(seen, hist["prob"].astype(np.float64), np.nan)
    with np.errstate(invalid="ignore"):
        n_seen = seen.sum(0)
        confidence = np.where(n_seen > 0, np.nansum(epoch_prob, 0) / np.maximum(n_seen, 1), 0.0)
        variability = np.where(n_seen > 0, np.sqrt(np.nansum((epoch_prob - confidence) ** 2, 0)
                                                   / np.maximum(n_seen, 1)), 0.0)
    return {
        "easiness": easiness,
        "forgetting": forgetting,
        "first_learned": first,
        "el2n": np.where(finite > 0, tot["el2n_sum"] / safe, np.sqrt(2.0)),
        "margin": np.where(finite > 0, tot["margin_sum"] / safe, -np.inf),
        "confidence": confidence,
        "variability": variability,
        "never_learned": never,
    }


def hardness(name: str, values: np.ndarray) -> np.ndarray:
    """`values` of score `name` oriented so that larger means harder (for selection)."""
    direction = DIRECTION.get(name)
    if direction is None:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")
    if direction == "neither":
        raise ValueError(f"{name} has no easy/hard direction; rank by another score")
    v = np.asarray(values, dtype=np.float64)
    return -v if direction == "higher_easier" else v

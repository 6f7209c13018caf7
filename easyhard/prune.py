"""Pruning during training: each epoch, skip examples the network has already learned, chosen from
the record the run keeps anyway (``--prune`` in the training recipe; InfoBatch's settings by
default: r = 0.5, the final 12.5% of epochs on the full data).

Rules (the candidates of an epoch, then which of them are skipped):

- ``easiness``: an example is *learned* when it was correct at each of its last K presentations
  (``prune_window``, 2) with a mean true-class probability over them of at least
  ``prune_threshold`` (0.9); a random share r of the learned examples (exactly round(r x
  learned)) is skipped, so that no example is dropped for good: it comes back the next epoch
  with probability 1 - r, and is no longer learned once it is wrong again.
- ``loss``: InfoBatch's rule as published: examples whose last loss is below the mean of the
  last losses are skipped each with probability r.
- ``random``: the control: as many examples as the easiness rule would skip, drawn at random
  from all of them.

Epoch 0 trains on every example (the record starts there), and so do the epochs from
(1 - ``prune_anneal``) x epochs on. With ``prune_rescale`` (default), the kept candidates' loss
is scaled by 1/(1 - r) (easiness and loss rules): the expected gradient of the full data.

What a skipped example's record says: it was not presented that epoch (its history row has 0
presentations). Easiness counts its presentations in the window (fewer observations, not wrong
ones); forgetting compares consecutive presentations, so a skipped epoch between two is no
event; the first-learned epoch is the first epoch in which it was presented and correct; EL2N,
margin and confidence average over the epochs in which it was presented.

Every choice is a function of (seed, epoch, record): the random draws come from a generator
seeded by (seed, epoch), and the state it reads (the last K presentations, the last loss) is
updated from each epoch's accumulators after they are summed across processes, and saved in the
checkpoint. A killed run resumes to the same kept sets, and under torchrun every rank derives
the same set and the loader shards it. The choice runs on the device with easyhard's own ops
(``topk_select`` draws exactly k).

The learning-rate schedule runs on training progress (``planned_steps``): the steps taken so
far against the steps planned for the whole run, recomputed at every epoch's start from the
kept count (the epochs still to prune are planned at this epoch's size, the annealing epochs at
the full size), so that the schedule ends exactly at the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from . import ops

RULES = ("none", "easiness", "loss", "random")


@dataclass
class EpochPlan:
    """What one epoch trains: the kept dataset indices (ascending, CPU), per-example loss
    weights (float32 [N] on the device, or None), and the counts said in metrics.jsonl."""

    kept: torch.Tensor | None  # None: every example
    weights: torch.Tensor | None
    candidates: int
    skipped: int


class Pruner:
    """The state and the per-epoch choice of one run's pruning (see the module docstring).

    `cfg`: the training recipe (``prune``, ``prune_ratio``, ``prune_anneal``, ``prune_window``,
    ``prune_threshold``, ``prune_rescale``, ``epochs``, ``batch_size``); `seed`: the run's data
    seed; `examples`: the examples the run trains on (all N, or its subset)."""

    def __init__(
        self,
        cfg: Any,
        examples: torch.Tensor,
        num_samples: int,
        device: torch.device,
        seed: int,
        world_size: int = 1,
    ) -> None:
        self.rule = cfg.prune
        if self.rule not in RULES:
            raise ValueError(f"prune must be one of {', '.join(RULES)}, got {self.rule!r}")
        self.ratio, self.rescale = float(cfg.prune_ratio), bool(cfg.prune_rescale)
        self.window, self.threshold = int(cfg.prune_window), float(cfg.prune_threshold)
        self.epochs, self.batch = int(cfg.epochs), int(cfg.batch_size)
        self.stop = (1.0 - float(cfg.prune_anneal)) * self.epochs  # epochs >= stop: full data
        self.seed, self.world_size = int(seed), int(world_size)
        self.examples = examples.to(torch.int64)
        self.N, self.device = int(num_samples), device
        K, N = self.window, self.N
        self.correct = torch.zeros(K, N, dtype=torch.bool, device=device)  # last K presentations
        self.prob = torch.zeros(K, N, dtype=torch.float32, device=device)
        self.seen = torch.zeros(N, dtype=torch.int32, device=device)  # presentations, capped at K
        self.loss = torch.full((N,), math.nan, dtype=torch.float32, device=device)
        self.member = torch.zeros(N, dtype=torch.bool, device=device)  # in the run's examples
        self.member[self.examples.to(device)] = True
        self.planned_steps = self.epochs * self.steps_for(len(self.examples))

    @property
    def enabled(self) -> bool:
        return self.rule != "none"

    def prunes(self, epoch: int) -> bool:
        """Whether `epoch` (from 0) trains on a pruned set."""
        return self.enabled and 1 <= epoch < self.stop

    def steps_for(self, kept: int) -> int:
        """Optimizer steps of an epoch of `kept` examples: those of the largest shard."""
        return math.ceil(math.ceil(kept / self.world_size) / self.batch)

    # ------------------------------------------------------------------ the record
    def observe(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """Take a closed epoch's accumulators (counts [N, 4], sums [N, 5], summed across
        processes): each presented example's epoch is one observation (correct when every
        presentation was), its probability the epoch's mean, its loss the mean finite loss."""
        pres = counts[:, ops.PRESENTATIONS].to(torch.int64)
        shown = pres > 0
        finite = pres - counts[:, ops.NONFINITE].to(torch.int64)
        correct = shown & (counts[:, ops.CORRECT].to(torch.int64) == pres)
        prob = (sums[:, ops.PROB_SUM].double() / pres.clamp(min=1)).float()
        loss = torch.where(
            finite > 0,
            (sums[:, ops.LOSS_SUM].double() / finite.clamp(min=1)).float(),
            torch.tensor(math.inf, device=pres.device),
        )
        self.correct = torch.where(
            shown, torch.cat([self.correct[1:], correct[None]]), self.correct
        )
        self.prob = torch.where(shown, torch.cat([self.prob[1:], prob[None]]), self.prob)
        self.seen = torch.where(shown, (self.seen + 1).clamp(max=self.window), self.seen)
        self.loss = torch.where(shown, loss, self.loss)

    def learned(self) -> torch.Tensor:
        """bool [N]: correct at each of the last K presentations, mean probability >= threshold."""
        return (
            self.member
            & (self.seen >= self.window)
            & self.correct.all(0)
            & (self.prob.mean(0) >= self.threshold)
        )

    # ------------------------------------------------------------------ the choice
    def plan(self, epoch: int, steps_done: int) -> EpochPlan:
        """The examples `epoch` trains on, and the run's planned steps recomputed from them."""
        full = len(self.examples)
        if not self.prunes(epoch):
            self._replan(epoch, steps_done, full)
            return EpochPlan(None, None, 0, 0)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        keys = torch.rand(self.N, generator=g, dtype=torch.float64).to(self.device)
        learned = self.learned()
        if self.rule == "loss":
            known = self.member & torch.isfinite(self.loss)
            mean = self.loss[known].mean() if bool(known.any()) else torch.tensor(0.0)
            candidates = known & (self.loss < mean)
            skip = candidates & (keys < self.ratio)
        else:
            k = int(math.floor(self.ratio * int(learned.sum()) + 0.5))
            candidates = learned if self.rule == "easiness" else self.member
            key = torch.where(candidates, keys, torch.tensor(math.nan, device=self.device))
            skip = torch.zeros(self.N, dtype=torch.bool, device=self.device)
            if k:
                skip[ops.topk_select(key, k, True).to(self.device)] = True
        keep = self.member & ~skip
        kept = torch.nonzero(keep).flatten().cpu()
        weights = None
        if self.rescale and self.rule != "random":
            weights = torch.ones(self.N, dtype=torch.float32, device=self.device)
            weights[candidates & keep] = 1.0 / (1.0 - self.ratio)
        self._replan(epoch, steps_done, len(kept))
        return EpochPlan(kept, weights, int(candidates.sum()), int(skip.sum()))

    def _replan(self, epoch: int, steps_done: int, kept: int) -> None:
        """planned_steps: the steps taken, this epoch's, the pruned epochs still to come at this
        epoch's size, the annealing epochs at the full size."""
        full = len(self.examples)
        later = range(epoch + 1, self.epochs)
        pruned_later = sum(1 for e in later if self.prunes(e))
        self.planned_steps = (
            steps_done
            + self.steps_for(kept)
            + pruned_later * self.steps_for(kept if self.prunes(epoch) else full)
            + (len(later) - pruned_later) * self.steps_for(full)
        )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "correct": self.correct.cpu().clone(),
            "prob": self.prob.cpu().clone(),
            "seen": self.seen.cpu().clone(),
            "loss": self.loss.cpu().clone(),
            "planned_steps": self.planned_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("rule") != self.rule:
            raise ValueError(
                f"the checkpoint pruned by {state.get('rule')!r}, this run by {self.rule!r}"
            )
        for name in ("correct", "prob", "seen", "loss"):
            getattr(self, name).copy_(torch.as_tensor(state[name]).to(self.device))
        self.planned_steps = int(state["planned_steps"])

"""The adaptive schedule's per-sample early stop: a run gives a sample up once, at the pace it has kept
lately, it would not reach the decision boundary within the budget left.

An attack run (APGD, Square) follows each sample's best logit margin ``m = max_{j != y} z_j - z_y``
(negative while the sample is classified correctly; :func:`medgrid.attacks.steps.logit_margin`). At a few
check points (fractions of the run's budget: ``first``, then every ``every``) the rule compares what is left
to climb, ``-m_best(t)``, with the climb of the last ``window`` of the budget extrapolated linearly over the
budget left, ``slack`` times:

    stop  when  m_best(t) + slack * (m_best(t) - m_best(t - w)) / w * (budget - t) < 0.

Attacks slow down as they go (APGD halves its step, Square shrinks its squares), so a straight line through
the recent climb over-predicts what the rest of the budget brings; the rule stops only samples that even
that optimistic line leaves short of the boundary, with ``slack`` on top of it. A sample that is still
climbing fast, or is close, runs on, with exactly the iterates the full schedule gives it (random starts
and step sizes do not depend on which samples are still attacked). The parameters were chosen on traces
of the demo's synthetic models and validated on BreastMNIST and PneumoniaMNIST models
(docs/evaluation.md, "Adaptive schedule"; benchmarks/strong_eval.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class StopRule:
    """When and how a run gives up on a sample; fractions of the run's budget (iterations or queries)."""

    first: float = 0.1
    every: float = 0.1
    window: float = 0.1
    slack: float = 2.0

    def checks(self, budget: int) -> frozenset[int]:
        """The iteration counts after which the rule is applied (each at least one window in)."""
        start, step = max(round(self.first * budget), 1), max(round(self.every * budget), 1)
        return frozenset(range(max(start, self.span(budget)), budget, step))

    def span(self, budget: int) -> int:
        """The window, in iterations."""
        return max(round(self.window * budget), 1)

    def stop(self, margin_at: Callable[[int], torch.Tensor], t: int, budget: int) -> torch.Tensor:
        """Which samples to give up on after ``t`` iterations; ``margin_at(k)``: the best logit margin of
        each sample still attacked after ``k`` iterations (0: the start)."""
        w = min(self.span(budget), t)
        now, before = margin_at(t), margin_at(t - w)
        pace = (now - before).clamp_min(0) / w
        return now + self.slack * pace * (budget - t) < 0

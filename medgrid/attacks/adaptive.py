"""The adaptive schedule: every run at a quarter of its budget with a per-sample early stop, and the samples
still closing in on the boundary when they leave it run again at the full budget.

**A quarter of the budget.** Each APGD run gets ``floor((iterations + 1) / 4) - 1`` iterations (24 of 100) and
Square ``floor((queries + 1) / 4) - 1`` queries (1249 of 5000), with their own schedules compressed to it
(APGD's step-size checkpoints at the same fractions of the run, Square's square sizes rescaled to its budget,
as both references do for any budget). On the design traces (below) the full schedule's late breaks came
after long stalls that only APGD's step-size halvings ended; a shorter run halves sooner.

**Per-sample early stop**: a run gives a sample up once even a fraction of the pace it has kept since its
start would not bring it to the decision boundary within the budget left.

An attack run (APGD, Square) follows each sample's best logit margin ``m = max_{j != y} z_j - z_y``
(negative while the sample is classified correctly; :func:`medgrid.attacks.steps.logit_margin`). At check
points (fractions of the run's budget: ``first``, then every ``every``) the rule stops a sample when

    m(t) + pace * (m(t) - m(0)) / t * (budget - t) < 0,

the way left to the boundary, ``-m(t)``, is longer than ``pace`` times what the sample's average progress
since its start (``(m(t) - m(0)) / t`` per iteration) would cover in the budget left. Attacks make most of
their progress early (APGD halves its step, Square shrinks its squares), so the average pace so far
over-predicts the rest; ``pace`` < 1 discounts it once more. The rule is scale-free (margins in any logit
units), and a sample that has come most of its way runs on however slowly it moves now: on the design
traces every sample the full schedule broke after the first check had, at every check before its break,
covered more than two thirds of its way from its start, some after a long stall that a rule on the recent
pace alone would have ended (docs/evaluation.md, "The adaptive schedule").

**The extension** (:meth:`StopRule.promising`): a sample the short run leaves unbroken, given up at a check
or at its end, runs again at the configured budget (from the same start: the full schedule's run for it,
under the stop rule) when ``recent_pace`` times the pace it kept over the second half of its short run,
kept up for the iterations the full run has beyond its short one, would bring it to the boundary. Why: on
real BreastMNIST (two classes, L-inf 8/255) the short run missed two samples that every full run broke
(three seeds) by steady progress after iteration 24: both were still closing in (one given up at iteration
20 because only 4 iterations were left). The extension costs little where samples stall or are far away,
and a sample still closing in gets the full budget.

A sample that runs on gets exactly the iterates a run of that budget gives it (random starts and step sizes
do not depend on which samples are still attacked). Why both, measured on traces of the full schedule
(docs/evaluation.md, "The adaptive schedule"): the stop rule alone, on full-length runs, cut the APGD passes
of the demo's synthetic L-inf 2/255 model to 16% without losing a break, but those of the standard model
only to 58% (its PGD survivors at 1/255 sit near the boundary and crawl, the ones that break later and
the ones that never do alike); quarter-length runs alone lost a break there that the full schedule made
with one seed of three; both together cost 17% (standard) and 7% (robust) with that one difference. The
extension's ``recent_pace`` (0.25, as ``pace``) was chosen on the demo's and BreastMNIST's models: with 1
instead, the demo's standard model cost 56% of the full schedule (its crawling survivors all qualify).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StopRule:
    """When (fractions of the run's budget, iterations or queries) and how readily a run gives up on a sample.

    Chosen on traces of the full schedule on the demo's synthetic L-inf 2/255 model (300 test images, every
    epsilon of config/config.yaml's attack grid): with ``pace`` 0.25 no sample the full schedule broke was
    given up (with 0.1, one was)."""

    first: float = 0.2
    every: float = 0.2
    pace: float = 0.25
    recent_pace: float = 0.25

    def checks(self, budget: int) -> frozenset[int]:
        """The iteration counts after which the rule is applied."""
        start, step = max(round(self.first * budget), 1), max(round(self.every * budget), 1)
        return frozenset(range(start, budget, step))

    def stop(self, margin_at: Callable[[int], torch.Tensor], t: int, budget: int) -> torch.Tensor:
        """Which samples to give up on after ``t`` iterations; ``margin_at(k)``: the best logit margin of
        each sample still attacked after ``k`` iterations (0: the start)."""
        now, start = margin_at(t), margin_at(0)
        return now + self.pace * (now - start) / t * (budget - t) < 0

    def promising(self, margins: torch.Tensor, horizon: int) -> torch.Tensor:
        """Which samples a run left unbroken are still closing in, so worth running to ``horizon`` iterations
        (the extension's candidates): those that ``recent_pace`` times the pace they kept over the second half
        of their run, kept up to ``horizon``, would bring to the boundary. ``margins``: their best margin after
        each iteration until they left (row 0: the start)."""
        t = margins.shape[0] - 1
        if t >= horizon or t < 2:
            return torch.zeros(margins.shape[1:], dtype=torch.bool, device=margins.device)
        now, half = margins[t], margins[t // 2]
        return now + self.recent_pace * (now - half) / (t - t // 2) * (horizon - t) >= 0


@dataclass(frozen=True)
class Schedule:
    """A strong-evaluation schedule: each run's ``share`` of its configured budget, its stop rule, and whether
    the samples still closing in run again at the configured budget (``extend``)."""

    share: float = 1.0
    stop: StopRule | None = None
    extend: bool = False

    def budget(self, configured: int) -> int:
        """A run's iterations (or queries): all of them, or the most that keeps its passes per sample, start
        included (``budget + 1``), within ``share`` of the full run's (``configured + 1``)."""
        if self.share >= 1:
            return configured
        return max(1, math.floor(self.share * (configured + 1)) - 1)


SCHEDULES = {"full": Schedule(), "adaptive": Schedule(0.25, StopRule(), extend=True)}

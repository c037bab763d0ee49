"""The strong evaluation's ensemble: PGD's survivors attacked by a list of stages
(:mod:`medgrid.attacks.stages`: APGD-CE, APGD-T, Square...), each on the samples the previous ones left, as
AutoAttack runs its ``attacks_to_run``.

Epsilons are attacked in increasing order and a sample broken at a smaller epsilon stays broken (the
smaller ball lies inside the larger). At each epsilon the outcome starts from PGD's (the clean input and
every PGD iterate, :func:`medgrid.attacks.sweep.robust_predictions`), then every stage runs on the samples
still unbroken. So, as AutoAttack reports them, the accuracies are cumulative: a stage's ``broken`` holds
the samples PGD or any stage up to it broke; the last white-box stage's is the white-box worst case.

Schedules (:mod:`medgrid.attacks.adaptive`): ``full`` runs every stage's whole budget on every sample it
attacks (AutoAttack's); ``adaptive`` runs the same stages from the same starts at a quarter of each run's
budget, with a per-sample early stop, and runs the samples still closing in on the boundary again at the full
budget (the extension).
Costs are counted per stage: forward+backward passes (``grad_evals``) of the gradient stages, forward
passes (``queries``) of Square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from medgrid import epsilon, seeding
from medgrid.attacks.adaptive import SCHEDULES, Schedule
from medgrid.attacks.apgd import run_apgd
from medgrid.attacks.pgd import Outcome
from medgrid.attacks.square import run_square
from medgrid.attacks.stages import Stage
from medgrid.attacks.steps import check_norm
from medgrid.attacks.sweep import RobustResult
from medgrid.data.loading import take_float
from medgrid.models import eval_mode


@dataclass
class Budget:
    """What each stage may spend per sample: APGD ``iterations`` per run, Square ``queries``, and the
    ``schedule`` (a key of :data:`SCHEDULES`)."""

    iterations: int = 100
    queries: int = 5000
    schedule: str = "adaptive"


@dataclass
class EnsembleResult:
    """At one epsilon, per stage kind (run order in ``stages``): the labels found and which samples are
    broken after PGD and the stages up to it, and what it spent (``cost``: grad_evals or queries)."""

    norm: str
    eps: float
    stages: list[Stage]
    pred: dict[str, torch.Tensor]
    broken: dict[str, torch.Tensor]
    cost: dict[str, int] = field(default_factory=dict)
    pgd_broken: torch.Tensor | None = None

    def correct(self, kind: str | None = None) -> torch.Tensor:
        """Robust to PGD and every stage up to ``kind`` (the last stage when None)."""
        return ~self.broken[kind or self.stages[-1].kind]

    def white_box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels found, broken) after PGD and every white-box stage."""
        white = [s.kind for s in self.stages if s.white_box]
        if not white:
            return self.pred.get("pgd"), self.pgd_broken
        return self.pred[white[-1]], self.broken[white[-1]]


def ensemble_predictions(model, x: torch.Tensor, y: torch.Tensor, pgd: list[RobustResult], *, stages: list[Stage],
                         budget: Budget | None = None, seed: int = 0, batch_size: int = 500) -> list[EnsembleResult]:
    """Run ``stages`` on (x, y) after the PGD results ``pgd`` (one norm, on the same samples); ``x`` float, or
    uint8 images made float one batch at a time on ``y``'s device.

    Targeted stages attack the classes with the highest clean logits after the predicted one (AutoAttack's
    choice), one run each, on the samples the previous targets left unbroken.
    """
    budget = budget or Budget()
    schedule = SCHEDULES[budget.schedule]
    pgd = sorted(pgd, key=lambda r: r.eps)
    norms = {r.norm for r in pgd}
    if len(norms) != 1:
        raise ValueError(f"one norm at a time, got {sorted(norms)}")
    norm = norms.pop()
    check_norm(norm)
    n, device = x.shape[0], y.device
    kinds = [s.kind for s in stages] + ["pgd"]
    pred = {(r.eps, k): torch.empty(n, dtype=torch.long, device=device) for r in pgd for k in kinds}
    broken = {(r.eps, k): torch.empty(n, dtype=torch.bool, device=device) for r in pgd for k in kinds}
    cost = {(r.eps, k): 0 for r in pgd for k in kinds}
    # progress on a terminal only (disable=None), never in a log file
    bar = tqdm(total=math.ceil(n / batch_size) * len(pgd) * len(stages), desc=f"strong {norm}", leave=False,
               mininterval=1.0, disable=None)
    with eval_mode(model), bar:
        for batch, start in enumerate(range(0, n, batch_size)):
            sl = slice(start, start + batch_size)
            xb, yb = take_float(x, sl, device), y[sl]
            with torch.no_grad():
                clean = model(xb)
            outcome = Outcome(clean.argmax(1), yb)
            ranked = clean.argsort(dim=1, descending=True)  # targets: the classes by clean logit, after the first
            for r in pgd:
                outcome.merge(r.pred[sl], ~r.correct[sl])
                pred[(r.eps, "pgd")][sl], broken[(r.eps, "pgd")][sl] = outcome.snapshot()
                key = (batch, epsilon.key(r.eps))
                for stage in stages:
                    bar.set_postfix_str(f"{stage.kind} eps {r.eps:.4g}", refresh=False)
                    bar.update()
                    cost[(r.eps, stage.kind)] += _run_stage(model, xb, outcome, stage, ranked, norm, r.eps, budget,
                                                            schedule, seed, key)
                    pred[(r.eps, stage.kind)][sl], broken[(r.eps, stage.kind)][sl] = outcome.snapshot()
    out = []
    for r in pgd:
        found = EnsembleResult(norm, r.eps, list(stages), {k: pred[(r.eps, k)] for k in kinds},
                               {k: broken[(r.eps, k)] for k in kinds}, {s.kind: cost[(r.eps, s.kind)] for s in stages},
                               pgd_broken=broken[(r.eps, "pgd")])
        out.append(found)
    return out


def _run_stage(model, xb, outcome: Outcome, stage: Stage, ranked, norm: str, eps: float, budget: Budget,
               schedule: Schedule, seed: int, key: tuple[int, int]) -> int:
    """One stage on the unbroken samples of a batch at one epsilon; its cost."""
    if stage.optimiser == "square":
        def square(idx, queries, on_leave):
            gen = seeding.torch_generator(seed, seeding.STREAM_SQUARE, *key, device=xb.device)
            return run_square(model, xb, idx, outcome, norm=norm, eps=eps, queries=queries, generator=gen,
                              stop=schedule.stop, on_leave=on_leave)
        return _extended(square, outcome, budget.queries, schedule)
    spent = 0
    for rank in range(1, stage.targets + 1) if stage.targets else (0,):  # APGD-CE: one untargeted run, stream 0
        def apgd(idx, iterations, on_leave, rank=rank):
            gen = seeding.torch_generator(seed, seeding.STREAM_APGD, *key, rank, device=xb.device)
            return run_apgd(model, xb, idx, outcome, norm=norm, eps=eps, iterations=iterations,
                            loss="dlr-targeted" if rank else "ce", target=ranked[:, rank] if rank else None,
                            generator=gen, stop=schedule.stop, on_leave=on_leave)
        spent += _extended(apgd, outcome, budget.iterations, schedule)
    return spent


def _extended(run, outcome: Outcome, configured: int, schedule: Schedule) -> int:
    """``run(idx, budget, on_leave)`` on the unbroken samples at the schedule's budget; with ``schedule.extend``,
    the samples it left unbroken (given up or at its end) that are still closing in on the boundary
    (:meth:`StopRule.promising`) run again at the configured budget, from the same start: the full schedule's
    run for them, under the stop rule. Its cost."""
    short = schedule.budget(configured)
    if not schedule.extend or short >= configured:
        return run(outcome.unbroken(), short, None)
    left = []
    spent = run(outcome.unbroken(), short, lambda *leaving: left.append(leaving))
    again = [idx[~outcome.broken[idx] & schedule.stop.promising(margins, configured)] for idx, margins in left]
    if again and sum(a.numel() for a in again):
        spent += run(torch.cat(again).sort().values, configured, None)
    return spent

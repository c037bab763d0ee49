"""Gradient-masking checks for every cell (Carlini et al. 2019, "On evaluating adversarial robustness";
Athalye et al. 2018), as tidy rows ``eval_kind="sanity"``.

Each check writes a row ``metric=<check>`` with value 1 (pass) or 0 (fail) and a row with the measured
quantity it was decided on, on a seeded random subset (``samples``) of the strong evaluation's images:

- ``monotone`` / ``monotone_max_increase`` (per norm): PGD run at each epsilon of the attack grid on its
  own (no carry-over from smaller epsilons, which would make the check pass by construction) must not
  gain accuracy as epsilon grows by more than the tolerance;
- ``unbounded`` / ``unbounded_acc``: PGD with L-inf eps 0.5 (any image within reach of any other of the
  same mean) must drive accuracy to at most the tolerance;
- ``black_box`` / ``black_box_only`` (per norm and epsilon Square ran at): the share of the samples that
  Square (Andriushchenko et al. 2020) broke and no white-box attack did must be at most the tolerance.
  Where the ensemble has a Square stage, its outcome at every strong epsilon decides (it runs after the
  white-box stages, on their survivors, so what it breaks is exactly that share); otherwise the check runs
  Square itself (``square_queries``) at the largest strong epsilon on the white-box survivors among the
  first ``square_samples`` checked images, rows ``eval_kind="square"`` (robust to the white-box attacks and
  Square, on those images);
- ``transfer`` / ``transfer_only`` (per strong epsilon, when a source model is given: the standard model
  of the same task and seed): the share of the checked samples that PGD examples made on the source model
  break and no white-box attack did must be at most the tolerance; rows ``eval_kind="transfer"`` (robust to
  the white-box attacks and the transferred examples, on the checked images);
- ``pgd_vs_worst`` / ``pgd_minus_worst`` (per strong epsilon, decided last): the worst case over everything
  that ran (:mod:`medgrid.evaluation.worst`) must not be more than the tolerance below PGD alone on the same
  images: otherwise PGD, the attack of every other number, overstates robustness.

Black-box and transfer finds also enter the worst case (:class:`medgrid.evaluation.strong.Found`). Deciding
them per sample matters: comparing totals (worst-case accuracy minus Square's) subtracts what only the
white-box attacks broke from what only Square broke, and passes a partly masked model on which Square
breaks fewer samples overall but others than the white-box attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medgrid import epsilon, results, seeding
from medgrid.attacks.pgd import Outcome, perturb
from medgrid.attacks.square import run_square
from medgrid.attacks.steps import default_alpha
from medgrid.attacks.sweep import robust_predictions
from medgrid.data.loading import take, take_float
from medgrid.evaluation.strong import Found, StrongOutcome, accuracy_rows
from medgrid.evaluation.worst import worst_cases
from medgrid.models import eval_mode

MEASURED = {"monotone": "monotone_max_increase", "unbounded": "unbounded_acc", "pgd_vs_worst": "pgd_minus_worst",
            "black_box": "black_box_only", "transfer": "transfer_only"}


WHAT_FAILED = {
    "monotone": "accuracy rose with epsilon by {v:.3f}",
    "unbounded": "an unbounded attack left accuracy at {v:.3f}",
    "pgd_vs_worst": "PGD alone is {v:.3f} above the worst case over every attack",
    "black_box": "Square broke {v:.1%} of the samples that no white-box attack broke",
    "transfer": "examples from the standard model broke {v:.1%} of the samples no white-box attack broke",
}


def check_messages(table) -> list[str]:
    """One line per failed gradient-masking check of a tidy table (its sanity rows): what failed, where, and the
    measured value, so the user sees it where they look (evaluate's end, Snakemake's log), not only in the audit."""
    rows = table[table.eval_kind == "sanity"]
    measured = {(r.eval_norm, r.eval_eps, r.metric): r.value for r in rows.itertuples()}
    out = []
    for r in rows[rows.metric.isin(list(MEASURED)) & (rows.value < 0.5)].itertuples():
        where = "" if r.eval_norm == "none" else f" at {r.eval_norm} eps {r.eval_eps:.4g}"
        value = measured.get((r.eval_norm, r.eval_eps, MEASURED[r.metric]), float("nan"))
        out.append(f"gradient-masking check {r.metric} failed{where}: {WHAT_FAILED[r.metric].format(v=value)} "
                   f"({r.n} samples); robust accuracy may be overstated (docs/evaluation.md)")
    return out


@dataclass
class SanitySettings:
    samples: int = 200            # images for the checks (a seeded random subset of the strong evaluation's)
    tolerance: float = 0.02       # accuracy points a check may miss by
    unbounded_eps: float = 0.5    # L-inf radius of the unbounded attack
    square_queries: int = 1000    # Square's query budget per image (when the ensemble has no Square stage)
    square_samples: int = 100     # images Square attacks (the first of the checks')
    steps: int = 20               # PGD steps of the monotonicity, unbounded and transfer attacks
    batch_size: int = 500


def _row(cell, check: str, passed: bool, measured: float, n: int, norm: str = "none", eps: float = 0.0):
    common = dict(eval_kind="sanity", eval_norm=norm, eval_eps=eps, n=n)
    return [results.make_row(cell, metric=check, value=float(passed), **common),
            results.make_row(cell, metric=MEASURED[check], value=float(measured), **common)]


def _acc(correct: torch.Tensor) -> float:
    return correct.float().mean().item()


def check_positions(n: int, samples: int, seed: int, device) -> torch.Tensor:
    """Which of the strong evaluation's ``n`` images the checks use: a seeded random ``samples`` of them,
    in random order (so the first ``square_samples`` are a random subset too)."""
    perm = torch.randperm(n, generator=seeding.torch_generator(seed, seeding.STREAM_CHECK_SUBSET))
    return perm[:min(samples, n)].to(device)


def only_share(broken: torch.Tensor, white_broken: torch.Tensor) -> float:
    """The share of samples an attack broke that no white-box attack broke: what its check is decided on."""
    return (broken & ~white_broken).float().mean().item() if broken.numel() else 0.0


def sanity_rows(model, x: torch.Tensor, y: torch.Tensor, cell: dict, strong: StrongOutcome,
                settings: SanitySettings, *, seed: int = 0, source_model=None) -> list[dict]:
    """Every check's rows (module doc) for ``model`` on (x, y), the whole test split, after the strong
    evaluation ``strong``, whose ``found`` it extends; ``x`` float, or uint8 images of which only the checked
    subset is made float."""
    pick = check_positions(len(strong.index), settings.samples, seed, y.device)
    k = len(pick)
    xs, ys = take(x, strong.index[pick], y.device), y[strong.index[pick]]  # uint8 stays uint8
    tol, rows = settings.tolerance, []
    pgd_kw = dict(steps=settings.steps, seed=seeding.derive(seed, seeding.STREAM_SANITY),
                  batch_size=settings.batch_size)
    for norm, eps_all in strong.attack_eps.items():
        accs = [_acc(robust_predictions(model, xs, ys, norm=norm, eps_list=[e], **pgd_kw)[0].correct)
                for e in eps_all]
        increase = max([max(0.0, b - a) for a, b in zip(accs, accs[1:])], default=0.0)
        rows += _row(cell, "monotone", increase <= tol, increase, k, norm)
    (unbounded,) = robust_predictions(model, xs, ys, norm="linf", eps_list=[settings.unbounded_eps], **pgd_kw)
    acc = _acc(unbounded.correct)
    rows += _row(cell, "unbounded", acc <= tol, acc, k, "linf", settings.unbounded_eps)
    for norm, ensemble in strong.ensemble.items():
        if any(s.optimiser == "square" for s in ensemble[-1].stages):
            for res in ensemble:
                white = res.white_box()[1]
                share = only_share(res.broken["square"], white)
                rows += _row(cell, "black_box", share <= tol, share, len(strong.index), norm, res.eps)
        else:
            rows += _black_box_rows(model, x, y, cell, strong, ensemble[-1], pick[:settings.square_samples],
                                    settings, seed)
        if source_model is not None:
            for res in ensemble:
                rows += _transfer_rows(model, source_model, xs, ys, cell, strong, res, pick, settings, seed)
    for norm, cases in worst_cases(strong).items():
        for p, w in zip(strong.pgd[norm], cases):
            gap = _acc(p.correct) - _acc((strong.clean_pred == strong.labels) & ~w.broken)
            rows += _row(cell, "pgd_vs_worst", gap <= tol, gap, len(strong.index), norm, w.eps)
    return rows


def _black_box_rows(model, x, y, cell, strong: StrongOutcome, res, positions, settings: SanitySettings,
                    seed: int) -> list[dict]:
    """Square at the ensemble result's epsilon on the white-box survivors among ``positions``."""
    _, white = res.white_box()
    white = white[positions]
    xq, yq = take_float(x, strong.index[positions], y.device), y[strong.index[positions]]
    outcome = Outcome.of(yq, res.white_box()[0][positions], white)
    gen = seeding.torch_generator(seed, seeding.STREAM_SQUARE, 1 << 20, epsilon.key(res.eps), device=y.device)
    run_square(model, xq, outcome.unbroken(), outcome, norm=res.norm, eps=res.eps, queries=settings.square_queries,
               generator=gen)
    strong.add(res.norm, res.eps, Found("square", positions, outcome.pred, outcome.broken))
    m = len(positions)
    common = dict(eval_norm=res.norm, eval_eps=res.eps, n=m)
    share = only_share(outcome.broken, white)
    return (accuracy_rows(cell, "square", yq, outcome.pred, ~outcome.broken, **common)
            + _row(cell, "black_box", share <= settings.tolerance, share, m, res.norm, res.eps))


def _transfer_rows(model, source, xs, ys, cell, strong: StrongOutcome, res, pick, settings: SanitySettings,
                   seed: int) -> list[dict]:
    """PGD examples made on ``source`` at the result's epsilon, evaluated on ``model``, against the white-box
    worst case of the same samples."""
    device = ys.device
    gen = seeding.torch_generator(seed, seeding.STREAM_SANITY, 2, epsilon.key(res.eps), device=device)
    pred = []
    for start in range(0, xs.shape[0], settings.batch_size):
        sl = slice(start, start + settings.batch_size)
        adv = perturb(source, take_float(xs, sl, device), ys[sl], norm=res.norm, eps=res.eps, steps=settings.steps,
                      alpha=default_alpha(res.eps, settings.steps), generator=gen)
        with eval_mode(model), torch.no_grad():
            pred.append(model(adv).argmax(1))
    pred = torch.cat(pred)
    white_pred, white = (t[pick] for t in res.white_box())
    broken = pred != ys
    strong.add(res.norm, res.eps, Found("transfer", pick, pred, broken))
    new = broken & ~white
    cumulative_pred = torch.where(new, pred, white_pred)
    common = dict(eval_norm=res.norm, eval_eps=res.eps, n=len(pick))
    share = only_share(broken, white)
    return (accuracy_rows(cell, "transfer", ys, cumulative_pred, ~(white | broken), **common)
            + _row(cell, "transfer", share <= settings.tolerance, share, len(pick), res.norm, res.eps))

"""Square (Andriushchenko et al. 2020, "Square Attack: a query-efficient black-box adversarial attack via
random search"): the score-based black-box attack of AutoAttack, on the samples no attack has broken yet.

Follows the reference as AutoAttack runs it (auto-attack's ``square.py``, as torchattacks' ``Square`` ports
it): margin loss ``z_y - max_{j != y} z_j`` from the logits only, random search that keeps a change when it
lowers the loss; L-inf: a start of vertical stripes of +-eps, then squares of +-eps per channel; L2: a start
of +-eta patterns on a grid, then mass moved between two windows of the perturbation; the square side
follows ``p_init = 0.8`` on the schedule rescaled to the query budget (``resc_schedule``). One square
position per iteration for the batch, as the reference; every random number is drawn for the whole batch
from a :mod:`medgrid.seeding` generator (the reference reseeds torch's global generator), so a sample's
trajectory does not depend on which other samples are still attacked. A sample leaves as soon as it is
misclassified, or when a ``stop`` rule (:mod:`medgrid.attacks.adaptive`) gives it up.

Its cost is counted in queries: image forward passes (the start and one per iteration and sample).
"""

from __future__ import annotations

import math

import torch

from medgrid.attacks.pgd import Outcome
from medgrid.attacks.steps import check_norm, logit_margin
from medgrid.models import eval_mode

P_INIT = 0.8
# (upper end of the rescaled iteration range, fraction of p_init), the reference's p_selection
P_SCHEDULE = ((10, 1), (50, 1 / 2), (200, 1 / 4), (500, 1 / 8), (1000, 1 / 16), (2000, 1 / 32), (4000, 1 / 64),
              (6000, 1 / 128), (8000, 1 / 256))


def p_selection(it: int, budget: int) -> float:
    """The share of the image a square covers at iteration ``it`` of ``budget`` (the reference's schedule,
    rescaled to 10000 iterations)."""
    it = int(it / budget * 10000)
    for upper, fraction in P_SCHEDULE:
        if it <= upper:
            return P_INIT * fraction
    return P_INIT / 512


def _signs(shape, generator, device) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=generator, device=device) > 0.5, 1.0, -1.0)


def _randint(high: int, generator, device) -> int:
    """An integer in [0, high) (0 when high <= 0), as the reference's random_int."""
    return int(torch.randint(0, max(high, 1), (1,), generator=generator, device=device).item())


def run_square(model, x: torch.Tensor, idx: torch.Tensor, outcome: Outcome, *, norm: str, eps: float,
               queries: int, generator: torch.Generator | None = None, stop=None, on_leave=None) -> int:
    """One Square run of at most ``queries`` iterations on the samples ``idx`` of the batch ``x`` (labels:
    ``outcome.labels``); every query is recorded in ``outcome``; ``stop`` and ``on_leave`` as
    :func:`medgrid.attacks.apgd.run_apgd`'s. Returns the queries (forward passes) spent."""
    check_norm(norm)
    if idx.numel() == 0 or eps == 0:
        return 0
    with eval_mode(model), torch.no_grad():
        return _run(model, x, idx, outcome, norm, eps, queries, generator, stop, on_leave)


def _run(model, x, idx, outcome, norm, eps, budget, generator, stop, on_leave) -> int:
    device, (n, c, h, w) = x.device, x.shape
    if norm == "linf":
        start = x + eps * _signs((n, c, 1, w), generator, device)
    else:
        start = x + _l2_start(x, eps, generator)
    x0, y0, best = x[idx], outcome.labels[idx], start.clamp(0, 1)[idx]
    logits = model(best)
    spent = idx.numel()
    outcome.record(idx, logits)
    loss = -logit_margin(logits, y0)  # the reference's margin z_y - max_{j != y} z_j: lowered
    checks = stop.checks(budget) if stop is not None else ()
    if stop is not None:  # best logit margin after each iteration, in batch positions (row 0: the start)
        history = torch.empty(budget + 1, n, dtype=loss.dtype, device=device)
        history[0, idx] = -loss
    for i in range(budget):
        keep = ~outcome.broken[idx]
        if i in checks:
            give_up = stop.stop(lambda k, rows=idx: history[k, rows], i, budget) & keep
            if on_leave is not None and give_up.any():
                on_leave(idx[give_up], history[:i + 1, idx[give_up]])
            keep &= ~give_up
        if not keep.all():
            idx, x0, y0, best, loss = idx[keep], x0[keep], y0[keep], best[keep], loss[keep]
        if idx.numel() == 0:
            break
        p = p_selection(i, budget)
        if norm == "linf":
            s = min(max(round(math.sqrt(p * h * w)), 1), h, w)
            vh, vw = _randint(h - s, generator, device), _randint(w - s, generator, device)
            signs = _signs((n, c, 1, 1), generator, device)[idx]
            candidate = best.clone()
            candidate[:, :, vh:vh + s, vw:vw + s] = (x0[:, :, vh:vh + s, vw:vw + s] + eps * signs).clamp(0, 1)
        else:
            candidate = _l2_candidate(x0, best, eps, p, _signs((n, c, 1, 1), generator, device)[idx], generator)
        logits = model(candidate)
        spent += idx.numel()
        outcome.record(idx, logits)
        new = -logit_margin(logits, y0)
        better = (new < loss) | (new <= 0)
        loss = torch.where(better, new, loss)
        best[better] = candidate[better]
        if stop is not None:
            history[i + 1, idx] = torch.maximum(history[i, idx], -new)
    if on_leave is not None and stop is not None and idx.numel():
        on_leave(idx, history[:, idx])
    return spent


def _eta(s: int, device) -> torch.Tensor:
    """The reference's L2 building block: an s x s pattern, +1/d^2 rings on one half and -1/d^2 on the other,
    unit norm."""
    def rings(a: int, b: int) -> torch.Tensor:
        delta = torch.zeros(a, b, device=device)
        ca, cb = a // 2 + 1, b // 2 + 1
        ra, rb = ca - 1, cb - 1
        for k in range(max(ca, cb)):
            delta[max(ra, 0):min(ra + 2 * k + 1, a), max(rb, 0):min(rb + 2 * k + 1, b)] += 1.0 / (k + 1) ** 2
            ra, rb = ra - 1, rb - 1
        return delta / delta.norm()

    delta = torch.zeros(s, s, device=device)
    delta[:s // 2] = rings(s // 2, s)
    delta[s // 2:] = -rings(s - s // 2, s)
    return delta / delta.norm()


def _norm(d: torch.Tensor) -> torch.Tensor:
    return d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _l2_start(x: torch.Tensor, eps: float, generator) -> torch.Tensor:
    """The reference's L2 start: +-eta(h // 5) tiles on a centred grid, scaled to norm eps."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    delta = torch.zeros_like(x)
    pattern = _eta(s, x.device).view(1, 1, s, s)
    vh = (h - s * 5) // 2
    for _ in range(h // s):
        vw = (h - s * 5) // 2
        for _ in range(w // s):
            delta[:, :, vh:vh + s, vw:vw + s] += pattern * _signs((n, c, 1, 1), generator, x.device)
            vw += s
        vh += s
    return eps * delta / (_norm(delta) + 1e-12)


def _l2_candidate(x0, best, eps, p, signs, generator) -> torch.Tensor:
    """One L2 proposal: the window at (vh, vw) gets a fresh +-eta pattern plus its old content, rescaled so
    that the mass of both windows (the second one is emptied) and the budget left are spent there."""
    (_, c, h, w), device = x0.shape, x0.device
    s = max(round(math.sqrt(p * h * w)), 3)
    s = min(s + (s % 2 == 0), h, w)
    vh, vw = _randint(h - s, generator, device), _randint(w - s, generator, device)
    vh2, vw2 = _randint(h - s, generator, device), _randint(w - s, generator, device)
    pattern = _eta(s, device)
    if torch.rand(1, generator=generator, device=device).item() > 0.5:
        pattern = pattern.t()
    delta = best - x0
    window = delta[:, :, vh:vh + s, vw:vw + s]
    both = torch.zeros_like(delta)
    both[:, :, vh:vh + s, vw:vw + s] = 1
    both[:, :, vh2:vh2 + s, vw2:vw2 + s] = 1
    mass = _norm(delta * both)
    fresh = pattern.view(1, 1, s, s) * signs + window / (window.flatten(2).norm(dim=2)[..., None, None] + 1e-12)
    scale = ((eps ** 2 - _norm(delta) ** 2).clamp_min(0) / c + mass ** 2).sqrt()
    fresh = fresh / (fresh.flatten(2).norm(dim=2)[..., None, None] + 1e-12) * scale
    delta = delta.clone()
    delta[:, :, vh2:vh2 + s, vw2:vw2 + s] = 0
    delta[:, :, vh:vh + s, vw:vw + s] = fresh
    return (x0 + eps * delta / (_norm(delta) + 1e-12)).clamp(0, 1)

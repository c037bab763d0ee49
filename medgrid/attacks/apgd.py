"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"): PGD with momentum and a per-sample step size that halves when progress stalls.

Follows the authors' reference (auto-attack's ``autopgd_base.py``, as ported by torchattacks' ``APGD``
and ``APGDT``): start on the surface of the eps-ball, step size 2 eps, momentum 0.75 after the first
step, step-size checkpoints after 22% of the iterations and then at decreasing intervals (down to 6%),
where a sample's step is halved and it restarts from its best point when fewer than 75% of the steps
since the last checkpoint raised its loss, or when the last checkpoint did not halve it and its best
loss has not improved since. Losses: cross-entropy (APGD-CE; computed in its log-softmax-margin form,
:func:`medgrid.attacks.steps.margin_loss`, which takes the same steps and decisions but never saturates) or
the targeted difference-of-logits ratio (APGD-T, DLR-T: ``(z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)``).
DLR-T needs at least four classes; with three, APGD-T uses the unscaled targeted margin ``z_t - z_y``
(Carlini-Wagner's); with two that margin is APGD-CE's loss, so APGD-T would be APGD-CE again
(:mod:`medgrid.attacks.stages` does not run it there; docs/evaluation.md).

The random start of every sample is drawn for the whole batch and then indexed, so a sample's trajectory
does not depend on which other samples are still attacked; a ``stop`` rule
(:mod:`medgrid.attacks.adaptive`) may end a sample's run early (the adaptive schedule), which leaves every
other sample's trajectory unchanged.

Every step and projection is the fused op :func:`medgrid.ops.pgd_step`: the gradient step with the
per-sample step sizes (one call per distinct step size: they are 2 eps / 2^k), and the momentum
combination projected back with ``alpha = 0``. Samples leave the batch as soon as an iterate is
misclassified (their outcome is final), which the reference does not do and which changes nothing
for the others: BatchNorm runs in eval mode, so samples do not interact.
"""

from __future__ import annotations

import torch

from medgrid import ops
from medgrid.attacks.pgd import Outcome
from medgrid.attacks.steps import check_norm, logit_margin, margin_loss
from medgrid.models import eval_mode

LOSSES = ("ce", "dlr-targeted")
MOMENTUM = 0.75
RHO = 0.75  # the fraction of loss-raising steps below which a step size is halved


def schedule(iterations: int) -> tuple[int, int, int]:
    """(first checkpoint distance, minimum distance, decrease per checkpoint), in iterations, as the reference."""
    return max(int(0.22 * iterations), 1), max(int(0.06 * iterations), 1), max(int(0.03 * iterations), 1)


def targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample DLR-T (four or more classes) or the targeted margin z_t - z_y (two or three); higher is
    closer to the target."""
    margin = logits.gather(1, target[:, None])[:, 0] - logits.gather(1, y[:, None])[:, 0]
    if logits.shape[1] < 4:
        return margin
    z = logits.sort(dim=1).values
    return margin / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def _loss_and_grad(model, x_adv, y, target, loss: str):
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    if loss == "ce":
        per_sample = margin_loss(logits, y)
    else:
        per_sample = targeted_loss(logits, y, target)
    (grad,) = torch.autograd.grad(per_sample.sum(), x_adv)
    return per_sample.detach(), grad, logits.detach()


def surface_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """The reference's random start: a random direction scaled onto the surface of the eps-ball, clamped."""
    if norm == "linf":
        t = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        scale = t.flatten(1).abs().amax(1).clamp_min(1e-12)
    else:
        t = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        scale = t.flatten(1).norm(dim=1) + 1e-12
    return (x + eps * t / scale.view(-1, *([1] * (x.dim() - 1)))).clamp(0, 1)


def _step(x_adv, grad, x0, eta, norm, eps):
    """The gradient step + projection with a per-sample step size: one fused call per distinct size."""
    out = torch.empty_like(x_adv)
    for value in torch.unique(eta).tolist():
        rows = (eta == value).nonzero().squeeze(1)
        out[rows] = ops.pgd_step(x_adv[rows], grad[rows], x0[rows], norm=norm, eps=eps, alpha=value)
    return out


def run_apgd(model, x: torch.Tensor, idx: torch.Tensor, outcome: Outcome, *, norm: str, eps: float,
             iterations: int, loss: str = "ce", target: torch.Tensor | None = None,
             generator: torch.Generator | None = None, stop=None, on_leave=None) -> int:
    """One APGD run on the samples ``idx`` of the batch ``x`` (labels: ``outcome.labels``); every iterate is
    recorded in ``outcome``. ``target`` (per sample of the batch) for ``loss="dlr-targeted"``; ``stop``: an
    early-stop rule (:class:`medgrid.attacks.adaptive.StopRule`) or None (every iteration); with a rule,
    ``on_leave(idx, margins)`` is called for the samples the run gives up and for those attacked to its end
    (broken there or not), with their best logit margin after each iteration until they left (row 0: the
    start; the adaptive schedule's extension). Returns the forward+backward passes spent."""
    check_norm(norm)
    if loss not in LOSSES:
        raise ValueError(f"unknown APGD loss {loss!r}; valid: {', '.join(LOSSES)}")
    if idx.numel() == 0 or eps == 0:
        return 0
    with eval_mode(model), torch.enable_grad():
        return _run(model, x, idx, outcome, norm=norm, eps=eps, iterations=iterations, loss=loss,
                    target=target, generator=generator, stop=stop, on_leave=on_leave)


def _run(model, x, idx, outcome, *, norm, eps, iterations, loss, target, generator, stop, on_leave) -> int:
    x0, y0 = x[idx], outcome.labels[idx]
    t0 = target[idx] if target is not None else None
    x_adv = surface_start(x, norm, eps, generator)[idx]  # drawn for the whole batch: see the module doc
    value, grad, logits = _loss_and_grad(model, x_adv, y0, t0, loss)
    evals = idx.numel()
    outcome.record(idx, logits)
    margin = logit_margin(logits, y0)
    checks = stop.checks(iterations) if stop is not None else ()
    state = {
        "x0": x0, "y0": y0, "x_adv": x_adv, "x_old": x_adv.clone(), "grad": grad, "x_best": x_adv.clone(),
        "grad_best": grad.clone(), "loss_best": value.clone(), "loss_best_last": value.clone(),
        "reduced_last": torch.ones_like(value, dtype=torch.bool),
        "eta": torch.full_like(value, 2.0 * eps),
        # losses of every iteration; the reference compares the first one with this table's (zero) last row
        "losses": torch.zeros(iterations, value.shape[0], dtype=value.dtype, device=value.device),
    }
    if stop is not None:  # the best logit margin after each iteration (row 0: the start), for the stop rule
        state["margins"] = torch.empty(iterations + 1, value.shape[0], dtype=margin.dtype, device=margin.device)
        state["margins"][0] = margin
    if t0 is not None:
        state["t0"] = t0
    first, minimum, decrease = schedule(iterations)
    distance, since_check = first, 0
    for i in range(iterations):
        idx, state = _keep(idx, state, ~outcome.broken[idx])
        if i in checks:  # i iterations done: stop the samples the rule gives up on
            give_up = stop.stop(state["margins"].__getitem__, i, iterations)
            if on_leave is not None and give_up.any():
                on_leave(idx[give_up], state["margins"][:i + 1, give_up])
            idx, state = _keep(idx, state, ~give_up)
        if idx.numel() == 0:
            break
        s = state
        momentum = MOMENTUM if i > 0 else 1.0
        z = _step(s["x_adv"], s["grad"], s["x0"], s["eta"], norm, eps)
        mixed = s["x_adv"] + momentum * (z - s["x_adv"]) + (1 - momentum) * (s["x_adv"] - s["x_old"])
        s["x_old"] = s["x_adv"]
        s["x_adv"] = ops.pgd_step(mixed, torch.zeros_like(mixed), s["x0"], norm=norm, eps=eps, alpha=0.0)
        value, s["grad"], logits = _loss_and_grad(model, s["x_adv"], s["y0"], s.get("t0"), loss)
        evals += idx.numel()
        outcome.record(idx, logits)
        if stop is not None:
            s["margins"][i + 1] = torch.maximum(s["margins"][i], logit_margin(logits, s["y0"]))
        s["losses"][i] = value
        better = value > s["loss_best"]
        s["x_best"][better] = s["x_adv"][better]
        s["grad_best"][better] = s["grad"][better]
        s["loss_best"] = torch.where(better, value, s["loss_best"])
        since_check += 1
        if since_check == distance:
            _checkpoint(s, i, distance)
            since_check, distance = 0, max(distance - decrease, minimum)
    if on_leave is not None and stop is not None and idx.numel():
        on_leave(idx, state["margins"])
    return evals


def _checkpoint(s: dict, i: int, distance: int) -> None:
    """Halve the step of the samples that stalled over the last ``distance`` iterations; they restart from
    their best point."""
    rows = torch.arange(i - distance, i + 1, device=s["losses"].device) % s["losses"].shape[0]
    steps = s["losses"][rows]
    raised = (steps[1:] > steps[:-1]).sum(0)
    oscillating = raised <= distance * RHO
    no_improvement = ~s["reduced_last"] & (s["loss_best_last"] >= s["loss_best"])
    reduce = oscillating | no_improvement
    s["reduced_last"], s["loss_best_last"] = reduce, s["loss_best"].clone()
    if reduce.any():
        s["eta"] = torch.where(reduce, s["eta"] / 2, s["eta"])
        s["x_adv"] = torch.where(_rows(reduce, s["x_adv"]), s["x_best"], s["x_adv"])
        s["grad"] = torch.where(_rows(reduce, s["grad"]), s["grad_best"], s["grad"])


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


def _keep(idx: torch.Tensor, state: dict, keep: torch.Tensor):
    """Keep only the samples ``keep`` marks (in every per-sample tensor of ``state``): those no iterate has
    broken yet, or those a stop rule does not give up on."""
    if keep.all():
        return idx, state
    out = {}
    for key, value in state.items():
        out[key] = value[:, keep] if key in ("losses", "margins") else value[keep]
    return idx[keep], out

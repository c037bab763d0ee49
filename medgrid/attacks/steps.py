"""The verbs of one attack iteration: random start and the per-sample loss with its input gradient (cross-entropy,
or TRADES' KL divergence from the clean prediction).

The step and the projection are one fused call, :func:`medgrid.ops.pgd_step`. L2 random start:
uniform in the eps-ball (direction Gaussian, radius eps * U^(1/d)).

The loss is cross-entropy in its log-softmax-margin form, :func:`margin_loss`: ``L(z) = logsumexp_{j != y}
z_j - z_y``, a strictly increasing function of cross-entropy (``CE = log(1 + exp(L))``) whose gradient is
CE's divided by ``1 - p_y``. Sign steps, normalised L2 steps and every "did the loss increase" decision are
therefore CE's wherever CE's float32 gradient is nonzero, while L's gradient never underflows: on a very
confident model (``p_y`` rounds to 1) CE's gradient is exactly zero and PGD would not move
(docs/evaluation.md, "No saturated losses").
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medgrid.names import ATTACK_NORMS


def check_norm(norm: str) -> None:
    if norm not in ATTACK_NORMS:
        raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(ATTACK_NORMS)}")


def default_alpha(eps: float, steps: int) -> float:
    """Madry's step size, 2.5 * eps / steps: PGD can walk from one side of the ball to the other."""
    return 2.5 * eps / max(steps, 1)


def random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniform point of the eps-ball around x, clamped to [0, 1]."""
    check_norm(norm)
    if eps == 0:
        return x.clone()
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
        delta = noise * eps
    else:
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        flat = direction.flatten(1)
        flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
        u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
        radius = eps * u.pow(1.0 / flat.shape[1])
        delta = (flat * radius[:, None]).view_as(x)
    return (x + delta).clamp_(0, 1)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``logsumexp_{j != y} z_j - z_y``: cross-entropy's log-odds, ``log(exp(CE) - 1)``, computed
    without ever forming ``p_y`` (so neither it nor its gradient saturates). Positive once a class beats y
    by more than ``log(C - 1)``, negative while y leads every other class."""
    z_y = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return torch.logsumexp(others, dim=1) - z_y


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample ``max_{j != y} z_j - z_y``: how far a sample is from being misclassified (broken once it
    is positive), in logits; what the adaptive schedule's stop rule follows, whatever loss an attack uses."""
    z_y = logits.gather(1, labels[:, None])[:, 0]
    return logits.scatter(1, labels[:, None], float("-inf")).amax(1) - z_y
def kl_grad(model, x_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """The gradient, with respect to the input, of TRADES' inner objective: the batch's summed
    KL(p_clean || softmax(model(x_adv))), where ``p_clean`` holds the class probabilities on the clean images."""
    x_adv = x_adv.detach().requires_grad_(True)
    log_p = F.log_softmax(model(x_adv).float(), dim=1)
    loss = F.kl_div(log_p, p_clean, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def loss_and_grad(model, x_adv: torch.Tensor, labels: torch.Tensor):
    """Per-sample loss (:func:`margin_loss`, cross-entropy's monotone twin), its gradient with respect to
    the input, and the logits."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = margin_loss(logits, labels)
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad, logits.detach()

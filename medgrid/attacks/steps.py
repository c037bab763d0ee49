"""The verbs of one attack iteration: random start and the per-sample loss with its input gradient (cross-entropy,
or TRADES' KL divergence from the clean prediction).

The step and the projection are one fused call, :func:`medgrid.ops.pgd_step`. L2 random start:
uniform in the eps-ball (direction Gaussian, radius eps * U^(1/d)).
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


def kl_grad(model, x_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """The gradient, with respect to the input, of TRADES' inner objective: the batch's summed
    KL(p_clean || softmax(model(x_adv))), where ``p_clean`` holds the class probabilities on the clean images."""
    x_adv = x_adv.detach().requires_grad_(True)
    log_p = F.log_softmax(model(x_adv).float(), dim=1)
    loss = F.kl_div(log_p, p_clean, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def loss_and_grad(model, x_adv: torch.Tensor, labels: torch.Tensor):
    """Per-sample cross-entropy, its gradient with respect to the input, and the logits."""
    x_adv = x_adv.detach().requires_grad_(True)
    logits = model(x_adv)
    loss = F.cross_entropy(logits, labels, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x_adv)
    return loss.detach(), grad, logits.detach()

"""Training methods: how one training batch becomes a loss, as small strategy objects the training loop calls.

Each method has two verbs. ``examples`` makes the inputs the model is trained on (its attack; model in eval
mode, outside bf16 autocast, every step through :func:`medgrid.ops.pgd_step`), ``loss`` turns them into the
training loss (model in train mode) and returns the logits whose accuracy the history records (those of the
attacked inputs). The loop scales ``eps`` and the step size during an epsilon warm-up and checks the health of
every method alike; a method with ``guarded = True`` also gets the catastrophic-overfitting guard
(:mod:`medgrid.training.guard`).

- ``pgd``: Madry et al. 2018, cross-entropy on the last PGD iterate from a uniform random start
  (``attack_steps`` steps of ``attack_step_size``, default 2.5 eps / steps). The default method.
- ``trades``: Zhang et al. 2019, CE(f(x), y) + beta * KL(f(x) || f(x')) (batch mean), where x' maximises the KL
  term (:func:`medgrid.attacks.pgd.perturb_kl`: the same steps and step size as PGD, from x plus N(0, 0.001^2)).
- ``fgsm-rs``: Wong et al. 2020, cross-entropy on one FGSM step of 1.25 eps from a uniform random start in the
  eps-ball, projected onto it (PGD with one step); guarded.

A fourth method is one class here and one line in :data:`METHODS` (plus its name in
``medgrid.names.TRAIN_METHODS``, which the command line, the schema and the tables read).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from medgrid.attacks.pgd import perturb, perturb_kl
from medgrid.attacks.steps import default_alpha
from medgrid.names import DEFAULT_METHOD


class Standard:
    """Standard training: cross-entropy on the clean batch (every method's epsilon-0 point)."""

    name = DEFAULT_METHOD
    guarded = False

    def alpha(self, eps: float) -> float:
        return 0.0

    def examples(self, model, x, y, *, eps: float, alpha: float, generator=None) -> torch.Tensor:
        return x

    def loss(self, model, x, x_adv, y) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(x_adv)
        return F.cross_entropy(logits.float(), y), logits


class PGD(Standard):
    """Madry et al.'s PGD adversarial training: cross-entropy on the last PGD iterate."""

    name = "pgd"

    def __init__(self, norm: str, *, steps: int, step_size: float | None = None, param: float = 0.0):
        self.norm, self.steps, self.step_size, self.param = norm, int(steps), step_size, float(param)

    def alpha(self, eps: float) -> float:
        """The step size at the full training epsilon (the loop scales it with eps during a warm-up)."""
        return self.step_size if self.step_size is not None else default_alpha(eps, self.steps)

    def examples(self, model, x, y, *, eps: float, alpha: float, generator=None) -> torch.Tensor:
        return perturb(model, x, y, norm=self.norm, eps=eps, alpha=alpha, steps=self.steps, generator=generator)


class TRADES(PGD):
    """Zhang et al.'s TRADES: clean cross-entropy plus beta times the KL divergence of the prediction on the
    KL-maximising example from the clean prediction (``param`` is beta). The gradient flows through both
    predictions, as in the reference implementation; the clean batch is forwarded once (the reference
    forwards it twice, which only updates BatchNorm's running statistics once more)."""

    name = "trades"

    def examples(self, model, x, y, *, eps: float, alpha: float, generator=None) -> torch.Tensor:
        return perturb_kl(model, x, norm=self.norm, eps=eps, alpha=alpha, steps=self.steps, generator=generator)

    def loss(self, model, x, x_adv, y) -> tuple[torch.Tensor, torch.Tensor]:
        logits, logits_adv = model(x).float(), model(x_adv)
        robust = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + self.param * robust, logits_adv


class FGSMRS(PGD):
    """Wong et al.'s fast adversarial training: one signed-gradient step of 1.25 eps (``attack_step_size``
    overrides it) from a uniform random start in the eps-ball, projected onto the ball and the image box."""

    name = "fgsm-rs"
    guarded = True
    STEP = 1.25  # step size in units of eps (Wong et al.: 10/255 at 8/255)

    def __init__(self, norm: str, *, steps: int = 1, step_size: float | None = None, param: float = 0.0):
        super().__init__(norm, steps=1, step_size=step_size, param=param)

    def alpha(self, eps: float) -> float:
        return self.step_size if self.step_size is not None else self.STEP * eps


METHODS = {"pgd": PGD, "trades": TRADES, "fgsm-rs": FGSMRS}


def build(name: str, norm: str, *, steps: int, step_size: float | None = None, param: float = 0.0):
    """The method ``name`` for adversarial training in ``norm`` (``param``: its parameter, TRADES' beta)."""
    if name not in METHODS:
        raise ValueError(f"unknown training method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name](norm, steps=steps, step_size=step_size, param=param)

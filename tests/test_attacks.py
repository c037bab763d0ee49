"""PGD: stays in the eps-ball and [0, 1], breaks what it should, skipping changes cost not results."""

import pytest
import torch
from torch import nn

from medgrid.attacks import pgd, steps, sweep


def tiny_model(channels=1, classes=3, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, classes))
    with torch.no_grad():   # give BatchNorm non-trivial running statistics
        model.train()(torch.rand(64, channels, 12, 12))
    return model.eval()


def batch(n=48, channels=1, classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, channels, 12, 12, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5), ("linf", 0.0), ("l2", 0.0)])
@pytest.mark.parametrize("targeted", [False, True])
def test_perturb_stays_in_ball_and_box(norm, eps, targeted):
    model = tiny_model()
    x, y = batch()
    x_adv = pgd.perturb(model, x, y, norm=norm, eps=eps, alpha=steps.default_alpha(eps, 5) or 0.1,
                            steps=5, targeted=targeted, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    if eps == 0:
        assert torch.equal(x_adv, x)


def test_random_start_l2_is_inside_ball():
    x = torch.full((200, 3, 8, 8), 0.5)
    x0 = steps.random_start(x, "l2", 0.3, torch.Generator().manual_seed(0))
    norms = (x0 - x).flatten(1).norm(dim=1)
    assert (norms <= 0.3 + 1e-6).all() and norms.mean() > 0.2   # uniform in the ball: mass near the surface


def test_attack_restores_training_mode():
    model = tiny_model().train()
    x, y = batch()
    pgd.perturb(model, x, y, norm="linf", eps=0.1, alpha=0.05, steps=2)
    assert model.training
    sweep.robust_predictions(model, x, y, norm="linf", eps_list=[0.1], steps=2)
    assert model.training


def test_untargeted_attack_raises_loss_and_targeted_reaches_target():
    model = tiny_model()
    x, y = batch(n=64)
    loss = nn.functional.cross_entropy
    x_adv = pgd.perturb(model, x, y, norm="linf", eps=0.3, alpha=0.05, steps=20)
    assert loss(model(x_adv), y) > loss(model(x), y)
    target = (y + 1) % 3
    x_t = pgd.perturb(model, x, target, norm="l2", eps=3.0, alpha=0.5, steps=30, targeted=True)
    with torch.no_grad():
        hit = (model(x_t).argmax(1) == target).float().mean().item()
    assert hit > 0.8


@pytest.mark.parametrize("norm,eps_list", [("linf", [1 / 255, 4 / 255, 16 / 255, 0.3]), ("l2", [0.05, 0.25, 1.0])])
def test_robust_predictions_skip_equals_no_skip_and_costs_less(norm, eps_list):
    model = tiny_model()
    x, y = batch(n=96)
    kw = dict(norm=norm, eps_list=eps_list, steps=10, restarts=2, seed=3, batch_size=40)
    fast = sweep.robust_predictions(model, x, y, skip=True, **kw)
    slow = sweep.robust_predictions(model, x, y, skip=False, **kw)
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
    previous = clean_correct
    for f, s in zip(fast, slow):
        assert torch.equal(f.correct, s.correct)
        assert torch.equal(f.pred, s.pred)
        assert s.grad_evals == 10 * 2 * 96
        # robust accuracy never exceeds clean accuracy, and never rises with epsilon
        assert not (f.correct & ~previous).any()
        previous = f.correct
    assert sum(f.grad_evals for f in fast) < sum(s.grad_evals for s in slow)
    assert fast[-1].correct.float().mean() < clean_correct.float().mean()
    # a broken sample's prediction is the wrong label found
    assert ((fast[-1].pred != y) == ~fast[-1].correct).all()


def test_robust_predictions_eps_zero_is_clean_accuracy():
    model = tiny_model()
    x, y = batch()
    (res,) = sweep.robust_predictions(model, x, y, norm="l2", eps_list=[0.0], steps=3)
    with torch.no_grad():
        assert torch.equal(res.correct, model(x).argmax(1) == y)

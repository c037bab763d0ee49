"""APGD, Square, the ensemble of stages and the gradient-masking checks: units, an independent implementation
(torchattacks) as the yardstick, and the checks failing on a deliberately masked model. The per-sample worst
case, the two-class ensemble, saturated losses and the adaptive schedule: tests/test_ensemble.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medgrid import results
from medgrid.attacks import apgd, ensemble, stages, sweep
from medgrid.attacks.pgd import Outcome
from medgrid.attacks.square import run_square
from medgrid.data import loading, prepare, tasks
from medgrid.evaluation import evaluate
from medgrid.evaluation.sanity import SanitySettings
from medgrid.evaluation.strong import StrongSettings, subset
from medgrid.training import loop


class Linear(nn.Module):
    """A fixed linear classifier on flattened [0, 1] images: its gradients are exact and never masked."""

    def __init__(self, d=64, classes=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(d, classes, generator=g))
        self.b = nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return x.flatten(1) @ self.w + self.b


def batch(n=32, classes=4, seed=0):
    """A linear model and images in [0.25, 0.75] (so an eps-ball of radius <= 0.25 never meets the box),
    labelled as the model predicts them."""
    model = Linear(classes=classes, seed=seed)
    x = 0.25 + 0.5 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample starts correctly classified
    return model, x, y


def breakable(model, x, y, norm, eps, target=None):
    """Which samples an optimal attack breaks (towards ``target`` if given): for a linear model the least
    margin over the ball is margin - eps * ||w_y - w_j||_dual (L1 for L-inf, L2 for L2), exactly."""
    with torch.no_grad():
        logits = model(x)
        w = model.w.detach()
        out = torch.zeros(len(y), dtype=torch.bool)
        for j in range(w.shape[1]):
            c = w[:, y] - w[:, j:j + 1]  # (d, n)
            dual = c.abs().sum(0) if norm == "linf" else c.norm(dim=0)
            margin = logits.gather(1, y[:, None])[:, 0] - logits[:, j]
            ok = (j != y) & (margin - eps * dual < 0)
            out |= ok & (True if target is None else target == j)
    return out


def test_schedule_and_losses_follow_the_reference():
    assert apgd.schedule(100) == (22, 6, 3)
    assert apgd.schedule(10) == (2, 1, 1)
    logits = torch.tensor([[3.0, 1.0, 0.5, -1.0, 0.0]])
    y, t = torch.tensor([0]), torch.tensor([2])
    # DLR-T (Croce & Hein 2020, eq. 6): -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    assert apgd.targeted_loss(logits, y, t).item() == pytest.approx(-(3.0 - 0.5) / (3.0 - 0.5 * (0.5 + 0.0)))
    two = torch.tensor([[2.0, -1.0]])
    assert apgd.targeted_loss(two, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(-3.0)


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "dlr-targeted"])
def test_apgd_iterates_stay_in_ball_and_box_and_break_samples(norm, eps, loss, monkeypatch):
    model, x, y = batch()
    seen = []
    original = Outcome.record

    def spy(self, idx, logits):  # every iterate the attack evaluates passes through here
        seen.append(idx.clone())
        original(self, idx, logits)

    monkeypatch.setattr(Outcome, "record", spy)
    iterates = []
    real_step = apgd.ops.pgd_step

    def step_spy(x_adv, grad, x0, **kw):
        out = real_step(x_adv, grad, x0, **kw)
        iterates.append((out, x0))
        return out

    monkeypatch.setattr(apgd.ops, "pgd_step", step_spy)
    with torch.no_grad():
        target = model(x).argsort(1, descending=True)[:, 1]
    outcome = Outcome(y.clone(), y)
    evals = apgd.run_apgd(model, x, torch.arange(len(y)), outcome, norm=norm, eps=eps, iterations=30, loss=loss,
                          target=target, generator=torch.Generator().manual_seed(0))
    # against the exact optimum: never a sample that cannot be broken, and (nearly) every one that can
    reachable = breakable(model, x, y, norm, eps, target if loss == "dlr-targeted" else None)
    assert not (outcome.broken & ~breakable(model, x, y, norm, eps)).any()
    assert 4 <= reachable.sum() <= len(y) - 4  # a test with both kinds of samples
    assert (reachable & ~outcome.broken).sum() <= 1, (reachable.sum(), outcome.broken.sum())
    assert evals == sum(len(i) for i in seen)  # one forward+backward per sample and iterate, start included
    assert len(seen) > 1 and all(len(b) <= len(a) for a, b in zip(seen, seen[1:]))  # broken samples leave
    for out, x0 in iterates:
        d = (out - x0).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert (size <= eps * (1 + 1e-5) + 1e-7).all() and out.min() >= 0 and out.max() <= 1
    # what it records is true: the labels it found are wrong and the model gives them to some iterate
    assert (outcome.pred[outcome.broken] != y[outcome.broken]).all()


@pytest.mark.parametrize("schedule", ["full", "adaptive"])
def test_ensemble_worst_case_never_above_pgd_and_cumulative(schedule):
    model, x, y = batch(n=48)
    pgd = sweep.robust_predictions(model, x, y, norm="linf", eps_list=[0.005, 0.01, 0.02], steps=3, seed=1)
    run, _ = stages.resolve(["apgd-ce", "apgd-t", "square"], 4, targets=3)
    found = ensemble.ensemble_predictions(model, x, y, pgd, stages=run, seed=2, batch_size=20,
                                          budget=ensemble.Budget(iterations=10, queries=30, schedule=schedule))
    for p, e in zip(pgd, found):
        pgd_broken = ~p.correct
        assert torch.equal(e.pgd_broken, pgd_broken)
        assert (e.broken["apgd-ce"] >= pgd_broken).all()  # starts where PGD left off
        assert (e.broken["apgd-t"] >= e.broken["apgd-ce"]).all()  # cumulative, as AutoAttack reports
        assert (e.broken["square"] >= e.broken["apgd-t"]).all()
        assert torch.equal(e.white_box()[1], e.broken["apgd-t"])  # the last white-box stage
        assert e.correct().float().mean() <= p.correct.float().mean()
        assert e.cost["apgd-ce"] > 0 or not (~pgd_broken).any()
    for a, b in zip(found, found[1:]):  # a sample broken at a smaller epsilon stays broken
        assert (b.broken["square"] >= a.broken["square"]).all()


def test_stages_per_number_of_classes():
    kinds = {c: [s.kind for s in stages.resolve(None, c)[0]] for c in (2, 3, 4, 10)}
    assert kinds == {2: ["apgd-ce", "square"], 3: ["apgd-ce", "apgd-t-margin", "square"], 4: ["apgd-ce", "apgd-t"],
                     10: ["apgd-ce", "apgd-t"]}
    # APGD-T on two classes is APGD-CE again: left out, with a note; black-box stages always run last
    run, notes = stages.resolve(["square", "apgd-t", "apgd-ce"], 2)
    assert [s.kind for s in run] == ["apgd-ce", "square"] and "APGD-CE" in notes[0]
    run, _ = stages.resolve(["square", "apgd-t"], 10, targets=9)
    assert [(s.kind, s.white_box, s.targets, s.loss) for s in run] == [("apgd-t", True, 9, "dlr-targeted"),
                                                                        ("square", False, 0, "margin")]
    assert stages.resolve(["apgd-t"], 5, targets=9)[0][0].targets == 4  # at most n_classes - 1
    from medgrid.errors import UserError
    from medgrid.names import EVAL_KINDS, ROBUST_KINDS, STRONG_ATTACKS

    for bad in (["apgd-t"], ["fab"], [], ["apgd-ce", "apgd-ce"]):
        with pytest.raises(UserError):
            stages.resolve(bad, 2)
    every = {s.kind for c in (2, 3, 4) for s in stages.resolve(STRONG_ATTACKS, c)[0]}
    assert every <= set(ROBUST_KINDS) <= set(EVAL_KINDS)
    from medgrid.labels import ATTACK_NAME

    assert set(ROBUST_KINDS) <= set(ATTACK_NAME)  # every attack has a label


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_square_stays_in_ball_and_box_and_breaks_what_it_can(norm, eps, monkeypatch):
    """Square on the linear model: every query in the ball and the box, only breakable samples broken, one
    query per sample and iteration, and a sample's trajectory independent of the others attacked."""
    model, x, y = batch(n=24)
    queried = []
    real_forward = model.forward

    def spy(inp):
        queried.append(inp.clone())
        return real_forward(inp)

    monkeypatch.setattr(model, "forward", spy)
    out = Outcome(y.clone(), y)
    spent = run_square(model, x, torch.arange(len(y)), out, norm=norm, eps=eps, queries=60,
                       generator=torch.Generator().manual_seed(0))
    assert spent == sum(len(q) for q in queried)
    for q in queried:
        d = (q - x[:len(q)]).flatten(1) if len(q) == len(y) else None
        assert q.min() >= 0 and q.max() <= 1
        if d is not None:
            size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
            assert (size <= eps * (1 + 1e-5) + 1e-7).all()
    assert not (out.broken & ~breakable(model, x, y, norm, eps)).any() and out.broken.any()
    # the same samples attacked alone (the others already broken) follow the same trajectories
    alone = Outcome(y.clone(), y)
    alone.broken[::2] = True
    run_square(model, x, alone.unbroken(), alone, norm=norm, eps=eps, queries=60,
               generator=torch.Generator().manual_seed(0))
    assert torch.equal(alone.broken[1::2], out.broken[1::2])


def test_subset_is_seeded_sorted_and_capped():
    a, b = subset(100, 30, seed=3, device="cpu"), subset(100, 30, seed=3, device="cpu")
    assert torch.equal(a, b) and len(a) == 30 and (a[1:] > a[:-1]).all()
    assert not torch.equal(a, subset(100, 30, seed=4, device="cpu"))
    assert torch.equal(subset(10, None, 0, "cpu"), torch.arange(10))


def test_strong_eps_must_be_in_the_pgd_grid():
    from medgrid.errors import UserError

    assert StrongSettings(eps={"linf": [2 / 255]}).grid({"linf": [1 / 255, 2 / 255]}) == {"linf": [2 / 255]}
    with pytest.raises(UserError, match="not in the PGD attack grid"):
        StrongSettings(eps={"l2": [0.5]}).grid({"linf": [2 / 255]})


# ------------------------------------------------------------------ on a trained model (slow)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly adversarially trained cnn-small on the synthetic task, and a standard one."""
    d = tmp_path_factory.mktemp("strong")
    prepare.prepare("synthetic", 28, tasks.npz_path(d, "synthetic", 28), data_seed=0, n_train=1200, n_val=100, n_test=400)
    ds = loading.load("synthetic", 28, tasks.npz_path(d, "synthetic", 28))
    torch.set_num_threads(2)
    robust, rs = loop.train(ds, arch="cnn-small", norm="linf", eps=4 / 255, seed=0, progress=False,
                             hp=loop.HParams(epochs=4, attack_steps=3, lr=0.05))
    standard, ss = loop.train(ds, arch="cnn-small", norm="none", eps=0.0, seed=0, progress=False,
                               hp=loop.HParams(epochs=6))
    return ds, robust, rs, standard


@pytest.mark.slow
@pytest.mark.parametrize("norm,eps", [("linf", 4 / 255), ("l2", 0.5)])
def test_apgd_at_least_as_strong_as_torchattacks(trained, norm, eps):
    """Our APGD-CE / APGD-T (fused steps) against torchattacks' port of the authors' code, same budget."""
    torchattacks = pytest.importorskip("torchattacks", reason="independent APGD: pip install --no-deps torchattacks")
    ds, model, _, _ = trained
    x, y = loading.as_float(ds.test.images[:200]), ds.test.labels[:200]
    with torch.no_grad():
        clean = model(x).argmax(1)
    name = {"linf": "Linf", "l2": "L2"}[norm]
    ours, theirs = {}, {}
    out = Outcome(clean.clone(), y)
    apgd.run_apgd(model, x, out.unbroken(), out, norm=norm, eps=eps, iterations=50, loss="ce",
                  generator=torch.Generator().manual_seed(0))
    ours["ce"] = (~out.broken).float().mean().item()
    adv = torchattacks.APGD(model, norm=name, eps=eps, steps=50, n_restarts=1, loss="ce", seed=0)(x, y)
    theirs["ce"] = (model(adv).argmax(1) == y).float().mean().item()
    run, _ = stages.resolve(["apgd-ce", "apgd-t"], 4, targets=3)
    found = ensemble.ensemble_predictions(model, x, y, [sweep.RobustResult(norm, eps, clean, clean == y, 0)],
                                          stages=run, budget=ensemble.Budget(iterations=50, schedule="full"))[0]
    ours["t"] = found.correct().float().mean().item()
    adv = torchattacks.APGDT(model, norm=name, eps=eps, steps=50, n_restarts=1, n_classes=4, seed=0)(x, y)
    theirs["t"] = ((model(adv).argmax(1) == y) & (clean == y)).float().mean().item()
    # ours["t"] is the cascade CE then T; compare with the better of theirs
    assert ours["ce"] <= theirs["ce"] + 0.015, (ours, theirs)
    assert ours["t"] <= min(theirs["ce"], theirs["t"]) + 0.015, (ours, theirs)
    assert 0.2 < ours["t"] < 0.95  # a model with something to attack, not a trivial comparison


class Quantised(nn.Module):
    """Gradient masking by construction: the input is rounded to 8 grey levels, whose derivative is 0."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


def _checks(table):
    rows = table[table.eval_kind == "sanity"]
    return {(r.metric, r.eval_norm, round(r.eval_eps, 6)): r.value for r in rows.itertuples()}


@pytest.mark.slow
def test_checks_pass_on_a_normal_model_and_fail_on_a_masked_one(trained):
    pytest.importorskip("torchattacks", reason="the black-box check uses torchattacks' Square")
    ds, robust, settings, standard = trained
    small = loading.Dataset(ds.info, ds.size, ds.train, ds.val, loading.Split(ds.test.images[:120], ds.test.labels[:120]),
                         ds.path, ds.sha256)
    kw = dict(attacks_by_norm={"linf": [2 / 255, 4 / 255]}, steps=10, strong=StrongSettings(iterations=20),
              sanity=SanitySettings(samples=120, square_queries=300, square_samples=60, steps=10),
              source_model=standard)
    normal = evaluate.evaluate(robust, settings, small, **kw)
    checks = _checks(normal)
    failed = {k: v for k, v in checks.items() if k[0] in ("monotone", "unbounded", "pgd_vs_worst", "black_box",
                                                          "transfer") and v != 1.0}
    assert not failed, (failed, checks)
    assert {"apgd-ce", "apgd-t", "worst", "square", "transfer", "sanity"} <= set(normal.eval_kind)
    results.validate(normal)
    worst = normal[(normal.eval_kind == "worst") & (normal.metric == "acc")].set_index("eval_eps").value
    pgd = normal[(normal.eval_kind == "pgd") & (normal.metric == "acc")].set_index("eval_eps").value
    assert (worst <= pgd + 1e-12).all()
    masked = evaluate.evaluate(Quantised(robust), settings, small, **kw)
    checks = _checks(masked)
    assert checks[("unbounded", "linf", 0.5)] == 0.0, checks
    assert checks[("black_box", "linf", round(4 / 255, 6))] == 0.0, checks


def test_every_check_has_its_measured_quantity():
    from medgrid import names
    from medgrid.evaluation import sanity

    assert set(sanity.MEASURED) == set(names.SANITY_CHECKS)

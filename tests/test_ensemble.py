"""The strong evaluation as a whole: one per-sample worst case over every attack that ran, black-box and
transfer checks decided per sample (the "partly masked" model), two-class ensembles, losses that do not
saturate, checks on a seeded random subset, robust figures that cannot exceed their own clean figure, and the
adaptive schedule's per-sample early stop."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from test_strong import Linear, trained  # noqa: F401 - the linear model; the trained-models fixture
from torch import nn
from torch.nn import functional as F

from medgrid import results
from medgrid.attacks import apgd, ensemble, stages, sweep
from medgrid.attacks.adaptive import StopRule
from medgrid.attacks.pgd import Outcome
from medgrid.attacks.square import run_square
from medgrid.attacks.steps import loss_and_grad, margin_loss
from medgrid.data import loading
from medgrid.evaluation import evaluate, sanity, strong, worst
from medgrid.evaluation.sanity import SanitySettings
from medgrid.evaluation.strong import StrongSettings
from medgrid.report import audit

CELL = results.cell_columns({"task": "synthetic", "size": 28, "arch": "cnn-small", "norm": "linf", "eps": 2 / 255,
                             "seed": 0})


class Scaled(nn.Module):
    """A model's logits times ``factor``: the same classifier, a float32 cross-entropy that saturates."""

    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.factor * self.model(x)


# ------------------------------------------------------------------------------------------ units


def test_margin_loss_is_cross_entropy_that_never_saturates():
    z = torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 5, (64,), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(F.cross_entropy(z, y, reduction="none"), torch.log1p(margin_loss(z, y).exp()))
    zc = z.clone().requires_grad_(True)
    g_ce, = torch.autograd.grad(F.cross_entropy(zc, y, reduction="sum"), zc)
    g_m, = torch.autograd.grad(margin_loss(zc, y).sum(), zc)
    p_y = zc.softmax(1).gather(1, y[:, None])
    assert torch.allclose(g_ce, g_m * (1 - p_y))  # the same direction, sample by sample
    # a confident float32 model: cross-entropy's gradient is exactly zero, the margin loss's is not
    sure = torch.zeros(8, 3)
    sure[:, 0] = 200.0
    sure.requires_grad_(True)
    labels = torch.zeros(8, dtype=torch.long)
    g_ce, = torch.autograd.grad(F.cross_entropy(sure, labels, reduction="sum"), sure)
    g_m, = torch.autograd.grad(margin_loss(sure, labels).sum(), sure)
    assert (g_ce == 0).all() and (g_m.abs().sum(1) > 0).all()


def _strong_outcome(n, white_broken, square_broken, square_positions):
    """A strong evaluation of ``n`` correctly classified samples whose one white-box stage broke
    ``white_broken`` and whose black-box check's Square broke ``square_broken`` (at ``square_positions``)."""
    labels = torch.zeros(n, dtype=torch.long)
    wrong = torch.ones(n, dtype=torch.long)
    run = [stages.Stage("apgd-ce", "apgd-ce", "apgd", "ce", True)]
    none = torch.zeros(n, dtype=torch.bool)
    res = ensemble.EnsembleResult("linf", 4 / 255, run, {"pgd": labels.clone(), "apgd-ce": torch.where(white_broken, wrong, labels)},
                                  {"pgd": none, "apgd-ce": white_broken}, {"apgd-ce": 0}, pgd_broken=none)
    out = strong.StrongOutcome(torch.arange(n), labels, labels.clone(), {"linf": [4 / 255]},
                               {"linf": [sweep.RobustResult("linf", 4 / 255, labels.clone(), ~none, 0)]}, {"linf": [res]})
    out.add("linf", 4 / 255, strong.Found("square", square_positions, torch.where(square_broken, wrong[:len(square_positions)], labels[:len(square_positions)]), square_broken))
    return out


def test_the_issues_partly_masked_numbers_fail_the_check_and_lower_the_worst_case():
    """Issue 21's measurement: on 100 images the white-box attacks alone break 5 samples Square misses, Square
    alone breaks 3 the white-box attacks miss, 16 both. Totals (white-box 0.79 minus Square 0.81 = -0.02)
    passed the old check; per sample, 3% broken only by Square fails it, and the worst case is 0.76."""
    n = 100
    white = torch.zeros(n, dtype=torch.bool)
    white[:21] = True  # 16 both + 5 white-box only
    square = torch.zeros(n, dtype=torch.bool)
    square[:16] = True
    square[21:24] = True  # 3 only Square
    outcome = _strong_outcome(n, white, square, torch.arange(n))
    old_gap = (1 - white.float().mean()) - (1 - square.float().mean())
    assert old_gap.item() == pytest.approx(-0.02)  # what the old check passed
    share = sanity.only_share(square, white)
    assert share == pytest.approx(0.03) and share > SanitySettings().tolerance
    rows = pd.DataFrame(worst.worst_rows(CELL, outcome))
    acc = rows[rows.metric == "acc"].set_index("eval_kind").value
    assert acc["worst-white-box"] == pytest.approx(0.79) and acc["worst"] == pytest.approx(0.76)


def test_finds_of_the_checks_carry_over_to_larger_epsilons_and_robust_never_above_clean():
    n = 10
    labels = torch.zeros(n, dtype=torch.long)
    clean = labels.clone()
    clean[0] = 1  # misclassified clean: broken for every attack, at every epsilon
    run = [stages.Stage("apgd-ce", "apgd-ce", "apgd", "ce", True)]
    results_at = []
    for eps in (1 / 255, 2 / 255):
        broken = clean != labels
        results_at.append(ensemble.EnsembleResult("linf", eps, run, {"pgd": clean, "apgd-ce": clean}, {"pgd": broken, "apgd-ce": broken},
                                                  {"apgd-ce": 0}, pgd_broken=broken))
    out = strong.StrongOutcome(torch.arange(n), labels, clean, {"linf": [1 / 255, 2 / 255]}, {}, {"linf": results_at})
    out.add("linf", 1 / 255, strong.Found("transfer", torch.tensor([3, 4]), torch.tensor([2, 0]),
                                          torch.tensor([True, False])))
    cases = worst.worst_cases(out)["linf"]
    assert cases[0].broken.nonzero().flatten().tolist() == [0, 3] == cases[1].broken.nonzero().flatten().tolist()
    assert not cases[1].white_broken[3]  # the white-box worst case knows nothing of it
    rows = pd.DataFrame(worst.worst_rows(CELL, out)).set_index(["eval_kind", "eval_eps", "metric"]).value
    assert rows[("worst", 2 / 255, "acc")] == pytest.approx(0.8)


def test_robust_figures_never_exceed_the_clean_figure_of_their_images():
    """Random labels (many samples misclassified clean), random subsets, every schedule: worst and every stage
    at most clean-subset, in accuracy and balanced accuracy."""
    for seed in range(3):
        model = Linear(classes=3, seed=seed)
        x = torch.rand(90, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        y = torch.randint(0, 3, (90,), generator=torch.Generator().manual_seed(seed + 10))
        pgd = {"linf": sweep.robust_predictions(model, x, y, norm="linf", eps_list=[0.01, 0.03], steps=3, seed=seed)}
        settings = StrongSettings(iterations=5, samples=50, attacks=("apgd-ce", "square"), square_queries=20,
                                  schedule=("full", "adaptive")[seed % 2])
        rows, outcome = strong.strong_rows(model, x, y, CELL, pgd, settings, n_classes=3, seed=seed)
        table = pd.DataFrame(rows + worst.worst_rows(CELL, outcome))
        for metric in ("acc", "balanced_acc"):
            m = table[table.metric == metric]
            clean = m[m.eval_kind == "clean-subset"].value.item()
            robust = m[m.eval_kind.isin(["worst", "worst-white-box", "apgd-ce", "square", "pgd-subset"])]
            assert (robust.value <= clean + 1e-12).all(), (metric, robust, clean)
        assert (table[table.eval_kind == "worst"].n == 50).all()


def test_checks_use_a_seeded_random_subset_not_the_lowest_indices():
    a = sanity.check_positions(500, 100, seed=0, device="cpu")
    assert torch.equal(a, sanity.check_positions(500, 100, seed=0, device="cpu"))
    assert not torch.equal(a, sanity.check_positions(500, 100, seed=1, device="cpu"))
    assert len(set(a.tolist())) == 100 and a.max() > 200 and a[:50].max() > 100  # spread, and so are the first
    assert sorted(sanity.check_positions(50, 100, 0, "cpu").tolist()) == list(range(50))


def test_stop_rule_gives_up_only_on_samples_that_cannot_get_there():
    rule = StopRule(first=0.1, every=0.1, pace=0.25)
    assert sorted(rule.checks(100)) == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert min(rule.checks(5000)) == 500 and len(rule.checks(5000)) == 9
    # best margins after 0..20 iterations: far, little progress; far, much progress; close after a stall;
    # close from the start and stuck
    start = torch.tensor([-5.0, -5.0, -3.0, -0.2])
    now = torch.tensor([-4.0, -1.0, -0.1, -0.2])
    margins = {0: start, 20: now}
    stop = rule.stop(margins.__getitem__, 20, 100)
    # left 4 > 0.25 * (1 / 20) * 80 = 1 -> stop; left 1 < 0.25 * (4 / 20) * 80 = 4 -> on; left 0.1 < 0.25 *
    # (2.9 / 20) * 80 -> on; no progress at all -> stop
    assert stop.tolist() == [True, False, False, True]
    # scale-free: logits x1000 decide the same
    assert torch.equal(rule.stop(lambda k: 1000 * margins[k], 20, 100), stop)


def test_promising_samples_are_those_still_closing_in_over_the_second_half():
    rule = StopRule(pace=0.25, recent_pace=0.25)
    # best margins after 0..24 iterations (rows), four samples: closing in steadily; most progress early, then
    # stalled; far away and slow; close but stuck
    t = torch.arange(25, dtype=torch.float32)[:, None]
    margins = torch.cat([-5 + 0.2 * t, torch.where(t < 12, -5 + 0.4 * t, torch.full_like(t, -0.3)),
                         -8 + 0.01 * t, torch.full_like(t, -0.05)], dim=1)
    # recent pace 0.2, 0, 0.01, 0 per iteration; 76 iterations left at a quarter of it: 3.8, 0, 0.19, 0
    assert rule.promising(margins, 100).tolist() == [True, False, False, False]
    assert torch.equal(rule.promising(1000 * margins, 100), rule.promising(margins, 100))  # scale-free
    assert not rule.promising(margins, 24).any()  # nothing left to extend to


def test_the_extension_reruns_the_promising_samples_at_the_configured_budget():
    """A schedule's run at its short budget; the samples it left unbroken that are still closing in (given
    up at a check or at its end) run again at the configured budget, once; broken and hopeless ones do not."""
    schedule = ensemble.SCHEDULES["adaptive"]
    outcome = Outcome(torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    calls = []

    def run(idx, budget, on_leave):
        calls.append((idx.tolist(), budget))
        if on_leave is not None:
            steps = torch.arange(25, dtype=torch.float32)[:, None]
            on_leave(torch.tensor([0, 1, 2]), torch.cat([-5 + 0.2 * steps, -8 + 0.01 * steps,
                                                         -5 + 0.2 * steps], dim=1))  # reached its end
            on_leave(torch.tensor([3]), -3 + 0.1 * steps[:11])  # given up after 10 iterations, closing in
            outcome.broken[2] = True  # sample 2 broken at the last iterate
        return 7

    assert ensemble._extended(run, outcome, 100, schedule) == 14
    assert calls == [([0, 1, 2, 3, 4, 5], 24), ([0, 3], 100)]
    calls.clear()
    assert ensemble._extended(run, outcome, 100, ensemble.SCHEDULES["full"]) == 7 and calls == [([0, 1, 3, 4, 5], 100)]


@pytest.mark.parametrize("norm,eps", [("linf", 0.05), ("l2", 0.5)])
def test_a_stopped_run_follows_the_unstopped_one_and_costs_less(norm, eps):
    """Same budget, same starts and steps: a sample the run with the stop rule breaks, the run without it
    breaks too (its iterates are a prefix of the other's), for fewer passes; and a stop rule on Square too."""
    model = Linear(classes=4)
    x = 0.25 + 0.5 * torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    rule = StopRule(first=0.1, every=0.1, pace=0.25)
    for attack in ("apgd", "square"):
        out = {}
        for stop in (None, rule):
            outcome = Outcome(y.clone(), y)
            if attack == "apgd":
                spent = apgd.run_apgd(model, x, torch.arange(64), outcome, norm=norm, eps=eps, iterations=40, loss="ce",
                                      generator=torch.Generator().manual_seed(0), stop=stop)
            else:
                spent = run_square(model, x, torch.arange(64), outcome, norm=norm, eps=eps, queries=200,
                                   generator=torch.Generator().manual_seed(0), stop=stop)
            out[stop is None] = (outcome.broken, spent)
        (stopped, cheap), (full, dear) = out[False], out[True]
        assert (stopped <= full).all() and cheap < dear and full.any(), attack


def test_the_adaptive_schedule_spends_a_quarter_per_run_and_on_samples_that_do_not_move():
    adaptive, full = ensemble.SCHEDULES["adaptive"], ensemble.SCHEDULES["full"]
    assert full.budget(100) == 100 and full.stop is None
    for configured in (100, 5000, 10, 7):
        runs = adaptive.budget(configured)
        assert 1 <= runs and (runs + 1) <= (configured + 1) / 4 or configured < 7
    assert (adaptive.budget(100), adaptive.budget(5000)) == (24, 1249)
    # on a model whose samples all survive, the ensemble's passes are at most a quarter of the full schedule's
    model = Linear(classes=4)
    x = 0.25 + 0.5 * torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = model(x).argmax(1)
    pgd = sweep.robust_predictions(model, x, y, norm="linf", eps_list=[1e-4], steps=2, seed=0)
    run, _ = stages.resolve(["apgd-ce", "apgd-t", "square"], 4, targets=3)
    cost = {name: ensemble.ensemble_predictions(model, x, y, pgd, stages=run, seed=0,
                                                budget=ensemble.Budget(100, 400, name))[0].cost
            for name in ("full", "adaptive")}
    assert cost["full"]["apgd-ce"] == 40 * 101 and cost["full"]["apgd-t"] == 3 * 40 * 101
    for kind in ("apgd-ce", "apgd-t", "square"):
        assert cost["adaptive"][kind] <= cost["full"][kind] / 4, (kind, cost)


# ------------------------------------------------------------------ on trained models (slow)


class TwoClasses(nn.Module):
    """A trained four-class model's first two logits: a two-class model (on the images of those classes)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[:, :2]


@pytest.mark.slow
@pytest.mark.parametrize("factor", [100.0, 1000.0])
def test_a_model_with_scaled_logits_is_broken_as_its_twin(trained, factor):
    """Logits x100 / x1000: float32 cross-entropy's input gradient underflows (to exactly zero on most samples),
    so a CE attack would not move; PGD and APGD-CE on the margin form break it as they break the twin."""
    ds, robust, _, standard = trained
    # the robust model at twice its training radius, so that PGD has something to break on any CPU (at 4/255 it
    # left the model 4.5 points under clean on one machine, under the 5 this test needs)
    for model, eps in ((robust, 8 / 255), (standard, 3 / 255)):
        x, y = loading.as_float(ds.test.images[:200]), ds.test.labels[:200]
        scaled = Scaled(model, factor).eval()
        xg = x.clone().requires_grad_(True)
        g, = torch.autograd.grad(F.cross_entropy(scaled(xg), y, reduction="sum"), xg)
        with torch.no_grad():
            right = scaled(x).argmax(1) == y
        # CE is saturated here: its input gradient has underflowed to (nearly) nothing
        assert (g.flatten(1).abs().amax(1)[right] < 1e-12).float().mean() > 0.9
        assert loss_and_grad(scaled, x, y)[1].flatten(1).abs().amax(1)[right].min() > 0  # the margin form is not
        for norm, e in (("linf", eps), ("l2", 1.0 if model is robust else 0.3)):
            acc = {}
            for name, m in (("twin", model), ("scaled", scaled)):
                (p,) = sweep.robust_predictions(m, x, y, norm=norm, eps_list=[e], steps=10, seed=0)
                out = Outcome(y.clone(), y)
                out.merge(p.pred, ~p.correct)
                apgd.run_apgd(m, x, out.unbroken(), out, norm=norm, eps=e, iterations=20, loss="ce",
                              generator=torch.Generator().manual_seed(0))
                acc[name] = (p.correct.float().mean().item(), (~out.broken).float().mean().item())
            clean = right.float().mean().item()
            assert acc["twin"][0] < clean - 0.05  # there is something to break
            for attack in (0, 1):  # PGD, then APGD-CE on its survivors
                assert abs(acc["scaled"][attack] - acc["twin"][attack]) <= 0.03, (norm, acc, clean)


@pytest.mark.slow
def test_two_class_ensemble_holds_two_different_attacks(trained):
    """On a two-class model the default stages are APGD-CE and Square: different optimisers and losses (APGD-T
    is left out: from the same start it is APGD-CE, sample for sample), each labelled."""
    ds, robust, _, _ = trained
    keep = ds.test.labels < 2
    x, y = loading.as_float(ds.test.images[keep][:150]), ds.test.labels[keep][:150]
    model = TwoClasses(robust).eval()
    run, notes = stages.resolve(None, 2)
    assert [s.kind for s in run] == ["apgd-ce", "square"] and notes == []
    assert len({(s.optimiser, s.loss, s.white_box) for s in run}) == 2
    # why APGD-T is left out: its one target's margin is APGD-CE's loss, and the runs are identical
    with torch.no_grad():
        clean = model(x).argmax(1)
    broken = []
    for loss in ("ce", "dlr-targeted"):
        out = Outcome(clean.clone(), y)
        apgd.run_apgd(model, x, out.unbroken(), out, norm="linf", eps=4 / 255, iterations=20, loss=loss,
                      target=1 - y, generator=torch.Generator().manual_seed(0))
        broken.append(out.broken)
    assert torch.equal(*broken) and broken[0].any() and not broken[0].all()
    table = evaluate.evaluate(model, {**CELL, "norm": "linf", "eps": 4 / 255, "seed": 0},
                              loading.Dataset(dataclasses.replace(ds.info, n_classes=2), ds.size, None, None,
                                              loading.Split(ds.test.images[keep][:150], y), ds.path, ds.sha256),
                              attacks_by_norm={"linf": [4 / 255]}, steps=10, clean=False,
                              strong=StrongSettings(iterations=20, square_queries=200, attacks=None))
    kinds = set(table.eval_kind)
    assert {"apgd-ce", "square", "worst"} <= kinds and "apgd-t" not in kinds and "apgd-t-margin" not in kinds


@pytest.mark.slow
def test_square_is_as_strong_as_torchattacks(trained):
    """Our Square (per-sample draws, a seeded generator) against torchattacks' port of the reference."""
    torchattacks = pytest.importorskip("torchattacks", reason="independent Square: pip install --no-deps torchattacks")
    ds, model, _, _ = trained
    x, y = loading.as_float(ds.test.images[:150]), ds.test.labels[:150]
    with torch.no_grad():
        clean = model(x).argmax(1)
    for norm, eps in (("linf", 4 / 255), ("l2", 0.5)):
        out = Outcome(clean.clone(), y)
        run_square(model, x, out.unbroken(), out, norm=norm, eps=eps, queries=300,
                   generator=torch.Generator().manual_seed(0))
        adv = torchattacks.Square(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, n_queries=300, seed=0)(x, y)
        with torch.no_grad():
            theirs = ((model(adv).argmax(1) == y) & (clean == y)).float().mean().item()
        ours = (~out.broken).float().mean().item()
        assert ours <= theirs + 0.03 and theirs - ours < 0.1, (norm, ours, theirs)


@pytest.mark.slow
def test_adaptive_schedule_costs_a_quarter_and_breaks_what_the_full_one_breaks(trained):
    """The acceptance criterion of the adaptive schedule on the fixture's robust model (every PGD epsilon):
    grad_evals at most a quarter of the full schedule's, worst-case accuracy at most one sample of the 200 above
    (measured on this fixture: 0.795 vs 0.790 at 4/255, equal at 2/255 and 8/255)."""
    ds, robust, settings, _ = trained
    small = loading.Dataset(ds.info, ds.size, None, None, loading.Split(ds.test.images[:200], ds.test.labels[:200]),
                            ds.path, ds.sha256)
    tables = {}
    for schedule in ("full", "adaptive"):
        tables[schedule] = evaluate.evaluate(robust, settings, small, attacks_by_norm={"linf": [2 / 255, 4 / 255, 8 / 255]},
                                             steps=20, clean=False, strong=StrongSettings(schedule=schedule))
    cost = {k: t[t.metric == "grad_evals"].query("eval_kind != 'pgd'").value.sum() for k, t in tables.items()}
    assert cost["adaptive"] <= cost["full"] / 4, cost
    acc = {k: t[(t.eval_kind == "worst") & (t.metric == "acc")].set_index("eval_eps").value for k, t in tables.items()}
    assert (acc["adaptive"] <= acc["full"] + 1 / 200 + 1e-6).all(), acc


def test_audit_lists_what_each_check_was_decided_on():
    rows = []
    for check, measured, value in (("black_box", "black_box_only", 0.03), ("transfer", "transfer_only", 0.0),
                                   ("monotone", "monotone_max_increase", 0.0)):
        common = dict(eval_kind="sanity", eval_norm="linf", eval_eps=4 / 255, n=100)
        rows += [results.make_row(CELL, metric=check, value=float(value <= 0.02), **common),
                 results.make_row(CELL, metric=measured, value=value, **common)]
    frame = audit.audit_frame(results.from_rows(rows))
    r = frame.iloc[0]
    assert r.black_box == "FAIL" and r.black_box_measured == "3/100 samples" and r.transfer_measured == "0/100 samples"
    assert r.monotone == "pass" and r.unbounded == "n/a" and r.failed == 1

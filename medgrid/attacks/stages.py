"""The strong evaluation's attacks as data: each stage's name, optimiser, loss, budget and whether it sees
gradients, and the list a task gets by default.

A stage is what the rows call it (``kind``, an ``eval_kind``); the configured names
(:data:`medgrid.names.STRONG_ATTACKS`) resolve to stages per number of classes, because a loss that is
sound on ten classes can be the same attack again on two:

- ``apgd-ce``: APGD on cross-entropy (its log-softmax-margin form; white box), every task;
- ``apgd-t``: APGD-T towards the ``targets`` most likely other classes (white box): the targeted DLR loss
  with four or more classes (kind ``apgd-t``), the targeted margin ``z_t - z_y`` with three (kind
  ``apgd-t-margin``: DLR-T needs four), not run with two (its one target's margin is APGD-CE's loss, so
  APGD-T would be APGD-CE again with the same steps and step-size decisions);
- ``square``: Square (Andriushchenko et al. 2020; black box: logits only) at ``square_queries`` queries.

Defaults: AutoAttack's white-box pair, APGD-CE then APGD-T, with four or more classes; with two or three,
APGD-CE plus Square, the one attack of AutoAttack's standard version that is neither the same optimiser
nor an equivalent loss there (APGD-T-margin as well on three). Black-box stages run after the white-box
ones whatever the configured order, so the samples a black-box stage breaks are those no white-box
attack broke (what the black-box check counts). See docs/evaluation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from medgrid.errors import UserError
from medgrid.names import STRONG_ATTACKS


@dataclass(frozen=True)
class Stage:
    """One attack of the ensemble: ``kind`` (its rows' eval_kind), ``attack`` (the configured name),
    ``optimiser`` (apgd, square), ``loss`` (ce, dlr-targeted, margin-targeted, margin), ``white_box``
    (uses gradients) and ``targets`` (target classes, one run each; 0 for an untargeted stage)."""

    kind: str
    attack: str
    optimiser: str
    loss: str
    white_box: bool
    targets: int = 0


def default_attacks(n_classes: int) -> tuple[str, ...]:
    """The configured names a task runs when ``evaluate.strong.attacks`` is null."""
    if n_classes >= 4:
        return ("apgd-ce", "apgd-t")
    return ("apgd-ce", "apgd-t", "square") if n_classes == 3 else ("apgd-ce", "square")


def resolve(attacks, n_classes: int, *, targets: int = 9) -> tuple[list[Stage], list[str]]:
    """The stages ``attacks`` (configured names; None: :func:`default_attacks`) run on a task of
    ``n_classes``, white-box ones first, and a note for each one left out (and why)."""
    names = default_attacks(n_classes) if attacks is None else tuple(attacks)
    unknown = [a for a in names if a not in STRONG_ATTACKS]
    if unknown or not names or len(set(names)) != len(names):
        raise UserError(f"strong evaluation attacks {list(names)}: give each of {', '.join(STRONG_ATTACKS)} at "
                        f"most once, at least one")
    stages, notes = [], []
    for name in names:
        if name == "apgd-ce":
            stages.append(Stage("apgd-ce", name, "apgd", "ce", True))
        elif name == "apgd-t":
            if n_classes < 3:
                notes.append("apgd-t left out: with two classes its one target's margin is APGD-CE's loss "
                             "(the same attack again)")
                continue
            kind, loss = ("apgd-t", "dlr-targeted") if n_classes >= 4 else ("apgd-t-margin", "margin-targeted")
            stages.append(Stage(kind, name, "apgd", loss, True, min(targets, n_classes - 1)))
        else:
            stages.append(Stage("square", name, "square", "margin", False))
    if not stages:
        raise UserError(f"strong evaluation attacks {list(names)}: nothing left to run on {n_classes} classes "
                        f"({'; '.join(notes)})")
    return sorted(stages, key=lambda s: not s.white_box), notes

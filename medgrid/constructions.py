"""The names of Ilyas et al.'s constructed datasets and of the attack settings that made D_rand and D_det.

An attack setting (norm, eps, step size, steps) has one canonical token, e.g. ``l2-0.5-100x0.1`` (Ilyas et al.'s
attack: L2, eps 0.5, 100 steps of 0.1) or ``linf-8o255-20x1o255``; epsilons and step sizes are written by the one
epsilon codec (:mod:`medgrid.epsilon`). The token is what the tidy table's ``construction`` column holds for
the rows of a D_rand / D_det dataset and of the models trained on it, so the settings of an attack sweep stay
apart (``none`` where no setting is recorded: other rows, and tables written before it was).

A dataset's name is its kind (``drand``, ``ddet``, ``drobust``), and for one setting of a sweep the kind and
the token (``drand-l2-0.5-100x0.1``): the file stem under ``features/`` and what ``medgrid train --train-data``
accepts. A config with one setting keeps the plain names (``drand.npz``, as before sweeps existed).

Torch-free and numpy-free: the workflow imports it (workflow/rules/common.smk).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from medgrid import epsilon
from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS, NO_CONSTRUCTION, NONROBUST_MODES, TRAIN_DATA

CONSTRUCTED = tuple(d for d in TRAIN_DATA if d != "original")  # drand, ddet, drobust
NONROBUST = tuple(NONROBUST_MODES.values())  # drand, ddet: the kinds an attack setting makes
_TOKEN = re.compile(r"^(?P<norm>[a-z0-9]+)-(?P<eps>[0-9.oe+-]+?)-(?P<steps>[0-9]+)x(?P<step>[0-9.oe+-]+)$")


class Attack(NamedTuple):
    """One targeted attack that builds D_rand / D_det."""

    norm: str
    eps: float
    step_size: float
    steps: int

    @property
    def token(self) -> str:
        return token(self.norm, self.eps, self.step_size, self.steps)

    def describe(self) -> str:
        """'L2 0.5, 100 steps of 0.1' (tables, charts)."""
        name = {"linf": "L∞", "l2": "L2"}.get(self.norm, self.norm)
        return (f"{name} {epsilon.text(self.norm, self.eps)}, {self.steps} steps of "
                f"{epsilon.text(self.norm, self.step_size)}")


ILYAS = Attack("l2", 0.5, 0.1, 100)  # Ilyas et al. (2019), CIFAR-10: part of every config's sweep


def token(norm: str, eps, step_size, steps: int) -> str:
    """The canonical token of an attack setting: ``l2-0.5-100x0.1``."""
    if norm not in ATTACK_NORMS:
        raise UserError(f"unknown attack norm {norm!r}; valid: {', '.join(ATTACK_NORMS)}")
    if int(steps) < 1:
        raise UserError(f"an attack setting needs steps >= 1, got {steps}")
    if epsilon.parse(eps) <= 0 or epsilon.parse(step_size) <= 0:
        raise UserError(f"an attack setting needs eps and step size > 0, got {eps} and {step_size}")
    return f"{norm}-{epsilon.token(norm, eps)}-{int(steps)}x{epsilon.token(norm, step_size)}"


def parse(text: str) -> Attack:
    """A token -> its :class:`Attack`; UserError when it is not one."""
    m = _TOKEN.match(str(text))
    if m is None or m["norm"] not in ATTACK_NORMS:
        raise UserError(f"bad attack setting {text!r}: write it as NORM-EPS-STEPSxSTEP, e.g. {ILYAS.token}")
    attack = Attack(m["norm"], epsilon.parse(m["eps"]), epsilon.parse(m["step"]), int(m["steps"]))
    token(*attack)  # the same checks as a new token
    return attack


def name(kind: str, setting: str | None = None) -> str:
    """A dataset's name: its kind alone, or kind and setting token for one setting of a sweep."""
    if kind not in CONSTRUCTED:
        raise UserError(f"unknown constructed dataset {kind!r}; valid: {', '.join(CONSTRUCTED)}")
    if setting is None or setting == NO_CONSTRUCTION:
        return kind
    if kind not in NONROBUST:
        raise UserError(f"{kind} is not made by an attack setting; only {', '.join(NONROBUST)} are")
    return f"{kind}-{parse(setting).token}"


def split(dataset: str) -> tuple[str, str | None]:
    """A training-data name -> (kind, setting token or None): ``original``, ``drand``, ``drand-l2-0.5-100x0.1``."""
    kind, sep, setting = str(dataset).partition("-")
    if kind == "original" and not sep:
        return kind, None
    if kind not in CONSTRUCTED or (sep and kind not in NONROBUST):
        valid = ", ".join(TRAIN_DATA) + f", or {'/'.join(NONROBUST)}-SETTING (e.g. drand-{ILYAS.token})"
        raise UserError(f"unknown training data {dataset!r}; valid: {valid}")
    return kind, (parse(setting).token if sep else None)

"""Epsilons as users write them (``2/255``, ``0.5``) and as medgrid prints them.

Path tokens (``linf-2o255``) are the workflow's business: workflow/rules/common.smk.
"""

from __future__ import annotations

from fractions import Fraction

from medgrid.errors import UserError
from medgrid.names import TRAIN_NORMS


def parse_eps(text: str) -> float:
    """``"2/255"`` or ``"0.0078"`` -> float >= 0; UserError otherwise."""
    raw = str(text).strip()
    try:
        if "/" in raw:
            num, den = raw.split("/")
            value = float(num) / float(den)
        else:
            value = float(raw)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"bad epsilon {text!r}: write a number like 0.5 or a fraction like 2/255") from None
    if not value >= 0 or value == float("inf"):
        raise UserError(f"bad epsilon {text!r}: must be a finite number >= 0")
    return value


def parse_eps_list(text: str) -> list[float]:
    """``"1/255,2/255"`` -> [1/255, 2/255]."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError("empty epsilon list")
    return [parse_eps(t) for t in items]


def check_training(norm: str, eps: float) -> None:
    """A training setting is (none, 0) or (linf|l2, eps > 0)."""
    if norm not in TRAIN_NORMS:
        raise UserError(f"unknown norm {norm!r}; valid: {', '.join(TRAIN_NORMS)}")
    if norm == "none" and eps != 0:
        raise UserError(f"eps {eps:g} > 0 needs --norm linf or l2 (norm none is standard training)")
    if norm != "none" and eps == 0:
        raise UserError(f"norm {norm} needs eps > 0; use --norm none --eps 0 for standard training")



def eps_text(norm: str, eps: float) -> str:
    """2/255 for L-inf epsilons that are whole grey levels, the shortest decimal otherwise."""
    if norm == "linf" and eps > 0:
        frac = Fraction(eps * 255).limit_denominator(1000)
        if frac.denominator == 1 and abs(frac.numerator / 255 - eps) < 1e-9:
            return f"{frac.numerator}/255"
    return f"{eps:g}"

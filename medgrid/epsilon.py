"""Epsilons as users write them on the command line (``2/255``, ``0.5``).

Path tokens (``linf-2o255``) are the workflow's business: workflow/rules/common.smk.
"""

from __future__ import annotations

from medgrid.errors import UserError

NORMS = ("none", "linf", "l2")


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
    if norm not in NORMS:
        raise UserError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")
    if norm == "none" and eps != 0:
        raise UserError(f"eps {eps:g} > 0 needs --norm linf or l2 (norm none is standard training)")
    if norm != "none" and eps == 0:
        raise UserError(f"norm {norm} needs eps > 0; use --norm none --eps 0 for standard training")


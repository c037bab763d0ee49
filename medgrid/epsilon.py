"""Epsilons: the one codec between how users write them, how paths, command lines and tables write them, and
when two of them are the same.

- value: ``"2/255"``, ``0.5``, ``"0.50"``, a path token ``"2o255"`` -> float >= 0 (:func:`parse`), exact:
  the text is read as a fraction and rounded once;
- path token (canonical, filesystem safe): ``"0"`` (standard training), ``"2o255"`` (L-inf epsilons that
  are a whole number of grey levels), else the shortest decimal that reads back to the same float
  (:func:`token`); two spellings of one value (0.5 and 0.50, 2/255 and 0.00784313725490196) give one token;
- command-line text: ``"2/255"``, ``"0.5"`` (:func:`arg`), which :func:`parse` reads back to the same float;
- display text: ``2/255`` for whole grey levels under L-inf, ``0.5`` otherwise (:func:`text`);
- equality: :func:`same`, with the one tolerance :data:`TOLERANCE` (relative above 1, absolute below);
- seeding key: :func:`key`, an integer for random streams (nano-units).

Torch-free and numpy-free: the workflow imports it (workflow/rules/common.smk).
"""

from __future__ import annotations

import re
from fractions import Fraction

from medgrid.errors import UserError
from medgrid.names import TRAIN_NORMS

TOLERANCE = 1e-9  # two epsilons closer than this (relative above 1) are one epsilon
GREY_LEVELS = 255


def parse(eps) -> float:
    """An epsilon as a user, a config or a path token writes it -> float >= 0; UserError otherwise."""
    raw = re.sub(r"\s", "", str(eps))
    num, sep, den = re.sub("[o/]", "/", raw).partition("/")
    try:
        if "/" in den:
            raise ValueError(raw)
        value = Fraction(num) / Fraction(den if sep else 1)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"bad epsilon {eps!r}: write a number like 0.5 or a fraction like 2/255") from None
    if value < 0:
        raise UserError(f"bad epsilon {eps!r}: must be a finite number >= 0")
    return float(value)


def parse_list(text: str) -> list[float]:
    """``"1/255,2/255"`` -> [1/255, 2/255]."""
    items = [t for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError("empty epsilon list")
    return [parse(t) for t in items]


def same(a: float, b: float) -> bool:
    """Whether two epsilons are one (within :data:`TOLERANCE`)."""
    return abs(float(a) - float(b)) <= TOLERANCE * max(1.0, abs(float(a)), abs(float(b)))


def find(value: float, values) -> float | None:
    """The member of ``values`` that is :func:`same` as ``value``, or None."""
    return next((v for v in values if same(v, value)), None)


def grey_levels(eps: float) -> int | None:
    """k when ``eps`` is k/255 (a whole number of grey levels, k >= 1), else None."""
    k = round(float(eps) * GREY_LEVELS)
    return k if k >= 1 and same(k / GREY_LEVELS, eps) else None


def token(norm: str, eps) -> str:
    """The canonical path token of an epsilon under a norm: "0", "2o255", "0.5"."""
    value = parse(eps)
    if norm == "none" or value == 0:
        return "0"
    k = grey_levels(value) if norm == "linf" else None
    if k is not None:
        return f"{k}o{GREY_LEVELS}"
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def arg(norm: str, eps) -> str:
    """An epsilon (or its token) as the command line takes it: "2/255", "0.5"."""
    return token(norm, eps).replace("o", "/")


def text(norm: str, eps: float) -> str:
    """2/255 for L-inf epsilons that are whole grey levels, the shortest decimal otherwise (charts, tables)."""
    k = grey_levels(eps) if norm == "linf" and eps > 0 else None
    return f"{k}/{GREY_LEVELS}" if k is not None else f"{eps:g}"


def key(eps: float) -> int:
    """An epsilon as an integer (nano-units), for naming random streams."""
    return round(float(eps) * 1e9)


def check_training(norm: str, eps: float) -> None:
    """A training setting is (none, 0) or (linf|l2, eps > 0)."""
    if norm not in TRAIN_NORMS:
        raise UserError(f"unknown norm {norm!r}; valid: {', '.join(TRAIN_NORMS)}")
    if norm == "none" and eps != 0:
        raise UserError(f"eps {eps:g} > 0 needs --norm linf or l2 (norm none is standard training)")
    if norm != "none" and eps == 0:
        raise UserError(f"norm {norm} needs eps > 0; use --norm none --eps 0 for standard training")

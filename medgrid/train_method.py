"""A training method as the grid, the command line and the tables name it: the one codec of (method, parameter).

- value: the method's parameter (TRADES: beta) as a float > 0; 0.0 for a method without one (:func:`param`);
- path segment: ``""`` for the default method (PGD-AT: its cells keep the paths they always had),
  ``"trades-beta6/"``, ``"fgsm-rs/"`` (:func:`segment`), a folder above the cell's ``{norm}-{eps}``;
- command-line flags: ``""`` for the default, ``"--method trades --beta 6"`` (:func:`flags`);
- the parameter as text: the shortest decimal that reads back to the same float (:func:`number`).

The classes that do the training are :mod:`medgrid.training.methods`'; the display names are
:mod:`medgrid.labels`'. Torch-free and numpy-free: the workflow imports it (workflow/rules/common.smk).
"""

from __future__ import annotations

import math

from medgrid.errors import UserError
from medgrid.names import DEFAULT_METHOD, METHOD_PARAMS, TRAIN_METHODS


def check(method: str) -> str:
    if method not in TRAIN_METHODS:
        raise UserError(f"unknown training method {method!r}; valid: {', '.join(TRAIN_METHODS)}")
    return method


def param_name(method: str) -> str | None:
    """The name of the method's parameter ("beta" for TRADES), None for a method without one."""
    return METHOD_PARAMS.get(check(method), (None, None))[0]


def param(method: str, value=None) -> float:
    """The method's parameter as a float: ``value`` (checked: a finite number > 0), its default when None;
    0.0 for a method without a parameter (which takes no value)."""
    name = param_name(method)
    if name is None:
        if value is not None:
            raise UserError(f"training method {method} has no parameter (got {value!r})")
        return 0.0
    if value is None:
        return float(METHOD_PARAMS[method][1])
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UserError(f"bad {name} {value!r} for {method}: write a number > 0") from None
    if not math.isfinite(out) or out <= 0:
        raise UserError(f"bad {name} {value!r} for {method}: must be a finite number > 0")
    return out


def number(value: float) -> str:
    """6.0 -> "6", 0.5 -> "0.5": the shortest decimal that reads back to the same float."""
    text = repr(float(value))
    return text.removesuffix(".0")


def segment(method: str, value=None) -> str:
    """The cell path's method folder, with its trailing slash; "" for the default method."""
    if check(method) == DEFAULT_METHOD:
        return ""
    name = param_name(method)
    return f"{method}-{name}{number(param(method, value))}/" if name else f"{method}/"


def flags(method: str, value=None) -> str:
    """The ``medgrid train`` flags of a method; "" for the default one (its cells' commands never change)."""
    if check(method) == DEFAULT_METHOD:
        return ""
    name = param_name(method)
    return f"--method {method}" + (f" --{name} {number(param(method, value))}" if name else "")

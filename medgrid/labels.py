"""How medgrid names and colours things in charts, tables and figures: training settings and methods, attacks,
training data, epsilon axes, and the colour-blind-safe palettes."""

from __future__ import annotations

from medgrid import epsilon, train_method
from medgrid.names import DEFAULT_METHOD, TRAIN_METHODS

NORM_ORDER = {"none": 0, "linf": 1, "l2": 2}
METHOD_NAME = {"pgd": "PGD-AT", "trades": "TRADES", "fgsm-rs": "FGSM-RS"}
METHOD_ORDER = {m: i for i, m in enumerate(TRAIN_METHODS)}
PARAM_SYMBOL = {"beta": "β"}
NORM_NAME = {"none": "standard", "linf": "L∞", "l2": "L2"}
DATA_LABEL = {"original": "original", "drand": "D_rand", "ddet": "D_det", "drobust": "D_R"}
DATA_ORDER = {"original": 0, "drand": 1, "ddet": 2, "drobust": 3}
METRIC_NAME = {"balanced_acc": "balanced accuracy", "acc": "accuracy"}

# colour-blind-safe colours: Okabe & Ito (2008) for categories, ColorBrewer Blues / Oranges ramps
# (blue vs orange stays distinct under deuteranopia, protanopia and tritanopia), RdBu for differences
STANDARD_COLOR = "#000000"
SHIFT_COLOR = "#D55E00"  # Okabe-Ito vermillion
CHANCE_COLOR = "#777777"
OKABE_ITO = ("#000000", "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442")
RAMPS = {"linf": ("#6BAED6", "#08306B"), "l2": ("#FD8D3C", "#7F2704"),
         # methods other than PGD-AT: one ramp each, whatever the norm (ColorBrewer Purples, Greens)
         "trades": ("#9E9AC8", "#3F007D"), "fgsm-rs": ("#74C476", "#00441B")}
DIVERGING = "redblue"  # vega's RdBu: red = robust model worse, blue = robust model better


def method_label(method: str, param: float = 0.0) -> str:
    """'PGD-AT', 'TRADES β=6', 'FGSM-RS'."""
    name = train_method.param_name(method) if method in TRAIN_METHODS else None
    value = f" {PARAM_SYMBOL.get(name, name)}={train_method.number(param)}" if name else ""
    return METHOD_NAME.get(method, method) + value


def setting_label(norm: str, eps: float, method: str = DEFAULT_METHOD, param: float = 0.0) -> str:
    """'standard', 'L∞ 2/255', 'L2 0.5' (PGD-AT, as always), 'TRADES β=6 L∞ 8/255', 'FGSM-RS L∞ 8/255'."""
    if norm == "none":
        return "standard"
    text = f"{NORM_NAME.get(norm, norm)} {epsilon.text(norm, eps)}"
    return text if method == DEFAULT_METHOD else f"{method_label(method, param)} {text}"


def setting_order(norm: str, eps: float, method: str = DEFAULT_METHOD, param: float = 0.0) -> tuple:
    """Sort key of a training setting: standard, then by method (PGD-AT first), its parameter, norm, epsilon."""
    if norm == "none":
        return (-1, 0.0, 0, 0.0)
    return (METHOD_ORDER.get(method, 99), float(param), NORM_ORDER.get(norm, 9), float(eps))


def family(norm: str, method: str = DEFAULT_METHOD, param: float = 0.0) -> str:
    """The line a setting belongs to (its frontier, joined from the standard model in order of epsilon): the
    norm under PGD-AT ('linf'), else the method with its parameter and the norm ('TRADES β=6 L∞')."""
    if method == DEFAULT_METHOD:
        return norm
    return f"{method_label(method, param)} {NORM_NAME.get(norm, norm)}"


def family_ramp(norm: str, method: str, k: int) -> list[str]:
    """The colours of k settings of one family: the norm's ramp under PGD-AT, the method's otherwise."""
    return ramp(norm if method == DEFAULT_METHOD else method, k)


def attack_label(norm: str, eps: float) -> str:
    """'PGD L∞ 2/255'."""
    return robust_label("pgd", norm, eps)


def robust_label(kind: str, norm: str, eps: float) -> str:
    """'worst case L∞ 2/255' for the worst case over every attack run, 'PGD L∞ 2/255', 'APGD-CE L∞ 2/255'..."""
    name = ATTACK_NAME.get(kind, kind)
    return f"{name} {NORM_NAME.get(norm, norm)} {epsilon.text(norm, eps)}"


def eps_axis(norm: str, what: str) -> tuple[float, str]:
    """(factor, axis title) of an epsilon axis: L-inf in grey levels (x 1/255), L2 as is."""
    if norm == "linf":
        return 255.0, f"{what} ε, L∞ (grey levels, ×1/255)"
    return 1.0, f"{what} ε, L2 (pixel values in [0, 1])"


def _hex_mix(a: str, b: str, t: float) -> str:
    ca = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02X}" for x, y in zip(ca, cb))


def ramp(norm: str, k: int) -> list[str]:
    """k colours of the norm's ramp, light to dark (one colour: a mid-dark shade)."""
    light, dark = RAMPS.get(norm, RAMPS["linf"])
    if k == 1:
        return [_hex_mix(light, dark, 0.6)]
    return [_hex_mix(light, dark, i / (k - 1)) for i in range(k)]


# every eval_kind of an attack (medgrid.names.ROBUST_KINDS), of the worst cases and of the like-for-like rows
ATTACK_NAME = {"pgd": "PGD", "apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "apgd-t-margin": "APGD-T (margin)",
               "square": "Square", "transfer": "transfer", "worst": "worst case",
               "worst-white-box": "worst case (white box)", "clean-subset": "clean (same images)",
               "pgd-subset": "PGD (same images)"}


def attack_name(kind: str, steps: int | None = None) -> str:
    """'PGD-20' (with its step count when known), 'APGD-CE', 'APGD-T', 'APGD-T (margin)', 'Square'..."""
    name = ATTACK_NAME.get(kind, kind)
    return f"{name}-{steps}" if steps and kind == "pgd" else name

"""One table of numeric ranges for the command line and the config schema (medgrid.ranges)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest
import yaml

from medgrid import ranges

SCHEMA = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml")
                        .read_text())


def node(*path):
    n = SCHEMA
    for key in path:
        n = n[key]
    return n


def numeric(n: dict) -> dict:
    """The numeric constraint of a schema node (through oneOf / nullable types)."""
    for alt in n.get("oneOf", []):
        if alt.get("type") in ("integer", "number"):
            return numeric(alt)
    kinds = n["type"] if isinstance(n["type"], list) else [n["type"]]
    kind = "integer" if "integer" in kinds else "number"
    return {"kind": int if kind == "integer" else float, "minimum": n.get("minimum", n.get("exclusiveMinimum")),
            "maximum": n.get("maximum", n.get("exclusiveMaximum")),
            "exclusive_minimum": "exclusiveMinimum" in n, "exclusive_maximum": "exclusiveMaximum" in n}


TRAINING = ("$defs", "training", "properties")
EVALUATE = ("properties", "evaluate", "properties")
# schema location -> the medgrid option whose range it must state
PAIRS = {
    **{TRAINING + (k,): k for k in ("epochs", "batch_size", "lr", "weight_decay", "momentum", "attack_steps",
                                    "attack_step_size", "stop_train_acc", "eps_warmup_epochs")},
    EVALUATE + ("attack_steps",): "attack_steps",
    EVALUATE + ("restarts",): "restarts",
    EVALUATE + ("strong", "properties", "iterations"): "strong_iterations",
    EVALUATE + ("strong", "properties", "samples"): "strong_samples",
    EVALUATE + ("strong", "properties", "apgd_targets"): "apgd_targets",
    EVALUATE + ("strong", "properties", "square_queries"): "strong_square_queries",
    EVALUATE + ("sanity", "properties", "samples"): "sanity_samples",
    EVALUATE + ("sanity", "properties", "tolerance"): "sanity_tolerance",
    EVALUATE + ("sanity", "properties", "square_queries"): "square_queries",
    EVALUATE + ("sanity", "properties", "square_samples"): "square_samples",
    ("properties", "data_seed"): "data_seed",
    **{("properties", "synthetic", "properties", k): k for k in ("n_train", "n_val", "n_test")},
    ("properties", "seeds", "items"): "seed",
    ("properties", "shift", "properties", "seed"): "corruption_seed",
    ("$defs", "resources", "properties", "threads"): "threads",
}


@pytest.mark.parametrize("where,option", list(PAIRS.items()), ids=lambda x: ".".join(x) if isinstance(x, tuple) else x)
def test_schema_states_the_commands_range(where, option):
    r = ranges.RANGES[option]
    expected = {"kind": r.kind, "minimum": r.minimum, "maximum": r.maximum, "exclusive_minimum": r.exclusive_minimum,
                "exclusive_maximum": r.exclusive_maximum}
    assert numeric(node(*where)) == expected


@pytest.mark.parametrize("option,good,bad", [
    ("lr", ["0.1", "1e-3"], ["0", "-1", "nan", "inf", "fast"]),
    ("momentum", ["0", "0.9"], ["1", "-0.1", "nan"]),
    ("weight_decay", ["0", "5e-4"], ["-1", "nan"]),
    ("stop_train_acc", ["0.995", "1"], ["0", "5", "-1", "nan"]),
    ("batch_size", ["1", "128"], ["0", "-1", "1.5", "nan"]),
    ("sanity_tolerance", ["0", "0.02"], ["1", "-0.01"]),
    ("dpi", ["150"], ["0", "5", "100000"]),
    ("seed", ["0", "7"], ["-1"]),
])
def test_ranges_accept_and_refuse(option, good, bad):
    parse = ranges.arg(option)
    for text in good:
        assert math.isfinite(parse(text))
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            parse(text)

"""The allowed range of every numeric setting, in one table the command line and the config schema share.

Each option's values are checked where they are parsed: the command line's parser takes :func:`arg` as the
option's ``type`` (a mistake is one ``medgrid: error:`` line and exit 2, before any data is read), and the
config schema (workflow/schemas/config.schema.yaml) states the same bounds, which tests/test_ranges.py pins to
this table, so a config the commands would refuse stops before the DAG is built. Non-finite numbers (nan,
inf) are refused everywhere. Plain Python: the command line's parser builds without torch.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    kind: type  # int or float
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    def describe(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '>='} {self.minimum:g}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '<='} {self.maximum:g}")
        what = "an integer" if self.kind is int else "a finite number"
        return f"{what} {' and '.join(parts)}".strip()

    def contains(self, value) -> bool:
        if self.kind is float and not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.exclusive_minimum else value < self.minimum):
            return False
        if self.maximum is not None and (value >= self.maximum if self.exclusive_maximum else value > self.maximum):
            return False
        return True

    def parse(self, text):
        """``text`` as a value of this range; ValueError saying what is allowed."""
        try:
            value = self.kind(text) if self.kind is float else int(str(text).strip())
        except (TypeError, ValueError):
            raise ValueError(f"must be {self.describe()}, got {text!r}") from None
        if not self.contains(value):
            raise ValueError(f"must be {self.describe()}, got {text!r}")
        return value


COUNT = Range(int, 1)  # how many of something: at least one
SEED = Range(int, 0)
POSITIVE = Range(float, 0, exclusive_minimum=True)
NONNEGATIVE = Range(float, 0)
FRACTION_OPEN = Range(float, 0, 1, exclusive_maximum=True)  # [0, 1)

# option (the command line's name, underscores) -> its range; the schema's keys are the same names
RANGES: dict[str, Range] = {
    # training
    "epochs": COUNT,
    "batch_size": COUNT,
    "lr": POSITIVE,
    "weight_decay": NONNEGATIVE,
    "momentum": FRACTION_OPEN,
    "attack_steps": COUNT,
    "attack_step_size": POSITIVE,
    "stop_train_acc": Range(float, 0, 1, exclusive_minimum=True),
    "eps_warmup_epochs": Range(int, 0),
    "seed": SEED,
    "model_seed": SEED,
    "data_seed": SEED,
    "n_train": COUNT,  # synthetic tasks' split sizes
    "n_val": COUNT,
    "n_test": COUNT,
    "corruption_seed": SEED,
    # evaluation
    "restarts": COUNT,
    "strong_iterations": COUNT,
    "strong_samples": COUNT,
    "strong_square_queries": COUNT,
    "apgd_targets": COUNT,
    "sanity_samples": COUNT,
    "sanity_tolerance": FRACTION_OPEN,
    "square_queries": COUNT,
    "square_samples": COUNT,
    # features
    "steps": COUNT,
    # figures, runtime
    "n": COUNT,
    "dpi": Range(int, 10, 1200),
    "threads": COUNT,
    "pgd_steps": COUNT,
    "expect": COUNT,
}


def check(option: str, value):
    """``value`` of ``option`` in its range, or ValueError (for code that does not parse text)."""
    return RANGES[option].parse(value)


def arg(option: str):
    """An argparse ``type`` for ``option``: parses the text and checks its range (argparse turns the error into
    the one-line usage error ``argument --option: must be ...``)."""
    bounds = RANGES[option]

    def parse(text):
        try:
            return bounds.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = option
    return parse

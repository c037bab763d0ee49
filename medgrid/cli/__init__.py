"""The ``medgrid`` console script: the command line on top of medgrid's plain functions.

:data:`COMMANDS` maps each subcommand to the module that implements it and a one-line summary (as
pip's command table does). Only the chosen command's module is imported, and a command module imports
torch, pandas or altair only inside its ``run``, so ``medgrid --help``, ``medgrid CMD --help`` and
argument mistakes answer at once. Nothing outside this package imports it.

User mistakes (:class:`medgrid.errors.UserError`) print one line ``medgrid: error: ...`` on stderr and
exit 2; an interrupt exits 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from medgrid import __version__
from medgrid.cli.base import Parser
from medgrid.errors import UserError

# name -> (module with add_arguments(parser) and run(args), one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare-data": ("medgrid.cli.prepare_data",
                     "download (MedMNIST), copy (--source-dir) or generate (synthetic) a task"),
    "train": ("medgrid.cli.train", "train one cell: standard (--norm none) or PGD adversarial training"),
    "evaluate": ("medgrid.cli.evaluate", "clean, PGD and MedMNIST-C metrics of one checkpoint on the test split"),
    "features": ("medgrid.cli.features", "Ilyas et al. datasets: D_rand, D_det (nonrobust), D_R (robust)"),
    "shift": ("medgrid.cli.shift", "MedMNIST-C corrupted test sets (download or generate with medmnistc)"),
    "aggregate": ("medgrid.cli.aggregate",
                  "concatenate per-cell tables into one summary (+ CSV, + by-seed view)"),
    "history": ("medgrid.cli.history", "per-epoch training records of checkpoints as one table (training curves)"),
    "charts": ("medgrid.cli.charts", "Altair charts of the summary table (HTML + PNG + SVG) and an HTML table"),
    "table": ("medgrid.cli.table",
              "the headline table: per task, one row per training setting, intervals over seeds (CSV, LaTeX, HTML)"),
    "saliency": ("medgrid.cli.saliency",
                 "input-gradient figure of standard vs robust checkpoints on a few test images"),
    "info": ("medgrid.cli.info",
             "what a job here runs on: torch, CUDA, GPUs, the compiled kernels and their GPU code, the device"),
}
DESCRIPTION = "medgrid: the robustness-accuracy trade-off of medical image classifiers, measured as one grid."


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if known."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: list[str]) -> Parser:
    """The parser with every subcommand listed and the chosen one's arguments added."""
    parser = Parser(prog="medgrid", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"medgrid {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module_name, summary) in COMMANDS.items():
        p = sub.add_parser(name, help=summary, description=summary)
        if name == chosen:
            module = importlib.import_module(module_name)
            if hasattr(module, "run"):
                p.set_defaults(run=module.run)
            module.add_arguments(p)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        args.run(args)
    except UserError as exc:
        print(f"medgrid: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medgrid: interrupted", file=sys.stderr)
        return 130
    return 0

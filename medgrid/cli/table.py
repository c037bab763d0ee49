"""``medgrid table``: the headline table of a summary (CSV, LaTeX, HTML; Markdown on stdout)."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import at_least, check_writable
from medgrid.errors import UserError
from medgrid.names import ATTACK_NORMS, HEADLINE_COLUMNS
from medgrid.ranges import arg

# the paper grid's headline epsilons (config headline.eps has the same defaults)
DEFAULT_EPS = {"linf": "2/255", "l2": "0.5"}


def add_arguments(p) -> None:
    p.add_argument("--summary", type=Path, required=True, help="tidy summary table (results/summary.parquet)")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="folder for headline.csv (tidy), headline.tex (booktabs) and headline.html")
    for norm in ATTACK_NORMS:
        p.add_argument(f"--{norm}-eps", default=DEFAULT_EPS[norm], metavar="EPS",
                       help=f"attack ε of the robust_{norm} column, one of the attack grid's (default "
                            f"{DEFAULT_EPS[norm]})")
    p.add_argument("--columns", default=",".join(HEADLINE_COLUMNS), metavar="A,B,...",
                   help=f"columns in this order, from {', '.join(HEADLINE_COLUMNS)} (default: all; columns "
                        "without rows are left out)")
    p.add_argument("--pgd-steps", type=arg("pgd_steps"), default=None,
                   help="PGD steps of the evaluation (config evaluate.attack_steps), named in the robust headers")


def run(args) -> None:
    from medgrid import epsilon
    from medgrid.report import headline_write

    eps = {}
    for norm in ATTACK_NORMS:
        eps[norm] = epsilon.parse(getattr(args, f"{norm}_eps"))
        if eps[norm] == 0:
            raise UserError(f"--{norm}-eps must be > 0 (drop robust_{norm} from --columns instead)")
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    if len(set(columns)) != len(columns):
        raise UserError(f"--columns lists a column twice: {args.columns}")
    if not columns:
        raise UserError(f"--columns {args.columns!r} names no column; valid: {', '.join(HEADLINE_COLUMNS)}")
    steps = None if args.pgd_steps is None else at_least(args.pgd_steps, 1, "--pgd-steps")
    check_writable(*(args.out_dir / name for name in headline_write.FILES.values()))
    headline_write.make_headline(args.summary, args.out_dir, eps=eps, columns=columns, pgd_steps=steps)

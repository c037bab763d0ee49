"""``medgrid saliency``: input gradients of standard vs robust checkpoints on a few test images."""

from __future__ import annotations

from pathlib import Path

from medgrid.cli.base import check_writable, log_runtime, set_threads
from medgrid.names import ATTACK_NORMS
from medgrid.ranges import arg


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", type=Path, action="extend", nargs="+", required=True,
                   help="checkpoints of one task, e.g. the standard model then robust ones (repeat or list)")
    p.add_argument("--data", type=Path, required=True, metavar="FILE", help="the task's npz file (its test split)")
    p.add_argument("--out", type=Path, required=True, help="figure path (.png, .svg or .pdf)")
    p.add_argument("--n", type=arg("n"), default=4, help="number of test images (one per class, in turn)")
    p.add_argument("--attack-norm", choices=ATTACK_NORMS, default=None,
                   help="norm of the adversarial examples (default: that of the first robust checkpoint)")
    p.add_argument("--attack-eps", default=None,
                   help="epsilon of the adversarial examples, e.g. 2/255 (default: the first robust checkpoint's)")
    p.add_argument("--attack-steps", type=arg("attack_steps"), default=20)
    p.add_argument("--seed", type=arg("seed"), default=0, help="seed of the PGD random start (medgrid.seeding stream)")
    p.add_argument("--dpi", type=arg("dpi"), default=150)
    p.add_argument("--threads", type=arg("threads"), default=None, help="torch CPU threads (default: torch's choice)")


def run(args) -> None:
    from medgrid import epsilon
    from medgrid.report import saliency

    eps = epsilon.parse(args.attack_eps) if args.attack_eps is not None else None
    check_writable(args.out)
    set_threads(args.threads)
    log_runtime("cpu")
    path = saliency.saliency_figure(args.checkpoint, args.data, args.out, n=args.n,
                                    attack_norm=args.attack_norm, attack_eps=eps, attack_steps=args.attack_steps,
                                    seed=args.seed, dpi=args.dpi)
    print(f"wrote {path}")

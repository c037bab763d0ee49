"""``medgrid train``: one cell of the grid, standard or adversarial training (PGD-AT, TRADES, FGSM-RS), to a
checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from medgrid.cli.base import add_data_options, check_writable, pick_device, set_threads
from medgrid.errors import UserError
from medgrid.names import (
    ARCHS,
    DEFAULT_METHOD,
    METHOD_PARAMS,
    NO_CONSTRUCTION,
    OPTIMIZERS,
    SCHEDULES,
    SELECTIONS,
    SINGLE_STEP_METHODS,
    TASKS,
    TRAIN_DATA,
    TRAIN_METHODS,
    TRAIN_NORMS,
)
from medgrid.ranges import arg

METHOD_HELP = {
    "pgd": "PGD-AT (Madry et al. 2018): cross-entropy on PGD examples",
    "trades": "TRADES (Zhang et al. 2019): clean cross-entropy + beta x KL to the KL-maximising example",
    "fgsm-rs": "fast AT (Wong et al. 2020): one FGSM step of 1.25 eps from a random start, with the "
               "catastrophic-overfitting guard",
}
PARAM_HELP = {"beta": "TRADES: weight of the KL term (default 6, the paper's CIFAR-10 value)"}


def add_arguments(p) -> None:
    p.add_argument("--task", required=True)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--arch", required=True)
    p.add_argument("--norm", required=True, choices=TRAIN_NORMS)
    p.add_argument("--eps", default="0", help="training epsilon, e.g. 2/255 or 0.5")
    p.add_argument("--seed", type=arg("seed"), default=0)
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.pt)")
    p.add_argument("--train-data", default="original", metavar="DATA",
                   help=f"what --data holds: {', '.join(TRAIN_DATA)}, or the name of one setting of an attack "
                        "sweep's D_rand / D_det (e.g. drand-l2-0.5-100x0.1; medgrid.constructions)")
    p.add_argument("--model-seed", type=arg("model_seed"), default=0,
                   help="which of the independent models trained on one constructed dataset (0: the first; each "
                        "has its own initial weights and batch order)")
    p.add_argument("--epochs", type=arg("epochs"), default=15, help="maximum epochs")
    p.add_argument("--batch-size", type=arg("batch_size"), default=128)
    p.add_argument("--lr", type=arg("lr"), default=0.05)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    p.add_argument("--weight-decay", type=arg("weight_decay"), default=5e-4)
    p.add_argument("--momentum", type=arg("momentum"), default=0.9)
    p.add_argument("--method", choices=TRAIN_METHODS, default=DEFAULT_METHOD,
                   help="adversarial training method: " + "; ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()))
    for name in dict.fromkeys(n for n, _ in METHOD_PARAMS.values()):
        p.add_argument(f"--{name}", type=float, default=None, help=PARAM_HELP.get(name))
    p.add_argument("--attack-steps", type=arg("attack_steps"), default=None,
                   help="PGD steps per adversarial training batch (pgd, trades; default 7); fgsm-rs takes one")
    p.add_argument("--attack-step-size", type=arg("attack_step_size"), default=None,
                   help="default 2.5 * eps / attack-steps (pgd, trades), 1.25 * eps (fgsm-rs)")
    p.add_argument("--stop-train-acc", type=arg("stop_train_acc"), default=None,
                   help="stop once an epoch's training accuracy reaches this (e.g. 0.995)")
    p.add_argument("--selection", choices=SELECTIONS, default=None,
                   help="epoch to keep: best validation balanced accuracy, or the last (a fixed budget); default "
                        "best_val on the task's data, last on a constructed dataset (its val labels are hidden)")
    p.add_argument("--eps-warmup-epochs", type=arg("eps_warmup_epochs"), default=0,
                   help="adversarial training: ramp eps and the PGD step size linearly (per batch) from 0 over "
                        "this many epochs; only later epochs can be selected (default 0: no warm-up)")
    add_data_options(p, data_help="the task's npz file (MedMNIST layout, e.g. data/synthetic.npz from prepare-data), "
                                  "or a constructed dataset in that layout (e.g. D_rand, with --train-data drand)")


def run(args) -> None:
    from medgrid import constructions, epsilon
    from medgrid.data import tasks

    # the user's mistakes first, before torch loads
    train_data, setting = constructions.split(args.train_data)
    if args.model_seed and train_data == "original":
        raise UserError("--model-seed numbers the models trained on a constructed dataset (--train-data drand, "
                        "ddet, drobust); a grid cell's model is its --seed")
    eps = epsilon.parse(args.eps)
    epsilon.check_training(args.norm, eps)
    if args.task not in TASKS:
        tasks.task_info(args.task)  # says why (unknown, multi-label, 3D)
    tasks.check_size(args.task, args.size)
    if args.arch not in ARCHS:
        raise UserError(f"unknown arch {args.arch!r}; valid: {', '.join(ARCHS)}")
    method_param = _method_param(args)
    if args.eps_warmup_epochs and args.norm == "none":
        raise UserError("--eps-warmup-epochs is for adversarial training (--norm linf or l2)")
    if args.eps_warmup_epochs >= args.epochs:
        raise UserError(f"--eps-warmup-epochs ({args.eps_warmup_epochs}) must be smaller than --epochs "
                        f"({args.epochs}): epochs after the warm-up are the ones that can be selected")
    check_writable(args.out)

    from medgrid import checkpoint
    from medgrid.data import loading, placement
    from medgrid.evaluation import health
    from medgrid.training import loop

    set_threads(args.threads)
    device = pick_device(args.device)
    ds = loading.load(args.task, args.size, args.data, device=device, splits=("train", "val"),
                      data_on=args.data_on)
    print(placement.describe(ds.data_on, ds.nbytes, device, args.data_on), flush=True)
    hp = loop.HParams(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       schedule=args.schedule, weight_decay=args.weight_decay, momentum=args.momentum,
                       attack_steps=args.attack_steps or loop.HParams.attack_steps,
                       attack_step_size=args.attack_step_size, stop_train_acc=args.stop_train_acc,
                       selection=args.selection, eps_warmup_epochs=args.eps_warmup_epochs, method=args.method,
                       method_param=method_param)
    construction = _construction(args.data, train_data, setting)
    model, settings = loop.train(ds, arch=args.arch, norm=args.norm, eps=eps, seed=args.seed, hp=hp,
                                  device=device, train_data=train_data, model_seed=args.model_seed,
                                  construction=construction)
    checkpoint.save(args.out, model, settings)
    kept = "best validation" if settings["selection"] == "best_val" else "last"
    print(f"wrote {args.out} (kept epoch {settings['best_epoch']}: {kept}; "
          f"val balanced acc {settings['best_val_balanced_acc']:.4f}; seeds {settings['init_seed']} init, "
          f"{settings['order_seed']} batch order)")
    warning = health.message(health.Verdict(**settings["val_health"]), train_data, split="validation")
    if warning:
        print(f"medgrid: warning: {warning}", file=sys.stderr)
    warning = health.overfit_message(settings)
    if warning:
        print(f"medgrid: warning: {warning}", file=sys.stderr)


def _construction(path, train_data: str, setting: str | None) -> str:
    """The attack setting a D_rand / D_det file records (``none`` for other data and older files); a setting
    in the --train-data name must be that one."""
    if train_data == "original":
        return NO_CONSTRUCTION
    from medgrid.features.dataset import read_construction

    recorded = read_construction(path)
    if setting is not None and recorded not in (setting, NO_CONSTRUCTION):
        raise UserError(f"--train-data names the attack setting {setting} but {path} was made by {recorded}")
    return setting if recorded == NO_CONSTRUCTION and setting is not None else recorded


def _method_param(args) -> float | None:
    """The training method's parameter flag (``--beta`` for trades), checked against the method and the norm;
    the user's mistakes answered before torch loads."""
    from medgrid import train_method

    given = {name: getattr(args, name) for name in dict.fromkeys(n for n, _ in METHOD_PARAMS.values())
             if getattr(args, name) is not None}
    own = train_method.param_name(args.method)
    stray = [f"--{name}" for name in given if name != own]
    if stray:
        raise UserError(f"{', '.join(stray)} is not a parameter of --method {args.method}")
    if args.method != DEFAULT_METHOD and args.norm == "none":
        raise UserError(f"--method {args.method} is adversarial training: give --norm linf or l2 and --eps > 0")
    if args.method in SINGLE_STEP_METHODS and args.attack_steps is not None:
        raise UserError(f"--method {args.method} takes one step by definition: leave out --attack-steps "
                        "(--attack-step-size sets its length)")
    if own is None:
        return None
    train_method.param(args.method, given.get(own))  # a bad value is a UserError here
    return given.get(own)

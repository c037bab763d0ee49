"""Seconds per training epoch of each training method relative to PGD-AT, side by side in one process.

    python benchmarks/train_methods.py                                  # the demo's synthetic task, demo settings
    python benchmarks/train_methods.py --task pneumoniamnist --data ../shared/data/medmnist/pneumoniamnist.npz

On one task's training split (default: the synthetic task, generated here as `medgrid prepare-data` makes it),
the same model initialisation, batch order and torch threads, each method trains one epoch per round, the
methods interleaved batch by batch (each method's batch i, then each one's batch i + 1, ...), so a change in
machine load within an epoch hits all of them alike:

- standard: cross-entropy on clean batches (the reference point of every method);
- pgd:      PGD-AT with `--attack-steps` steps (the demo's 5) of 2.5 eps / steps;
- trades:   TRADES with the same steps and step size, beta `--beta`;
- fgsm-rs:  one step of 1.25 eps, plus its guard's PGD (5 steps on one batch of the same size) after the epoch.

Each method is `medgrid.training.methods`' class, called as `medgrid.training.loop.train` calls it (attack in eval
mode, loss, backward, SGD step). Reported: the median seconds per epoch over `--rounds` rounds, the median of the
per-round ratios to pgd, and the images the model forwards and back-propagates per training image (counted by
hooks: a deterministic cost beside the wall clock). The shapes, threads and torch version are printed and written to the
JSON (default benchmarks/out/train_methods.json). Wall-clock times on a shared machine are not clean
measurements; the ratios within a round are the comparable numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medgrid import epsilon, models  # noqa: E402
from medgrid.data import loading, npz, synthetic, tasks  # noqa: E402
from medgrid.training import guard as overfit  # noqa: E402
from medgrid.training import methods  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = ("standard", "pgd", "trades", "fgsm-rs")


def build(name: str, norm: str, steps: int, beta: float):
    if name == "standard":
        return methods.Standard()
    return methods.build(name, norm, steps=steps, param=beta if name == "trades" else 0.0)


class Run:
    """One method's model, optimiser, batch order and attack generator, trained batch by batch."""

    def __init__(self, name, ds, args):
        self.name, self.ds, self.args = name, ds, args
        self.method = build(name, args.norm, args.attack_steps, args.beta)
        torch.manual_seed(args.seed)
        self.model = models.build(args.arch, ds.info.n_channels, ds.info.n_classes, ds.size)
        self.model.normalize.fit(ds.train.images)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
        self.order = torch.Generator().manual_seed(args.seed)
        self.attack = torch.Generator().manual_seed(args.seed + 1)
        self.guard = (overfit.OverfitGuard(ds.train, batch_size=args.batch_size, seed=args.seed, norm=args.norm,
                                           eps=args.eps) if self.method.guarded else None)
        self.forward = self.backward = 0  # images through the model, forwards and backwards
        self.model.register_forward_hook(lambda module, inputs, output: self._count("forward", inputs[0]))
        self.model.register_full_backward_hook(lambda module, grad_in, grad_out: self._count("backward",
                                                                                             grad_out[0]))

    def _count(self, what, x):
        setattr(self, what, getattr(self, what) + int(x.shape[0]))

    def batches(self):
        return loading.iterate(self.ds.train, self.args.batch_size, shuffle=True, generator=self.order)

    def step(self, x, y) -> float:
        """Seconds of one training batch (attack, loss, backward, SGD step), as the training loop runs it."""
        eps, alpha = self.args.eps, self.method.alpha(self.args.eps)
        start = time.perf_counter()
        self.model.train()
        x_adv = self.method.examples(self.model, x, y, eps=eps, alpha=alpha, generator=self.attack)
        loss, _ = self.method.loss(self.model, x, x_adv, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - start

    def end_of_epoch(self) -> float:
        """Seconds of the guard's measurement after an epoch (0 for a method without the guard)."""
        if self.guard is None:
            return 0.0
        start = time.perf_counter()
        self.guard.accuracy(self.model)
        return time.perf_counter() - start


def epoch(runs: dict) -> dict:
    """One epoch of every method, interleaved batch by batch (each method's batch i, then batch i + 1, ...), so
    a change of machine load within the epoch hits every method alike; seconds per method."""
    seconds = dict.fromkeys(runs, 0.0)
    streams = {name: run.batches() for name, run in runs.items()}
    for batch in zip(*streams.values()):
        for (name, run), (x, y) in zip(runs.items(), batch):
            seconds[name] += run.step(x, y)
    for name, run in runs.items():
        seconds[name] += run.end_of_epoch()
    return seconds


def dataset(args, folder: Path) -> loading.Dataset:
    if args.data is not None:
        return loading.load(args.task, args.size, args.data, splits=("train",))
    path = tasks.npz_path(folder, args.task, args.size)
    npz.write_npz(path, synthetic.generate(args.task, args.size, seed=0))
    return loading.load(args.task, args.size, path, splits=("train",))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--data", type=Path, default=None, help="the task's npz (default: generate the synthetic task)")
    ap.add_argument("--arch", default="cnn-small")
    ap.add_argument("--norm", default="linf", choices=("linf", "l2"))
    ap.add_argument("--eps", default="2/255")
    ap.add_argument("--attack-steps", type=int, default=5, help="PGD steps of pgd and trades (the demo's 5)")
    ap.add_argument("--beta", type=float, default=6.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's train jobs use 1 on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "train_methods.json")
    args = ap.parse_args()
    args.eps = epsilon.parse(args.eps)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "pgd" not in names:
        names.insert(1 if "standard" in names else 0, "pgd")
    torch.set_num_threads(args.threads)
    # the counting hook fires on the training step's backward too, where no input needs a gradient: as meant
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    with tempfile.TemporaryDirectory() as folder:
        ds = dataset(args, Path(folder))
    runs = {name: Run(name, ds, args) for name in names}
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, seconds in epoch(runs).items():
            times[name].append(seconds)
    shape = tuple(ds.train.images.shape)
    print(f"training epoch per method; {args.rounds} rounds (methods interleaved batch by batch), medians; {args.task} train split "
          f"{shape} uint8, batch {args.batch_size}, {args.arch}, {args.norm} eps {epsilon.text(args.norm, args.eps)}, "
          f"{args.attack_steps} PGD steps (pgd, trades), beta {args.beta:g}; torch {torch.__version__}, "
          f"{args.threads} thread(s), float32, CPU {platform.processor() or platform.machine()}")
    print(f"{'method':10s} {'s / epoch':>10s} {'vs pgd':>8s} {'fwd / image':>12s} {'bwd / image':>12s}")
    rows = []
    for name in names:
        ratios = [t / p for t, p in zip(times[name], times["pgd"])]
        per_image = args.rounds * len(ds.train)
        forwards, backwards = runs[name].forward / per_image, runs[name].backward / per_image
        med = statistics.median(times[name])
        print(f"{name:10s} {med:10.2f} {statistics.median(ratios):8.2f} {forwards:12.2f} {backwards:12.2f}")
        rows.append({"method": name, "s_per_epoch_median": med, "s_per_epoch": times[name],
                     "ratio_to_pgd_median": statistics.median(ratios), "ratio_to_pgd": ratios,
                     "forward_images_per_training_image": forwards, "backward_images_per_training_image": backwards})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.json.write_text(json.dumps({"settings": meta, "train_shape": shape, "torch": str(torch.__version__),
                                     "cpu": platform.processor() or platform.machine(), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""A medgrid cell against the plain PyTorch loop a researcher would write, side by side.

    python benchmarks/train_epoch.py --rounds 5 --threads 1

Three rows, each timed for medgrid and for a plain eager loop on the same model (cnn-small, same initial
weights), the same data (the synthetic task at 28 px: 4000 training, 500 validation, 1000 test images) and
the same torch threads, float32, CPU:
- ``standard epoch``: one epoch of standard training, batch 128, SGD, then the validation pass.
  medgrid: ``medgrid.training.loop.train`` with one epoch. Plain: the whole split as one float tensor, a
  shuffled index per epoch, forward / cross-entropy / backward / step, then predictions on the validation
  split (what any training loop that keeps a best epoch does).
- ``adversarial epoch``: the same with L-inf 2/255 PGD-5 on each batch (random start, step 2.5 eps / 5,
  model in eval mode during the attack as MadryLab's robustness library does). Plain: ``torch.autograd.grad``
  of the cross-entropy, an eager ``x + alpha * sign(grad)``, ``min(max(., x - eps), x + eps)``, ``clamp(0, 1)``.
- ``PGD-20 evaluation``: robust accuracy of a trained standard model on the 1000 test images at L-inf
  1, 2, 4, 8/255, 20 steps, batch 500. medgrid: ``medgrid.attacks.sweep.robust_predictions`` (its default:
  broken samples leave the batch, epsilons in increasing order). Plain: PGD-20 at each epsilon on every image.
Each (row, implementation) runs in its own process (the allocator as each would have it), alternating the
order round by round; the time is the measured block only (data loaded, model built, one warm-up batch
before). Table: medians, the ratio medgrid / plain (<= 1 means medgrid is not slower); JSON out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ("standard epoch", "adversarial epoch", "PGD-20 evaluation")
EPS = 2 / 255
EVAL_EPS = [1 / 255, 2 / 255, 4 / 255, 8 / 255]


# ------------------------------------------------------------------------------------- the plain loop


def plain_pgd(model, x, y, eps, steps, alpha, gen=None):
    import torch
    from torch.nn import functional as F

    x_adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def plain_epoch(model, train_x, train_y, val_x, adversarial: bool, seed: int):
    import torch
    from torch.nn import functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_x), generator=gen)
    for i in range(0, len(order), 128):
        idx = order[i:i + 128]
        x, y = train_x[idx], train_y[idx]
        if adversarial:
            model.eval()
            x = plain_pgd(model, x, y, EPS, 5, 2.5 * EPS / 5, gen)
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return torch.cat([model(val_x[i:i + 1000]).argmax(1) for i in range(0, len(val_x), 1000)])


def plain_eval(model, x, y):
    import torch

    model.eval()
    correct = {}
    for eps in EVAL_EPS:
        right = 0
        for i in range(0, len(x), 500):
            xb, yb = x[i:i + 500], y[i:i + 500]
            adv = plain_pgd(model, xb, yb, eps, 20, 2.5 * eps / 20)
            with torch.no_grad():
                right += (model(adv).argmax(1) == yb).sum().item()
        correct[eps] = right / len(x)
    return correct


# ------------------------------------------------------------------------------------------ one run


def child(args) -> None:
    """One measured block in this process; prints JSON."""
    import torch

    from medgrid import checkpoint, models, seeding
    from medgrid.attacks.sweep import robust_predictions
    from medgrid.data import loading
    from medgrid.training import loop

    torch.set_num_threads(args.threads)
    ds = loading.load("synthetic", 28, args.data)
    if args.row == "PGD-20 evaluation":
        model, _ = checkpoint.load(args.model)
        x, y = ds.test.images, ds.test.labels
        if args.impl == "plain":
            xf = loading.as_float(x)
            plain_eval(model, xf[:8], y[:8])  # warm-up
            start = time.perf_counter()
            plain_eval(model, xf, y)
        else:
            robust_predictions(model, x[:8], y[:8], norm="linf", eps_list=EVAL_EPS, steps=20)
            start = time.perf_counter()
            robust_predictions(model, x, y, norm="linf", eps_list=EVAL_EPS, steps=20, batch_size=500)
    else:
        adversarial = args.row == "adversarial epoch"
        if args.impl == "plain":
            seeding.seed_everything(0)
            model = models.build("cnn-small", 1, 4, 28)
            model.normalize.fit(ds.train.images)
            train_x, val_x = loading.as_float(ds.train.images), loading.as_float(ds.val.images)
            plain_epoch(model, train_x[:128], ds.train.labels[:128], val_x[:8], adversarial, 1)  # warm-up
            seeding.seed_everything(0)
            model = models.build("cnn-small", 1, 4, 28)
            model.normalize.fit(ds.train.images)
            start = time.perf_counter()
            plain_epoch(model, train_x, ds.train.labels, val_x, adversarial, 1)
        else:
            hp = loop.HParams(epochs=1, batch_size=128, lr=0.05, attack_steps=5)
            small = loading.Dataset(ds.info, 28, loading.Split(ds.train.images[:128], ds.train.labels[:128]),
                                    loading.Split(ds.val.images[:8], ds.val.labels[:8]), None, ds.path, ds.sha256)
            norm, eps = ("linf", EPS) if adversarial else ("none", 0.0)
            loop.train(small, arch="cnn-small", norm=norm, eps=eps, seed=0, hp=hp, progress=False)  # warm-up
            start = time.perf_counter()
            loop.train(ds, arch="cnn-small", norm=norm, eps=eps, seed=0, hp=hp, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run(row: str, impl: str, data: Path, model: Path, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, __file__, "--child", "--row", row, "--impl", impl, "--data", str(data),
                           "--model", str(model), "--threads", str(threads)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{row} / {impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "train_epoch.json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sys.path.insert(0, str(REPO))
    import torch

    from medgrid import checkpoint
    from medgrid.data import loading, prepare
    from medgrid.training import loop

    rows = [r.strip() for r in args.rows.split(",")]
    times = {(r, impl): [] for r in rows for impl in ("medgrid", "plain")}
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare.prepare("synthetic", 28, Path(tmp) / "synthetic.npz", data_seed=0)
        model_path = Path(tmp) / "std.pt"
        if "PGD-20 evaluation" in rows:  # a trained standard model: attacks break it sample by sample
            torch.set_num_threads(args.threads)
            ds = loading.load("synthetic", 28, data)
            model, settings = loop.train(ds, arch="cnn-small", norm="none", eps=0.0, seed=0, progress=False,
                                         hp=loop.HParams(epochs=3, batch_size=128))
            checkpoint.save(model_path, model, settings)
        for r_i in range(args.rounds):
            for row in rows:
                impls = ("medgrid", "plain") if r_i % 2 == 0 else ("plain", "medgrid")
                for impl in impls:
                    t = run(row, impl, data, model_path, args.threads)
                    times[(row, impl)].append(t)
                    print(f"round {r_i} {row:20s} {impl:8s} {t:8.2f} s", flush=True)
    print(f"\nmedians of {args.rounds} rounds; {args.threads} torch thread(s), float32, CPU; synthetic 28 px, cnn-small")
    print(f"{'row':20s} {'medgrid s':>10} {'plain s':>9} {'medgrid / plain':>16}")
    summary = []
    for row in rows:
        m, p = statistics.median(times[(row, "medgrid")]), statistics.median(times[(row, "plain")])
        summary.append({"row": row, "medgrid_s": m, "plain_s": p, "ratio": m / p})
        print(f"{row:20s} {m:10.2f} {p:9.2f} {m / p:16.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"threads": args.threads, "rounds": args.rounds, "times": {
        f"{r}|{i}": v for (r, i), v in times.items()}, "summary": summary}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

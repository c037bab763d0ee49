"""Whole robust evaluation: work skipping on/off x fused step on/off, and torchattacks.PGD when installed.

Measures wall time and image forward+backward passes (grad_evals) of a PGD evaluation of a standard
model on the synthetic task over an epsilon grid, for each variant in one process, side by side:

  skip+fused      medgrid default: broken samples leave the batch, fused pgd_step
  skip+reference  the same with the pure-PyTorch step (MEDGRID_FUSED=0 semantics)
  noskip+fused    every sample attacked at every epsilon for every step
  torchattacks    torchattacks.PGD per epsilon (final iterate only), same steps and step size

And the anatomy of one PGD iteration at the evaluation batch size: the model's forward+backward
to the input gradient vs the update step (eager reference and fused op), i.e. the step's share
of an iteration, eager vs fused.

Prints tables and writes JSON. Not a test: run it, read the ratios.

  python benchmarks/pgd_attack.py [--archs cnn-small resnet18] [--n 1000] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from medgrid import ops
from medgrid.attacks import steps, sweep
from medgrid.data import loading, prepare, tasks
from medgrid.training import loop

EPS_GRID = [1 / 255, 2 / 255, 4 / 255, 8 / 255]


def standard_model(arch: str, device: str, data_dir: Path, epochs: int):
    ds = loading.load("synthetic", 28, tasks.npz_path(data_dir, "synthetic", 28), device=device)
    hp = loop.HParams(epochs=epochs, stop_train_acc=0.995)
    model, settings = loop.train(ds, arch=arch, norm="none", eps=0.0, seed=0, hp=hp, device=device,
                                  progress=False)
    return model.eval(), ds


def run_medgrid(model, x, y, steps, skip, fused):
    os.environ["MEDGRID_FUSED"] = "1" if fused else "0"
    t0 = time.perf_counter()
    res = sweep.robust_predictions(model, x, y, norm="linf", eps_list=EPS_GRID, steps=steps, skip=skip,
                                     seed=0, batch_size=500)
    if x.is_cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return wall, sum(r.grad_evals for r in res), [r.correct.float().mean().item() for r in res]


def timed(fn, device: str, runs: int = 20, warmup: int = 3) -> float:
    """Median seconds of fn() over runs calls (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def iteration_anatomy(model, x, y, device: str) -> dict:
    """One L-inf PGD iteration at 4/255 split into input gradient and update step."""
    eps, alpha = 4 / 255, steps.default_alpha(4 / 255, 20)
    torch.manual_seed(0)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)

    def input_grad():
        xa = x_adv.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y, reduction="sum")
        return torch.autograd.grad(loss, xa)[0]

    grad = input_grad()
    t_grad = timed(input_grad, device)
    t_ref = timed(lambda: ops.pgd_step_reference(x_adv, grad, x, norm="linf", eps=eps, alpha=alpha), device)
    row = {"batch": len(x), "grad_s": t_grad, "step_reference_s": t_ref,
           "share_reference": t_ref / (t_grad + t_ref)}
    if ops.fused_available(device):
        t_fused = timed(lambda: torch.ops.medgrid.pgd_step.default(x_adv, grad, x, "linf", eps, alpha, False),
                        device)
        row.update(step_fused_s=t_fused, share_fused=t_fused / (t_grad + t_fused),
                   iteration_speedup=(t_grad + t_ref) / (t_grad + t_fused))
    return row


def run_torchattacks(model, x, y, steps):
    import torchattacks

    t0 = time.perf_counter()
    accs = []
    for eps in EPS_GRID:
        atk = torchattacks.PGD(model, eps=eps, alpha=steps.default_alpha(eps, steps), steps=steps,
                               random_start=True)
        correct = 0
        for s in range(0, len(x), 500):
            adv = atk(x[s:s + 500], y[s:s + 500])
            with torch.no_grad():
                correct += (model(adv).argmax(1) == y[s:s + 500]).sum().item()
        accs.append(correct / len(x))
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, len(EPS_GRID) * steps * len(x), accs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", nargs="+", default=["cnn-small"], help="e.g. cnn-small resnet18")
    ap.add_argument("--n", type=int, default=1000, help="test images attacked")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per variant (median reported)")
    ap.add_argument("--epochs", type=int, default=20, help="max epochs of the standard model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/out/pgd_attack.json"))
    args = ap.parse_args()
    archs = args.archs
    torch.set_num_threads(args.threads)
    rows, anatomy = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prepare.prepare("synthetic", 28, tasks.npz_path(tmp, "synthetic", 28), data_seed=0)
        for arch in archs:
            model, ds = standard_model(arch, args.device, Path(tmp), args.epochs)
            x = loading.as_float(ds.test.images[:args.n])
            y = ds.test.labels[:args.n]
            anatomy.append({"arch": arch, **iteration_anatomy(model, x[:500], y[:500], args.device)})
            variants = {
                "skip+fused": lambda: run_medgrid(model, x, y, args.steps, True, True),
                "skip+reference": lambda: run_medgrid(model, x, y, args.steps, True, False),
                "noskip+fused": lambda: run_medgrid(model, x, y, args.steps, False, True),
            }
            try:
                import torchattacks  # noqa: F401
                variants["torchattacks"] = lambda: run_torchattacks(model, x, y, args.steps)
            except ImportError:
                print("torchattacks not installed: skipped")
            for name, fn in variants.items():
                fn()  # warm-up
                runs = [fn() for _ in range(args.repeats)]
                rows.append({"arch": arch, "variant": name, "wall_s": statistics.median(r[0] for r in runs),
                             "grad_evals": runs[0][1], "robust_acc": runs[0][2]})
            os.environ.pop("MEDGRID_FUSED", None)
    naive = len(EPS_GRID) * args.steps * args.n
    print(f"\nrobust evaluation, synthetic 28 px, standard model, linf eps {[round(e * 255) for e in EPS_GRID]}/255,"
          f" {args.steps} steps, n={args.n}, float32, device={args.device}, threads={args.threads},"
          f" fused op built: {ops.fused_available(args.device)}; median of {args.repeats}")
    print(f"{'arch':10} {'variant':15} {'wall s':>8} {'vs skip+fused':>13} {'grad_evals':>10} {'% naive':>8}  robust acc")
    for arch in archs:
        base = next(r for r in rows if r["arch"] == arch and r["variant"] == "skip+fused")["wall_s"]
        for r in (r for r in rows if r["arch"] == arch):
            print(f"{arch:10} {r['variant']:15} {r['wall_s']:8.2f} {r['wall_s'] / base:12.2f}x {r['grad_evals']:10d}"
                  f" {100 * r['grad_evals'] / naive:7.1f}%  {[round(a, 3) for a in r['robust_acc']]}")
    print(f"\none PGD iteration (linf 4/255, batch {anatomy[0]['batch'] if anatomy else 0}), median of 20:"
          " input gradient (forward+backward) vs update step")
    print(f"{'arch':10} {'grad ms':>9} {'step ref ms':>11} {'share':>7} {'step fused ms':>13} {'share':>7}"
          f" {'iteration speedup':>17}")
    for a in anatomy:
        fused_cols = (f" {a['step_fused_s'] * 1e3:13.3f} {100 * a['share_fused']:6.2f}% {a['iteration_speedup']:16.3f}x"
                      if "step_fused_s" in a else "  (no fused op)")
        print(f"{a['arch']:10} {a['grad_s'] * 1e3:9.3f} {a['step_reference_s'] * 1e3:11.3f}"
              f" {100 * a['share_reference']:6.2f}%{fused_cols}")
    meta = {"device": args.device, "threads": args.threads, "n": args.n, "steps": args.steps, "eps": EPS_GRID,
            "naive_grad_evals": naive, "torch": torch.__version__, "cpu": platform.processor(),
            "fused_built": ops.fused_available(args.device)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows, "iteration": anatomy}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

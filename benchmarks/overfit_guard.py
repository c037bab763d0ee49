"""Does fast adversarial training overfit catastrophically here, and does Wong et al.'s guard see it?

    python benchmarks/overfit_guard.py                                   # synthetic task, the sweep below
    python benchmarks/overfit_guard.py --task pneumoniamnist --data ../shared/data/medmnist/pneumoniamnist.npz \
        --runs 8:1.25,8:2,8:10

Each run trains FGSM-RS (`medgrid.training.loop.train`, method fgsm-rs, `selection: last` so the guard alone
decides where it stops) at L-inf eps k/255 with a step of s x eps (`--runs k:s,...`; Wong et al.'s step is 1.25,
and a step of 2 eps or more lands every pixel on the ball's corner: plain FGSM) and prints, per epoch, the accuracy
on its own FGSM training examples, the guard's PGD accuracy on its fixed training batch (5 steps of eps / 4)
and the validation balanced accuracy, then where the guard stopped the run, if it did. Catastrophic overfitting
shows as FGSM accuracy far above PGD accuracy; the guard stops a run only when PGD accuracy falls by more than
0.2 from one epoch to the next. JSON to benchmarks/out/overfit_guard.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medgrid.data import loading, npz, synthetic, tasks  # noqa: E402
from medgrid.training import loop  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="synthetic")
    ap.add_argument("--data", type=Path, default=None, help="the task's npz (default: generate the synthetic task)")
    ap.add_argument("--runs", default="8:1.25,8:10,20:10,24:10,32:1.25,32:10",
                    help="eps in grey levels : step in units of eps, comma separated")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "overfit_guard.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = args.data
        if path is None:
            path = tasks.npz_path(folder, args.task, 28)
            npz.write_npz(path, synthetic.generate(args.task, 28, seed=0))
        ds = loading.load(args.task, 28, path, splits=("train", "val"))
    out = []
    print(f"FGSM-RS on {args.task} {tuple(ds.train.images.shape)}, cnn-small, batch {args.batch_size}, SGD lr "
          f"{args.lr} cosine, {args.epochs} epochs, seed {args.seed}, torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print("per epoch: FGSM train acc / guard PGD acc / val balanced acc")
    for run in args.runs.split(","):
        k, step = (float(v) for v in run.split(":"))
        eps = k / 255
        hp = loop.HParams(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, method="fgsm-rs",
                          attack_step_size=step * eps, selection="last")
        _, s = loop.train(ds, arch="cnn-small", norm="linf", eps=eps, seed=args.seed, hp=hp, progress=False)
        trace = [(h["train_acc"], h["guard_pgd_acc"], h["val_balanced_acc"]) for h in s["history"]]
        drops = [a[1] - b[1] for a, b in zip(trace, trace[1:])]
        stop = f"stopped at epoch {s['overfit_epoch']}" if s["overfit_epoch"] else "not stopped"
        print(f"eps {k:g}/255, step {step:g} eps: {stop}; largest one-epoch PGD fall {max(drops, default=0):.2f}")
        print("   " + "  ".join(f"{f:.2f}/{p:.2f}/{v:.2f}" for f, p, v in trace))
        out.append({"eps_grey_levels": k, "step_eps": step, "overfit_epoch": s["overfit_epoch"],
                    "kept_epoch": s["best_epoch"], "fgsm_train_acc": [t[0] for t in trace],
                    "guard_pgd_acc": [t[1] for t in trace], "val_balanced_acc": [t[2] for t in trace]})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.json.write_text(json.dumps({"settings": meta, "runs": out}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

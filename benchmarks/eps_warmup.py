"""Does epsilon warm-up stop adversarial training from collapsing? Real BreastMNIST, the local-data grid's cell.

    python benchmarks/eps_warmup.py --source-dir ../shared/data/medmnist
    python benchmarks/eps_warmup.py --source-dir ../shared/data/medmnist --seeds 0,1,2 --warmups 0,3,5 \\
        --json benchmarks/out/eps_warmup.json

What is run: for each seed and warm-up k, ``medgrid train`` of one cell of ``config/local-data.yaml``
(task, arch and the hyperparameters of ``hparams.<arch>`` with its ``adversarial`` block, read from that
file; default breastmnist, cnn-small, L2 0.5) with ``--eps-warmup-epochs k``, then ``medgrid evaluate``
on the test split under the config's attack grid for the training norm (20-step PGD). k = 0 is the
shipped setting. Reported per run: the selected epoch, the clean balanced accuracy, the number of
classes the model predicts on the test split, whether the health check flags it (``degenerate``), and
the balanced accuracy under PGD at the training epsilon. Prints a table and writes JSON (default
benchmarks/out/eps_warmup.json); the checkpoints and tables stay in --work-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def medgrid(*args: str) -> None:
    cmd = [sys.executable, "-m", "medgrid", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")


def train_flags(config: dict, arch: str) -> list[str]:
    """hparams.<arch> with its adversarial block, as `medgrid train` flags (as workflow/rules/common.smk)."""
    hp = config["hparams"][arch]
    merged = {k: v for k, v in hp.items() if k not in ("standard", "adversarial")}
    merged.update(hp.get("adversarial", {}))
    return [x for k, v in sorted(merged.items()) if v is not None for x in (f"--{k.replace('_', '-')}", str(v))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source-dir", type=Path, required=True, help="folder with the real {task}.npz")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "local-data.yaml")
    ap.add_argument("--task", default="breastmnist")
    ap.add_argument("--arch", default="cnn-small")
    ap.add_argument("--norm", default="l2")
    ap.add_argument("--eps", default="0.5")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--warmups", default="0,3,5")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--work-dir", type=Path, default=REPO / "benchmarks" / "out" / "eps_warmup")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "eps_warmup.json")
    args = ap.parse_args()

    config = yaml.safe_load(args.config.read_text())
    attack_eps = ",".join(str(e) for e in config["attack_grid"][args.norm])
    data = args.work_dir / "data" / f"{args.task}.npz"
    medgrid("prepare-data", "--task", args.task, "--size", "28", "--out", str(data),
            "--source", str(args.source_dir / f"{args.task}.npz"))
    records = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for k in [int(w) for w in args.warmups.split(",")]:
            stem = args.work_dir / f"{args.task}-{args.arch}-{args.norm}-{args.eps}-seed{seed}-warmup{k}"
            ckpt, table = stem.parent / f"{stem.name}.pt", stem.parent / f"{stem.name}.parquet"
            medgrid("train", "--task", args.task, "--size", "28", "--arch", args.arch, "--norm", args.norm,
                    "--eps", args.eps, "--seed", str(seed), "--data", str(data),
                    *train_flags(config, args.arch), "--eps-warmup-epochs", str(k), "--out", str(ckpt),
                    "--threads", args.threads)
            medgrid("evaluate", "--checkpoint", str(ckpt), "--data", str(data), "--attack-norm", args.norm,
                    "--attack-eps", attack_eps, "--out", str(table), "--threads", args.threads)
            settings = torch.load(ckpt, map_location="cpu", weights_only=True)["settings"]
            df = pd.read_parquet(table)
            value = {(r.eval_kind, r.metric, round(r.eval_eps, 6)): r.value for r in df.itertuples()}
            records.append({
                "seed": seed, "eps_warmup_epochs": k, "best_epoch": settings["best_epoch"],
                "val_balanced_acc": settings["best_val_balanced_acc"],
                "clean_balanced_acc": value[("clean", "balanced_acc", 0.0)],
                "predicted_classes": int(value[("health", "predicted_classes", 0.0)]),
                "degenerate": bool(value[("health", "degenerate", 0.0)]),
                f"pgd_{args.norm}_{args.eps}_balanced_acc": value[("pgd", "balanced_acc", round(float(args.eps), 6))],
            })
            print(json.dumps(records[-1]), flush=True)
    out = pd.DataFrame(records)
    print(f"\n{args.task}, {args.arch}, {args.norm} {args.eps} ({args.config.name} hyperparameters)")
    print(out.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"task": args.task, "arch": args.arch, "norm": args.norm, "eps": args.eps,
                                     "config": str(args.config), "threads": args.threads, "runs": records},
                                    indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    main()

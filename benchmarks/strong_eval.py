"""What the strong evaluation and the gradient-masking checks add to a cell's evaluation, side by side.

    python benchmarks/strong_eval.py --checkpoint results/synthetic/28/cnn-small/none-0/seed0/model.pt \
        --checkpoint results/synthetic/28/cnn-small/linf-2o255/seed0/model.pt --data-dir resources/data \
        --config config/demo.yaml --transfer-from results/synthetic/28/cnn-small/none-0/seed0/model.pt

For each checkpoint (the demo's standard and robust models), in one process and alternating rounds:
- pgd:    `medgrid.evaluation.evaluate.evaluate` with the config's PGD attack grid only (what the evaluate rule did
          before the strong evaluation);
- strong: the same plus the strong evaluation (APGD-CE, APGD-T) with the config's `evaluate.strong`;
- full:   the same plus the gradient-masking checks with the config's `evaluate.sanity` (transfer from
          `--transfer-from` for the non-standard models).
Times are medians of `--rounds` wall-clock runs (threads fixed with --threads; float32, CPU); the table
gives each variant's time, the added share over `pgd`, and the forward+backward passes (grad_evals rows)
of each stage. JSON out (default benchmarks/out/strong_eval.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medgrid import checkpoint, epsilon  # noqa: E402
from medgrid.data import loading, tasks
from medgrid.evaluation import evaluate
from medgrid.evaluation.sanity import SanitySettings  # noqa: E402
from medgrid.evaluation.strong import StrongSettings  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def merged_config(path: Path) -> dict:
    """config/config.yaml with ``path`` merged over it (mappings key by key), as Snakemake does."""
    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return merge(base, yaml.safe_load(path.read_text())) if path else base


def settings_from(cfg: dict):
    ev = cfg["evaluate"]
    grid = {n: sorted(epsilon.parse(str(e)) for e in v) for n, v in cfg["attack_grid"].items() if v}
    st, sa = ev.get("strong", {}), ev.get("sanity", {})
    eps = {n: sorted(epsilon.parse(str(e)) for e in v) for n, v in (st.get("epsilons") or {}).items()} or None
    strong = StrongSettings(eps=eps, iterations=st.get("iterations", 100), samples=st.get("samples"),
                            targets=st.get("apgd_targets", 9))
    sanity = SanitySettings(samples=sa.get("samples", 200), tolerance=sa.get("tolerance", 0.02),
                            square_queries=sa.get("square_queries", 1000), square_samples=sa.get("square_samples", 100),
                            steps=ev["attack_steps"])
    return grid, ev["attack_steps"], strong, sanity


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True)
    ap.add_argument("--data-dir", type=Path, required=True, help="folder of the tasks' npz files (resources/data)")
    ap.add_argument("--config", type=Path, default=REPO / "config" / "demo.yaml")
    ap.add_argument("--transfer-from", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's evaluate jobs use 1)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "strong_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid, steps, strong, sanity = settings_from(merged_config(args.config))
    source = checkpoint.load(args.transfer_from)[0] if args.transfer_from else None
    models = [checkpoint.load(p) for p in args.checkpoint]
    datasets = {(s["task"], s["size"]): loading.load(s["task"], s["size"], tasks.npz_path(args.data_dir, s["task"], s["size"]))
                for _, s in models}
    variants = {
        "pgd": {},
        "strong": {"strong": strong},
        "full": {"strong": strong, "sanity": sanity},
    }
    times = {(i, v): [] for i in range(len(models)) for v in variants}
    evals = {}
    for _ in range(args.rounds):
        for i, (model, s) in enumerate(models):
            for v, extra in variants.items():
                kw = dict(extra)
                if v == "full" and s["norm"] != "none":
                    kw["source_model"] = source
                start = time.perf_counter()
                table = evaluate.evaluate(model, s, datasets[(s["task"], s["size"])], attacks_by_norm=grid,
                                          steps=steps, **kw)
                times[(i, v)].append(time.perf_counter() - start)
                g = table[table.metric == "grad_evals"].groupby("eval_kind").value.sum()
                evals[(i, v)] = {k: int(x) for k, x in g.items()}
    print(f"strong evaluation cost; {args.rounds} rounds, medians; torch {torch.__version__}, {args.threads} "
          f"thread(s), float32, CPU {platform.processor() or platform.machine()}; config {args.config}")
    print(f"{'model':34s} {'variant':8s} {'wall s':>8s} {'vs pgd':>8s}  grad_evals (pgd / apgd-ce / apgd-t)")
    rows = []
    for i, (_, s) in enumerate(models):
        label = f"{s['task']} {s['norm']} {float(s['eps']):.4g} seed {s['seed']}"
        base = statistics.median(times[(i, "pgd")])
        for v in variants:
            med = statistics.median(times[(i, v)])
            e = evals[(i, v)]
            print(f"{label:34s} {v:8s} {med:8.2f} {100 * (med / base - 1):+7.0f}%  "
                  f"{e.get('pgd', 0)} / {e.get('apgd-ce', 0)} / {e.get('apgd-t', 0)}")
            rows.append({"checkpoint": str(args.checkpoint[i]), "task": s["task"], "norm": s["norm"],
                         "eps": float(s["eps"]), "variant": v, "wall_s_median": med, "wall_s": times[(i, v)],
                         "added_vs_pgd": med / base - 1, "grad_evals": e})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"config": str(args.config), "threads": args.threads, "rounds": args.rounds,
                                     "strong": vars(strong), "sanity": vars(sanity), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

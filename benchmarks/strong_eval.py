"""The strong evaluation's schedules side by side: the full schedule (AutoAttack's budgets on every sample) and
the adaptive one (the same attacks from the same starts, per-sample early stop), per model.

    python benchmarks/strong_eval.py --data-dir resources/data --config config/local-data.yaml \
        --checkpoint results/breastmnist/28/cnn-small/none-0/seed0/model.pt \
        --checkpoint results/breastmnist/28/cnn-small/linf-2o255/seed0/model.pt ...

For each checkpoint, on the strong evaluation's images (``evaluate.strong.samples`` of the test split, seeded as
the evaluate rule draws them; ``--samples`` overrides) at every epsilon of the config's ``attack_grid`` (the
strong evaluation's epsilons are not used: full strength), PGD (``evaluate.attack_steps``) once, then the
ensemble of the config's ``evaluate.strong`` (attacks: the default for the task's classes unless set;
iterations; square_queries; apgd_targets) with each schedule, in one process, the schedules alternating.
``--noise-floor`` adds the full schedule with another seed: how much two equally strong runs disagree.
``--cache DIR`` keeps the full schedule's outcome (per sample, per epsilon) and costs per model and setting, so
a change to the adaptive schedule is measured against it without rerunning it (its wall time is the stored one).

Printed per model and schedule: grad_evals (APGD forward+backward passes), queries (Square forward passes),
wall time (one run each, threads fixed; a loaded machine's wall time is no clean measurement, the counts
are), worst-case accuracy per epsilon, and per-sample disagreements with the full schedule (samples it
broke and the adaptive one did not, and the reverse). The criterion (docs/evaluation.md, "Adaptive schedule"):
grad_evals and queries each at most a quarter of the full schedule's, and at every epsilon either no sample
the full schedule breaks is missed or the worst-case accuracy is at most 0.2 points above. JSON out (default
benchmarks/out/strong_eval.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medgrid import checkpoint, epsilon  # noqa: E402
from medgrid.attacks import ensemble, stages  # noqa: E402
from medgrid.attacks.sweep import robust_predictions  # noqa: E402
from medgrid.data import loading, tasks  # noqa: E402
from medgrid.evaluation.strong import subset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.002  # 0.2 points of worst-case accuracy


def merged_config(path: Path | None) -> dict:
    """config/config.yaml with ``path`` merged over it (mappings key by key), as Snakemake does."""
    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return out

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return merge(base, yaml.safe_load(path.read_text())) if path else base


def run_schedule(model, x, y, pgd, run, budget, seed, batch_size):
    """{norm: [EnsembleResult per eps]}, wall seconds."""
    start = time.perf_counter()
    out = {norm: ensemble.ensemble_predictions(model, x, y, results_at, stages=run, budget=budget, seed=seed,
                                               batch_size=batch_size) for norm, results_at in pgd.items()}
    return out, time.perf_counter() - start


class Stored:
    """The full schedule's result at one epsilon as ``--cache`` keeps it: what :func:`summarise` reads."""

    def __init__(self, eps: float, stages: list, cost: dict, broken: torch.Tensor):
        self.eps, self.stages, self.cost, self._broken = eps, stages, cost, broken

    def correct(self) -> torch.Tensor:
        return ~self._broken


def cached_full(cache: Path | None, key: dict, compute):
    """``compute()`` (the full schedule: {norm: [results]}, wall), or what ``cache`` holds for ``key``."""
    if cache is None:
        return compute()
    path = cache / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20] + ".pt")
    if path.exists():
        stored = torch.load(path)
        return {n: [Stored(r["eps"], [stages.Stage(**st_) for st_ in r["stages"]], r["cost"], r["broken"])
                    for r in rs] for n, rs in stored["found"].items()}, stored["wall"]
    found, wall = compute()
    cache.mkdir(parents=True, exist_ok=True)
    kept = {n: [{"eps": r.eps, "stages": [dataclasses.asdict(st_) for st_ in r.stages], "cost": r.cost,
                 "broken": ~r.correct()} for r in rs] for n, rs in found.items()}
    torch.save({"key": key, "wall": wall, "found": kept}, path)
    return found, wall


def summarise(found, full) -> dict:
    """Costs, worst-case accuracy per epsilon and disagreements with ``full`` (the full schedule's results)."""
    cost = {"grad_evals": 0, "queries": 0}
    per_eps = []
    for norm, results_at in found.items():
        for res, ref in zip(results_at, full[norm]):
            for s in res.stages:
                cost["queries" if s.optimiser == "square" else "grad_evals"] += res.cost[s.kind]
            broken, ref_broken = ~res.correct(), ~ref.correct()
            missed, extra = int((ref_broken & ~broken).sum()), int((broken & ~ref_broken).sum())
            acc, ref_acc = res.correct().float().mean().item(), ref.correct().float().mean().item()
            per_eps.append({"norm": norm, "eps": res.eps, "eps_text": epsilon.text(norm, res.eps), "acc": acc,
                            "acc_full": ref_acc, "missed": missed, "extra": extra,
                            "meets": missed == 0 or acc - ref_acc <= TOLERANCE + 1e-12})
    return {"cost": cost, "per_eps": per_eps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, action="append", required=True)
    ap.add_argument("--data-dir", type=Path, required=True, help="folder of the tasks' npz files (resources/data)")
    ap.add_argument("--config", type=Path, default=None, help="merged over config/config.yaml (e.g. config/demo.yaml)")
    ap.add_argument("--samples", type=int, default=None, help="test images (default: evaluate.strong.samples)")
    ap.add_argument("--square-queries", type=int, default=None, help="Square stage budget (default: evaluate.strong."
                                                                     "square_queries)")
    ap.add_argument("--noise-floor", action="store_true", help="also the full schedule with another seed")
    ap.add_argument("--cache", type=Path, default=None, help="keep / reuse the full schedule's results here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the workflow's evaluate jobs use 1)")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "strong_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = merged_config(args.config)
    ev, st = cfg["evaluate"], cfg["evaluate"].get("strong", {})
    grid = {n: sorted(epsilon.parse(str(e)) for e in v) for n, v in cfg["attack_grid"].items() if v}
    samples = args.samples if args.samples is not None else st.get("samples")
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"strong evaluation schedules; commit {commit}; torch {torch.__version__}, {args.threads} thread(s), "
          f"float32, CPU {platform.processor() or platform.machine()}; config {args.config or 'config/config.yaml'}; "
          f"grid {', '.join(f'{n}: ' + ' '.join(epsilon.text(n, e) for e in v) for n, v in grid.items())}")
    print(f"{'model':40s} {'schedule':9s} {'grad_evals':>11s} {'queries':>10s} {'wall s':>8s}  "
          "worst acc per eps (missed/extra vs full)")
    rows = []
    for path in args.checkpoint:
        model, s = checkpoint.load(path)
        ds = loading.load(s["task"], s["size"], tasks.npz_path(args.data_dir, s["task"], s["size"]), splits=("test",))
        seed = int(s["seed"])
        index = subset(len(ds.test), samples, seed, "cpu")
        x, y = loading.as_float(ds.test.images[index]), ds.test.labels[index]
        pgd = {n: robust_predictions(model, x, y, norm=n, eps_list=e, steps=ev["attack_steps"], seed=seed,
                                     batch_size=args.batch_size) for n, e in grid.items()}
        run, _ = stages.resolve(st.get("attacks"), ds.info.n_classes, targets=st.get("apgd_targets", 9))
        queries = args.square_queries or st.get("square_queries", 5000)
        budgets = {name: ensemble.Budget(st.get("iterations", 100), queries, name) for name in ("full", "adaptive")}
        found, wall = {}, {}
        key = {"checkpoint": hashlib.sha256(path.read_bytes()).hexdigest(), "index": index.tolist(),
               "grid": grid, "stages": [st_.kind for st_ in run], "iterations": budgets["full"].iterations,
               "queries": queries, "seed": seed, "pgd_steps": ev["attack_steps"]}
        found["full"], wall["full"] = cached_full(args.cache, key, functools.partial(
            run_schedule, model, x, y, pgd, run, budgets["full"], seed, args.batch_size))
        found["adaptive"], wall["adaptive"] = run_schedule(model, x, y, pgd, run, budgets["adaptive"], seed,
                                                           args.batch_size)
        if args.noise_floor:
            found["full, seed+1"], wall["full, seed+1"] = run_schedule(model, x, y, pgd, run, budgets["full"], seed + 1,
                                                                       args.batch_size)
        label = f"{s['task']} {s['norm']} {epsilon.text(s['norm'], float(s['eps'])) if s['norm'] != 'none' else ''} " \
                f"seed {seed} ({len(index)} img)"
        full_cost = summarise(found["full"], found["full"])["cost"]
        for name, res in found.items():
            summary = summarise(res, found["full"])
            c = summary["cost"]
            accs = " ".join(f"{100 * e['acc']:.1f}" + (f"({e['missed']}/{e['extra']})" if name != "full" else "")
                            for e in summary["per_eps"])
            print(f"{label:40s} {name:9s} {c['grad_evals']:11d} {c['queries']:10d} {wall[name]:8.1f}  {accs}")
            ratio = {k: (c[k] / full_cost[k] if full_cost[k] else 0.0) for k in c}
            rows.append({"checkpoint": str(path), "task": s["task"], "norm": s["norm"], "eps": float(s["eps"]),
                         "seed": seed, "classes": ds.info.n_classes, "images": len(index),
                         "stages": [st_.kind for st_ in run], "schedule": name, "wall_s": wall[name], **summary,
                         "cost_ratio": ratio,
                         "meets": name == "full" or (all(v <= 0.25 for v in ratio.values())
                                                     and all(e["meets"] for e in summary["per_eps"]))})
        print(f"{'':40s} adaptive / full: grad_evals {rows[-1 - args.noise_floor]['cost_ratio']['grad_evals']:.3f}, "
              f"queries {rows[-1 - args.noise_floor]['cost_ratio']['queries']:.3f}; "
              f"criterion {'met' if rows[-1 - args.noise_floor]['meets'] else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"commit": commit, "config": str(args.config), "threads": args.threads,
                                     "samples": samples, "square_queries": args.square_queries, "grid": grid,
                                     "tolerance": TOLERANCE, "rows": rows},
                                    indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

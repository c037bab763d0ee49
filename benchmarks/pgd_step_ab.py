"""Side-by-side benchmark of two builds of the fused PGD step (e.g. main's and this branch's).

    python benchmarks/pgd_step_ab.py --old /tmp/l2-old/lib/medgrid/_C.cpython-311-x86_64-linux-gnu.so \
        --new medgrid/_C.cpython-311-x86_64-linux-gnu.so --rounds 6

Two builds register the same op (medgrid::pgd_step), so they cannot share a process: every round
runs one subprocess per library, in alternating order (old, new, then new, old, ...), so drift of a
shared machine falls on both alike. Each subprocess loads its library with torch.ops.load_library
(medgrid._C itself is not imported), checks the op against medgrid.ops.pgd_step_reference once per
shape and norm, and times torch.ops.medgrid.pgd_step exactly as benchmarks/pgd_step.py times its
"fused" row (same inputs, Timer, hot and cold medians of --runs calls). The table gives, per shape and
norm, the median over rounds of each library's medians and the ratio new/old (> 1: new is slower),
with the range of the per-round ratios, and the ratio of the fastest calls (min over all rounds: on
a shared, oversubscribed machine a 2-thread call that gets descheduled takes milliseconds, and the
minimum shows what each build does when it is not). CPU only; float32 by default; --threads torch
threads. --clock cpu times each call by the process's CPU time (time.process_time_ns, all threads)
instead of the wall clock: time spent descheduled does not count, so on a loaded machine it compares
the work of the two builds (with 2 threads it also counts OpenMP's spin-waiting for a descheduled
partner; with --threads 1 it is the kernel's own work plus its cache misses).
Prints a table and writes JSON (--json, default benchmarks/out/pgd_step_ab.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def child(args) -> int:
    """Time one library's op; write {"rows": [...]} to args.json."""
    sys.modules["medgrid._C"] = None  # the library under test registers the op, not medgrid._C
    sys.path.insert(0, str(HERE))
    import pgd_step as bench  # noqa: E402  (Timer, inputs and shapes of the main benchmark)
    import torch

    torch.ops.load_library(args.child)
    torch.set_num_threads(args.threads)
    dtype = bench.DTYPES[args.dtype]
    device = torch.device("cpu")
    flush_bytes = max(4 * bench.llc_bytes(), 64 * 1024 ** 2)
    timer = bench.Timer(device, flush_bytes)
    if args.clock == "cpu":
        def cpu_time_once(fn):
            t0 = time.process_time_ns()
            fn()
            return (time.process_time_ns() - t0) * 1e-9

        timer.time_once = cpu_time_once
    rows = []
    for shape in bench.SHAPES:
        for norm in args.norms.split(","):
            eps, alpha = bench.NORMS[norm]
            x_adv, grad, x = bench.make_inputs(shape, dtype, device, eps)

            def fn():
                return torch.ops.medgrid.pgd_step.default(x_adv, grad, x, norm, eps, alpha, False)

            ref = bench.ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha)
            torch.testing.assert_close(fn(), ref, atol=1e-5 if norm == "l2" else 0.0, rtol=0)
            hot = timer.measure(fn, runs=args.runs, warmup=args.warmup, cold=False)
            cold = timer.measure(fn, runs=args.runs, warmup=1, cold=True)
            rows.append({"shape": list(shape), "norm": norm, "hot_s": statistics.median(hot),
                         "cold_s": statistics.median(cold), "hot_min_s": min(hot), "cold_min_s": min(cold)})
    Path(args.json).write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(),
                                           "flush_bytes": flush_bytes, "torch": torch.__version__}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--old", type=Path, help="the baseline library (a built medgrid/_C*.so)")
    p.add_argument("--new", type=Path, help="the library under test")
    p.add_argument("--rounds", type=int, default=6, help="subprocess pairs, alternating order (>= 2)")
    p.add_argument("--runs", type=int, default=30, help="timed calls per figure and round (>= 20)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                   help="wall: time.perf_counter; cpu: process CPU time (see above)")
    p.add_argument("--json", default=str(HERE / "out" / "pgd_step_ab.json"))
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: time this library, write --json
    args = p.parse_args(argv)
    if args.child:
        return child(args)
    if args.old is None or args.new is None:
        p.error("--old and --new are required")
    for lib in (args.old, args.new):
        if not lib.is_file():
            p.error(f"no such library: {lib}")
    if args.rounds < 2 or args.runs < 20:
        p.error("--rounds must be >= 2 and --runs >= 20")

    libs = {"old": args.old.resolve(), "new": args.new.resolve()}
    results: dict[str, list[dict]] = {"old": [], "new": []}
    env = dict(os.environ, MEDGRID_FUSED="1")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = Path(tmp) / f"{label}-{r}.json"
                cmd = [sys.executable, __file__, "--child", str(libs[label]), "--json", str(out),
                       "--runs", str(args.runs), "--warmup", str(args.warmup), "--threads", str(args.threads),
                       "--dtype", args.dtype, "--norms", args.norms, "--clock", args.clock]
                subprocess.run(cmd, check=True, env=env)
                results[label].append(json.loads(out.read_text()))
                print(f"round {r + 1}/{args.rounds}: {label} done", file=sys.stderr)

    def per_round(label, key, shape, norm):
        return [next(row[key] for row in res["rows"] if row["shape"] == shape and row["norm"] == norm)
                for res in results[label]]

    first = results["old"][0]
    print(f"pgd_step A/B: old={libs['old']} new={libs['new']}; CPU ({platform.processor() or platform.machine()}), "
          f"dtype={args.dtype}, torch threads={first['threads']}, torch {first['torch']}, clock={args.clock}; "
          f"{args.rounds} rounds of one "
          f"subprocess per library in alternating order; per round the median of {args.runs} calls after "
          f"{args.warmup} warm-up (cold: caches flushed with {first['flush_bytes'] / 2**20:.0f} MB before each); "
          "table: median over rounds, ratio new/old (> 1: new slower) and its per-round range")
    header = (f"{'shape':>16} {'norm':>4} {'old hot us':>10} {'new hot us':>10} {'new/old hot':>12} {'range':>13} "
              f"{'old cold us':>11} {'new cold us':>11} {'new/old cold':>12} {'range':>13} "
              f"{'min hot o/n us':>15} {'new/old':>7} {'min cold o/n us':>16} {'new/old':>7}")
    print(header)
    print("-" * len(header))
    rows = []
    for row0 in first["rows"]:
        shape, norm = row0["shape"], row0["norm"]
        row = {"shape": shape, "norm": norm}
        cells = []
        for kind in ("hot", "cold"):
            old = per_round("old", f"{kind}_s", shape, norm)
            new = per_round("new", f"{kind}_s", shape, norm)
            ratios = [n / o for n, o in zip(new, old)]
            row.update({f"old_{kind}_s": statistics.median(old), f"new_{kind}_s": statistics.median(new),
                        f"ratio_{kind}": statistics.median(new) / statistics.median(old),
                        f"round_ratios_{kind}": ratios, f"old_{kind}_rounds_s": old, f"new_{kind}_rounds_s": new})
            cells.append(f"{row[f'old_{kind}_s'] * 1e6:{10 if kind == 'hot' else 11}.1f} "
                         f"{row[f'new_{kind}_s'] * 1e6:{10 if kind == 'hot' else 11}.1f} "
                         f"{row[f'ratio_{kind}']:12.3f} {min(ratios):6.3f}-{max(ratios):.3f}")
        for kind in ("hot", "cold"):
            old_min = min(per_round("old", f"{kind}_min_s", shape, norm))
            new_min = min(per_round("new", f"{kind}_min_s", shape, norm))
            row.update({f"old_{kind}_min_s": old_min, f"new_{kind}_min_s": new_min,
                        f"ratio_{kind}_min": new_min / old_min})
            pair = f"{old_min * 1e6:.1f}/{new_min * 1e6:.1f}"
            cells.append(f"{pair:>{15 if kind == 'hot' else 16}} {new_min / old_min:7.3f}")
        rows.append(row)
        print(f"{'x'.join(map(str, shape)):>16} {norm:>4} " + " ".join(cells))

    meta = {"old": str(libs["old"]), "new": str(libs["new"]), "old_sha256": sha256(libs["old"]),
            "new_sha256": sha256(libs["new"]), "dtype": args.dtype, "threads": first["threads"], "clock": args.clock,
            "rounds": args.rounds, "runs": args.runs, "warmup": args.warmup, "torch": first["torch"],
            "flush_bytes": first["flush_bytes"], "order": "alternating (old, new), (new, old), ...",
            "statistic": "median over rounds of per-round medians (seconds per call); *_min_s: fastest call",
            "host": platform.node(), "python": platform.python_version(),
            "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}}
    sys.path.insert(0, str(HERE.parent))
    from medgrid.atomic import atomic_output

    with atomic_output(args.json) as tmp_path:
        tmp_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

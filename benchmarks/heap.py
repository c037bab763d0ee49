"""What glibc's mmap threshold costs a training epoch, side by side: medgrid's setting against a fixed 1 MiB one.

    python benchmarks/heap.py --sizes 28,64 --rounds 5

For each image size, one epoch of L-inf 2/255 adversarial training (cnn-small, 5 PGD steps, batch 128, one torch
thread, float32, CPU) on the synthetic task runs as its own `medgrid train` process, alternating the allocator
settings round by round:
- ``medgrid``: the command as shipped (medgrid.heap: glibc's dynamic threshold below 128 px, fixed 1 MiB from
  128 px);
- ``fixed-1MiB``: ``MALLOC_MMAP_THRESHOLD_=1048576`` (the threshold every command fixed before 0.2);
- ``fixed-32MiB``: ``MALLOC_MMAP_THRESHOLD_=33554432``.
Each process's wall, user and system time come from wait4 (its own rusage). The table gives medians and the
ratio to ``medgrid``; JSON out. System time is what the mmap / page-fault / munmap churn costs and the figure
least disturbed by other work on the machine; the memory side of the same setting is benchmarks/memory.py.
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
SETTINGS = {"medgrid": None, "fixed-1MiB": "1048576", "fixed-32MiB": "33554432"}
TRAIN_IMAGES = {28: 4000, 64: 1000, 128: 250, 224: 80}  # about the same work per epoch at each size


def run_epoch(data: Path, size: int, threshold: str | None, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = threshold
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "medgrid", "train", "--task", "synthetic", "--size", str(size), "--arch",
            "cnn-small", "--norm", "linf", "--eps", "2/255", "--attack-steps", "5", "--epochs", "1",
            "--batch-size", "128", "--data", str(data), "--out", str(out), "--threads", "1", "--device", "cpu"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.read()[-2000:]}")
    return {"wall_s": wall, "user_s": usage.ru_utime, "sys_s": usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="28,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "heap.json")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from medgrid.data import prepare

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in [int(s) for s in args.sizes.split(",")]:
            n = TRAIN_IMAGES[size]
            data = prepare.prepare("synthetic", size, tmp / f"synthetic_{size}.npz", n_train=n, n_val=100, n_test=100)
            for r in range(args.rounds):
                order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
                for name in order:
                    m = run_epoch(data, size, SETTINGS[name], tmp / "m.pt")
                    records.append({"size": size, "setting": name, "round": r, **m})
                    print(f"{size:4d} px  {name:12s} round {r}: wall {m['wall_s']:6.2f} s  user {m['user_s']:6.2f} s"
                          f"  sys {m['sys_s']:5.2f} s  peak {m['peak_mib']:6.0f} MiB", flush=True)
    print("\nmedians (one L-inf 2/255 5-step adversarial epoch, cnn-small, batch 128, 1 thread, float32, CPU)")
    print(f"{'size':>4} {'setting':12s} {'train imgs':>10} {'wall s':>7} {'user s':>7} {'sys s':>6} {'peak MiB':>8}"
          f" {'wall/medgrid':>12} {'sys/medgrid':>11}")
    summary = []
    for size in sorted({r["size"] for r in records}):
        med = {name: {k: statistics.median(r[k] for r in records if r["size"] == size and r["setting"] == name)
                      for k in ("wall_s", "user_s", "sys_s", "peak_mib")} for name in SETTINGS}
        for name, m in med.items():
            row = {"size": size, "setting": name, "train_images": TRAIN_IMAGES[size], **m,
                   "wall_ratio": m["wall_s"] / med["medgrid"]["wall_s"], "sys_ratio": m["sys_s"] / med["medgrid"]["sys_s"]}
            summary.append(row)
            print(f"{size:4d} {name:12s} {TRAIN_IMAGES[size]:10d} {m['wall_s']:7.2f} {m['user_s']:7.2f} {m['sys_s']:6.2f}"
                  f" {m['peak_mib']:8.0f} {row['wall_ratio']:12.2f} {row['sys_ratio']:11.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rounds": args.rounds, "records": records, "summary": summary}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

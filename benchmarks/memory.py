"""Peak memory of ``medgrid train`` and ``medgrid evaluate`` at 28, 64, 128 and 224 px, against the data's bytes.

    python benchmarks/memory.py                              # 1 GiB of images per size, 1 thread
    python benchmarks/memory.py --mib 600 --sizes 224 --threads 2 --json benchmarks/out/memory-224.json

What is measured: for each size in turn, two PathMNIST-shaped files (3 channels, 9 classes, random uint8
images written with numpy's savez_compressed, as MedMNIST's files and tests/conftest.py's helper are): a full
one holding about ``--mib`` MiB of images split 50 / 10 / 40 % into train / val / test, and a one-batch one
holding one batch of each kind the commands use (train: one training batch; val: one prediction batch;
test: one attack or prediction batch, whichever is larger). On each file one process each runs

    medgrid train    --arch cnn-small --norm none --epochs 1 --batch-size 128        (loads train + val)
    medgrid evaluate --attack-norm linf --attack-eps 2/255 --attack-steps 1 --batch-size 128   (loads test)

and its peak resident memory is what the process reports as it ends (its VmHWM in /proc/self/status); on
CUDA the process also reports ``torch.cuda.max_memory_allocated``. The one-batch run's peak is the fixed
overhead (Python, torch, the model, one batch of each kind); per size and command the table gives the data
the full run loads, its peak, that overhead and

    marginal = (peak - overhead) / (data - one-batch data)      memory per further byte of data

1.0 is the data held once; medgrid's bound is 1.5, i.e. peak <= overhead + 1.5 x data. The marginal figure
is an upper estimate: it also holds what the memory allocator keeps over many batches (glibc's heap grows over
the first tens of small-image batches) and run-to-run jitter of the peak (some 50 MiB on this project's
machine, from the prediction batches), which is why the full file is large. Prints a table and writes JSON
(default benchmarks/out/memory.json). Sizes run one at a time and each file is deleted before the next is
written, so the machine needs about 2 x --mib MiB free beside the overhead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = (28, 64, 128, 224)
SPLITS = {"train": 0.5, "val": 0.1, "test": 0.4}
CHANNELS, CLASSES = 3, 9  # PathMNIST's
BATCH = 128  # training and attack batch
BOUND = 1.5
# runs `medgrid ARGS` in this process, then reports its peak resident memory (VmHWM: the wait4 figure of a
# child also counts what its parent held when it was spawned) and the CUDA peak, if CUDA was used
CHILD = ("import sys\nfrom medgrid.cli import main\ncode = main(sys.argv[1:])\nimport torch\n"
         "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')]\n"
         "print('vmhwm-kib', hwm[0], file=sys.stderr)\n"
         "if torch.cuda.is_initialized():\n"
         "    print('cuda-peak', torch.cuda.max_memory_allocated(), file=sys.stderr)\nsys.exit(code)")


def predict_batch(size: int) -> int:
    """medgrid's default prediction batch at ``size`` px (medgrid.evaluation.predict.default_batch_size)."""
    sys.path.insert(0, str(REPO))
    from medgrid.evaluation.predict import PIXELS_PER_BATCH

    return max(1, PIXELS_PER_BATCH // (size * size))


def write_file(folder: Path, size: int, counts: dict[str, int], seed: int = 0) -> int:
    """``{folder}/pathmnist[_size].npz`` with ``counts`` images per split; returns the bytes of its images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size, CHANNELS), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % CLASSES).astype(np.uint8).reshape(-1, 1)
    name = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
    np.savez_compressed(folder / name, **arrays)
    return sum(a.nbytes for k, a in arrays.items() if k.endswith("_images"))


def run(argv: list[str], log: Path) -> dict:
    """One process running ``medgrid argv``: its peak RSS (bytes), CUDA peak (bytes or None), wall seconds."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-c", CHILD, *argv], stdout=out, stderr=subprocess.STDOUT, env=env,
                              cwd=REPO, check=False).returncode
    wall = time.perf_counter() - start
    text = log.read_text()
    if code != 0:
        raise SystemExit(f"medgrid {' '.join(argv)} failed ({code}); its output:\n{text[-3000:]}")
    hwm = [int(line.split()[1]) for line in text.splitlines() if line.startswith("vmhwm-kib ")]
    cuda = [int(line.split()[1]) for line in text.splitlines() if line.startswith("cuda-peak ")]
    return {"peak_rss": hwm[-1] * 1024, "cuda_peak": cuda[-1] if cuda else None, "wall_s": round(wall, 1)}


def commands(folder: Path, size: int, args) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """name -> (medgrid argv, the splits it loads)."""
    model = folder / "model.pt"
    common = ["--data", str(folder / f"pathmnist_{size}.npz" if size != 28 else folder / "pathmnist.npz"), "--threads", str(args.threads), "--device", args.device,
              "--data-on", args.data_on]
    return {
        "train": (["train", "--task", "pathmnist", "--size", str(size), "--arch", "cnn-small", "--norm", "none",
                   "--eps", "0", "--epochs", "1", "--batch-size", str(BATCH), "--out", str(model), *common],
                  ("train", "val")),
        "evaluate": (["evaluate", "--checkpoint", str(model), "--out", str(folder / "eval.parquet"),
                      "--attack-norm", "linf", "--attack-eps", "2/255", "--attack-steps", "1",
                      "--batch-size", str(BATCH), *common], ("test",)),
    }


def measure(size: int, work: Path, args) -> list[dict]:
    per_image = size * size * CHANNELS
    n = max(1, round(args.mib * 2**20 / per_image))
    full = {split: max(1, round(n * share)) for split, share in SPLITS.items()}
    p = predict_batch(size)
    one = {"train": BATCH, "val": p, "test": max(BATCH, p)}
    found = {}
    for label, counts in (("one batch", one), ("full", full)):
        folder = work / f"{size}-{label.replace(' ', '-')}"
        write_file(folder, size, counts)
        for name, (argv, loads) in commands(folder, size, args).items():
            res = run(argv, folder / f"{name}.log")
            res["data_bytes"] = sum(counts[s] for s in loads) * per_image
            res["images"] = {s: counts[s] for s in loads}
            found[label, name] = res
            print(f"  {size:>3} px {name:<8} {label:<9} {res['data_bytes'] / 2**20:8.1f} MiB of data, peak "
                  f"{res['peak_rss'] / 2**20:8.1f} MiB ({res['wall_s']} s)", flush=True)
        shutil.rmtree(folder)
    rows = []
    for name in ("train", "evaluate"):
        f, o = found["full", name], found["one batch", name]
        extra = f["data_bytes"] - o["data_bytes"]
        row = {"size": size, "command": name, "data_bytes": f["data_bytes"], "peak_rss": f["peak_rss"],
               "overhead_rss": o["peak_rss"], "marginal": (f["peak_rss"] - o["peak_rss"]) / extra,
               "peak_over_data": f["peak_rss"] / f["data_bytes"], "cuda_peak": f["cuda_peak"],
               "images": f["images"], "wall_s": f["wall_s"],
               "one_batch": {k: o[k] for k in ("data_bytes", "peak_rss", "cuda_peak", "images", "wall_s")}}
        if f["cuda_peak"] is not None:
            row["overhead_cuda_peak"] = o["cuda_peak"]
            row["cuda_marginal"] = (f["cuda_peak"] - o["cuda_peak"]) / extra
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    cuda = any(r["cuda_peak"] is not None for r in rows)
    head = (f"{'size':>4}  {'command':<8} {'data MiB':>9} {'peak MiB':>9} {'overhead MiB':>13} {'marginal':>9} "
            f"{'peak/data':>9}" + ("  cuda peak MiB  cuda overhead MiB  cuda marginal" if cuda else "")
            + "  peak <= overhead + 1.5 x data")
    lines = [head, "-" * len(head)]
    for r in rows:
        line = (f"{r['size']:>4}  {r['command']:<8} {r['data_bytes'] / 2**20:>9.1f} {r['peak_rss'] / 2**20:>9.1f} "
                f"{r['overhead_rss'] / 2**20:>13.1f} {r['marginal']:>9.2f} {r['peak_over_data']:>9.2f}")
        if cuda:
            line += (f"  {(r['cuda_peak'] or 0) / 2**20:>13.1f}  {(r.get('overhead_cuda_peak') or 0) / 2**20:>17.1f}"
                     f"  {r.get('cuda_marginal', math.nan):>13.2f}")
        lines.append(line + f"  {'yes' if r['marginal'] <= BOUND else 'NO'}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=float, default=1024, help="MiB of images in each size's full file (default 1024)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the commands (default 1)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--data-on", default="auto", choices=("auto", "device", "host"))
    ap.add_argument("--workdir", type=Path, default=None, help="where the files go (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "memory.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medgrid-memory-", dir=args.workdir))
    rows = []
    try:
        for size in args.sizes:
            rows += measure(size, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    import torch

    meta = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "threads": args.threads, "device": args.device, "data_on": args.data_on, "mib": args.mib,
            "batch_size": BATCH, "bound": BOUND}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

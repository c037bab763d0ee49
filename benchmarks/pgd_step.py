"""Benchmark of one PGD step: the pure-PyTorch reference vs the fused op vs a bandwidth floor.

    python benchmarks/pgd_step.py                       # CPU, float32, 2 torch threads
    python benchmarks/pgd_step.py --threads 1 --runs 50
    python benchmarks/pgd_step.py --device cuda --dtype bfloat16 --json $OUT/pgd_step_bf16.json

What is measured, per shape and norm (L-inf and L2):
- reference: medgrid.ops.pgd_step_reference (eager PyTorch, several kernels and temporaries);
- fused:     torch.ops.medgrid.pgd_step (the compiled op; allocates its output, as in use);
- floor:     torch.addcmul(x, x_adv, grad, out=buf): one read each of x, x_adv and grad and one
             write of the same size, the least memory traffic any step can have, with trivial
             arithmetic; its output is preallocated. L-inf can reach it (one pass); L2 reads the
             inputs twice per sample (its sums, then the write), the second time from cache
             when a sample fits.
Each figure is the median of --runs timed calls (>= 20) after --warmup untimed calls:
- hot:  back-to-back calls on the same inputs (they stay in cache when they fit);
- cold: before each timed call the caches are flushed by writing a buffer of --flush-mb MB
        (default 4x the last-level cache on CPU, 4x the L2 on CUDA); only the call is timed.
Inputs are allocated and written once, before any timing (no page faults inside the timed
region). The op's own output allocation is timed (glibc reuses the freed block after warm-up,
and CUDA's caching allocator never returns to the driver). So are the reference's temporaries:
with glibc's default settings freeing them trims the heap and each reference call page-faults
them back in (2.6x slower at 256x3x28x28 L-inf); run with MALLOC_TRIM_THRESHOLD_=1073741824
MALLOC_MMAP_THRESHOLD_=1073741824 to time the reference without that. The header and the JSON
(malloc_env) record the settings. CPU times use perf_counter around
one call; CUDA times use CUDA events around one call on the current stream.
GB/s counts 4 tensors (3 reads, 1 write) per step for every method, so it compares directly
with the floor. "hot min" is the fastest hot run (the table's other times are medians); on a
shared, oversubscribed machine it shows what the code can do when not descheduled. Prints a table and writes JSON (--json, default benchmarks/out/pgd_step.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medgrid import ops  # noqa: E402

SHAPES = [(256, 1, 28, 28), (256, 3, 28, 28), (128, 3, 64, 64), (32, 3, 224, 224)]
NORMS = {"linf": (8 / 255, 2 / 255), "l2": (0.5, 0.1)}  # (eps, alpha)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}


def llc_bytes() -> int:
    """Largest CPU cache from sysfs (the last-level cache), 32 MiB if unknown."""
    best = 0
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}.get(size[-1], 1)
        best = max(best, int(size.rstrip("KMG")) * mult)
    return best or 32 * 1024 ** 2


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class Timer:
    def __init__(self, device: torch.device, flush_bytes: int):
        self.device = device
        self.flush = torch.empty(flush_bytes // 4, dtype=torch.float32, device=device)
        self.flush.fill_(1.0)  # touch every page now, not inside a timed run

    def flush_caches(self):
        self.flush.add_(1.0)  # reads and writes the whole buffer
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time_once(self, fn) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) * 1e-3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def measure(self, fn, *, runs: int, warmup: int, cold: bool) -> list[float]:
        for _ in range(warmup):
            fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        times = []
        for _ in range(runs):
            if cold:
                self.flush_caches()
            times.append(self.time_once(fn))
        return times


def make_inputs(shape, dtype, device, eps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    x_adv = (x + (torch.rand(shape, generator=gen) * 2 - 1) * eps).clamp_(0, 1)
    grad = torch.randn(shape, generator=gen)
    return tuple(t.to(device=device, dtype=dtype).contiguous() for t in (x_adv, grad, x))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU kernel threads)")
    p.add_argument("--runs", type=int, default=30, help="timed calls per figure (>= 20)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--flush-mb", type=float, default=None,
                   help="cache-flush buffer in MB (default 4x LLC on CPU, 4x L2 on CUDA)")
    p.add_argument("--norms", default="linf,l2")
    p.add_argument("--json", default=str(Path(__file__).resolve().parent / "out" / "pgd_step.json"))
    args = p.parse_args(argv)
    if args.runs < 20:
        p.error("--runs must be >= 20")
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    for n in norms:
        if n not in NORMS:
            p.error(f"unknown norm {n!r} (linf, l2)")

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("pgd_step benchmark: --device cuda but no GPU is visible", file=sys.stderr)
            return 2
        props = torch.cuda.get_device_properties(device)
        device_name = props.name
        cache = int(getattr(props, "L2_cache_size", 0) or 50 * 1024 ** 2)
    else:
        device_name = cpu_name()
        cache = llc_bytes()
    flush_bytes = int(args.flush_mb * 1024 ** 2) if args.flush_mb else max(4 * cache, 64 * 1024 ** 2)
    dtype = DTYPES[args.dtype]
    fused_ok = device.type in ops._KERNEL_DEVICES
    if not fused_ok:
        print(f"note: no fused kernel for {device.type} ({ops._IMPORT_ERROR or 'extension built without it'}); "
              "only reference and floor are timed", file=sys.stderr)

    timer = Timer(device, flush_bytes)
    # glibc's allocator settings: with its defaults, freeing the eager reference's MB-sized
    # temporaries trims the heap, so every reference call page-faults them back in (the fused op
    # allocates only its output). MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_ set high remove that.
    malloc_env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")}
    meta = {
        "device": device.type, "device_name": device_name, "dtype": args.dtype,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "runs": args.runs, "warmup": args.warmup, "statistic": "median seconds per call",
        "flush_bytes": flush_bytes, "cache_bytes": cache, "build_info": ops.build_info(),
        "floor": "torch.addcmul(x, x_adv, grad, out=preallocated): 3 reads + 1 write",
        "bytes_counted": "4 tensors (3 reads + 1 write) per call",
        "python": platform.python_version(), "host": platform.node(),
        "malloc_env": malloc_env,
    }
    print(f"pgd_step benchmark: device={device.type} ({device_name}), dtype={args.dtype}, "
          f"torch threads={torch.get_num_threads()}, torch {torch.__version__}, "
          f"median of {args.runs} runs after {args.warmup} warm-up, cold = caches flushed with "
          f"{flush_bytes / 2**20:.0f} MB before each run; inputs preallocated; "
          f"glibc malloc settings: {malloc_env or 'defaults'}")
    header = (f"{'shape':>16} {'norm':>4} {'method':>9} {'hot us':>9} {'cold us':>9} {'hot min':>9} "
              f"{'hot GB/s':>8} {'cold GB/s':>9} {'vs ref hot/cold':>16}")
    print(header)
    print("-" * len(header))

    rows = []
    for shape in SHAPES:
        for norm in norms:
            eps, alpha = NORMS[norm]
            x_adv, grad, x = make_inputs(shape, dtype, device, eps)
            floor_out = torch.empty_like(x)
            nbytes = 4 * x.numel() * x.element_size()
            methods = {
                "reference": lambda: ops.pgd_step_reference(x_adv, grad, x, norm=norm, eps=eps, alpha=alpha),
                "floor": lambda: torch.addcmul(x, x_adv, grad, out=floor_out),
            }
            if fused_ok:
                methods["fused"] = lambda: torch.ops.medgrid.pgd_step.default(x_adv, grad, x, norm, eps, alpha, False)
                # the figure is only meaningful if the op is right: check against the reference once
                out, ref = methods["fused"](), methods["reference"]()
                if norm == "linf":
                    assert torch.equal(out, ref), f"fused != reference at {shape} {norm}"
                else:
                    tol = 1e-5 if dtype in (torch.float32, torch.float64) else 1e-2
                    torch.testing.assert_close(out, ref, atol=tol, rtol=0)
            res = {}
            for name in ("reference", "fused", "floor"):
                if name not in methods:
                    continue
                hot = timer.measure(methods[name], runs=args.runs, warmup=args.warmup, cold=False)
                cold = timer.measure(methods[name], runs=args.runs, warmup=1, cold=True)
                res[name] = {"hot_s": statistics.median(hot), "cold_s": statistics.median(cold),
                             "hot_min_s": min(hot), "cold_min_s": min(cold)}
            for name, r in res.items():
                ref = res["reference"]
                row = {"shape": list(shape), "norm": norm, "method": name, "bytes": nbytes, **r,
                       "hot_gbps": nbytes / r["hot_s"] / 1e9, "cold_gbps": nbytes / r["cold_s"] / 1e9,
                       "speedup_hot": ref["hot_s"] / r["hot_s"], "speedup_cold": ref["cold_s"] / r["cold_s"]}
                rows.append(row)
                print(f"{'x'.join(map(str, shape)):>16} {norm:>4} {name:>9} {r['hot_s'] * 1e6:9.1f} "
                      f"{r['cold_s'] * 1e6:9.1f} {r['hot_min_s'] * 1e6:9.1f} {row['hot_gbps']:8.2f} "
                      f"{row['cold_gbps']:9.2f} {row['speedup_hot']:7.2f}x/{row['speedup_cold']:.2f}x")
            del x_adv, grad, x, floor_out

    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    os.replace(tmp, out_path)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

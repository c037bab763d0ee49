"""``medgrid info``: what a job here would run on (:mod:`medgrid.cli.runtime`'s report), as text or JSON, with a
check for scripts and environment builds (``--require-cuda``).

torch and its CUDA, the GPUs torch sees, what the compiled extension holds (CPU and CUDA kernels, the GPU
targets of its device code, OpenMP threads), what the fused PGD step would do on each device (fused, the
reference, or the one-line error of a GPU without CUDA kernels), which device a job would use and where it
would hold its images.
"""

from __future__ import annotations

import json
import sys

from medgrid.cli import runtime
from medgrid.cli.base import resolve_device
from medgrid.errors import UserError
from medgrid.names import DATA_ON, DEVICES, TASKS


def add_arguments(p) -> None:
    p.add_argument("--device", choices=DEVICES, default="auto", help="the device a job would be given (--device)")
    p.add_argument("--task", default=None, help="with --size: where a job would hold this task's images")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--data-on", choices=DATA_ON, default="auto", help="a job's --data-on")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--require-cuda", action="store_true",
                   help="exit 2 unless the extension has CUDA kernels and every visible GPU runs one of them")


def run(args) -> None:
    if (args.task is None) != (args.size is None):
        raise UserError("--task and --size go together")
    if args.task is not None:
        from medgrid.data import tasks

        if args.task not in TASKS:
            tasks.task_info(args.task)  # says why (unknown, multi-label, 3D)
            raise UserError(f"unknown task {args.task!r}")
        tasks.check_size(args.task, args.size)
    device = resolve_device(args.device)
    report = runtime.collect(device)
    report["data"] = runtime.placement(device, args.task, args.size, args.data_on)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(runtime.lines(report) + report["data"]))
    sys.stdout.flush()
    if args.require_cuda:
        ext = report["extension"]
        if ext is None or "cuda" not in ext["kernels"]:
            from medgrid import ops

            raise UserError("--require-cuda: " + ops.missing_kernel("cuda"))
        missing = [g["name"] for g in report["gpus"] if not g["runs"]]
        if missing:
            raise UserError(f"--require-cuda: medgrid._C has no kernel image for {', '.join(missing)} (GPU code: "
                            f"{', '.join(ext['gpu_targets'])}); rebuild with TORCH_CUDA_ARCH_LIST including its "
                            "compute capability")

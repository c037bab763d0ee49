"""What this process runs on: torch and its CUDA, the GPUs torch sees, what the compiled extension holds (CPU and
CUDA kernels, the GPU targets of its device code read from the library itself, OpenMP threads), what the fused
PGD step would do on each device, the device, and where a job would hold its images.

``medgrid info`` prints it (:mod:`medgrid.cli.info`); every computing command prints :func:`header` at the top
of its log (:func:`medgrid.cli.base.pick_device`). It exists because the expensive mistake is silent: a GPU job
on a CPU-only build, or on a CPU-only torch, still finishes, only slower.
"""

from __future__ import annotations

import os
import platform


def _gpus(targets) -> list[dict]:
    import torch

    from medgrid import fatbin

    gpus = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        props = torch.cuda.get_device_properties(index)
        capability = (props.major, props.minor)
        gpus.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gib": round(props.total_memory / 2**30, 1),
                     "runs": fatbin.runs_on(targets, capability) if targets else None})
    return gpus


def collect(device: str) -> dict:
    """The report as a dict (``--json`` prints it): versions, GPUs, the extension, the op's plan per device."""
    import torch

    from medgrid import __version__, fatbin, ops

    build = ops.build_info()
    targets = fatbin.targets(ops.library_path())
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return {
        "medgrid": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_visible_devices": visible, "gpus": _gpus(targets),
        "extension": None if build is None else {
            "path": ops.library_path(), "kernels": sorted(ops.compiled_devices()),
            "gpu_targets": [str(t) for t in targets], "openmp": bool(build.get("openmp")),
            "omp_max_threads": build.get("omp_max_threads"), "torch_threads": torch.get_num_threads()},
        "pgd_step": {dev: dict(zip(("choice", "why"), ops.plan(dev))) for dev in ("cpu", "cuda")},
        "device": device,
    }


def placement(device: str, task: str | None, size: int | None, data_on: str) -> list[str]:
    """Where a job on ``device`` would hold its images: the rule, and for a task and size its splits' choice."""
    from medgrid.data import placement as where

    if device == "cpu":
        return ["data: on the CPU the images stay in host memory"]
    free = where.free_device_memory(device)
    out = [(f"data (--data-on {data_on}): auto puts the images on {device} when they take at most "
            f"{where.DEVICE_FRACTION:.0%} of its free memory ({free / 2**30:.1f} GiB free now), else in pinned "
            "host memory with each batch copied over")]
    if task is not None and size is not None:
        from medgrid import catalog

        images = catalog.split_images(task)
        for job, splits in (("train", ("train", "val")), ("evaluate", ("test",))):
            nbytes = sum(images[s] for s in splits) * size * size * catalog.channels(task)
            out.append(f"  {job} {task} at {size} px: "
                       + where.describe(where.choose(nbytes, device, data_on, free_bytes=free), nbytes, device,
                                        data_on))
    return out


def lines(report: dict) -> list[str]:
    """The report as text: versions, device, extension and the op's plan (the job-log header)."""
    cuda = report["torch_cuda"] or "none: a CPU build"
    out = [f"medgrid {report['medgrid']} | torch {report['torch']} (CUDA {cuda}) | python {report['python']}"]
    for gpu in report["gpus"]:
        runs = gpu["runs"] or "NOTHING: no kernel image for this GPU in medgrid._C"
        out.append(f"gpu {gpu['index']}: {gpu['name']} (compute capability {gpu['capability']}, "
                   f"{gpu['memory_gib']} GiB); medgrid's kernels for it: {runs}")
    visible = report["cuda_visible_devices"]
    if visible not in (None, "", "-1") and not report["gpus"]:
        why = "a CPU-only torch" if not report["torch_cuda"] else "no usable GPU or driver"
        out.append(f"medgrid: warning: CUDA_VISIBLE_DEVICES={visible} but torch sees no GPU ({why}): "
                   "this job runs on the CPU")
    ext = report["extension"]
    if ext is None:
        out.append("extension medgrid._C: not built")
    else:
        gpu_code = ", ".join(ext["gpu_targets"]) or "none"
        out.append(f"extension medgrid._C: kernels {', '.join(ext['kernels'])}; GPU code {gpu_code}; "
                   f"OpenMP {'on' if ext['openmp'] else 'off'}, {ext['torch_threads']} threads")
    for dev, step in report["pgd_step"].items():
        if step["choice"] == "error":
            text = ("NO CUDA KERNEL: a GPU job stops with an error (rebuild where nvcc is found, or set "
                    "MEDGRID_FUSED=0 for the PyTorch reference)")
        else:
            text = {"fused": "fused kernel", "reference": "PyTorch reference"}[step["choice"]]
            text += f" ({step['why']})" if step["why"] else ""
        out.append(f"pgd_step on {dev}: {text}")
    out.append(f"device: {report['device']}")
    return out


def header(device: str) -> str:
    """The job-log header: :func:`lines` of this process, each prefixed "medgrid info: "."""
    return "\n".join("medgrid info: " + line for line in lines(collect(device)))

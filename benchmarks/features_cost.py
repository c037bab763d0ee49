"""Side-by-side cost of the D_rand / D_det construction: the layout and batch size before and after issue 22.

    python benchmarks/features_cost.py [--task synthetic] [--images 1000] [--steps 10] [--rounds 3]

One process, one thread, one model (a cnn-small trained for --epochs on the synthetic task, or --checkpoint),
the same images and targets: ``medgrid.features.nonrobust.nonrobust`` as it was (NCHW, batches of 500) and as it
is (channels-last on CPU, :func:`medgrid.features.dataset.attack_layout`) at several batch sizes, in alternating
order over --rounds, timed by the process's CPU time (time.process_time: time spent descheduled on a shared
machine does not count). The table gives, per variant, the best and median CPU milliseconds per image and step
and the ratio of the best to the old one's best; and how many uint8 pixels of the written dataset and how many
attack outcomes differ from the old layout's (float rounding: the same attack). Writes JSON (--json, default
benchmarks/out/features_cost.json). Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from medgrid import checkpoint
from medgrid.data import loading, prepare
from medgrid.features import nonrobust as construction
from medgrid.training import loop

HERE = Path(__file__).resolve().parent


@contextlib.contextmanager
def old_layout(model, device):
    """The construction before issue 22: the model and its batches as they are (NCHW)."""
    yield lambda x: x


def variants(batch_sizes):
    yield "NCHW, batch 500 (before)", old_layout, 500
    for b in batch_sizes:
        yield f"channels-last, batch {b}", None, b


def run_once(model, split, layout, batch, steps, n_classes):
    if layout is not None:
        construction.attack_layout, saved = layout, construction.attack_layout
    try:
        t0 = time.process_time()
        images, _, success = construction.nonrobust(model, split, n_classes, mode="rand", norm="l2", eps=0.5,
                                                    step_size=0.1, steps=steps, seed=0, batch_size=batch,
                                                    progress=False)
        return time.process_time() - t0, images, success["rounded"]
    finally:
        if layout is not None:
            construction.attack_layout = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="synthetic")
    p.add_argument("--checkpoint", type=Path, default=None, help="a standard model (default: train one)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--images", type=int, default=1000, help="training images attacked per run")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-sizes", default="128,250,500")
    p.add_argument("--json", type=Path, default=HERE / "out" / "features_cost.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = HERE / "out" / f"{args.task}.npz"
    if not data.exists():
        prepare.prepare(args.task, 28, data, data_seed=0)
    ds = loading.load(args.task, 28, data)
    if args.checkpoint is None:
        model, _ = loop.train(ds, arch="cnn-small", norm="none", eps=0.0, seed=0, progress=False,
                              hp=loop.HParams(epochs=args.epochs))
    else:
        model, _ = checkpoint.load(args.checkpoint)
    split = loading.Split(ds.train.images[:args.images], ds.train.labels[:args.images])
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    times, outputs = {}, {}
    for r in range(args.rounds):
        order = list(variants(batch_sizes))
        for name, layout, batch in (order if r % 2 == 0 else order[::-1]):
            seconds, images, success = run_once(model, split, layout, batch, args.steps, ds.info.n_classes)
            times.setdefault(name, []).append(seconds / (args.images * args.steps) * 1e3)
            outputs[name] = (images, success)
    old_name = next(iter(variants(batch_sizes)))[0]
    old_best = min(times[old_name])
    ref_images, ref_success = outputs[old_name]
    rows = []
    for name, ms in times.items():
        images, success = outputs[name]
        rows.append({"variant": name, "best_ms_per_image_step": min(ms), "median_ms_per_image_step":
                     statistics.median(ms), "ratio_best_to_before": min(ms) / old_best,
                     "pixels_differing": int((images != ref_images).sum()), "pixels": int(images.numel()),
                     "outcomes_differing": int((success != ref_success).sum())})
    print(f"{args.task}, {args.images} images x {args.steps} L2 steps, cnn-small, 1 thread, {args.rounds} rounds "
          f"(CPU time)")
    print(f"{'variant':<28} {'best ms':>8} {'median':>8} {'ratio':>6} {'pixels differing':>18} {'outcomes':>9}")
    for r in rows:
        print(f"{r['variant']:<28} {r['best_ms_per_image_step']:8.3f} {r['median_ms_per_image_step']:8.3f} "
              f"{r['ratio_best_to_before']:6.2f} {r['pixels_differing']:>10}/{r['pixels']:<7} "
              f"{r['outcomes_differing']:>9}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"task": args.task, "images": args.images, "steps": args.steps,
                                     "rounds": args.rounds, "machine": platform.processor() or platform.machine(),
                                     "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

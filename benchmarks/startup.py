"""Start-up time of the ``medgrid`` command line: this tree against another revision, side by side.

    python benchmarks/startup.py                      # against HEAD~1 (e.g. before a change), 15 rounds
    python benchmarks/startup.py --baseline 8a51126 --rounds 21 --json benchmarks/out/startup.json

What is measured: a fresh ``python`` process running ``medgrid <args>`` (``main()`` of
``medgrid.cli``, as the console script does) until it exits, for each command in COMMANDS, in each
tree. The baseline revision is checked out into a temporary git worktree and imported from there
(``sys.path``); the compiled extension ``medgrid/_C*.so`` of this tree is copied into it, so both load
the same library. Rounds interleave the trees and commands (tree A, tree B, next command...), so load
on a noisy machine hits both alike. Reported per command and tree: the median wall time and the median
CPU time (user + system of the child, from ``getrusage``), and the baseline / this-tree ratio of the
medians. ``--help`` and an argument mistake are what every Snakemake job and every user typo pays
before any work starts. Prints a table and writes JSON (default benchmarks/out/startup.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "medgrid --help": ["--help"],
    "medgrid aggregate --help": ["aggregate", "--help"],
    "medgrid train --help": ["train", "--help"],
    "medgrid train (bad --task)": ["train", "--task", "nope", "--arch", "cnn-small", "--norm", "none",
                                   "--out", "/nonexistent/x.pt", "--data", "/nonexistent/x.npz"],
}
RUNNER = ("import sys; sys.path.insert(0, sys.argv[1]); from medgrid.cli import main; "
          "code = main(sys.argv[2:]); sys.exit(code)")


def run_once(tree: Path, argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one process running ``medgrid argv`` from ``tree``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUNNER, str(tree), *argv], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir(), check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def worktree(rev: str, dest: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(dest), rev], check=True,
                   capture_output=True)
    for lib in (REPO / "medgrid").glob("_C*.so"):
        shutil.copy2(lib, dest / "medgrid" / lib.name)
    return dest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="HEAD~1", help="git revision to compare with (default HEAD~1)")
    ap.add_argument("--rounds", type=int, default=15, help="timed runs per command and tree (median reported)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "startup.json")
    args = ap.parse_args()
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], check=True,
                         capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="medgrid-startup-"))
    try:
        trees = {f"baseline {rev}": worktree(rev, tmp / "baseline"), "this tree": REPO}
        times = {(t, c): {"wall": [], "cpu": []} for t in trees for c in COMMANDS}
        for name, tree in trees.items():  # warm the page cache and the .pyc files once
            for argv in COMMANDS.values():
                run_once(tree, argv)
        for _ in range(args.rounds):
            for command, argv in COMMANDS.items():
                for name, tree in trees.items():
                    wall, cpu = run_once(tree, argv)
                    times[(name, command)]["wall"].append(wall)
                    times[(name, command)]["cpu"].append(cpu)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "baseline")],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)

    base_name, this_name = list(trees)
    print(f"medgrid start-up, {args.rounds} rounds, medians; python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    header = f"{'command':30s} {'tree':18s} {'wall s':>8s} {'cpu s':>8s}"
    print(header + f" {'baseline/this':>14s}")
    print("-" * (len(header) + 15))
    rows = []
    for command in COMMANDS:
        med = {t: {k: statistics.median(v) for k, v in times[(t, command)].items()} for t in trees}
        ratio = med[base_name]["wall"] / med[this_name]["wall"]
        for t in trees:
            extra = f" {ratio:14.1f}x" if t == this_name else ""
            print(f"{command:30s} {t:18s} {med[t]['wall']:8.3f} {med[t]['cpu']:8.3f}{extra}")
            rows.append({"command": command, "tree": t, "wall_s_median": med[t]["wall"],
                         "cpu_s_median": med[t]["cpu"], "wall_s": times[(t, command)]["wall"],
                         "cpu_s": times[(t, command)]["cpu"]})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"baseline": rev, "rounds": args.rounds, "python": platform.python_version(),
                                     "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

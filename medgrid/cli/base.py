"""What every command shares: the one-line-error parser, option groups, and the set-up a command does
before its work (threads, device, output folders)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from medgrid.errors import UserError
from medgrid.names import DATA_ON, DEVICES
from medgrid.ranges import arg


class Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line (exit 2) instead of usage + message."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--threads and --device."""
    p.add_argument("--threads", type=arg("threads"), default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when torch sees a GPU")


def add_data_options(p: argparse.ArgumentParser, *, data_help: str) -> None:
    """--data FILE, then --threads, --device and --data-on: the options of commands that load data and models."""
    p.add_argument("--data", type=Path, required=True, metavar="FILE", help=data_help)
    add_runtime_options(p)
    p.add_argument("--data-on", choices=DATA_ON, default="auto",
                   help="where a GPU run holds the images: device memory, or pinned host memory with batches "
                        "streamed to the GPU; auto: on the device when they take at most half of its free memory")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads, when given."""
    if threads is None:
        return
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def resolve_device(name: str) -> str:
    """"auto" -> cuda when torch sees a GPU, else cpu; "cuda" without a GPU is a user error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but torch sees no GPU")
    return name


def pick_device(name: str) -> str:
    """The device of a computing command (:func:`resolve_device`), announced at the top of its log with what
    it runs on (``medgrid info``'s report, once per process): a GPU job on a CPU-only build shows."""
    device = resolve_device(name)
    log_runtime(device)
    return device


_logged = False


def log_runtime(device: str) -> None:
    """Print ``medgrid info``'s short report (versions, GPUs, the extension's kernels) once per process."""
    global _logged
    if not _logged:
        _logged = True
        from medgrid.cli import runtime

        print(runtime.header(device), flush=True)


def warn_if_other_data(ds, settings, checkpoint) -> None:
    """A warning line when the task's data file is not the one a model trained on the task's data saw (its
    sha256 differs): another download, another prepare-data seed, an edited file."""
    if settings.get("train_data", "original") == "original" and settings.get("data_sha256") \
            and settings["data_sha256"] != ds.sha256:
        print(f"medgrid: warning: {ds.path} differs from the data {checkpoint} was trained on "
              f"(sha256 {ds.sha256[:12]} != {settings['data_sha256'][:12]})", file=sys.stderr)


def check_writable(*paths: Path | None) -> None:
    """Fail before hours of work if an output cannot be written: it is an existing folder, two outputs are one
    file, or its folder cannot be made (a file in the way) or written to (None: no such output). Creates
    nothing: the outputs' folders are made when they are written."""
    given = [Path(p) for p in paths if p is not None]
    if len(set(given)) != len(given):
        raise UserError(f"two outputs are the same file: {', '.join(map(str, given))}")
    for path in given:
        if path.is_dir():
            raise UserError(f"output {path} is an existing folder; name a file")
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise UserError(f"cannot create output folder {path.parent}: {ancestor} is a file")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UserError(f"output folder {ancestor} is not writable")


def at_least(value: int, minimum: int, option: str) -> int:
    """An integer option's value, or a UserError naming the option."""
    if value < minimum:
        raise UserError(f"{option} must be >= {minimum}, got {value}")
    return value

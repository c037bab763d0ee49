"""Write-then-rename, so an interrupted job never leaves a half-written output behind.

Each output is written to a hidden temp file beside it (``.{name}.XXXX.tmp``) and renamed into place when the
writing block succeeds; on failure the temp files are deleted. Several outputs of one command are staged
together and renamed only when all of them are written (all or nothing). A temp file left by a killed run
(SIGKILL gives no chance to clean up) is removed by the next run of the same output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from medgrid.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stale_temps(path: Path) -> list[Path]:
    """Temp files an earlier, killed write of ``path`` left beside it."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def _stage(path: Path) -> Path:
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in stale_temps(path):
            old.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    return Path(tmp)


@contextlib.contextmanager
def atomic_outputs(*paths):
    """Yield one temp path per output (beside it); when the block succeeds rename them all into place, else
    delete them."""
    paths = [Path(p) for p in paths]
    if len(set(paths)) != len(paths):
        raise UserError(f"two outputs are the same file: {', '.join(map(str, paths))}")
    temps: list[Path] = []
    try:
        for path in paths:
            temps.append(_stage(path))
        yield temps
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temp path beside ``path``; on success rename it over ``path``, on failure delete it."""
    with atomic_outputs(path) as (tmp,):
        yield tmp

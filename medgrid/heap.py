"""Keep the C heap from growing with the data: glibc's fixed mmap threshold.

glibc serves an allocation above its mmap threshold with its own mmap and returns it to the system on free.
The threshold is dynamic: each time such a block is freed, glibc raises the threshold to that block's size
(up to 32 MiB), so later blocks of that size come from the heap, whose freed holes are kept and fragment.
Attacks at 128-224 px free and allocate batch buffers of one to tens of MiB all the time; measured on
``medgrid evaluate`` at 224 px (cnn-small, one thread), the resident peak grew by 2.4 bytes per byte of test
images with the dynamic threshold and by 1.2 with a fixed one of 1 MiB (benchmarks/memory.py; the README's
*Memory*). Setting the threshold explicitly turns the adjustment off. Blocks under 1 MiB (every batch at
28 px) are served as before; a larger one costs an mmap and page faults on first touch, small beside the
convolutions that fill it. Not glibc (macOS, musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 1 << 20  # bytes


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; True when it was set.

    An explicit ``MALLOC_MMAP_THRESHOLD_`` in the environment wins (glibc read it at start-up)."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no libc by that name, or no mallopt: not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1

"""Keep the C heap from growing with large images, at no cost to small ones: glibc's mmap threshold by image size.

glibc serves an allocation above its mmap threshold with its own mmap and returns it to the system on free.
The threshold is dynamic: each time such a block is freed, glibc raises the threshold to that block's size
(up to 32 MiB), so later blocks of that size come from the heap, whose freed holes are kept and fragment.

- At 128-224 px attacks free and allocate batch buffers of one to tens of MiB all the time; measured on
  ``medgrid evaluate`` at 224 px (cnn-small, one thread), the resident peak grew by 2.4 bytes per byte of test
  images with the dynamic threshold and by 1.2 with a fixed one of 1 MiB (benchmarks/memory.py; README,
  *Memory*). Setting the threshold explicitly turns the adjustment off.
- At 28 px every activation of a batch of 128 is a few MiB: with a 1 MiB threshold each one is mmapped,
  page-faulted and unmapped on every batch (one 28-px adversarial epoch: 1.29x the wall time, 3.6x the system
  time), while the dynamic threshold keeps them on the heap, within the memory bound (benchmarks/heap.py).

So :func:`configure` fixes the threshold at :data:`MMAP_THRESHOLD` for images of :data:`FIXED_FROM` px and more
and leaves glibc's dynamic threshold below. It is called where a command reads its images
(medgrid.data.loading), before they are allocated. Not glibc (macOS, musl): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 1 << 20  # bytes
FIXED_FROM = 128  # px: images this large or larger get the fixed threshold


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


def configure(image_size: int) -> bool:
    """The threshold for a command on ``image_size``-px images (see the module doc); True when fixed."""
    return fix_mmap_threshold() if int(image_size) >= FIXED_FROM else False

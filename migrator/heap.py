"""The C heap of a long run: chunk-sized buffers mapped and unmapped, never kept.

glibc raises its mmap threshold each time a mapped block is freed, up to 32 MiB, so after the
first chunk the encoder's chunk-sized buffers (zstd output, sealed chunks, framed reads) come
from the heap; freed by other threads, they stay in the process's arenas. A 512 MiB CSV run
grew to ~500 MiB that way, ~70 MiB above its working set. Fixing the threshold at 1 MiB keeps
such buffers mapped, returned to the system when freed (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD = 1024 * 1024


def map_large_buffers() -> bool:
    """Fix glibc's mmap threshold for this process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))

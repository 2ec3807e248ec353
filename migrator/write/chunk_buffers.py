"""Buffers for the chunks in flight, kept for the next chunks when given back.

A chunk read into fresh memory, framed and sealed into fresh memory pays a page fault and a
zeroed page for every 4 KiB of each, on every chunk: at disk speeds that is a third of the CPU a
chunk costs. Pooled, the memory is faulted in once and reused. The pool holds at most its
capacity (the pipeline's memory budget) in buffers nobody is using; what the jobs in flight hold
is bounded by the budget they reserved, and the pipeline trims the free ones so that both
together stay within its budget.
"""

from __future__ import annotations

import mmap
import threading

from migrator.codec.chunk import sealing_buffer

HUGE_PAGE = 2 * 1024 * 1024  # larger buffers are whole huge pages, smaller ones 64 KiB steps
SMALL_STEP = 64 * 1024


def pooled_size(size: int) -> int:
    """The size of the buffer a request for `size` bytes gets: rounded up so that chunks of
    about the same size share buffers."""
    step = HUGE_PAGE if size > HUGE_PAGE else SMALL_STEP
    return -(-max(size, 1) // step) * step


class BufferPool:
    """take() the smallest free buffer that fits (and is at most twice the size asked, so a
    small chunk does not tie up a large buffer), else a new one; give() it back for reuse.
    Making a new buffer drops the longest-unused free ones while the pool would exceed its
    capacity."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []  # longest unused first
        self._total = 0  # bytes of the buffers made and not dropped

    def take(self, size: int) -> mmap.mmap:
        need = pooled_size(size)
        with self._lock:
            best: mmap.mmap | None = None
            for buffer in self._free:
                if need <= len(buffer) <= 2 * need and (best is None or len(buffer) < len(best)):
                    best = buffer
            if best is not None:
                self._free = [b for b in self._free if b is not best]
                return best
            while self._free and self._total + need > self.capacity:
                self._total -= len(self._free.pop(0))  # unmapped once no view holds it
            self._total += need
        return sealing_buffer(need)

    def give(self, buffer: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buffer)

    def free_bytes(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._free)

    def trim(self, keep: int) -> int:
        """Drop free buffers, longest unused first, until at most `keep` bytes are free; the
        bytes still free."""
        with self._lock:
            free = sum(len(b) for b in self._free)
            while self._free and free > keep:
                dropped = len(self._free.pop(0))  # unmapped once no view holds it
                self._total -= dropped
                free -= dropped
            return free

    def clear(self) -> None:
        """Drop every free buffer (the pipeline is closing)."""
        with self._lock:
            self._total -= sum(len(b) for b in self._free)
            self._free.clear()

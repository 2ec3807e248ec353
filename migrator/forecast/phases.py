"""A progress sink that times a run's phases, so a routing rate is measured on the real engine
(the routing phase of a records run) rather than on a copy of its loop."""

from __future__ import annotations

import time

from migrator.write.reports import ProgressSink


class PhaseClock(ProgressSink):
    """Notes when each phase of each dataset starts, passing every report on to `inner`."""

    def __init__(self, inner: ProgressSink | None = None) -> None:
        self.inner = inner
        self.marks: list[tuple[str, str, float, int]] = []  # dataset, phase, started, bytes
        self.stopped: float | None = None

    def start(self, dataset: str, phase: str, total_bytes: int) -> None:
        self.marks.append((dataset, phase, time.monotonic(), total_bytes))
        if self.inner is not None:
            self.inner.start(dataset, phase, total_bytes)

    def advance(self, nbytes: int) -> None:
        if self.inner is not None:
            self.inner.advance(nbytes)

    def stop(self) -> None:
        """The run is over: its last phase ends now."""
        self.stopped = time.monotonic()

    def rate(self, dataset: str, phase: str) -> float | None:
        """Bytes a second through `phase` of `dataset` (each time it ran, from its start to
        the next phase's); None if it never ran, moved nothing, or has not ended."""
        seconds = 0.0
        nbytes = 0
        for i, (ds, ph, started, total) in enumerate(self.marks):
            if (ds, ph) != (dataset, phase):
                continue
            ended = self.marks[i + 1][2] if i + 1 < len(self.marks) else self.stopped
            if ended is None:
                return None
            seconds += ended - started
            nbytes += total
        return nbytes / seconds if nbytes and seconds > 0 else None

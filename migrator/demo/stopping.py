"""What a `with` block starts, it stops: the emulators and the dry run's stand-ins."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StopsOnExit:
    """Stopped on leaving the `with` block, on an error too, so no emulator outlives its run."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

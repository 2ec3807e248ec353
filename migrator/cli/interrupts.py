"""Ctrl-C that always ends the command.

The first Ctrl-C raises KeyboardInterrupt as usual, so the command unwinds: finished chunks are
committed and leases given back. But an interrupt can land inside a lock's `with` block (CPython
does not guarantee `__exit__` then), leaving a thread pool's internal lock held and its workers,
and so the unwinding and the interpreter's exit, waiting forever. So the first Ctrl-C also starts
a grace period, and a second Ctrl-C or the end of that period ends the process at once. Every
state the command keeps is crash-safe (a kill -9 resumes exactly), so ending early loses nothing.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTED = "migrator: interrupted; run the same command again to resume"
EXIT_INTERRUPTED = 130
GRACE_SECONDS = 15.0


def _force_exit() -> None:
    """End now, with the same last line and exit code as an orderly interrupt."""
    os.write(2, f"\n{INTERRUPTED}\n".encode())
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def interrupts_end_the_command(grace: float = GRACE_SECONDS) -> Iterator[None]:
    """While the command runs, Ctrl-C unwinds it and a second one (or `grace` seconds) ends it.

    Only the main thread may set signal handlers; elsewhere (a command run in-process from a
    thread) and where SIGINT is ignored (a background job) this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        yield
        return
    interrupted = threading.Event()

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if interrupted.is_set():
            _force_exit()
        interrupted.set()
        timer = threading.Timer(grace, _force_exit)
        timer.daemon = True  # runs on while the interpreter joins its other threads at exit
        timer.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        if not interrupted.is_set():
            signal.signal(signal.SIGINT, previous)

"""Ctrl-C ends a command even when unwinding cannot: a thread that never finishes (as a pool
worker left waiting on a lock the interrupt broke) must not keep the process alive."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

from migrator.cli.interrupts import EXIT_INTERRUPTED, INTERRUPTED

STUCK_COMMAND = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from migrator.cli.interrupts import interrupts_end_the_command
    stuck = threading.Event()
    with interrupts_end_the_command(grace=float(sys.argv[1])):
        threading.Thread(target=stuck.wait).start()   # not a daemon: exit would join it
        try:
            print("ready", flush=True)   # inside the try: a Ctrl-C after it is caught below
            while True:
                time.sleep(0.01)
        except KeyboardInterrupt:
            print("unwound", flush=True)
            stuck.wait()   # the unwinding itself hangs, as a pool's shutdown may
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(grace: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK_COMMAND, str(grace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # a background job would inherit SIGINT ignored
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    return proc


def test_a_hung_unwinding_ends_after_the_grace_period() -> None:
    proc = _start(grace=1.0)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED
    assert out == "unwound\n"  # the first Ctrl-C still unwinds in order
    assert err.strip().splitlines()[-1] == INTERRUPTED
    assert time.monotonic() - started >= 1.0


def test_a_second_ctrl_c_ends_at_once() -> None:
    proc = _start(grace=3600.0)
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "unwound\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED
    assert err.strip().splitlines()[-1] == INTERRUPTED

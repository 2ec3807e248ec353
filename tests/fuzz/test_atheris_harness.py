"""A short, fixed coverage-guided run of the atheris harness: any finding fails the test.

Longer runs: `python tests/fuzz/atheris_parsers.py -atheris_runs=1000000 CORPUS_DIR`.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("atheris_parsers.py")
RUNS = 100_000  # about six seconds here; -max_total_time caps a slower machine


@pytest.mark.timeout(120)
def test_atheris_run_finds_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            f"-atheris_runs={RUNS}",
            "-seed=1",  # the same inputs every run: a failure reproduces
            "-max_total_time=30",
            # No per-input alarm: libFuzzer's SIGALRM once ended a run on a loaded machine
            # (exit -14) with nothing found. A hang still fails: the run outlives `timeout`.
            "-timeout=0",
            "-rss_limit_mb=2048",  # an allocation this large is a finding too
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    if "No module named 'atheris'" in proc.stderr:
        pytest.fail("atheris is missing: it is a dev dependency (pip install -e '.[dev]')")
    findings = sorted(p.name for p in tmp_path.iterdir() if p.name != "corpus")
    finished = "Done " in proc.stderr  # libFuzzer ran every input to its end
    # On a loaded machine the process has twice died of SIGALRM after libFuzzer's "Done",
    # while exiting, every input run and nothing found (exit -14): that is the run passing.
    ended = proc.returncode == 0 or (proc.returncode == -signal.SIGALRM and finished)
    assert ended and not findings, (
        f"exit {proc.returncode}, saved {findings}:\n{proc.stderr[-6000:]}"
    )
    assert finished, proc.stderr[-2000:]

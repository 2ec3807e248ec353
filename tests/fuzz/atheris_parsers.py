"""Coverage-guided fuzzing of the parsers in `targets.TARGETS` with atheris (libFuzzer).

    python tests/fuzz/atheris_parsers.py -atheris_runs=100000 [-max_total_time=600] [CORPUS ...]

An input is: one byte choosing the target, one byte of modes, then the bytes. Mode bit 0: the
bytes are an inner payload (a JSON body, a digest spool) that the target's `wrap` seals under the
right key and identity or compresses, so the inner parser sees them; bit 1: the target's `fixup`
recomputes a chunk header's checksum and commitment, so the checks behind them see the damage.
Without a corpus folder, or with an empty one, the seeds of every target start one (in a new
folder if none). An exception other than the format's own errors, or a failed check (an error
not naming the object key, a wrong key that opens), is a finding: libFuzzer saves the input
(`crash-…`, see -artifact_prefix) and exits non-zero.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

import atheris

with atheris.instrument_imports(include=["migrator"]):
    from tests.fuzz.targets import TARGETS, check

WRAP, FIXUP = 1, 2


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    mode, payload = data[1], data[2:]
    if mode & WRAP and target.wrap is not None:
        payload = target.wrap(payload)
    if mode & FIXUP and target.fixup is not None:
        payload = target.fixup(payload)
    check(target, payload)


def write_seeds(folder: Path) -> None:
    for index, target in enumerate(TARGETS):
        inputs = [bytes((index, 0)) + seed for seed in target.seeds]
        inputs += [bytes((index, WRAP)) + body for body in target.bodies]
        for number, data in enumerate(inputs):
            (folder / f"{target.name}-{number}").write_bytes(data)


def main() -> None:
    argv = list(sys.argv)
    folders = [Path(arg) for arg in argv[1:] if not arg.startswith("-")]
    if not folders:
        # libFuzzer adds what it finds to the first folder: keep it to resume from it
        folders = [Path(tempfile.mkdtemp(prefix="migrator-fuzz-corpus-"))]
        argv.append(str(folders[0]))
        print(f"corpus: {folders[0]}", file=sys.stderr)
    if not any(folders[0].iterdir()):
        write_seeds(folders[0])
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

"""A records source whose file name is not UTF-8 is refused at the listing, naming the file."""

from __future__ import annotations

from pathlib import Path

from tests.planfiles import run_cli

PLAN = """\
version: 1
name: names
state_dir: state
keys: {provider: local, kek_file: kek.key}
destination: {kind: local, path: dest}
datasets:
  - {name: p, kind: records, format: jsonl, source: {kind: local, path: src}, key: id, shards: 2}
"""


def test_a_file_name_that_is_not_utf8_is_refused_by_name_before_a_byte_moves(
    tmp_path: Path,
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.jsonl").write_bytes(b'{"id": "1"}\n')
    with open(bytes(src) + b"/caf\xe9.jsonl", "wb") as fh:  # Latin-1, as an old export names it
        fh.write(b'{"id": "2"}\n')
    (tmp_path / "plan.yaml").write_text(PLAN, encoding="utf-8")
    assert run_cli("keys", "init", "kek.key", cwd=tmp_path).returncode == 0
    refused = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert refused.returncode != 0
    assert "internal error" not in refused.stderr
    assert "1 source file name(s) are not valid UTF-8" in refused.stderr
    assert "caf\\udce9.jsonl" in refused.stderr
    assert not list((tmp_path / "dest").rglob("g000001"))  # no byte of data was written
    (src / "caf\udce9.jsonl").rename(src / "cafe.jsonl")  # renamed: the run goes through
    done = run_cli("run", "plan.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

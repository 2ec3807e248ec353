"""The pure pieces of a repair: cutting a chunk's records out of a routed shard, the journal's
round trip (and a journal cut short being no journal), and the operator's lines."""

from __future__ import annotations

from pathlib import Path

import xxhash

from migrator.codec.digests import DIGEST_ENTRY, key_hash
from migrator.errors import MissingObjectError
from migrator.maintain.repair_journal import (
    Journal,
    JournaledChunk,
    JournaledObject,
    journal_dir,
    read_journal,
    write_journal,
)
from migrator.maintain.repair_lines import Refusal, manifest_refusal
from migrator.maintain.repair_source import RoutedShard
from migrator.state.model import CommittedChunk


def routed(records: list[tuple[bytes, bytes]]) -> RoutedShard:
    """(key, record) pairs as routing keeps them: records with their line feed, entries."""
    data, entries = bytearray(), bytearray()
    for key, record in records:
        data += record + b"\n"
        entries += DIGEST_ENTRY.pack(key_hash(key), xxhash.xxh3_128_digest(record), len(record) + 1)
    return RoutedShard(bytes(data), bytes(entries), None)


def test_take_skips_and_filters_by_key_in_routing_order() -> None:
    shard = routed([(b"a", b"A1"), (b"b", b"B1"), (b"a", b"A2"), (b"c", b"C1"), (b"b", b"B2")])
    assert shard.take(0, 2, lambda kh: True) == b"A1\nB1\n"
    assert shard.take(1, 2, lambda kh: True) == b"B1\nA2\n"
    only_b = {key_hash(b"b")}
    assert shard.take(0, 5, lambda kh: kh in only_b) == b"B1\nB2\n"
    assert shard.take(1, 1, lambda kh: kh not in only_b) == b"A2\n"
    assert shard.key_hashes() == {key_hash(k) for k in (b"a", b"b", b"c")}


def journal() -> Journal:
    row = CommittedChunk("d", 1, 2, "d/x", 0, None, 3, 10, 200, "0" * 32, "1" * 32, 10, "")
    return Journal(
        "d",
        2,
        3,
        [JournaledChunk(row, "ab" * 16, {"migrator-plan": "p"})],
        [JournaledObject("d/m", "manifest"), JournaledObject("d/r", "generation")],
        {(1, 2): "2" * 32},
        {3: "3" * 32},
    )


def test_a_journal_reads_back_as_written_and_one_cut_short_is_none(tmp_path: Path) -> None:
    folder = journal_dir(tmp_path, "d", 2)
    write_journal(folder, journal(), [b"chunk", b"manifest", b"record"])
    loaded = read_journal(folder)
    assert loaded is not None
    back, files = loaded
    assert back == journal()
    assert [f.read_bytes() for f in files] == [b"chunk", b"manifest", b"record"]
    (folder / "journal.json").unlink()  # as if the crash came before the index
    assert read_journal(folder) is None
    assert not folder.exists()


def test_the_lines_name_the_shard_the_object_and_why() -> None:
    line = Refusal(3, "d/g000001/s00003/r/00000000.mgc", "the source changed").line("d")
    assert line == (
        "dataset d shard 3: d/g000001/s00003/r/00000000.mgc not repaired: the source changed"
    )
    gone = manifest_refusal(3, MissingObjectError("absent", object_key="d/g000001/s00003/m"))
    assert "manifest is missing" in gone.reason and "cannot be rebuilt" in gone.reason
    assert gone.object_key == "d/g000001/s00003/m"

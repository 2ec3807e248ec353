"""What a sync would still write to a records shard: the gate's lag, by key.

The lag compares the source now with the shard's inventory as of the last committed sync. When
the file table the gate reused is the one that sync committed, the inventory is exactly what the
table's files contributed, so only the keys of the files that changed since can differ: the
lag follows from what those files held then (retired), what they hold now (read), and what the
unchanged files hold of those few keys (others). Otherwise every key is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrator.codec.digests import DIGEST_ENTRY, KeyEntry, RecordsMap, add


@dataclass(frozen=True, slots=True)
class Lag:
    upserts: int  # records a sync would write (keys new or changed, every record of each)
    deletes: int  # records of keys gone from the source (tombstones)
    nbytes: int  # bytes of the records it would write


def lag_between(before: RecordsMap, now: RecordsMap) -> Lag:
    """The lag of a shard whose inventory is `before` and whose source holds `now`."""
    changed = [e for k, e in now.items() if (p := before.get(k)) is None or p.digest != e.digest]
    gone = [e for k, e in before.items() if k not in now]
    return Lag(
        sum(e.records for e in changed),
        sum(e.records for e in gone),
        sum(e.nbytes for e in changed),
    )


def keyed(entries: bytes | bytearray, keys: set[bytes] | None = None) -> RecordsMap:
    """Digest entries folded into one entry per key (a multiset), for `keys` only if given.
    Without a hit among `keys` no entry is unpacked: the filter runs at C speed."""
    size = DIGEST_ENTRY.size
    if keys is not None:
        if not keys:
            return {}
        found = keys.intersection([entries[i : i + 16] for i in range(0, len(entries), size)])
        if not found:
            return {}
        keys = found
    out: RecordsMap = {}
    for kh, dg, length in DIGEST_ENTRY.iter_unpack(entries):
        if keys is not None and kh not in keys:
            continue
        have = out.get(kh)
        if have is None:
            out[kh] = KeyEntry(int.from_bytes(dg), 1, length)
        else:
            have.digest = add(have.digest, int.from_bytes(dg))
            have.records += 1
            have.nbytes += length
    return out


def merge(into: RecordsMap, key: bytes, entry: KeyEntry) -> None:
    have = into.get(key)
    if have is None:
        into[key] = KeyEntry(entry.digest, entry.records, entry.nbytes)
    else:
        have.digest = add(have.digest, entry.digest)
        have.records += entry.records
        have.nbytes += entry.nbytes


def changed_keys(retired: RecordsMap, read: RecordsMap) -> set[bytes]:
    """Keys whose records in the changed files differ between then and now."""

    def differs(a: KeyEntry | None, b: KeyEntry | None) -> bool:
        if a is None or b is None:
            return a is not b
        return a.digest != b.digest or a.records != b.records

    return {k for k in retired.keys() | read.keys() if differs(retired.get(k), read.get(k))}


def lag_of_change(
    retired: RecordsMap, read: RecordsMap, keys: set[bytes], others: RecordsMap
) -> Lag:
    """The lag when the inventory is the unchanged files' records plus `retired`, and the
    source is the unchanged files' records plus `read`: only `keys` can differ, and of the
    unchanged files only what they hold of those keys (`others`) matters."""
    before: RecordsMap = {}
    now: RecordsMap = {}
    for k in keys:
        for side, part in ((before, retired), (now, read)):
            for source in (others, part):
                if (entry := source.get(k)) is not None:
                    merge(side, k, entry)
    return lag_between(before, now)

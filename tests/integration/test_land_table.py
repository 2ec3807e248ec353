"""Records landed into a real PostgreSQL table: a base then deltas, exactly once per generation,
the table proving its content by digest, and rows changed behind landing's back named."""

from __future__ import annotations

import csv
import io
import os
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text

from migrator.codec.digests import MOD, key_hash, record_digest
from migrator.errors import LandingError, UsageError
from migrator.landing import table as table_module
from migrator.landing.table import PostgresTable
from migrator.landing.target import LandedRecord, RecordsGeneration
from migrator.sharding import shard_of

pytestmark = pytest.mark.integration

DATASET = "profiles"


def profile(user_id: str, name: str) -> bytes:
    return orjson.dumps({"user_id": user_id, "name": name})


def landed(key: str, record: bytes, fields: tuple[str, ...] | None = None) -> LandedRecord:
    return LandedRecord(key, key_hash(key.encode()), record, fields)


def generation(
    gen: int,
    records: Iterable[LandedRecord],
    *,
    base: bool = False,
    removed: tuple[str, ...] = (),
    shard: int = 0,
    header: tuple[str, ...] | None = None,
) -> RecordsGeneration:
    gone = frozenset(key_hash(k.encode()) for k in removed)
    return RecordsGeneration(DATASET, shard, gen, base, gone, records, header)


def digest_of(records: list[bytes]) -> int:
    return sum(int.from_bytes(record_digest(r)) for r in records) % MOD


class Model:
    """What the table must hold for one shard: each key's records in archive order."""

    def __init__(self) -> None:
        self.keys: dict[str, list[bytes]] = {}

    def apply(self, change: RecordsGeneration, records: list[LandedRecord]) -> None:
        if change.base:
            self.keys.clear()
        for key in [k for k in self.keys if key_hash(k.encode()) in change.removed]:
            del self.keys[key]
        for rec in records:
            self.keys.setdefault(rec.key, []).append(rec.record)

    def main(self) -> dict[str, bytes]:
        return {key: recs[-1] for key, recs in self.keys.items()}

    def duplicates(self) -> list[tuple[str, bytes]]:
        return sorted((key, r) for key, recs in self.keys.items() for r in recs[:-1])

    def records(self) -> list[bytes]:
        return [r for recs in self.keys.values() for r in recs]


@pytest.fixture
def db(postgres_url: str) -> Iterator[Any]:
    engine = create_engine(postgres_url)
    yield engine
    engine.dispose()


def rows(db: Any, sql: str) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(text(sql)).fetchall())


def execute(db: Any, sql: str) -> None:
    with db.begin() as conn:
        conn.execute(text(sql))


def json_table(url: str, name: str = "profiles", json_doc: bool = True) -> PostgresTable:
    target = PostgresTable(
        url, name, dataset=DATASET, key_column="user_id", csv=False, json_doc=json_doc
    )
    target.prepare(None)
    return target


def check_matches(db: Any, target: PostgresTable, model: Model) -> None:
    main = dict(rows(db, "SELECT user_id, record FROM profiles WHERE shard = 0"))
    assert main == {k: r.decode() for k, r in model.main().items()}
    dups = rows(db, "SELECT user_id, record FROM profiles_duplicates WHERE shard = 0")
    assert sorted((k, r.encode()) for k, r in dups) == model.duplicates()
    content = target.content(0)
    assert (content.problems, content.count) == ([], len(model.records()))
    assert content.digest == digest_of(model.records())


def test_base_then_deltas_match_the_archive(db: Any, postgres_url: str) -> None:
    model = Model()
    with json_table(postgres_url) as target:
        assert target.landed_generation(0) is None
        steps = [
            # base: u3 held by three records, the last one served
            generation(
                1,
                [
                    landed("u1", profile("u1", "Ann")),
                    landed("u3", profile("u3", "first")),
                    landed("u2", profile("u2", 'Bob "\\" \t\n\r \\N')),
                    landed("u3", profile("u3", "second")),
                    landed("u3", profile("u3", "third")),
                ],
                base=True,
            ),
            # insert u4; update u1 (removed, then added); delete u2
            generation(
                2,
                [landed("u4", profile("u4", "Dee")), landed("u1", profile("u1", "Ann B"))],
                removed=("u1", "u2"),
            ),
            # remove u3 with its duplicates; a new key added twice; u4 gains a duplicate
            generation(
                3,
                [
                    landed("u5", profile("u5", "x")),
                    landed("u4", profile("u4", "Dee 2")),
                    landed("u5", profile("u5", "y")),
                ],
                removed=("u3",),
            ),
        ]
        for step in steps:
            records = list(step.records)
            model.apply(step, records)
            target.apply(step)
            assert target.landed_generation(0) == step.generation
            check_matches(db, target, model)
        assert rows(db, "SELECT count(*) FROM profiles_duplicates WHERE user_id = 'u3'") == [(0,)]
        # a new base replaces the shard, duplicates and all
        rebase = generation(4, [landed("u9", profile("u9", "z"))], base=True)
        model.apply(rebase, list(rebase.records))
        target.apply(rebase)
        check_matches(db, target, model)


def test_duplicates_across_batches_keep_archive_order(
    db: Any, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(table_module, "BATCH_ROWS", 3)
    records = [landed(f"k{i % 4}", profile(f"k{i % 4}", f"v{i}")) for i in range(11)]
    change = generation(1, records, base=True)
    model = Model()
    model.apply(change, records)
    with json_table(postgres_url) as target:
        target.apply(change)
        check_matches(db, target, model)
    ordered = rows(db, "SELECT record FROM profiles_duplicates WHERE user_id = 'k1' ORDER BY seq")
    assert [orjson.loads(r)["name"] for (r,) in ordered] == ["v1", "v5"]


def test_a_generation_applied_again_changes_nothing(db: Any, postgres_url: str) -> None:
    consumed: list[int] = []

    def counted(gen: int) -> Iterator[LandedRecord]:
        consumed.append(gen)
        yield landed("u1", profile("u1", f"gen {gen}"))

    with json_table(postgres_url) as target:
        target.apply(generation(1, list(counted(1)), base=True))
        target.apply(generation(2, counted(2), removed=("u1",)))
        before = rows(db, "SELECT user_id, record FROM profiles")
        target.apply(generation(2, counted(2), removed=("u1",)))
        target.apply(generation(1, counted(1), base=True))  # older: nothing either
        assert rows(db, "SELECT user_id, record FROM profiles") == before
        assert consumed == [1, 2]  # the records of a landed generation are never read
        assert target.landed_generation(0) == 2


def test_jsonb_doc_is_queryable(db: Any, postgres_url: str) -> None:
    with json_table(postgres_url, "app.user_profiles") as target:
        target.apply(generation(1, [landed("u1", profile("u1", "Ann"))], base=True))
    assert rows(db, "SELECT doc->>'name' FROM app.user_profiles WHERE user_id = 'u1'") == [("Ann",)]
    assert rows(db, "SELECT tbl, generation FROM app.migrator_landed") == [("app.user_profiles", 1)]


def test_text_only_json_has_no_doc(db: Any, postgres_url: str) -> None:
    with json_table(postgres_url, "plain", json_doc=False) as target:
        target.apply(generation(1, [landed("u1", b'{"user_id":"u1"}')], base=True))
    columns = rows(db, "SELECT attname FROM pg_attribute WHERE attrelid = 'plain'::regclass")
    assert "doc" not in {c for (c,) in columns} and "record" in {c for (c,) in columns}


def csv_records(rows_: list[list[str]], delimiter: str) -> list[LandedRecord]:
    out = []
    for fields in rows_:
        buffer = io.StringIO()
        # fields holding a CR or LF are quoted: the writer quotes its line end's characters
        csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerow(fields)
        record = buffer.getvalue().removesuffix("\r\n").encode()
        out.append(landed(fields[1], record, tuple(fields)))
    return out


HEADER = ("title", "video_id", "tags")


def csv_table(url: str, header: tuple[str, ...] = HEADER, shards: int | None = None) -> Any:
    options: dict[str, Any] = {"csv": True, "json_doc": False, "delimiter": "|", "shards": shards}
    target = PostgresTable(url, "videos", dataset=DATASET, key_column="video_id", **options)
    target.prepare(header)
    return target


def test_csv_with_quoted_fields_and_a_pipe_delimiter(db: Any, postgres_url: str) -> None:
    data = [
        ["a | pipe", "v1", 'say "hi"'],
        ["two\nlines", "v2", ""],
        ["plain", "v3", "x,y"],
        ["tab\there", "v4", "back\\slash\\N"],
        ["cr\rinside", "v5", "crlf\r\n"],
    ]
    records = csv_records(data, "|")
    assert records[0].record == b'"a | pipe"|v1|"say ""hi"""'
    assert records[1].record == b'"two\nlines"|v2|'
    with csv_table(postgres_url) as target:
        target.apply(generation(1, records, base=True, header=HEADER))
        content = target.content(0)
    assert sorted(rows(db, "SELECT title, video_id, tags FROM videos")) == sorted(
        tuple(r) for r in data
    )
    assert content.count == len(data) and content.problems == []
    assert content.digest == digest_of([r.record for r in records])
    # a reader that was never prepared finds the header in the table itself
    with csv_table(postgres_url) as reread:
        assert reread.content(0).digest == content.digest


def test_tampered_rows_are_named(db: Any, postgres_url: str) -> None:
    records = csv_records([["t1", "v1", "a"], ["t2", "v2", "b"], ["t3", "v3", "c"]], "|")
    shard_of_v3 = shard_of(b"v3", 4)
    with csv_table(postgres_url, shards=4) as target:
        for shard in range(4):
            held = [r for r in records if shard_of(r.key.encode(), 4) == shard]
            target.apply(generation(1, held, base=True, shard=shard))
    execute(db, "UPDATE videos SET tags = 'changed' WHERE video_id = 'v1'")
    execute(db, "UPDATE videos SET record = 't2|v2|B', tags = 'B' WHERE video_id = 'v2'")
    execute(db, "UPDATE videos SET video_id = 'v9', record = 't3|v9|c' WHERE video_id = 'v3'")
    with csv_table(postgres_url, shards=4) as target:
        problems = [p for shard in range(4) for p in target.content(shard).problems]
    text_ = "\n".join(problems)
    assert "videos row 'v1': column 'tags' differs from its record" in text_
    assert "videos row 'v2': its record changed after landing" in text_
    assert "videos row 'v9': its record changed after landing; its key changed" in text_
    if shard_of(b"v9", 4) != shard_of_v3:
        assert f"held under shard {shard_of_v3}, its key belongs in shard" in text_
    assert len(problems) == 3


def test_a_json_record_changed_is_named(db: Any, postgres_url: str) -> None:
    with json_table(postgres_url) as target:
        target.apply(generation(1, [landed("u1", profile("u1", "Ann"))], base=True))
        execute(db, """UPDATE profiles SET record = '{"user_id":"u1","name":"Eve"}'""")
        content = target.content(0)
    assert content.problems == ["profiles row 'u1': its record changed after landing"]
    assert content.digest == digest_of([profile("u1", "Eve")])  # from the table, not its history


def test_records_postgresql_cannot_hold_fail_clearly(db: Any, postgres_url: str) -> None:
    with json_table(postgres_url) as target:
        target.apply(generation(1, [landed("u1", profile("u1", "Ann"))], base=True))
        nul = generation(2, [landed("u2", b'{"user_id":"u2","name":"se\x00cret"}')])
        with pytest.raises(LandingError) as err:
            target.apply(nul)
        message = str(err.value)
        assert "profiles shard 0 generation 2: record key 'u2'" in message
        assert "NUL" in message and "cret" not in message
        # valid JSON, but jsonb holds no \u0000: PostgreSQL refuses it, the key is named
        bad = [landed(f"k{i}", profile(f"k{i}", "ok")) for i in range(5)]
        bad.insert(3, landed("u3", b'{"user_id":"u3","name":"\\u0000"}'))
        with pytest.raises(LandingError, match=r"record key 'u3': unsupported Unicode escape"):
            target.apply(generation(2, bad))
        assert target.landed_generation(0) == 1
    assert rows(db, "SELECT user_id FROM profiles") == [("u1",)]  # rolled back whole


def test_a_csv_key_postgresql_refuses_is_named_not_its_record(postgres_url: str) -> None:
    long_key = os.urandom(4000).hex()  # past a btree entry's limit, even compressed
    records = csv_records([["t1", "v1", "a"], ["secret title", long_key, "b"]], "|")
    with csv_table(postgres_url) as target:
        with pytest.raises(LandingError, match="index row size") as err:
            target.apply(generation(1, records, base=True, header=HEADER))
        assert f"record key '{long_key[:200]}...'" in str(err.value)
        assert "secret" not in str(err.value)
        assert target.landed_generation(0) is None


def test_two_workers_land_one_generation_once(db: Any, postgres_url: str) -> None:
    consumed: list[str] = []

    def slow(worker: str) -> Iterator[LandedRecord]:
        consumed.append(worker)
        for i in range(5):
            time.sleep(0.1)  # the first worker holds the shard while the second arrives
            yield landed(f"u{i}", profile(f"u{i}", worker))

    targets = [json_table(postgres_url), json_table(postgres_url)]
    errors: list[BaseException] = []

    def land(target: PostgresTable, worker: str) -> None:
        try:
            target.apply(generation(1, slow(worker), base=True))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=land, args=(t, name)) for t, name in zip(targets, "ab", strict=True)
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(consumed) == 1  # the second found the generation landed and read nothing
    assert rows(db, "SELECT count(*), min(doc->>'name') FROM profiles") == [(5, consumed[0])]
    assert rows(db, "SELECT count(*) FROM profiles_duplicates") == [(0,)]
    for target in targets:
        target.close()


@pytest.mark.parametrize(
    ("header", "named"),
    [
        (("title", "video_id", "title"), "'title' appears more than once"),
        (("record", "video_id"), "'record' is a column landing adds itself"),
        (("", "video_id"), "CSV header column 1 is empty"),
        (("x" * 64, "video_id"), "more than PostgreSQL's 63-byte limit"),
        (("title", "id"), "key field 'video_id' is not in the CSV header"),
    ],
)
def test_hostile_headers_are_refused(
    postgres_url: str, header: tuple[str, ...], named: str
) -> None:
    with pytest.raises(UsageError, match=named):
        csv_table(postgres_url, header)


def test_a_key_column_landing_needs_is_refused(postgres_url: str) -> None:
    with pytest.raises(UsageError, match="key field 'record' is a column landing adds itself"):
        PostgresTable(
            postgres_url, "t", dataset=DATASET, key_column="record", csv=False, json_doc=True
        )


def test_workers_preparing_at_once_all_succeed(db: Any, postgres_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(json_table, postgres_url, "app.profiles") for _ in range(4)]
        for future in futures:
            future.result().close()
    assert rows(db, "SELECT count(*) FROM app.profiles") == [(0,)]


def test_a_table_made_for_another_header_is_refused(postgres_url: str) -> None:
    csv_table(postgres_url).close()
    with pytest.raises(UsageError, match=r"table videos has columns \['title', 'video_id'"):
        csv_table(postgres_url, ("video_id", "title"))


def test_the_url_stays_out_of_messages(postgres_url: str) -> None:
    secret = postgres_url.replace("postgres@", "postgres:hunter2@")
    target = PostgresTable(
        secret, "t", dataset=DATASET, key_column="user_id", csv=False, json_doc=True
    )
    assert target.describe().startswith("postgresql://127.0.0.1:")
    assert target.describe().endswith(" table t")
    assert "hunter2" not in target.describe()

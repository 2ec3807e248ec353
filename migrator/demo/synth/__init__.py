"""Deterministic synthetic source data: JSONL user profiles, CSV video metadata, video objects.

Shaped like the real platform's exports so compression ratios and edge cases are realistic:
profile text is word salad from a small vocabulary (zstd ~3-5x, not absurd), video bytes are
incompressible, and names, titles and file names exercise unicode, CSV quoting and odd paths.
Everything is written streaming; the same seed always gives the same bytes.
"""

from __future__ import annotations

import array
import bisect
import csv
import functools
import hashlib
import io
import itertools
import math
import operator
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import orjson
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "METADATA_HEADER",
    "DemoData",
    "GeneratedObject",
    "generate_demo_data",
    "generate_metadata_file",
    "generate_objects",
    "generate_records_file",
    "user_id_for",
    "video_id_for",
]

KIB = 1024
MIB = 1024 * KIB

METADATA_HEADER = (
    "video_id",
    "owner_user_id",
    "title",
    "duration_s",
    "width",
    "height",
    "codec",
    "bytes",
    "created_at",
    "tags",
    "object_key",
)

# Share of the requested size per dataset: profiles, metadata, videos.
_PROFILE_SHARE = 0.25
_METADATA_SHARE = 0.15

_WRITE_BUFFER = 1 * MIB
# Odd multipliers coprime with the modulus make index -> id a bijection, so ids never collide.
_USER_ID_MODULUS = 10**12
_USER_ID_MULTIPLIER = 586_977_163_241
_VIDEO_ID_MULTIPLIER = 0x9E37_79B9_7F4A_7C15
_EPOCH = datetime(2012, 1, 1, tzinfo=UTC)
_EPOCH_SPAN_S = 12 * 365 * 24 * 3600
_LAST_SEEN_DAYS = 2000  # devices are last seen up to this many days after sign-up
_DAYS = tuple(
    (_EPOCH + timedelta(days=day)).date().isoformat()
    for day in range(_EPOCH_SPAN_S // 86_400 + _LAST_SEEN_DAYS)
)
_CLOCK = tuple(f"{minute // 60:02d}:{minute % 60:02d}" for minute in range(24 * 60))

# A minimal MP4 prologue: an 'ftyp' box, then the header of an 'mdat' box holding the rest.
_FTYP_BOX = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"

_VOCABULARY_TEXT = """
    the a of and to in is for on with at by from up about into over after video new my our
    your this that love life day night time today week summer winter music dance travel food
    coffee cooking recipe kitchen garden city beach mountain road trip friends family dog cat
    photo film camera edit studio live stream game play team win goal season fan club art
    design style fashion beauty skin care fitness yoga run bike swim hike climb ocean river
    lake forest sunset sunrise light dark color blue green red gold silver street night market
    story share follow like comment subscribe channel creator daily vlog tutorial review unbox
    tech phone laptop code build make craft paint draw sketch write read book poem song guitar
    piano drums bass vocal band concert tour festival party wedding baby kids school college
    study work office job startup business money save budget home house room plants green
    healthy happy sad funny crazy chill vibes mood weekend morning evening lunch dinner pizza
    pasta sushi tacos burger salad cake bread tea wine beer vegan spicy sweet fresh local
    best first last next big small little old young real true free simple easy quick slow
    always never sometimes often really very just still again here there now then soon later
    café naïve über jalapeño smörgåsbord façade crème brûlée fiancé piñata résumé
"""
_VOCABULARY = tuple(_VOCABULARY_TEXT.split())
# Zipf-like word frequencies, as in real text (zstd ~4.5x on the profiles at level 3), laid out
# in a 2**16-slot table so a word is drawn from two random bytes (5x faster than weighted choices).
_VOCABULARY_CUM_WEIGHTS = tuple(itertools.accumulate(1 / rank for rank in range(1, 256)))[
    : len(_VOCABULARY)
]
_WORD_TABLE = tuple(
    _VOCABULARY[
        bisect.bisect_right(
            _VOCABULARY_CUM_WEIGHTS, (slot + 0.5) / 2**16 * _VOCABULARY_CUM_WEIGHTS[-1]
        )
    ]
    for slot in range(2**16)
)

# (display name, ascii handle stem): non-ASCII names exercise unicode end to end.
_FIRST_NAMES = (
    ("Ava", "ava"),
    ("Liam", "liam"),
    ("Noah", "noah"),
    ("Emma", "emma"),
    ("Olivia", "olivia"),
    ("Mateo", "mateo"),
    ("Sofía", "sofia"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("Jürgen", "juergen"),
    ("Björn", "bjorn"),
    ("Amélie", "amelie"),
    ("Chloé", "chloe"),
    ("Łukasz", "lukasz"),
    ("Ana", "ana"),
    ("Kenji", "kenji"),
    ("Aiko", "aiko"),
    ("伟", "wei"),
    ("芳", "fang"),
    ("Priya", "priya"),
    ("Arjun", "arjun"),
    ("Fatima", "fatima"),
    ("Omar", "omar"),
    ("Ingrid", "ingrid"),
    ("Dmitri", "dmitri"),
    ("Nguyễn", "nguyen"),
    ("Grace", "grace"),
    ("Lucas", "lucas"),
)
_LAST_NAMES = (
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("García", "garcia"),
    ("Müller", "mueller"),
    ("Dubois", "dubois"),
    ("Rossi", "rossi"),
    ("Kowalski", "kowalski"),
    ("Nakamura", "nakamura"),
    ("王", "wang"),
    ("李", "li"),
    ("Patel", "patel"),
    ("Okafor", "okafor"),
    ("Jensen", "jensen"),
    ("Ødegaard", "odegaard"),
    ("Çelik", "celik"),
    ("Silva", "silva"),
    ("Kim", "kim"),
    ("Brown", "brown"),
    ("Novák", "novak"),
    ("O'Brien", "obrien"),
)
_EMOJI = ("", "", "", "", "", "", " 🎬", " ✨", " 🌍", " 🎸", " 🐶", " 👩\u200d💻")
_DOMAINS = ("example.com", "mail.example.org", "post.example.net", "inbox.example.io")
_COUNTRIES = (
    ("US", "en-US"),
    ("US", "es-US"),
    ("GB", "en-GB"),
    ("DE", "de-DE"),
    ("FR", "fr-FR"),
    ("ES", "es-ES"),
    ("BR", "pt-BR"),
    ("JP", "ja-JP"),
    ("CN", "zh-CN"),
    ("IN", "hi-IN"),
    ("NG", "en-NG"),
    ("PL", "pl-PL"),
)
_THEMES = ("light", "dark", "system")
_QUALITIES = ("auto", "480p", "720p", "1080p", "2160p")
_DEVICE_KINDS = ("ios", "android", "web", "tv", "console")
_DEVICE_MODELS = ("iPhone15,3", "Pixel 8", "SM-S918B", "Chrome 126", "AppleTV14,1", "PS5")
_VIDEO_FORMATS = tuple(
    (str(width), str(height), codec)
    for width, height in (
        (640, 360),
        (854, 480),
        (1280, 720),
        (1920, 1080),
        (1080, 1920),
        (3840, 2160),
    )
    for codec in ("h264", "h264", "h264", "hevc", "vp9", "av1")
)
_LANGUAGES = ("en", "es", "de", "fr", "ja", "zh", "pt", "hi")
_LANGUAGE_PAIRS = tuple(itertools.permutations(_LANGUAGES, 2))
_TAGS = (
    "travel",
    "food",
    "music",
    "howto",
    "gaming",
    "pets",
    "comedy",
    "sport",
    "news",
    "diy",
    "beauty",
    "tech",
)

_TAG_LISTS = tuple(
    ",".join(combo) for size in range(4) for combo in itertools.combinations(_TAGS, size)
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class DemoData:
    """What `generate_demo_data` wrote: the three dataset folders and their sizes."""

    root: Path
    profiles_dir: Path
    metadata_dir: Path
    videos_dir: Path
    profile_count: int
    metadata_count: int
    video_count: int
    total_bytes: int


@dataclass(frozen=True)
class GeneratedObject:
    """One video file: `key` is its path relative to the objects folder, '/'-separated."""

    video_id: str
    key: str
    size: int


def user_id_for(index: int, seed: int) -> str:
    """The unique user id of profile number `index` ("u" + 12 digits)."""
    offset = _seed_int(seed, "user-id") % _USER_ID_MODULUS
    return f"u{(index * _USER_ID_MULTIPLIER + offset) % _USER_ID_MODULUS:012d}"


def video_id_for(index: int, seed: int) -> str:
    """The unique video id of video number `index` (16 hex digits)."""
    offset = _seed_int(seed, "video-id")
    return f"{(index * _VIDEO_ID_MULTIPLIER + offset) % 2**64:016x}"


def generate_records_file(path: Path, size_bytes: int, seed: int, *, first_index: int = 0) -> int:
    """Write JSONL user profiles to `path` until about `size_bytes`; return the record count.

    Profiles are numbered from `first_index`, so files written with disjoint index ranges have
    disjoint user ids.
    """
    rng = random.Random(_seed_int(seed, f"records:{first_index}"))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    index = first_index
    with path.open("wb") as out:
        lines: list[bytes] = []
        pending = 0
        while written + pending < size_bytes:
            line = orjson.dumps(_profile(rng, index, seed)) + b"\n"
            lines.append(line)
            pending += len(line)
            index += 1
            if pending >= _WRITE_BUFFER:
                out.write(b"".join(lines))
                written += pending
                lines, pending = [], 0
        out.write(b"".join(lines))
    return index - first_index


def generate_objects(
    directory: Path,
    size_bytes: int,
    seed: int,
    min_size: int = 50 * KIB,
    max_size: int = 8 * MIB,
    *,
    first_index: int = 0,
) -> list[GeneratedObject]:
    """Write incompressible fake MP4 files under `directory`/<2-hex>/<2-hex>/<id>.mp4.

    Sizes are log-uniform in [min_size, max_size]; about one in twelve is larger (up to
    1.5 x max_size) so that some objects span several parts. Stops at about `size_bytes`.
    """
    if not 0 < min_size <= max_size:
        raise ValueError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}")
    rng = random.Random(_seed_int(seed, f"objects:{first_index}"))
    objects: list[GeneratedObject] = []
    total = 0
    index = first_index
    log_min, log_max = math.log(min_size), math.log(max_size)
    while total < size_bytes:
        if rng.random() < 1 / 12:
            size = rng.randint(max_size, max_size * 3 // 2)
        else:
            size = int(math.exp(rng.uniform(log_min, log_max)))
        size = min(size, size_bytes - total)
        video_id = video_id_for(index, seed)
        key = _object_key(video_id, f"{video_id}.mp4")
        _write_video(directory / key, size, _seed_bytes(seed, f"video:{video_id}"))
        objects.append(GeneratedObject(video_id, key, size))
        total += size
        index += 1
    return objects


def generate_metadata_file(
    path: Path,
    size_bytes: int,
    seed: int,
    *,
    first_index: int,
    videos: Sequence[GeneratedObject] = (),
    user_count: int = 1,
) -> int:
    """Write a CSV of video metadata (header first) to about `size_bytes`; return the row count.

    Rows are numbered from `first_index`. Every object in `videos` gets exactly one row, spread
    through the file, whose `object_key` is the object's key; the other rows have none. Owners
    are drawn from the first `user_count` user ids of the same seed.
    """
    rng = random.Random(_seed_int(seed, f"metadata:{first_index}"))
    owners = max(1, user_count)
    path.parent.mkdir(parents=True, exist_ok=True)
    expected_rows = max(1, size_bytes // 150)  # rows average ~150 bytes
    pending_videos = list(reversed(videos))
    rows = 0
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    flushed = 0
    pending = writer.writerow(METADATA_HEADER)  # characters; close to bytes for this text
    with path.open("wb") as out:
        while flushed + pending < size_bytes or pending_videos:
            draw = _Draws(rng)
            video: GeneratedObject | None = None
            if pending_videos and (
                flushed + pending >= size_bytes
                or draw.below(max(1, expected_rows - rows)) < len(pending_videos)
            ):
                video = pending_videos.pop()
            owner = user_id_for(draw.below(owners), seed)
            row = _metadata_row(rng, draw, first_index + rows, seed, owner, video)
            pending += writer.writerow(row)
            rows += 1
            if pending >= _WRITE_BUFFER:
                flushed += out.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        out.write(buffer.getvalue().encode())
    return rows


def generate_demo_data(
    root: Path,
    size_bytes: int = 200 * MIB,
    *,
    seed: int = 7,
    files_per_dataset: int = 4,
) -> DemoData:
    """Write ~25 % profiles, ~15 % metadata and ~60 % videos (about `size_bytes` in all).

    Besides the regular videos there is one empty file and one whose name holds a space and a
    non-ASCII character; both have a metadata row like every other video.
    """
    if files_per_dataset < 1:
        raise ValueError("files_per_dataset must be at least 1")
    root = Path(root)
    profiles_dir = root / "user_profiles"
    metadata_dir = root / "video_metadata"
    videos_dir = root / "videos"
    for folder in (profiles_dir, metadata_dir, videos_dir):
        folder.mkdir(parents=True, exist_ok=True)

    profile_count = 0
    for number, share in enumerate(_split(int(size_bytes * _PROFILE_SHARE), files_per_dataset)):
        profile_count += generate_records_file(
            profiles_dir / f"profiles-{number:04d}.jsonl", share, seed, first_index=profile_count
        )

    video_budget = size_bytes - int(size_bytes * _PROFILE_SHARE) - int(size_bytes * _METADATA_SHARE)
    videos = generate_objects(videos_dir, video_budget, seed)
    videos.extend(_edge_case_videos(videos_dir, seed, first_index=len(videos)))

    metadata_count = 0
    metadata_shares = _split(int(size_bytes * _METADATA_SHARE), files_per_dataset)
    for number, share in enumerate(metadata_shares):
        metadata_count += generate_metadata_file(
            metadata_dir / f"videos-{number:04d}.csv",
            share,
            seed,
            first_index=metadata_count + len(videos),
            videos=videos[number::files_per_dataset],
            user_count=profile_count,
        )

    total_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return DemoData(
        root=root,
        profiles_dir=profiles_dir,
        metadata_dir=metadata_dir,
        videos_dir=videos_dir,
        profile_count=profile_count,
        metadata_count=metadata_count,
        video_count=len(videos),
        total_bytes=total_bytes,
    )


class _Draws:
    """Fields peeled off one big random integer: ~10x cheaper than a `randrange` per field."""

    __slots__ = ("_bits",)

    def __init__(self, rng: random.Random, bits: int = 256) -> None:
        self._bits = rng.getrandbits(bits)

    def below(self, n: int) -> int:
        self._bits, value = divmod(self._bits, n)
        return value

    def pick(self, options: Sequence[_T]) -> _T:
        return options[self.below(len(options))]

    def chance(self, per_thousand: int) -> bool:
        return self.below(1000) < per_thousand


def _profile(rng: random.Random, index: int, seed: int) -> dict[str, object]:
    draw = _Draws(rng, 320)  # ~210 bits used
    first, first_ascii = draw.pick(_FIRST_NAMES)
    last, last_ascii = draw.pick(_LAST_NAMES)
    handle = f"{first_ascii}.{last_ascii}{draw.below(10_000)}"
    country, locale = draw.pick(_COUNTRIES)
    created_s = draw.below(_EPOCH_SPAN_S)
    devices = [
        {
            "kind": draw.pick(_DEVICE_KINDS),
            "model": draw.pick(_DEVICE_MODELS),
            "last_seen": _iso_date(created_s + draw.below(_LAST_SEEN_DAYS) * 86_400),
            "push": draw.chance(600),
        }
        for _ in range(1 + draw.below(3))
    ]
    languages = draw.pick(_LANGUAGE_PAIRS)
    return {
        "user_id": user_id_for(index, seed),
        "handle": handle,
        "display_name": f"{first} {last}{draw.pick(_EMOJI)}",
        "email": f"{handle}@{draw.pick(_DOMAINS)}",
        "created_at": _iso_timestamp(created_s),
        "country": country,
        "locale": locale,
        "birth_year": 1950 + draw.below(60),
        "bio": _words(rng, 40 + draw.below(110)),
        "follower_count": int(rng.paretovariate(1.2)) * (1 + draw.below(50)),
        "verified": draw.chance(20),
        "preferences": {
            "theme": draw.pick(_THEMES),
            "autoplay": draw.chance(700),
            "quality": draw.pick(_QUALITIES),
            "notifications": {"email": draw.chance(400), "push": draw.chance(800)},
            "languages": list(languages),
        },
        "devices": devices,
    }


def _metadata_row(
    rng: random.Random,
    draw: _Draws,
    index: int,
    seed: int,
    owner: str,
    video: GeneratedObject | None,
) -> tuple[str, ...]:
    width, height, codec = draw.pick(_VIDEO_FORMATS)
    roll = draw.below(100)
    if roll < 5:
        title = f'{_words(rng, 3)}, "{_words(rng, 1 + draw.below(8))}"'  # comma and quotes
    elif roll < 8:
        title = f"{_words(rng, 4)},\n{_words(rng, 1 + draw.below(8))}"  # newline inside a field
    else:
        title = _words(rng, 3 + draw.below(10)).capitalize()
    if video is None:
        video_id, size, key = video_id_for(index, seed), str(50 * KIB + draw.below(2**31)), ""
    else:
        video_id, size, key = video.video_id, str(video.size), video.key
    centiseconds = 100 + draw.below(360_000)
    return (
        video_id,
        owner,
        title,
        f"{centiseconds // 100}.{centiseconds % 100:02d}",
        width,
        height,
        codec,
        size,
        _iso_timestamp(draw.below(_EPOCH_SPAN_S)),
        draw.pick(_TAG_LISTS),
        key,
    )


def _words(rng: random.Random, count: int) -> str:
    slots = array.array("H", rng.randbytes(2 * count))
    if sys.byteorder == "big":
        slots.byteswap()  # same words on every host
    if count == 1:
        return _WORD_TABLE[slots[0]]
    return " ".join(operator.itemgetter(*slots)(_WORD_TABLE))


def _iso_timestamp(offset_s: int) -> str:
    """ISO 8601 UTC time `offset_s` after the epoch; string tables are 4x faster than datetime."""
    days, second_of_day = divmod(offset_s, 86_400)
    minute_of_day, second = divmod(second_of_day, 60)
    return f"{_DAYS[days]}T{_CLOCK[minute_of_day]}:{second:02d}+00:00"


def _iso_date(offset_s: int) -> str:
    return _DAYS[offset_s // 86_400]


def _edge_case_videos(directory: Path, seed: int, *, first_index: int) -> list[GeneratedObject]:
    """One empty video, and one whose file name holds a space and a non-ASCII character."""
    empty_id = video_id_for(first_index, seed)
    odd_id = video_id_for(first_index + 1, seed)
    cases = [
        GeneratedObject(empty_id, _object_key(empty_id, f"{empty_id}.mp4"), 0),
        GeneratedObject(odd_id, _object_key(odd_id, f"{odd_id} café final.mp4"), 96 * KIB),
    ]
    for case in cases:
        _write_video(directory / case.key, case.size, _seed_bytes(seed, f"video:{case.video_id}"))
    return cases


def _object_key(video_id: str, file_name: str) -> str:
    return f"{video_id[:2]}/{video_id[2:4]}/{file_name}"


def _write_video(path: Path, size: int, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for block in _video_bytes(size, key):
            out.write(block)


def _video_bytes(size: int, key: bytes) -> Iterator[bytes]:
    """`size` bytes: the MP4 prologue, then an AES-CTR keystream (fast, incompressible)."""
    mdat_size = min(max(0, size - len(_FTYP_BOX)), 2**32 - 1)
    prologue = _FTYP_BOX + mdat_size.to_bytes(4, "big") + b"mdat"
    head = prologue[:size]
    yield head
    remaining = size - len(head)
    keystream = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    zeros = bytes(_WRITE_BUFFER)
    while remaining > 0:
        step = min(remaining, _WRITE_BUFFER)
        yield keystream.update(zeros[:step] if step < _WRITE_BUFFER else zeros)
        remaining -= step


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _seed_bytes(seed: int, purpose: str) -> bytes:
    return hashlib.sha256(f"migrator-synth/{seed}/{purpose}".encode()).digest()


@functools.lru_cache(maxsize=64)
def _seed_int(seed: int, purpose: str) -> int:
    return int.from_bytes(_seed_bytes(seed, purpose)[:8], "big")

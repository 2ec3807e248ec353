"""JSONL user profiles: unicode names and handles, nested preferences and devices, and a bio of
Zipf-distributed words, so zstd compresses them about as much as the real export (~4.5x).

Compact profiles (~400 bytes, a short bio, no devices) stand for exports of small records, where
the cost per record rather than per byte decides throughput."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import orjson

from migrator.demo.synth.draws import (
    EPOCH_SPAN_S,
    LAST_SEEN_DAYS,
    WRITE_BUFFER,
    Draws,
    iso_date,
    iso_timestamp,
    seed_int,
    user_id_for,
    words,
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
_LANGUAGES = ("en", "es", "de", "fr", "ja", "zh", "pt", "hi")
_LANGUAGE_PAIRS = tuple(itertools.permutations(_LANGUAGES, 2))


def generate_records_file(
    path: Path, size_bytes: int, seed: int, *, first_index: int = 0, compact: bool = False
) -> int:
    """Write JSONL user profiles to `path` until about `size_bytes`; return the record count.

    Profiles are numbered from `first_index`, so files written with disjoint index ranges have
    disjoint user ids. `compact` profiles average ~400 bytes instead of ~1 KB.
    """
    purpose = "compact-records" if compact else "records"
    rng = random.Random(seed_int(seed, f"{purpose}:{first_index}"))
    make = _compact_profile if compact else _profile
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    index = first_index
    with path.open("wb") as out:
        lines: list[bytes] = []
        pending = 0
        while written + pending < size_bytes:
            line = orjson.dumps(make(rng, index, seed)) + b"\n"
            lines.append(line)
            pending += len(line)
            index += 1
            if pending >= WRITE_BUFFER:
                out.write(b"".join(lines))
                written += pending
                lines, pending = [], 0
        out.write(b"".join(lines))
    return index - first_index


def _profile(rng: random.Random, index: int, seed: int) -> dict[str, object]:
    draw = Draws(rng, 320)  # ~210 bits used
    first, first_ascii = draw.pick(_FIRST_NAMES)
    last, last_ascii = draw.pick(_LAST_NAMES)
    handle = f"{first_ascii}.{last_ascii}{draw.below(10_000)}"
    country, locale = draw.pick(_COUNTRIES)
    created_s = draw.below(EPOCH_SPAN_S)
    devices = [
        {
            "kind": draw.pick(_DEVICE_KINDS),
            "model": draw.pick(_DEVICE_MODELS),
            "last_seen": iso_date(created_s + draw.below(LAST_SEEN_DAYS) * 86_400),
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
        "created_at": iso_timestamp(created_s),
        "country": country,
        "locale": locale,
        "birth_year": 1950 + draw.below(60),
        "bio": words(rng, 40 + draw.below(110)),
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


def _compact_profile(rng: random.Random, index: int, seed: int) -> dict[str, object]:
    """The same top-level fields with a bio of 6-24 words, flat preferences and no devices."""
    draw = Draws(rng, 192)  # ~110 bits used
    first, first_ascii = draw.pick(_FIRST_NAMES)
    last, last_ascii = draw.pick(_LAST_NAMES)
    handle = f"{first_ascii}.{last_ascii}{draw.below(10_000)}"
    country, locale = draw.pick(_COUNTRIES)
    return {
        "user_id": user_id_for(index, seed),
        "handle": handle,
        "display_name": f"{first} {last}{draw.pick(_EMOJI)}",
        "email": f"{handle}@{draw.pick(_DOMAINS)}",
        "created_at": iso_timestamp(draw.below(EPOCH_SPAN_S)),
        "country": country,
        "locale": locale,
        "birth_year": 1950 + draw.below(60),
        "bio": words(rng, 6 + draw.below(19)),
        "follower_count": int(rng.paretovariate(1.2)) * (1 + draw.below(50)),
        "verified": draw.chance(20),
        "preferences": {
            "theme": draw.pick(_THEMES),
            "autoplay": draw.chance(700),
            "quality": draw.pick(_QUALITIES),
        },
    }

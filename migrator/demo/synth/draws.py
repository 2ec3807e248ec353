"""The randomness every generator shares, so the same seed always gives the same bytes: seeds
per purpose, unique ids, cheap draws, Zipf-distributed words and fast timestamps."""

from __future__ import annotations

import array
import bisect
import functools
import hashlib
import itertools
import operator
import random
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

KIB = 1024
MIB = 1024 * KIB

WRITE_BUFFER = 1 * MIB
# Odd multipliers coprime with the modulus make index -> id a bijection, so ids never collide.
_USER_ID_MODULUS = 10**12
_USER_ID_MULTIPLIER = 586_977_163_241
_VIDEO_ID_MULTIPLIER = 0x9E37_79B9_7F4A_7C15
_EPOCH = datetime(2012, 1, 1, tzinfo=UTC)
EPOCH_SPAN_S = 12 * 365 * 24 * 3600
LAST_SEEN_DAYS = 2000  # devices are last seen up to this many days after sign-up
_DAYS = tuple(
    (_EPOCH + timedelta(days=day)).date().isoformat()
    for day in range(EPOCH_SPAN_S // 86_400 + LAST_SEEN_DAYS)
)
_CLOCK = tuple(f"{minute // 60:02d}:{minute % 60:02d}" for minute in range(24 * 60))

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


_T = TypeVar("_T")


def user_id_for(index: int, seed: int) -> str:
    """The unique user id of profile number `index` ("u" + 12 digits)."""
    offset = seed_int(seed, "user-id") % _USER_ID_MODULUS
    return f"u{(index * _USER_ID_MULTIPLIER + offset) % _USER_ID_MODULUS:012d}"


def video_id_for(index: int, seed: int) -> str:
    """The unique video id of video number `index` (16 hex digits)."""
    offset = seed_int(seed, "video-id")
    return f"{(index * _VIDEO_ID_MULTIPLIER + offset) % 2**64:016x}"


class Draws:
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


def words(rng: random.Random, count: int) -> str:
    slots = array.array("H", rng.randbytes(2 * count))
    if sys.byteorder == "big":
        slots.byteswap()  # same words on every host
    if count == 1:
        return _WORD_TABLE[slots[0]]
    return " ".join(operator.itemgetter(*slots)(_WORD_TABLE))


def iso_timestamp(offset_s: int) -> str:
    """ISO 8601 UTC time `offset_s` after the epoch; string tables are 4x faster than datetime."""
    days, second_of_day = divmod(offset_s, 86_400)
    minute_of_day, second = divmod(second_of_day, 60)
    return f"{_DAYS[days]}T{_CLOCK[minute_of_day]}:{second:02d}+00:00"


def iso_date(offset_s: int) -> str:
    return _DAYS[offset_s // 86_400]


def seed_bytes(seed: int, purpose: str) -> bytes:
    return hashlib.sha256(f"migrator-synth/{seed}/{purpose}".encode()).digest()


@functools.lru_cache(maxsize=64)
def seed_int(seed: int, purpose: str) -> int:
    return int.from_bytes(seed_bytes(seed, purpose)[:8], "big")

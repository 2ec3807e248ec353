"""Fake MP4 video files: a valid prologue, then an AES-CTR keystream (fast, incompressible), at
log-uniform sizes with some spanning several parts, plus an empty file and an odd file name."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from migrator.demo.synth.draws import KIB, MIB, WRITE_BUFFER, seed_bytes, seed_int, video_id_for

# A minimal MP4 prologue: an 'ftyp' box, then the header of an 'mdat' box holding the rest.
_FTYP_BOX = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"


@dataclass(frozen=True)
class GeneratedObject:
    """One video file: `key` is its path relative to the objects folder, '/'-separated."""

    video_id: str
    key: str
    size: int


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
    rng = random.Random(seed_int(seed, f"objects:{first_index}"))
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
        _write_video(directory / key, size, seed_bytes(seed, f"video:{video_id}"))
        objects.append(GeneratedObject(video_id, key, size))
        total += size
        index += 1
    return objects


def edge_case_videos(directory: Path, seed: int, *, first_index: int) -> list[GeneratedObject]:
    """One empty video, and one whose file name holds a space and a non-ASCII character."""
    empty_id = video_id_for(first_index, seed)
    odd_id = video_id_for(first_index + 1, seed)
    cases = [
        GeneratedObject(empty_id, _object_key(empty_id, f"{empty_id}.mp4"), 0),
        GeneratedObject(odd_id, _object_key(odd_id, f"{odd_id} café final.mp4"), 96 * KIB),
    ]
    for case in cases:
        _write_video(directory / case.key, case.size, seed_bytes(seed, f"video:{case.video_id}"))
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
    zeros = bytes(WRITE_BUFFER)
    while remaining > 0:
        step = min(remaining, WRITE_BUFFER)
        yield keystream.update(zeros[:step] if step < WRITE_BUFFER else zeros)
        remaining -= step

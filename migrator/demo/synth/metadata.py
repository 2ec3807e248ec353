"""A CSV of video metadata: titles with commas, quotes and line feeds, and one row for every
generated video, naming its object, so records and objects of the demo refer to each other."""

from __future__ import annotations

import csv
import io
import itertools
import random
from collections.abc import Sequence
from pathlib import Path

from migrator.demo.synth.draws import (
    EPOCH_SPAN_S,
    KIB,
    WRITE_BUFFER,
    Draws,
    iso_timestamp,
    seed_int,
    user_id_for,
    video_id_for,
    words,
)
from migrator.demo.synth.videos import GeneratedObject

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
    rng = random.Random(seed_int(seed, f"metadata:{first_index}"))
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
            draw = Draws(rng)
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
            if pending >= WRITE_BUFFER:
                flushed += out.write(buffer.getvalue().encode())
                buffer.seek(0)
                buffer.truncate()
                pending = 0
        out.write(buffer.getvalue().encode())
    return rows


def _metadata_row(
    rng: random.Random,
    draw: Draws,
    index: int,
    seed: int,
    owner: str,
    video: GeneratedObject | None,
) -> tuple[str, ...]:
    width, height, codec = draw.pick(_VIDEO_FORMATS)
    roll = draw.below(100)
    if roll < 5:
        title = f'{words(rng, 3)}, "{words(rng, 1 + draw.below(8))}"'  # comma and quotes
    elif roll < 8:
        title = f"{words(rng, 4)},\n{words(rng, 1 + draw.below(8))}"  # newline inside a field
    else:
        title = words(rng, 3 + draw.below(10)).capitalize()
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
        iso_timestamp(draw.below(EPOCH_SPAN_S)),
        draw.pick(_TAG_LISTS),
        key,
    )

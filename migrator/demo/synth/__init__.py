"""Deterministic synthetic source data: JSONL user profiles, CSV video metadata, video objects.

Shaped like the real platform's exports so compression ratios and edge cases are realistic:
profile text is word salad from a small vocabulary (zstd ~3-5x, not absurd), video bytes are
incompressible, and names, titles and file names exercise unicode, CSV quoting and odd paths.
Everything is written streaming; the same seed always gives the same bytes.

Each kind has its module (profiles, metadata, videos) over the shared randomness in draws;
this one writes the three together, sized and cross-referenced as the demo plan reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from migrator.demo.synth.draws import MIB, user_id_for, video_id_for
from migrator.demo.synth.metadata import METADATA_HEADER, generate_metadata_file
from migrator.demo.synth.profiles import generate_records_file
from migrator.demo.synth.videos import GeneratedObject, edge_case_videos, generate_objects

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

# Share of the requested size per dataset: profiles, metadata, videos.
_PROFILE_SHARE = 0.25
_METADATA_SHARE = 0.15


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
    videos.extend(edge_case_videos(videos_dir, seed, first_index=len(videos)))

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


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]

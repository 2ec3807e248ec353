"""Every name migrator gives a stored object, and every path it keeps under `state_dir`.

The destination's layout is part of the format (docs/FORMAT.md §4): a reader finds a dataset's
chunks, manifests, generation records, ledger segments, dead letters and keyrings by these names
alone. Keeping them in one pure module means a layout change is one diff, and nothing else in
the product builds a key or a spool path by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.mgc"  # a shard's manifest object, under its shard prefix
GENERATIONS_FOLDER = "_generations"
LEDGER_FOLDER = "_ledger"
DEAD_LETTERS_FOLDER = "_deadletters"
KEYS_FOLDER = "_keys"

_GENERATION = re.compile(r"g(\d{6,})\.mgc")
_SEGMENT = re.compile(r"(\d{10,})\.mgl")
_SHARD_OBJECT = re.compile(r"g(\d{6,})/s(\d{5,})/(.+)")
_SHARD_FOLDER = re.compile(r"s(\d{5,})")
_DEAD_LETTERS = re.compile(r"g(\d{6,})/(\d{8,})\.mgc")
_REVISION = re.compile(r"keyring-(\d{6,})\.json")


# --- a dataset's data: chunks and manifests, by generation and shard ---------------------------


def dataset_prefix(dataset: str) -> str:
    return f"{dataset}/"


def dataset_of(object_key: str) -> str:
    """The dataset an object key belongs to: its first segment (FORMAT.md §4)."""
    return object_key.partition("/")[0]


def generation_prefix(dataset: str, generation: int) -> str:
    """Everything one generation's shards wrote lies under this prefix."""
    return f"{dataset}/g{generation:06d}/"


def shard_prefix(dataset: str, generation: int, shard: int) -> str:
    """Everything one shard of one generation wrote lies under this prefix."""
    return f"{generation_prefix(dataset, generation)}s{shard:05d}/"


def manifest_key(dataset: str, generation: int, shard: int) -> str:
    return f"{shard_prefix(dataset, generation, shard)}{MANIFEST_NAME}"


def records_chunk_key(dataset: str, generation: int, shard: int, sequence: int) -> str:
    return f"{shard_prefix(dataset, generation, shard)}r/{sequence:08d}.mgc"


def object_part_key(dataset: str, generation: int, shard: int, name_tag: bytes, part: int) -> str:
    return f"{shard_prefix(dataset, generation, shard)}o/{name_tag.hex()}/{part:06d}.mgc"


@dataclass(frozen=True, slots=True)
class ShardObject:
    """A key under some generation's shard folder, taken apart."""

    generation: int
    shard: int
    rest: str  # the name below the shard prefix: MANIFEST_NAME, `r/…` or `o/…`

    @property
    def is_manifest(self) -> bool:
        return self.rest == MANIFEST_NAME


def parse_shard_object(dataset: str, object_key: str) -> ShardObject | None:
    """A data object's generation and shard, or None for a key outside every shard folder."""
    prefix = dataset_prefix(dataset)
    if not object_key.startswith(prefix):
        return None
    match = _SHARD_OBJECT.fullmatch(object_key[len(prefix) :])
    if match is None:
        return None
    return ShardObject(int(match.group(1)), int(match.group(2)), match.group(3))


def shard_object_pattern(dataset: str, shard: int) -> re.Pattern[str]:
    """Matches the keys of every generation's objects of one shard."""
    return re.compile(rf"{re.escape(dataset)}/g(\d{{6,}})/s{shard:05d}/.+")


def data_objects_prefix(dataset: str) -> str:
    """Lists every generation folder of a dataset (and nothing of its `_` folders)."""
    return f"{dataset_prefix(dataset)}g"


# --- generation records ----------------------------------------------------------------------


def generations_prefix(dataset: str) -> str:
    return f"{dataset}/{GENERATIONS_FOLDER}/"


def generation_key(dataset: str, generation: int) -> str:
    return f"{generations_prefix(dataset)}g{generation:06d}.mgc"


def generation_of_key(key: str) -> int | None:
    """The generation a record's object key names, or None for anything else."""
    match = _GENERATION.fullmatch(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


# --- the audit ledger ------------------------------------------------------------------------


def ledger_prefix(dataset: str, shard: int | None = None) -> str:
    base = f"{dataset}/{LEDGER_FOLDER}/"
    return base if shard is None else f"{base}s{shard:05d}/"


def segment_key(dataset: str, shard: int, segment: int) -> str:
    return f"{ledger_prefix(dataset, shard)}{segment:010d}.mgl"


def segment_of_key(object_key: str, dataset: str, shard: int) -> int | None:
    """The segment number of a key under the shard's ledger prefix; None for any other key."""
    prefix = ledger_prefix(dataset, shard)
    if not object_key.startswith(prefix):
        return None
    match = _SEGMENT.fullmatch(object_key[len(prefix) :])
    return int(match.group(1)) if match and int(match.group(1)) >= 1 else None


def ledger_shard_of_key(object_key: str, dataset: str) -> int | None:
    """The shard whose ledger folder holds a key under the dataset's ledger prefix."""
    prefix = ledger_prefix(dataset)
    if not object_key.startswith(prefix):
        return None
    match = _SHARD_FOLDER.fullmatch(object_key[len(prefix) :].partition("/")[0])
    return int(match.group(1)) if match else None


# --- dead letters ----------------------------------------------------------------------------


def dead_letters_prefix(dataset: str, generation: int | None = None) -> str:
    base = f"{dataset}/{DEAD_LETTERS_FOLDER}/"
    return base if generation is None else f"{base}g{generation:06d}/"


def dead_letters_key(dataset: str, generation: int, sequence: int) -> str:
    return f"{dead_letters_prefix(dataset, generation)}{sequence:08d}.mgc"


def dead_letters_of_key(object_key: str, dataset: str) -> tuple[int, int] | None:
    """(generation, sequence) of a dead-letter chunk's key; None for any other key."""
    prefix = dead_letters_prefix(dataset)
    if not object_key.startswith(prefix):
        return None
    match = _DEAD_LETTERS.fullmatch(object_key[len(prefix) :])
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- keyrings --------------------------------------------------------------------------------


def keys_prefix(dataset: str) -> str:
    return f"{dataset}/{KEYS_FOLDER}/"


def data_key_object(dataset: str) -> str:
    """The dataset's first keyring (revision 0): until a rotation, its only key object."""
    return f"{keys_prefix(dataset)}datakey.json"


def keyring_object(dataset: str, revision: int) -> str:
    return f"{keys_prefix(dataset)}keyring-{revision:06d}.json"


def revision_of(object_key: str) -> int | None:
    """The revision of a keyring object's key; None for any other key."""
    match = _REVISION.fullmatch(object_key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


# --- under state_dir: spools, markers, cutover snapshots, the dry run ------------------------


def spools_root(state_dir: Path, dataset: str) -> Path:
    return state_dir / "spool" / dataset


def spool_dir(state_dir: Path, dataset: str, generation: int) -> Path:
    """One generation's routed records: a spool and a digests file per shard."""
    return spools_root(state_dir, dataset) / f"g{generation:06d}"


def spool_path(spool_folder: Path, shard: int) -> Path:
    return spool_folder / f"s{shard:05d}.spool"


def digests_path(spool_folder: Path, shard: int) -> Path:
    """Beside each spool: one DIGEST_ENTRY per record (key hash, record digest, length)."""
    return spool_folder / f"s{shard:05d}.digests"


def inventory_spool_path(spool_folder: Path, shard: int) -> Path:
    """A sync's inventory of the shard's records, built beside its spool."""
    return spool_folder / f"s{shard:05d}.inventory"


def delta_spool_path(spool_folder: Path, shard: int) -> Path:
    """A sync's changed records of the shard: what it encodes instead of the whole spool."""
    return spool_folder / f"s{shard:05d}.delta"


def routed_root(state_dir: Path, dataset: str) -> Path:
    """Every generation's routed source files: kept while a later sync may reuse them."""
    return state_dir / "routed" / dataset


def routed_dir(state_dir: Path, dataset: str, generation: int) -> Path:
    """The files routed in one generation, and that generation's file table."""
    return routed_root(state_dir, dataset) / f"g{generation:06d}"


def generation_of_routed_dir(folder: Path) -> int | None:
    name = folder.name
    return int(name[1:]) if len(name) == 7 and name[0] == "g" and name[1:].isdigit() else None


def file_table_path(routed_folder: Path) -> Path:
    """A generation's source files as listed, each with where its routed output is."""
    return routed_folder / "files.zst"


def routed_file_path(routed_folder: Path, position: int, part: str) -> Path:
    """One routed source file's `part`: records, digests, dead (quarantined records) or the
    index written last, which says the others are complete."""
    return routed_folder / f"f{position:08d}.{part}"


def dead_letter_markers(state_dir: Path, dataset: str) -> Path:
    return state_dir / "deadletters" / dataset


def dead_letter_marker(state_dir: Path, dataset: str, generation: int) -> Path:
    """Written once a generation's dead letters are stored: their count, for run and status."""
    return dead_letter_markers(state_dir, dataset) / f"g{generation:06d}.json"


def cutover_dir(state_dir: Path, dataset: str) -> Path:
    return state_dir / "cutover" / dataset


def dry_run_dir(state_dir: Path) -> Path:
    return state_dir / "dry-run"


def dagster_dry_run_dir(state_dir: Path) -> Path:
    """Dagster's dry runs: apart from the real run's state, and from the CLI's dry run, which
    clears its folder each time."""
    return state_dir / "dagster-dry-run"


def dry_run_state_dir(workdir: Path) -> Path:
    """The state_dir a dry run gives its plan (spools, markers): apart from the real run's."""
    return workdir / "state"


def dry_run_state_file(workdir: Path) -> Path:
    return workdir / "state.sqlite"


def dry_run_kek(workdir: Path) -> Path:
    return workdir / "dry-run-kek.key"


def dry_run_destination(workdir: Path) -> Path:
    """A dry run's destination when no emulator stands in for the plan's."""
    return workdir / "dest"


def dry_run_landing(workdir: Path, dataset: str) -> Path:
    """A dry run's landing of a dataset when no emulator stands in for its bucket."""
    return workdir / "landed" / dataset


def dry_run_sample(workdir: Path, dataset: str) -> Path:
    """A synthetic sample of a dataset whose source is out of reach."""
    return workdir / "samples" / dataset


def lock_file(state_dir: Path, name: str) -> Path:
    """A lock between the processes sharing a SQLite state store, kept beside it."""
    return state_dir / "locks" / f"{name}.lock"


def dead_letter_spool_path(spool_folder: Path) -> Path:
    """Beside a generation's shard spools: the records its routing quarantined, in file order."""
    return spool_folder / "deadletters.spool"

"""What `migrator keys …` and `migrator crypto` print."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from migrator.residency.fips import FIPS_HOW_TO

if TYPE_CHECKING:
    from migrator.keys.signing import SigningPublicKey
    from migrator.maintain.rotate import DatasetRotation
    from migrator.residency.fips import CryptoBackend


def kek_created_line(kek_file: str, kek_id: str) -> str:
    return f"created KEK {kek_file} (id {kek_id}); keep it secret and back it up"


def signing_key_line(signing_file: Path, key_id: str, *, existed: bool) -> str:
    what = "kept the signing key" if existed else "created signing key"
    return (
        f"{what} {signing_file} (id {key_id}): it signs keyrings and the audit ledger; keep it"
        " secret, back it up, and give the KEK without it to whoever only restores"
    )


def audit_key_lines(keys: Iterable[SigningPublicKey], out_file: str) -> Iterator[str]:
    for key in keys:
        yield f"signing key {key.key_id} ({key.source})"
    yield f"wrote {out_file}: give it to auditors with the plan file and read access"


def rotation_lines(results: list[DatasetRotation], kek: str) -> Iterator[str]:
    """Per dataset what the rotation did, and which key a generation under way finishes under."""
    for r in results:
        if r.revision is None:
            yield f"{r.dataset}: no data key yet (its first run creates one under {kek})"
            continue
        if r.written is None:
            what = f"{r.keys} data key(s), all wrapped under {kek}; current {r.current}"
            if r.kept_unused:
                what += " has sealed nothing yet: no other data key added"
        else:
            what = f"re-wrapped {r.rewrapped} of {r.keys} data key(s) under {kek}"
            if r.new_key is not None:
                what += (
                    f"; added data key {r.new_key}, now current (it seals generation"
                    f" {r.new_key_from} on)"
                )
            if r.resigned:
                what += f"; signed by signing key {r.signed_by}"
            what += f"; wrote {r.written}"
            if r.kept_unused:
                what += f"; current data key {r.current} has sealed nothing yet: no other added"
        if r.removed:
            what += f"; removed {len(r.removed)} superseded key object(s)"
        elif r.written is None:
            what += "; nothing to do"
        yield f"{r.dataset}: {what}"
        if r.open_generation is not None and r.open_generation_key != r.current:
            yield (
                f"  generation {r.open_generation} is under way: it finishes under data key"
                f" {r.open_generation_key}; later generations are sealed under {r.current}"
            )


RETIRE_PREVIOUS = (
    "every data key is wrapped under keys, every keyring signed by its signing key:"
    " once no other copy of the plan still needs them, remove keys.previous from the"
    " plan and retire those KEKs (the keyrings keep the public keys of their signing"
    " keys, for audits of what those signed)"
)


def crypto_parts(backend: CryptoBackend) -> list[Table | str]:
    """The backend; where it is not in FIPS mode, what that refuses and how to get there."""
    out: list[Table | str] = [crypto_table(backend)]
    if not (backend.fips and backend.tls_fips):
        out.append(f"plans with fips: required refuse to run here: {FIPS_HOW_TO}")
    return out


def crypto_table(backend: CryptoBackend) -> Table:
    t = Table(title="crypto backend", title_justify="left", show_header=False)
    t.add_column("what")
    t.add_column("value")
    t.add_row("library", backend.library)
    t.add_row("OpenSSL", f"{backend.openssl} (0x{backend.openssl_number:08x})")
    t.add_row("FIPS mode", "[green]on[/]" if backend.fips else "[yellow]off[/]")
    t.add_row("TLS (Python's ssl)", backend.tls)
    t.add_row("TLS FIPS mode", "[green]on[/]" if backend.tls_fips else "[yellow]off[/]")
    for name, offered in backend.algorithms.items():
        t.add_row(name, "offered" if offered else "[red]not offered[/]")
    return t

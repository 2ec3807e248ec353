"""The commands about keys: `keys init` makes a local KEK and signing key, `keys rotate`
re-wraps data keys, `keys audit-key` exports what auditors check signatures with; `crypto`
says which crypto backend seals and unseals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import click

from migrator.cli.opening import checked_plan
from migrator.cli.options import (
    ALLOW_LOOPBACK,
    AS_JSON,
    DATASETS,
    PLAN_FILE,
    check_dataset_names,
)
from migrator.cli.render.output import console, echo_json, echo_lines


@click.group("keys")
def keys_group() -> None:
    """Key management."""


@keys_group.command("init")
@click.argument("path", type=click.Path(dir_okay=False))
def keys_init_cmd(path: str) -> None:
    """Create a new local KEK file (mode 0600), and the signing key file beside it if there is
    none; never overwrites an existing file."""
    from migrator.cli.render.keys import kek_created_line, signing_key_line
    from migrator.keys.local import init_kek_file
    from migrator.keys.local_signing import default_signing_key_file, init_signing_key_file

    kek_id = init_kek_file(Path(path))
    click.echo(kek_created_line(path, kek_id))
    signing = default_signing_key_file(Path(path))
    existed = signing.exists()
    signing_id = init_signing_key_file(signing, exist_ok=True)
    click.echo(signing_key_line(signing, signing_id, existed=existed))


@keys_group.command("audit-key")
@PLAN_FILE
@DATASETS
@click.option(
    "--out",
    "out_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The file to write (public keys only: nothing in it is secret).",
)
def keys_audit_key_cmd(plan_file: str, datasets: Sequence[str], out_file: str) -> None:
    """Export the plan's audit key: the public keys of every signing key its keyrings and
    ledgers were signed with (the current one, and the earlier ones each dataset's keyring
    lists). With it, `migrator audit PLAN --audit-key-file FILE` checks the ledgers without
    the KEK or the key service; it can neither decrypt nor sign anything."""
    from migrator.cli.render.keys import audit_key_lines
    from migrator.errors import MissingObjectError
    from migrator.keys.keyring import plan_trust
    from migrator.read.audit_key import audit_key_document
    from migrator.repository.keyrings import read_keyring
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False)
    check_dataset_names(plan, datasets)
    store = open_store(plan)
    provider = open_key_provider(plan)
    current = provider.signer.public_key()
    keys = {current.key_id: current}
    for ds in plan.datasets:
        if datasets and ds.name not in datasets:
            continue
        try:
            stored = read_keyring(store, plan.name, ds.name)
        except MissingObjectError:
            continue  # never migrated: nothing signed yet
        for key in stored.trusted_signers(plan_trust(provider)).keys:
            keys.setdefault(key.key_id, key)
    out = Path(out_file)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(audit_key_document(plan.name, list(keys.values())))
    tmp.replace(out)
    echo_lines(audit_key_lines(keys.values(), out_file))


@keys_group.command("rotate")
@PLAN_FILE
@DATASETS
@click.option(
    "--new-data-key",
    is_flag=True,
    help="Also add a fresh data key and make it current: later generations are sealed under it.",
)
@ALLOW_LOOPBACK
def keys_rotate_cmd(
    plan_file: str, datasets: Sequence[str], new_data_key: bool, allow_loopback: bool
) -> None:
    """Re-wrap every data key under the plan's KEK (`keys`), each unwrapped with whichever KEK
    wrapped it (`keys` or `keys.previous`); nothing is re-encrypted. Rerun to finish an
    interrupted rotation; a rerun with nothing to do changes nothing."""
    from migrator.cli.render.keys import RETIRE_PREVIOUS, rotation_lines
    from migrator.maintain.rotate import KeyRotation
    from migrator.wiring import open_key_provider, open_store

    plan = checked_plan(plan_file, check_sources=False, allow_loopback=allow_loopback)
    check_dataset_names(plan, datasets)
    rotation = KeyRotation(plan, open_store(plan), open_key_provider(plan))
    kek = rotation.chain.current.describe()
    results = rotation.rotate(set(datasets) or None, new_data_key=new_data_key)
    echo_lines(rotation_lines(results, kek))
    if plan.keys.previous and not datasets:
        click.echo(RETIRE_PREVIOUS)


@click.command("crypto")
@AS_JSON
def crypto_cmd(as_json: bool) -> None:
    """The crypto backend every seal and unseal goes through: its OpenSSL, whether it runs in
    FIPS mode (what a plan's `fips: required` demands) and the algorithms it offers."""
    from migrator.cli.render.keys import crypto_parts
    from migrator.residency import crypto_backend

    backend = crypto_backend()
    if as_json:
        echo_json(asdict(backend))
        return
    out = console()
    for part in crypto_parts(backend):
        out.print(part)

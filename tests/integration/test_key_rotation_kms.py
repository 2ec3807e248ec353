"""Key rotation against moto's KMS on 127.0.0.1: from one KMS key to another, and from a local
KEK into KMS; every generation stays readable and the old key alone no longer opens anything."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from migrator.demo.motoserver import MotoServer
from migrator.errors import WrongKeyError
from migrator.keys.aws_kms import AwsKmsKeyProvider
from migrator.keys.kekchain import KekChain
from migrator.keys.keyring import load_keyring
from migrator.repository.keyrings import read_keyring
from tests.e2e.test_key_rotation import (
    NAMES,
    FlakyStore,
    restores_every_generation,
    rotate,
    sealed_with,
    use_keys,
)
from tests.e2e.test_planted_keys import audit_report
from tests.e2e.test_sync_generations import LiveSource, Site, assert_same
from tests.integration.test_keys_aws_kms import REGION, kms_client

integration = pytest.mark.integration


@pytest.fixture
def kms(moto_server: MotoServer) -> Any:
    return kms_client(moto_server.endpoint_url)


def kms_kek(kms: Any, moto_server: MotoServer) -> AwsKmsKeyProvider:
    """A KMS KEK and the signing key beside it."""
    arn = str(kms.create_key(Description="migrator rotation test KEK")["KeyMetadata"]["Arn"])
    signing = kms.create_key(
        Description="migrator rotation test signing key",
        KeySpec="ECC_NIST_P256",
        KeyUsage="SIGN_VERIFY",
    )["KeyMetadata"]["Arn"]
    return AwsKmsKeyProvider(
        arn, region=REGION, endpoint_url=moto_server.endpoint_url, signing_key_id=signing
    )


@integration
@pytest.mark.parametrize("start", ["aws-kms", "local"])
def test_rotation_into_a_new_kms_key(
    tmp_path: Path, kms: Any, moto_server: MotoServer, start: str
) -> None:
    live = LiveSource(tmp_path, random.Random(41))
    live.seed(profiles=150, rows=80, videos=5)
    live.write()
    site = Site(tmp_path)
    site.store = FlakyStore()
    if start == "aws-kms":
        use_keys(site, kms_kek(kms, moto_server))
    old = site.provider
    captured = {1: live.snapshot()}
    site.run()
    live.mutate()
    live.write()
    captured[2] = live.snapshot()
    site.run()

    new = kms_kek(kms, moto_server)
    results = rotate(site, KekChain(new, [old]), new_data_key=True)
    assert [(r.rewrapped, r.keys) for r in results] == [(1, 2)] * len(NAMES)
    for name in NAMES:
        stored = read_keyring(site.store, site.plan.name, name)
        assert {(w.provider, w.kek_id) for w in stored.keys} == {("aws-kms", new.key_id)}
        # Signed by the new KMS signing key; the old one stays listed for the ledger it signed.
        signers = [s.key_id for s in stored.signers]
        assert stored.signed_by == new.signer.public_key().key_id == signers[-1]
        assert signers == [old.signer.public_key().key_id, stored.signed_by]

    use_keys(site, new)  # the old KEK retired
    site.verify_ok()
    # The ledger the old signing key signed verifies through the signers the keyrings list.
    assert audit_report(site).ok
    restores_every_generation(site, captured, tmp_path / "rotated")
    live.mutate()
    live.write()
    site.run()
    for r in results:
        assert sealed_with(site, f"{r.dataset}/g000003/") == {r.new_key}
    site.verify_ok()
    assert_same(site.restore(tmp_path / "g3"), live.snapshot(), "a sync after the rotation")
    for name in NAMES:
        with pytest.raises(WrongKeyError, match=f"dataset {name}: no KEK of the plan") as err:
            load_keyring(site.store, old, site.plan.name, name)
        assert err.value.object_key == f"{name}/_keys/keyring-000001.json"
    assert not any(r.changed for r in rotate(site, new))

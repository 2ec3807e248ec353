"""The plan's keys: the KEK new data keys are wrapped under, one model per provider, and the
earlier KEKs (`keys.previous`) that may still unwrap until a rotation re-wraps their keys."""

from __future__ import annotations

from typing import Annotated, Literal, Protocol, TypeVar

from pydantic import Field, model_validator

from migrator.plan.kinds import KeyProviderKind
from migrator.plan.section import KindVariant, Problem, field_errors
from migrator.plan.types import KmsKeyId, PlanPath, Region, Url, VaultKeyName

__all__ = [
    "AwsKmsKekPlan",
    "AwsKmsKeysPlan",
    "AzureKeyVaultKekPlan",
    "AzureKeyVaultKeysPlan",
    "KekPlan",
    "KeysPlan",
    "LocalKekPlan",
    "LocalKeysPlan",
]

_PROVIDER = "local (a KEK file, for demos and rehearsals) | aws-kms | azure-keyvault."


class _Kek(KindVariant):
    """Where a key-encryption key lives; other providers' fields stay out or null."""

    kind_field = "provider"
    section_layout = (
        "provider",
        "kek_file",
        "key_id",
        "region",
        "endpoint_url",
        "vault_url",
        "key_name",
        "signing_key_file",
        "signing_key_id",
        "signing_key_name",
    )

    @classmethod
    def section_kinds(cls) -> tuple[type[KindVariant], ...]:
        return (LocalKekPlan, AwsKmsKekPlan, AzureKeyVaultKekPlan)


class LocalKekPlan(_Kek):
    """A KEK file held by the operator: for demos and rehearsals."""

    provider: Literal[KeyProviderKind.LOCAL] = Field(description=_PROVIDER)
    kek_file: PlanPath = Field(description="The KEK file.")
    # The owner's signing key beside the KEK: it signs keyrings and audit ledgers.
    signing_key_file: PlanPath | None = Field(
        default=None,
        description="The signing key file (null: KEK_NAME.signing.key beside the KEK file,"
        " made on first use).",
    )

    def kek_identity(self) -> tuple[object, ...]:
        """What names this KEK, to tell two entries of a plan that name the same one apart."""
        return (self.provider, str(self.kek_file))


class AwsKmsKekPlan(_Kek):
    """A KMS key in AWS KMS."""

    provider: Literal[KeyProviderKind.AWS_KMS] = Field(description=_PROVIDER)
    key_id: KmsKeyId = Field(description="Key ARN, alias ARN or 'alias/NAME'.")
    region: Region | None = Field(default=None, description="The key's region (null: from env).")
    endpoint_url: Url | None = Field(default=None, description="E.g. a FIPS endpoint, or moto.")
    signing_key_id: KmsKeyId | None = Field(
        default=None,
        description="The signing key, an asymmetric ECC_NIST_P256 SIGN_VERIFY key in the KEK's"
        " region (ARN, alias ARN or 'alias/NAME'); required to run, verify or restore.",
    )

    def kek_identity(self) -> tuple[object, ...]:
        return (self.provider, self.key_id)


class AzureKeyVaultKekPlan(_Kek):
    """A key in an Azure Key Vault or Managed HSM."""

    provider: Literal[KeyProviderKind.AZURE_KEYVAULT] = Field(description=_PROVIDER)
    vault_url: Url = Field(description="The vault's URL.")
    key_name: VaultKeyName = Field(description="The key's name in the vault.")
    signing_key_name: VaultKeyName | None = Field(
        default=None,
        description="The signing key's name, an EC P-256 key in the same vault; required to"
        " run, verify or restore.",
    )

    def kek_identity(self) -> tuple[object, ...]:
        return (self.provider, self.vault_url, self.key_name)


KekPlan = Annotated[
    LocalKekPlan | AwsKmsKekPlan | AzureKeyVaultKekPlan, Field(discriminator="provider")
]

PreviousKeks = Annotated[
    tuple[KekPlan, ...],
    Field(
        description="Earlier KEKs (same fields): they only unwrap data keys wrapped before the"
        " KEK was changed, until `migrator keys rotate` re-wraps them under this one."
    ),
]


class _WithHistory(Protocol):
    @property
    def previous(self) -> tuple[KekPlan, ...]: ...

    def kek_identity(self) -> tuple[object, ...]: ...


_Keys = TypeVar("_Keys", bound=_WithHistory)


def _each_kek_once(keys: _Keys) -> _Keys:
    """A KEK listed twice would be asked twice for every key it cannot unwrap."""
    problems: list[Problem] = []
    seen = {keys.kek_identity(): "keys"}
    for index, kek in enumerate(keys.previous):
        also = seen.setdefault(kek.kek_identity(), f"keys.previous[{index}]")
        if also != f"keys.previous[{index}]":
            problems.append(
                (("previous", index), f"names the same KEK as {also}: list each KEK once")
            )
    if problems:
        raise field_errors("KeysPlan", problems)
    return keys


class _CurrentKek:
    """The plan's `keys`: a KEK with the earlier ones beside it."""

    @classmethod
    def section_kinds(cls) -> tuple[type[KindVariant], ...]:
        return (LocalKeysPlan, AwsKmsKeysPlan, AzureKeyVaultKeysPlan)


class LocalKeysPlan(_CurrentKek, LocalKekPlan):
    """The KEK new data keys are wrapped under, and the earlier KEKs that may still unwrap."""

    previous: PreviousKeks = ()
    _each_kek_once = model_validator(mode="after")(_each_kek_once)


class AwsKmsKeysPlan(_CurrentKek, AwsKmsKekPlan):
    """The KEK new data keys are wrapped under, and the earlier KEKs that may still unwrap."""

    previous: PreviousKeks = ()
    _each_kek_once = model_validator(mode="after")(_each_kek_once)


class AzureKeyVaultKeysPlan(_CurrentKek, AzureKeyVaultKekPlan):
    """The KEK new data keys are wrapped under, and the earlier KEKs that may still unwrap."""

    previous: PreviousKeks = ()
    _each_kek_once = model_validator(mode="after")(_each_kek_once)


KeysPlan = Annotated[
    LocalKeysPlan | AwsKmsKeysPlan | AzureKeyVaultKeysPlan, Field(discriminator="provider")
]

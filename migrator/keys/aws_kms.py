"""AWS KMS provider: data keys from `GenerateDataKey`, bound to the KMS encryption context.

KMS keeps the KEK: only the wrapped data key (`CiphertextBlob`) is stored, and `Decrypt` names
the plan's key, so KMS itself refuses a data key that another key wrapped. Key rotation re-wraps
an existing data key with `Encrypt` under the same encryption context. In GovCloud regions
the client uses the FIPS endpoint unless an explicit endpoint URL is given. The plan's signing
key (`signing_key_id`, migrator/keys/aws_kms_signing.py) is asked through the same client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from migrator.errors import KeyProviderError, WrongKeyError
from migrator.keys.arn import KmsArn, parse_kms_arn
from migrator.keys.aws_kms_answers import error_code, raise_kms_error, whole_answer
from migrator.keys.aws_kms_signing import KMS_KEY_SPEC, AwsKmsSigner
from migrator.keys.datakey import DATA_KEY_BYTES, DataKey
from migrator.keys.provider import WrappedKey, check_provider
from migrator.keys.signing import Signer, UnconfiguredSigner

# "standard" retries throttling and transient errors with jittered backoff; a dataset asks
# for its key once, so a slow success beats a failed run.
MAX_ATTEMPTS = 8  # in all, the first try included
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 30

# Decrypt errors that say "these bytes were not sealed by this key under this context". Moto
# (and a key policy that conditions on the encryption context) answers AccessDenied there.
_WRONG_KEY_CODES = {
    "InvalidCiphertextException": "the wrapped key or its encryption context was altered",
    "IncorrectKeyException": "it was wrapped under another KMS key",
    "AccessDeniedException": (
        "it was wrapped under another KMS key, or this caller may not use kms:Decrypt with"
        " this key and encryption context"
    ),
}


def fips_default(region: str | None, endpoint_url: str | None) -> bool | None:
    """FIPS on for GovCloud regions, off with an explicit endpoint, else botocore's own default."""
    if endpoint_url is not None:
        return False
    if region is not None and region.startswith("us-gov-"):
        return True
    return None  # AWS_USE_FIPS_ENDPOINT or the config file still apply


class AwsKmsKeyProvider:
    """Generates data keys under a KMS key (ARN, key id, alias ARN or `alias/NAME`)."""

    name = "aws-kms"

    def __init__(
        self,
        key_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any | None = None,
        use_fips: bool | None = None,
        signing_key_id: str | None = None,
    ) -> None:
        self._arn: KmsArn | None = parse_kms_arn(key_id)  # ValueError names what is wrong
        if self._arn is not None and region is not None and region != self._arn.region:
            raise ValueError(f"KMS key {key_id} lives in {self._arn.region}, not in {region}")
        if use_fips and endpoint_url is not None:
            raise ValueError("use_fips and endpoint_url exclude each other: the URL is used as is")
        self.key_id = key_id
        if client is None:
            client = self._make_client(
                region or (self._arn.region if self._arn else None), endpoint_url, use_fips
            )
        self._client: Any = client
        self.signer: Signer = UnconfiguredSigner(
            self.describe(),
            "keys.signing_key_id",
            f"an asymmetric {KMS_KEY_SPEC} SIGN_VERIFY KMS key",
        )
        if signing_key_id is not None:
            region = region or (self._arn.region if self._arn else None)
            self.signer = AwsKmsSigner(signing_key_id, client, region=region)

    def _make_client(
        self, region: str | None, endpoint_url: str | None, use_fips: bool | None
    ) -> Any:
        # A session per provider: boto3's default session is not safe to share across threads.
        session = boto3.session.Session(region_name=region)
        resolved = session.region_name
        fips = use_fips if use_fips is not None else fips_default(resolved, endpoint_url)
        config = Config(  # type: ignore[call-arg]  # its stubs lack ignore_configured_endpoint_urls
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
            use_fips_endpoint=fips,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            # The plan's endpoint or the region's, never AWS_ENDPOINT_URL(_KMS) or the config
            # file's: an endpoint that answers GenerateDataKey chooses the data key.
            ignore_configured_endpoint_urls=True,
        )
        try:
            return session.client("kms", endpoint_url=endpoint_url, config=config)
        except BotoCoreError as exc:
            raise KeyProviderError(
                f"{self.describe()}: cannot create a KMS client ({type(exc).__name__}: {exc});"
                " set the key's region or AWS_DEFAULT_REGION"
            ) from exc

    @property
    def client(self) -> Any:
        """The boto3 KMS client, for event hooks and for checking which endpoint it calls."""
        return self._client

    def describe(self) -> str:
        return f"aws-kms {self.key_id}"

    def __repr__(self) -> str:
        return f"AwsKmsKeyProvider({self.key_id!r})"

    def generate_data_key(self, context: Mapping[str, str]) -> tuple[DataKey, WrappedKey]:
        def call() -> Any:
            try:
                return self._client.generate_data_key(
                    KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=dict(context)
                )
            except (ClientError, BotoCoreError) as exc:
                self._raise("GenerateDataKey", exc)

        response = self._whole("GenerateDataKey", call, ("Plaintext", "CiphertextBlob", "KeyId"))
        key = self._data_key(response.pop("Plaintext", b""), "GenerateDataKey")
        wrapped = WrappedKey(
            provider=self.name,
            kek_id=str(response["KeyId"]),
            key_id=key.key_id.hex(),
            ciphertext=bytes(response["CiphertextBlob"]),
            context=dict(context),
        )
        return key, wrapped

    def wrap(self, key: DataKey, context: Mapping[str, str]) -> WrappedKey:
        """`Encrypt` of an existing data key (rotation), bound to the same encryption context."""

        def call() -> Any:
            try:
                return self._client.encrypt(
                    KeyId=self.key_id, Plaintext=key.secret, EncryptionContext=dict(context)
                )
            except (ClientError, BotoCoreError) as exc:
                self._raise("Encrypt", exc)

        response = self._whole("Encrypt", call, ("CiphertextBlob", "KeyId"))
        return WrappedKey(
            provider=self.name,
            kek_id=str(response["KeyId"]),
            key_id=key.key_id.hex(),
            ciphertext=bytes(response["CiphertextBlob"]),
            context=dict(context),
        )

    def unwrap(self, wrapped: WrappedKey) -> DataKey:
        check_provider(wrapped, self.name)
        self._check_same_key(wrapped.kek_id)

        def call() -> Any:
            try:
                return self._client.decrypt(
                    CiphertextBlob=wrapped.ciphertext,
                    EncryptionContext=dict(wrapped.context),
                    KeyId=self.key_id,
                )
            except ClientError as exc:
                code = error_code(exc)
                if code in _WRONG_KEY_CODES:
                    raise WrongKeyError(
                        f"data key wrapped under {wrapped.kek_id} cannot be unwrapped with KMS"
                        f" key {self.key_id} ({code}): {_WRONG_KEY_CODES[code]}"
                    ) from None
                self._raise("Decrypt", exc)
            except BotoCoreError as exc:
                self._raise("Decrypt", exc)

        response = self._whole("Decrypt", call, ("Plaintext",))
        key = self._data_key(response.pop("Plaintext", b""), "Decrypt")
        if key.key_id.hex() != wrapped.key_id:
            raise WrongKeyError(
                f"data key unwrapped with KMS key {self.key_id} does not match its recorded key id"
            )
        return key

    def _check_same_key(self, kek_id: str) -> None:
        """Refuse at once, without a KMS call, when both sides name a key and they differ.

        Key ids, not whole ARNs, are compared: a multi-Region replica has the same id in another
        region and decrypts what its primary wrapped. Aliases are left to KMS to resolve.
        """
        if self._arn is not None:
            if self._arn.resource_type != "key":
                return
            mine = self._arn.resource_id
        elif self.key_id.startswith("alias/"):
            return
        else:
            mine = self.key_id
        try:
            theirs = parse_kms_arn(kek_id)
        except ValueError:
            return  # not an ARN we can read: KMS decides
        if theirs is None or theirs.resource_type != "key":
            return
        if theirs.resource_id.lower() != mine.lower():
            raise WrongKeyError(
                f"data key was wrapped under KMS key {kek_id}, but the plan uses {self.key_id}"
            )

    def _whole(self, operation: str, call: Callable[[], Any], fields: tuple[str, ...]) -> Any:
        return whole_answer(self.describe(), operation, call, fields)

    def _data_key(self, plaintext: bytes, operation: str) -> DataKey:
        if len(plaintext) != DATA_KEY_BYTES:
            raise KeyProviderError(
                f"{self.describe()}: {operation} returned {len(plaintext)} key bytes, expected"
                f" {DATA_KEY_BYTES}"
            )
        return DataKey(plaintext)

    def _raise(self, operation: str, exc: ClientError | BotoCoreError) -> NoReturn:
        raise_kms_error(self.describe(), operation, exc)

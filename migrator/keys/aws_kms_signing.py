"""The owner's signing key in AWS KMS: an asymmetric `ECC_NIST_P256` key with key usage
`SIGN_VERIFY`, used with `Sign` (`ECDSA_SHA_256`, `MessageType=RAW`) and `GetPublicKey`.

Writers need kms:Sign and kms:GetPublicKey on it; readers and auditors only its public key
(kms:GetPublicKey, or an exported audit key file). It is a key of its own: a principal allowed
to Encrypt or Decrypt with the KEK cannot sign with it. KMS keeps an asymmetric key's key
material for the key's life, so segments it signed years ago still verify.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from migrator.errors import KeyProviderError
from migrator.keys.arn import parse_kms_arn
from migrator.keys.aws_kms_answers import raise_kms_error, whole_answer
from migrator.keys.signing import CachedPublicKey, SigningPublicKey, raw_signature

KMS_KEY_SPEC = "ECC_NIST_P256"
KMS_KEY_USAGE = "SIGN_VERIFY"
KMS_SIGNING_ALGORITHM = "ECDSA_SHA_256"


class AwsKmsSigner:
    """Signs with a KMS key (ARN, key id, alias ARN or `alias/NAME`) through `client`, the KEK
    provider's KMS client (same account, region and endpoint)."""

    def __init__(self, key_id: str, client: Any, *, region: str | None = None) -> None:
        arn = parse_kms_arn(key_id)  # ValueError names what is wrong
        if arn is not None and region is not None and arn.region != region:
            raise ValueError(
                f"KMS signing key {key_id} lives in {arn.region}, not in {region} (the KEK's"
                " region: one KMS endpoint serves both)"
            )
        self.key_id = key_id
        self._client = client
        self._public = CachedPublicKey(self._fetch_public_key)

    def describe(self) -> str:
        return f"aws-kms signing key {self.key_id}"

    def __repr__(self) -> str:
        return f"AwsKmsSigner({self.key_id!r})"

    def _fetch_public_key(self) -> SigningPublicKey:
        def call() -> Any:
            try:
                return self._client.get_public_key(KeyId=self.key_id)
            except (ClientError, BotoCoreError) as exc:
                raise_kms_error(self.describe(), "GetPublicKey", exc)

        answer = whole_answer(self.describe(), "GetPublicKey", call, ("PublicKey", "KeyId"))
        spec = answer.get("KeySpec") or answer.get("CustomerMasterKeySpec")
        usage = answer.get("KeyUsage")
        if (spec, usage) != (KMS_KEY_SPEC, KMS_KEY_USAGE):
            raise KeyProviderError(
                f"{self.describe()}: is a {spec} key for {usage}; the signing key must be an"
                f" asymmetric {KMS_KEY_SPEC} key for {KMS_KEY_USAGE}"
            )
        try:
            return SigningPublicKey(bytes(answer["PublicKey"]), f"aws-kms {answer['KeyId']}")
        except ValueError as exc:
            raise KeyProviderError(f"{self.describe()}: GetPublicKey answered {exc}") from None

    def public_key(self) -> SigningPublicKey:
        return self._public.get()

    def public_key_for(self, key_id: str) -> SigningPublicKey | None:
        public = self.public_key()
        return public if public.key_id == key_id else None

    def sign(self, message: bytes) -> bytes:
        self.public_key()  # a key of the wrong kind is named before anything is signed

        def call() -> Any:
            try:
                return self._client.sign(
                    KeyId=self.key_id,
                    Message=message,
                    MessageType="RAW",
                    SigningAlgorithm=KMS_SIGNING_ALGORITHM,
                )
            except (ClientError, BotoCoreError) as exc:
                raise_kms_error(self.describe(), "Sign", exc)

        answer = whole_answer(self.describe(), "Sign", call, ("Signature",))
        try:
            return raw_signature(bytes(answer["Signature"]))
        except ValueError:
            raise KeyProviderError(
                f"{self.describe()}: Sign answered a signature that is not DER ECDSA"
            ) from None

"""The hostile plans of tests/unit/test_residency_hostile.py, one case each, and the plans the
checks must accept. A plan is a dict written as JSON (which is YAML), so every byte of a URL
reaches the plan loader exactly as written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GOV_KEY = "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
OLD_GOV_KEY = GOV_KEY.replace("key/0f6e", "key/1f6e")
GOV_SIGNING_KEY = GOV_KEY.replace("key/0f6e", "key/2f6e")
COM_KEY = "arn:aws:kms:us-east-1:111122223333:key/0f6e1c2a-5b7d-4e8f-9a3b-2c1d4e5f6a7b"
GOV = {"aws_partitions": ["aws-us-gov"], "azure_clouds": ["AzureUSGovernment"]}
SECRET = "c2VjcmV0LWFjY291bnQta2V5LW5ldmVyLXByaW50ZWQ="  # stands for an AccountKey

S3_FIPS = "s3-fips.us-gov-west-1.amazonaws.com"
KMS_FIPS = "kms-fips.us-gov-west-1.amazonaws.com"
BLOB = "archivegov.blob.core.usgovcloudapi.net"
VAULT = "migration-kv.vault.usgovcloudapi.net"

S3: dict[str, Any] = {"kind": "s3", "bucket": "archive-gov", "region": "us-gov-west-1"}
KMS: dict[str, Any] = {
    "provider": "aws-kms",
    "key_id": GOV_KEY,
    "region": "us-gov-west-1",
    "signing_key_id": GOV_SIGNING_KEY,
}
AZURE: dict[str, Any] = {"kind": "azure", "bucket": "archive", "account_url": f"https://{BLOB}"}
KEY_VAULT: dict[str, Any] = {
    "provider": "azure-keyvault",
    "vault_url": f"https://{VAULT}/",
    "key_name": "migration-kek",
    "signing_key_name": "migration-signing",
}
LOCAL_KEYS: dict[str, Any] = {"provider": "local", "kek_file": "kek.key"}


@dataclass(frozen=True)
class Case:
    """A plan, the environment it runs in, and the one field every refusal must name."""

    id: str
    field: str
    destination: dict[str, Any] = field(default_factory=lambda: S3)
    keys: dict[str, Any] = field(default_factory=lambda: KMS)
    top: dict[str, Any] = field(default_factory=lambda: {"residency": GOV})
    env: dict[str, str] = field(default_factory=dict)
    fips_backend: bool = True  # what the (patched) crypto backend reports
    by_model: bool = False  # refused by the plan model itself, before residency
    also: tuple[str, ...] = ()  # further fields the same trick refuses
    dry_run_allows: bool = False  # a dry run reads no connection string, so needs none

    def plan(self) -> dict[str, Any]:
        return {
            "version": 1,
            "name": "hostile",
            "state_dir": "state",
            **self.top,
            "keys": self.keys,
            "destination": self.destination,
            "datasets": [
                {
                    "name": "d",
                    "kind": "objects",
                    "source": {"kind": "local", "path": "data"},
                    "shards": 2,
                }
            ],
        }


def s3_at(url: str, **more: Any) -> dict[str, Any]:
    return {**S3, "endpoint_url": url, **more}


def kms_at(url: str) -> dict[str, Any]:
    return {**KMS, "endpoint_url": url}


def azure_at(url: str) -> dict[str, Any]:
    return {**AZURE, "account_url": url}


def vault_at(url: str) -> dict[str, Any]:
    return {**KEY_VAULT, "vault_url": url}


def azure_conn(connection_string: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    dest = {**AZURE, "connection_string_env": "AZ_CONN"}
    return dest, ({} if connection_string is None else {"AZ_CONN": connection_string})


# Tricks on one trusted host: each must be refused wherever an endpoint is named.
def url_tricks(host: str) -> dict[str, str]:
    return {
        "userinfo-backslash": f"https://evil.example\\@{host}",
        "userinfo": f"https://evil.example@{host}",
        "userinfo-reversed": f"https://{host}@evil.example",
        "userinfo-password": f"https://user:pass@{host}",
        "backslash-label": f"https://{host}\\.evil.example",
        "percent-dot": "https://" + host.replace(".", "%2e", 1),
        "percent-at": f"https://evil.example%40{host}",
        "percent-nul": f"https://{host}%00.evil.example",
        "suffix-game": f"https://{host}.evil.example",
        "prefix-game": "https://" + host.replace(".", ".evil", 1),
        "label-prefix": f"https://evil.{host}",
        "trailing-dot": f"https://{host}.",
        "empty-label": "https://" + host.replace(".", "..", 1),
        "leading-dot": f"https://.{host}",
        "other-port": f"https://{host}:8443",
        "padded-port": f"https://{host}:0443",
        "plain-http": f"http://{host}",
        "path-trick": f"https://evil.example/{host}",
        "query-trick": f"https://evil.example?{host}",
        "fragment-trick": f"https://evil.example#{host}",
        "path-on-host": f"https://{host}/evil",
        "nul-byte": f"https://{host}\x00.evil.example",
        "control-char": f"https://evil.example\x01{host}",
        "fullwidth-dot": "https://" + host.replace(".", "\u3002"),
        "homoglyph": "https://" + host.replace("s", "\u0455", 1).replace("a", "\u0430", 1),
    }


# Tricks the plan model's URL pattern already refuses, before any residency check.
def model_tricks(host: str) -> dict[str, str]:
    return {
        "backslash-scheme": f"https:\\\\{host}",
        "other-scheme": f"ftp://{host}",
        "space": f"https://{host} .evil.example",
        "tab-userinfo": f"https://evil.example\t@{host}",
        "newline": f"https://evil.example\n.{host}",
    }


IP_LITERALS = {
    "ipv4": "https://52.94.0.1",
    "ipv6": "https://[2600:1f14::1]",
    "ipv4-mapped-ipv6": "https://[::ffff:127.0.0.1]",
    "decimal-integer": "http://2130706433:5000",
    "hex-integer": "https://0x7f000001",
    "octal-quad": "https://0177.0.0.1",
    "short-quad": "https://127.1",
    "hex-quad": "https://0x7f.0.0.1",
}

LOOPBACK_OK = {"residency": {**GOV, "allow_loopback": True}}
FIPS = {"residency": GOV, "fips": "required"}
STATE_HOSTS = {"residency": {**GOV, "state_hosts": ["state-db.gov.internal"]}}


def hostile_cases() -> list[Case]:
    cases: list[Case] = []
    fields = {  # the four endpoint fields, each in an otherwise good plan
        "s3": ("destination.endpoint_url", S3_FIPS, lambda url: {"destination": s3_at(url)}),
        "kms": ("keys.endpoint_url", KMS_FIPS, lambda url: {"keys": kms_at(url)}),
        "blob": (
            "destination.account_url",
            BLOB,
            lambda url: {"destination": azure_at(url), "keys": KEY_VAULT},
        ),
        "vault": (
            "keys.vault_url",
            VAULT,
            lambda url: {"destination": AZURE, "keys": vault_at(url)},
        ),
    }
    for prefix, (name, host, place) in fields.items():
        for trick, url in url_tricks(host).items():
            cases.append(Case(f"{prefix}-{trick}", name, **place(url)))
        for trick, url in model_tricks(host).items():
            cases.append(Case(f"{prefix}-{trick}", name, **place(url), by_model=True))
    for trick, url in IP_LITERALS.items():  # loopback admitted, yet no IP spelling passes
        cases.append(Case(f"ip-{trick}", "destination.endpoint_url", s3_at(url), top=LOOPBACK_OK))
    cases += [
        # Hosts that only look the part.
        Case(
            "region-as-label",
            "destination.endpoint_url",
            s3_at("https://us-gov-west-1.s3.us-east-1.amazonaws.com"),
        ),
        Case(
            "commercial-s3", "destination.endpoint_url", s3_at("https://s3.us-east-1.amazonaws.com")
        ),
        Case(
            "other-gov-region",
            "destination.endpoint_url",
            s3_at("https://s3.us-gov-east-1.amazonaws.com"),
        ),
        Case(
            "china-domain",
            "destination.endpoint_url",
            s3_at("https://s3.us-gov-west-1.amazonaws.com.cn"),
        ),
        Case("evil-amazonaws", "destination.endpoint_url", s3_at("https://evilamazonaws.com")),
        Case("kms-host-for-s3", "destination.endpoint_url", s3_at(f"https://{KMS_FIPS}")),
        Case("s3-host-for-kms", "keys.endpoint_url", keys=kms_at(f"https://{S3_FIPS}")),
        Case(
            "kms-region-as-label",
            "keys.endpoint_url",
            keys=kms_at("https://us-gov-west-1.kms.us-east-1.amazonaws.com"),
        ),
        Case(
            "kms-other-region",
            "keys.endpoint_url",
            keys=kms_at("https://kms-fips.us-gov-east-1.amazonaws.com"),
        ),
        Case(
            "blob-commercial",
            "destination.account_url",
            azure_at("https://archivegov.blob.core.windows.net"),
            KEY_VAULT,
        ),
        Case(
            "blob-no-account",
            "destination.account_url",
            azure_at("https://blob.core.usgovcloudapi.net"),
            KEY_VAULT,
        ),
        Case(
            "blob-extra-label", "destination.account_url", azure_at(f"https://a.{BLOB}"), KEY_VAULT
        ),
        Case(
            "vault-host-for-blob",
            "destination.account_url",
            azure_at(f"https://{VAULT}"),
            KEY_VAULT,
        ),
        Case(
            "vault-commercial",
            "keys.vault_url",
            AZURE,
            vault_at("https://migration-kv.vault.azure.net/"),
        ),
        Case("blob-host-for-vault", "keys.vault_url", AZURE, vault_at(f"https://{BLOB}/")),
        # Places: regions, keys and folders outside the policy.
        Case("commercial-region", "destination.region", {**S3, "region": "us-east-1"}),
        Case("commercial-key", "keys.key_id", keys={"provider": "aws-kms", "key_id": COM_KEY}),
        Case("key-in-other-region", "keys.key_id", keys={**KMS, "region": "us-gov-east-1"}),
        Case(
            "alias-without-region", "keys.key_id", keys={"provider": "aws-kms", "key_id": "alias/k"}
        ),
        Case(
            "signing-key-commercial", "keys.signing_key_id", keys={**KMS, "signing_key_id": COM_KEY}
        ),
        Case(
            "signing-key-other-region",
            "keys.signing_key_id",
            keys={**KMS, "signing_key_id": GOV_KEY.replace("west", "east")},
        ),
        Case("sse-commercial-key", "destination.sse_kms_key_id", {**S3, "sse_kms_key_id": COM_KEY}),
        Case("local-folder", "destination.path", {"kind": "local", "path": "dest"}, LOCAL_KEYS),
        Case("loopback-without-flag", "destination.endpoint_url", s3_at("http://127.0.0.1:9000")),
        # keys.previous: each entry as the keys themselves.
        Case(
            "previous-userinfo",
            "keys.previous[0].endpoint_url",
            keys={
                **KMS,
                "previous": [
                    kms_at(f"https://evil.example\\@{KMS_FIPS}") | {"key_id": OLD_GOV_KEY}
                ],
            },
        ),
        Case(
            "previous-commercial",
            "keys.previous[0].key_id",
            keys={**KMS, "previous": [{"provider": "aws-kms", "key_id": COM_KEY}]},
        ),
        Case(
            "previous-vault",
            "keys.previous[0].vault_url",
            keys={**KMS, "previous": [vault_at(f"https://{VAULT}.evil.example/")]},
        ),
        Case(
            "previous-on-local-keys",
            "keys.previous[0].endpoint_url",
            {"kind": "local", "path": "dest"},
            {
                **LOCAL_KEYS,
                "previous": [kms_at("https://kms.us-gov-west-1.amazonaws.com.evil.example")],
            },
            LOOPBACK_OK,
        ),
        # No policy: refused unless the plan says allow_any.
        Case("no-policy-s3", "residency", top={}),
        Case("no-policy-azure", "residency", AZURE, KEY_VAULT, top={}),
        Case("no-policy-cloud-keys", "residency", {"kind": "local", "path": "dest"}, KMS, top={}),
        Case(
            "no-policy-previous",
            "residency",
            {"kind": "local", "path": "dest"},
            {**LOCAL_KEYS, "previous": [KEY_VAULT]},
            top={},
        ),
        Case(
            "allow-any-with-policy",
            "residency.allow_any",
            top={"residency": {**GOV, "allow_any": True}},
            by_model=True,
        ),
        # botocore's endpoint variables.
        Case(
            "env-s3", "env AWS_ENDPOINT_URL_S3", env={"AWS_ENDPOINT_URL_S3": "https://evil.example"}
        ),
        Case(
            "env-all",
            "env AWS_ENDPOINT_URL",
            env={"AWS_ENDPOINT_URL": "https://s3.us-east-1.amazonaws.com"},
        ),
        Case(
            "env-kms",
            "env AWS_ENDPOINT_URL_KMS",
            env={"AWS_ENDPOINT_URL_KMS": f"https://evil.example\\@{KMS_FIPS}"},
        ),
        Case(
            "env-kms-local-dest",
            "env AWS_ENDPOINT_URL_KMS",
            {"kind": "local", "path": "dest"},
            top=LOOPBACK_OK,
            env={"AWS_ENDPOINT_URL_KMS": "https://kms.us-east-1.amazonaws.com"},
        ),
        # The state store's host, when the policy names the hosts.
        Case(
            "state-url-env",
            "MIGRATOR_STATE_URL",
            top=STATE_HOSTS,
            env={"MIGRATOR_STATE_URL": "postgresql://migrator@evil.example/migr"},
        ),
        Case(
            "state-url-plan",
            "state_url",
            top={**STATE_HOSTS, "state_url": "postgresql://migrator@evil.example/migr"},
        ),
        Case(
            "state-url-query-host",
            "state_url ?host=",
            top={
                **STATE_HOSTS,
                "state_url": "postgresql://migrator@state-db.gov.internal/migr?host=evil.example",
            },
        ),
        Case(
            "state-pghost",
            "PGHOST",
            top={**STATE_HOSTS, "state_url": "postgresql://migrator@/migr"},
            env={"PGHOST": "evil.example"},
        ),
        Case(
            "state-pghostaddr",
            "PGHOSTADDR",
            top={**STATE_HOSTS, "state_url": "postgresql://migrator@state-db.gov.internal/migr"},
            env={"PGHOSTADDR": "203.0.113.9"},
        ),
        # FIPS required: non-FIPS hosts, a FIPS switch turned off, a backend outside FIPS mode.
        Case(
            "fips-s3-host",
            "destination.endpoint_url",
            s3_at("https://s3.us-gov-west-1.amazonaws.com"),
            top=FIPS,
        ),
        Case(
            "fips-s3-dualstack",
            "destination.endpoint_url",
            s3_at("https://s3.dualstack.us-gov-west-1.amazonaws.com"),
            top=FIPS,
        ),
        Case("fips-use-fips-off", "destination.use_fips", {**S3, "use_fips": False}, top=FIPS),
        Case(
            "fips-kms-host",
            "keys.endpoint_url",
            keys=kms_at("https://kms.us-gov-west-1.amazonaws.com"),
            top=FIPS,
        ),
        Case(
            "fips-previous-kms",
            "keys.previous[0].endpoint_url",
            keys={
                **KMS,
                "previous": [
                    kms_at("https://kms.us-gov-west-1.amazonaws.com") | {"key_id": "alias/old"}
                ],
            },
            top=FIPS,
        ),
        Case(
            "fips-env-s3",
            "env AWS_ENDPOINT_URL_S3",
            top=FIPS,
            env={"AWS_ENDPOINT_URL_S3": "https://s3.us-gov-west-1.amazonaws.com"},
        ),
        Case(
            "fips-no-policy",
            "destination.endpoint_url",
            s3_at("https://s3.us-gov-west-1.amazonaws.com"),
            top={"residency": {"allow_any": True}, "fips": "required"},
        ),
        Case(
            "fips-backend-off",
            "fips",
            s3_at(f"https://{S3_FIPS}"),
            kms_at(f"https://{KMS_FIPS}"),
            FIPS,
            fips_backend=False,
        ),
    ]
    cases += connection_string_cases()
    return cases


def connection_string_cases() -> list[Case]:
    key = f"AccountKey={SECRET}"
    gov = "EndpointSuffix=core.usgovcloudapi.net"
    strings: dict[str, tuple[str | None, str]] = {
        "evil-endpoint": (
            f"AccountName=archivegov;{key};BlobEndpoint=https://evil.example",
            "blob endpoint",
        ),
        "userinfo-endpoint": (f"{key};BlobEndpoint=https://evil.example\\@{BLOB}", "blob endpoint"),
        "default-suffix": (
            f"DefaultEndpointsProtocol=https;AccountName=archivegov;{key}",
            "blob endpoint",
        ),
        "commercial-suffix": (
            f"DefaultEndpointsProtocol=https;AccountName=archivegov;{key};EndpointSuffix=core.windows.net",
            "blob endpoint",
        ),
        "plain-http": (
            f"DefaultEndpointsProtocol=http;AccountName=archivegov;{key};{gov}",
            "blob endpoint",
        ),
        "account-name-trick": (
            f"DefaultEndpointsProtocol=https;AccountName=evil.example#;{key};{gov}",
            "blob endpoint",
        ),
        "evil-secondary": (
            f"{key};BlobEndpoint=https://{BLOB};BlobSecondaryEndpoint=https://evil.example",
            "secondary",
        ),
        "repeated-last-wins": (
            f"{key};BlobEndpoint=https://{BLOB};BlobEndpoint=https://evil.example",
            "blob endpoint",
        ),
        "lower-case-name": (f"{key};blobendpoint=https://evil.example", "blob endpoint"),
        "dev-storage": ("UseDevelopmentStorage=true", "blob endpoint"),
        "malformed": (f"{key};BlobEndpoint", "destination.connection_string_env"),
        "only-secondary": (
            f"{key};BlobSecondaryEndpoint=https://{BLOB}",
            "destination.connection_string_env",
        ),
        "unset": (None, "destination.connection_string_env"),
    }
    field = "destination.connection_string_env"
    cases = []
    for name, (text, part) in strings.items():
        dest, env = azure_conn(text)
        where = part if part == field else f"{field} (AZ_CONN: {part})"
        # A suffix the SDK builds the primary endpoint from makes the secondary one too.
        both = name in ("commercial-suffix", "account-name-trick")
        also = (f"{field} (AZ_CONN: secondary)",) if both else ()
        unset = text is None
        cases.append(
            Case(f"conn-{name}", where, dest, KEY_VAULT, env=env, also=also, dry_run_allows=unset)
        )
    return cases


def accepted_cases() -> list[Case]:
    """Plans the checks must accept: the real GovCloud and Azure Government endpoints."""
    conn, conn_env = azure_conn(
        f"DefaultEndpointsProtocol=https;AccountName=archivegov;AccountKey={SECRET};"
        "EndpointSuffix=core.usgovcloudapi.net"
    )
    blob_conn, blob_env = azure_conn(f"AccountKey={SECRET};BlobEndpoint=https://{BLOB}/")
    return [
        Case("govcloud-fips", "", s3_at(f"https://{S3_FIPS}"), kms_at(f"https://{KMS_FIPS}")),
        Case("govcloud-default-endpoints", "", S3, KMS),
        Case("govcloud-plain-s3", "", s3_at("https://s3.us-gov-west-1.amazonaws.com")),
        Case(
            "govcloud-east",
            "",
            s3_at("https://s3-fips.us-gov-east-1.amazonaws.com", region="us-gov-east-1"),
        ),
        Case(
            "govcloud-dualstack-fips",
            "",
            s3_at("https://s3-fips.dualstack.us-gov-west-1.amazonaws.com"),
        ),
        Case("upper-case-and-port", "", s3_at("https://S3-FIPS.US-GOV-WEST-1.AMAZONAWS.COM:443")),
        Case("azure-government", "", AZURE, KEY_VAULT),
        Case(
            "managed-hsm", "", AZURE, vault_at("https://migration-hsm.managedhsm.usgovcloudapi.net")
        ),
        Case("azure-conn-suffix", "", conn, KEY_VAULT, env=conn_env),
        Case("azure-conn-endpoint", "", blob_conn, KEY_VAULT, env=blob_env),
        Case("fips-required", "", s3_at(f"https://{S3_FIPS}"), kms_at(f"https://{KMS_FIPS}"), FIPS),
        Case("fips-default-endpoints", "", S3, KMS, FIPS),
        Case("fips-azure", "", AZURE, KEY_VAULT, FIPS),
        Case("env-gov-fips", "", top=FIPS, env={"AWS_ENDPOINT_URL_S3": f"https://{S3_FIPS}"}),
        Case(
            "previous-unwrap-only",
            "",
            keys={**KMS, "previous": [{"provider": "aws-kms", "key_id": COM_KEY}]},
            top={"residency": {**GOV, "unwrap_aws_partitions": ["aws"]}},
        ),
        Case(
            "state-host-listed",
            "",
            top={
                **STATE_HOSTS,
                "state_url": "postgresql://migrator@state-db.gov.internal:5432/migr",
            },
        ),
        Case(
            "allow-any",
            "",
            s3_at("https://minio.internal.example:9000"),
            top={"residency": {"allow_any": True}},
        ),
        Case("local-with-loopback", "", {"kind": "local", "path": "dest"}, LOCAL_KEYS, LOOPBACK_OK),
        Case("local-no-policy", "", {"kind": "local", "path": "dest"}, LOCAL_KEYS, top={}),
    ]

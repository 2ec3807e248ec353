"""The residency and FIPS checks of a plan: every endpoint the process will talk to, from the plan
and from the environment, placed by the host the SDK will connect to."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from migrator.errors import PlanError
from migrator.keys.arn import parse_kms_arn, partition_of_region
from migrator.plan.model import (
    AwsKmsKekPlan,
    DestinationPlan,
    KekPlan,
    KeyProviderKind,
    LocalDestinationPlan,
    LocalKekPlan,
    Plan,
    S3DestinationPlan,
    StoreKind,
)
from migrator.residency import fips as crypto
from migrator.residency.endpoints import (
    AWS_DOMAINS,
    EndpointRefused,
    HostPlace,
    aws_service_host,
    azure_blob_host,
    azure_vault_host,
    parse_endpoint,
    shown_url,
)
from migrator.residency.environment import (
    ConnectionStringError,
    aws_endpoint_overrides,
    blob_endpoints,
    is_loopback_host,
    landing_table_hosts,
    on_loopback,
    state_hosts,
)

Locate = Callable[[str], HostPlace | None]
CLOUD_KEY_PROVIDERS = frozenset({KeyProviderKind.AWS_KMS, KeyProviderKind.AZURE_KEYVAULT})


@dataclass(frozen=True, slots=True)
class ResidencyCheck:
    field: str  # the plan field (or environment variable) checked, e.g. "destination.region"
    value: str  # as messages may show it: no secret part
    place: str  # the partition or cloud it lies in, or "loopback", "local", "unknown"
    allowed: bool
    reason: str
    rule: str = "residency"  # or "fips"


class ResidencyError(PlanError):
    """The plan would put data or keys outside the allowed clouds, or break `fips: required`."""


def _cloud_parts(plan: Plan) -> list[str]:
    """What in the plan lies in a cloud, and so needs a residency policy."""
    kind = plan.destination.kind
    parts = [f"an {kind} destination"] if kind is not StoreKind.LOCAL else []
    keks = [("keys", plan.keys)] + [
        (f"keys.previous[{i}]", k) for i, k in enumerate(plan.keys.previous)
    ]
    parts += [
        f"{name} ({kek.provider})" for name, kek in keks if kek.provider in CLOUD_KEY_PROVIDERS
    ]
    for dataset in plan.datasets:
        landing, where = dataset.landing, f"datasets[{dataset.name}].landing"
        if landing is not None and landing.bucket and landing.bucket.kind is not StoreKind.LOCAL:
            parts.append(f"an {landing.bucket.kind} landing bucket ({where}.bucket)")
        if landing is not None and landing.table and not on_loopback(landing.table.url_env):
            parts.append(f"a landing table ({where}.table)")
    return parts


class _Checker:
    def __init__(self, plan: Plan, allow_loopback: bool, rehearsal: bool) -> None:
        policy = plan.residency
        self.places = policy is not None and not policy.allow_any  # whether places are checked
        self.partitions = set(policy.aws_partitions) if policy else set()
        self.clouds = set(policy.azure_clouds) if policy else set()
        self.home = self.partitions | self.clouds
        self.unwrap = set(self.home)  # where keys.previous may lie: these, and those named
        if policy is not None:
            self.unwrap |= {*policy.unwrap_aws_partitions, *policy.unwrap_azure_clouds}
        self.allow_loopback = allow_loopback or bool(policy and policy.allow_loopback)
        self.fips = plan.fips == "required"
        self.rehearsal = rehearsal  # a dry run: the real secrets may be absent here
        self.s3_environment_checked = False
        self.landing_hosts = {h.lower() for h in policy.landing_hosts or ()} if policy else set()
        self.checks: list[ResidencyCheck] = []

    def add(self, field: str, value: str, place: str, ok: bool, why: str, rule: str = "") -> None:
        self.checks.append(ResidencyCheck(field, value, place, ok, why, rule or "residency"))

    def place(self, field: str, value: str, place: str, *, unwrap: bool = False) -> None:
        if not self.places:
            return
        allowed = self.unwrap if unwrap else self.home
        ok = place in allowed
        kind = "partition" if place in AWS_DOMAINS else "cloud"
        what = f"allowed {kind}" + (" (unwrap only)" if unwrap and place not in self.home else "")
        why = what if ok else f"{kind} {place} is not in {sorted(allowed)}"
        self.add(field, value, place, ok, why)

    def endpoint(
        self, field: str, url: str, locate: Locate, what: str, *, unwrap: bool = False
    ) -> None:
        """Parse `url` as the SDK will, then place its host; FIPS hosts when fips: required."""
        if not (self.places or self.fips):
            return
        shown = shown_url(url)
        try:
            endpoint = parse_endpoint(url)
        except EndpointRefused as exc:
            self.add(field, shown, "unknown", False, f"endpoint {exc}")
            return
        if endpoint.loopback:
            why = "loopback endpoint, allowed by --allow-loopback or residency.allow_loopback"
            if not self.allow_loopback:
                why = "loopback endpoint: allowed only with --allow-loopback (tests, rehearsals)"
            self.add(field, shown, "loopback", self.allow_loopback, why)
            return
        found = locate(endpoint.host)
        if found is None:
            self.add(field, shown, "unknown", False, f"host {endpoint.host} is not {what}")
            return
        if self.fips and not found.fips:
            why = f"host {endpoint.host} is not a FIPS endpoint (fips: required)"
            self.add(field, shown, found.place, False, why, "fips")
            return
        if self.places:
            self.place(field, shown, found.place, unwrap=unwrap)
        else:
            self.add(field, shown, found.place, True, "a FIPS endpoint", "fips")

    # --- the plan's parts -----------------------------------------------------------------

    def store(self, at: str, dest: DestinationPlan) -> None:
        """The destination, or a landing bucket: `at` is the plan section naming its fields."""
        if isinstance(dest, LocalDestinationPlan):
            if self.places:
                why = "a local folder is outside any cloud: allowed only with --allow-loopback"
                self.add(f"{at}.path", str(dest.path), "local", self.allow_loopback, why)
        elif isinstance(dest, S3DestinationPlan):
            region = dest.region
            self.place(f"{at}.region", region, partition_of_region(region))
            s3 = f"an S3 endpoint of region {region}"
            if dest.endpoint_url:
                self.endpoint(f"{at}.endpoint_url", dest.endpoint_url, _aws("s3", region), s3)
            else:
                self.forced_fips(f"{at}.use_fips", dest.use_fips, "s3", region)
            if dest.sse_kms_key_id:
                self.kms_key(f"{at}.sse_kms_key_id", dest.sse_kms_key_id, region)
            if not self.s3_environment_checked:  # the same variables, whichever bucket
                self.s3_environment_checked = True
                for name, value in aws_endpoint_overrides("s3"):
                    self.endpoint(f"env {name}", value, _aws_any_region("s3"), "an S3 endpoint")
        else:
            blob = "a blob endpoint of an Azure cloud (ACCOUNT.blob.core...)"
            self.endpoint(f"{at}.account_url", dest.account_url, azure_blob_host, blob)
            if dest.connection_string_env:
                self.connection_string(f"{at}.connection_string_env", dest.connection_string_env)

    def landings(self, plan: Plan) -> None:
        for dataset in plan.datasets:
            landing, section = dataset.landing, f"datasets[{dataset.name}].landing"
            if landing is not None and landing.bucket is not None:
                self.store(f"{section}.bucket", landing.bucket)
            if landing is not None and landing.table is not None:
                self.table(f"{section}.table.url_env", landing.table.url_env)

    def table(self, field: str, variable: str) -> None:
        """The hosts of a landing table's database, read from `variable` (never its password)."""
        if not self.places:
            return
        try:
            hosts = landing_table_hosts(variable)
        except ValueError as exc:
            self.add(field, variable, "unknown", False, f"the URL in {variable} {exc}")
            return
        if hosts is None:
            why = f"{variable} is not set here: `land` checks its host when it reads it"
            self.add(field, variable, "unknown", True, why)
            return
        for found in hosts:
            where = field if found.source == variable else f"{field} ({found.source})"
            if found.host.lower() in self.landing_hosts:
                self.add(where, found.host, "landing host", True, "a listed landing host")
            elif is_loopback_host(found.host):
                why = "loopback database: allowed only with --allow-loopback or allow_loopback"
                self.add(where, found.host, "loopback", self.allow_loopback, why)
            else:
                why = f"not in residency.landing_hosts {sorted(self.landing_hosts)}"
                self.add(where, found.host, "unknown", False, why)

    def connection_string(self, field: str, variable: str) -> None:
        """The endpoints the SDK takes from the connection string; its secrets stay unread."""
        if not (self.places or self.fips):
            return
        text = os.environ.get(variable)
        if not text:
            if self.rehearsal:
                why = (
                    f"{variable} is not set here: a dry run never reads it; the real run checks it"
                )
                self.add(field, variable, "unknown", True, why)
            else:
                why = f"environment variable {variable} is not set: its endpoint cannot be checked"
                self.add(field, variable, "unknown", False, why)
            return
        try:
            endpoints = blob_endpoints(text)
        except ConnectionStringError as exc:
            self.add(field, variable, "unknown", False, f"the connection string {exc}")
            return
        blob = "a blob endpoint of an Azure cloud (ACCOUNT.blob.core...)"
        self.endpoint(
            f"{field} ({variable}: blob endpoint)", endpoints.primary, azure_blob_host, blob
        )
        if endpoints.secondary is not None:
            second = endpoints.secondary
            url = second if "://" in second else f"https://{second}"
            secondary = partial(azure_blob_host, secondary=True)
            self.endpoint(f"{field} ({variable}: secondary)", url, secondary, blob)

    def kek(self, prefix: str, kek: KekPlan, *, unwrap: bool) -> None:
        if isinstance(kek, LocalKekPlan):
            if self.places:
                why = "a local KEK file held by the operator, in no cloud"
                self.add(f"{prefix}.kek_file", str(kek.kek_file), "local", True, why)
        elif isinstance(kek, AwsKmsKekPlan):
            region = self.kms_key(f"{prefix}.key_id", kek.key_id, kek.region, unwrap=unwrap)
            if kek.signing_key_id:  # asked through the KEK's client: same endpoint and region
                self.kms_key(f"{prefix}.signing_key_id", kek.signing_key_id, region, unwrap=unwrap)
            if kek.endpoint_url:
                what = f"a KMS endpoint of region {region}" if region else "placed: no region"
                locate = _aws("kms", region) if region else (lambda host: None)
                self.endpoint(
                    f"{prefix}.endpoint_url", kek.endpoint_url, locate, what, unwrap=unwrap
                )
            elif region is not None:
                self.forced_fips(f"{prefix}.endpoint_url", None, "kms", region)
        else:
            vault = "a Key Vault or Managed HSM of an Azure cloud"
            self.endpoint(
                f"{prefix}.vault_url", kek.vault_url, azure_vault_host, vault, unwrap=unwrap
            )

    def kms_key(
        self, field: str, key_id: str, region: str | None, *, unwrap: bool = False
    ) -> str | None:
        """Places the key; returns the region its KMS endpoint is in, if known."""
        checked = self.places or self.fips
        try:
            arn = parse_kms_arn(key_id)
        except ValueError as exc:
            if checked:
                self.add(field, key_id, "unknown", False, str(exc))
            return None
        if arn is not None:
            self.place(field, key_id, arn.partition, unwrap=unwrap)
            if checked and region is not None and region != arn.region:
                why = f"key is in {arn.region}, not {region}"
                self.add(field, key_id, arn.partition, False, why)
            return arn.region
        if region is not None:
            self.place(field, key_id, partition_of_region(region), unwrap=unwrap)
            return region
        if checked:
            why = "give a key ARN or the key's region: its partition and endpoint are unknown"
            self.add(field, key_id, "unknown", False, why)
        return None

    def forced_fips(self, field: str, use_fips: bool | None, service: str, region: str) -> None:
        """No endpoint URL: the SDK picks one from the region; fips: required forces FIPS."""
        if not self.fips:
            return
        partition = partition_of_region(region)
        host = f"{service}-fips.{region}.{AWS_DOMAINS.get(partition, '?')}"
        if use_fips is False:
            self.add(field, "false", partition, False, "fips: required: leave use_fips out", "fips")
        else:
            self.add(
                field, host, partition, True, "the SDK's FIPS endpoint (fips: required)", "fips"
            )

    def aws_environment(self, plan: Plan) -> None:
        keks = (plan.keys, *plan.keys.previous)
        if any(isinstance(kek, AwsKmsKekPlan) for kek in keks):
            for name, value in aws_endpoint_overrides("kms"):
                self.endpoint(f"env {name}", value, _aws_any_region("kms"), "a KMS endpoint")

    def state(self, plan: Plan) -> None:
        policy = plan.residency
        if not self.places or policy is None or policy.state_hosts is None:
            return
        allowed = {host.lower() for host in policy.state_hosts}
        try:
            source, hosts = state_hosts(plan.state_url)
        except ValueError as exc:
            self.add("state_url", "<state URL>", "unknown", False, f"the state URL {exc}")
            return
        if source is None:
            self.add("state_url", "SQLite in state_dir", "local", True, "a local file")
        for found in hosts:
            ok = found.host.lower() in allowed
            why = "a listed state host" if ok else f"not in residency.state_hosts {sorted(allowed)}"
            self.add(found.source, found.host, "state host", ok, why)

    def backend(self) -> None:
        if not self.fips:
            return
        version = crypto.openssl_version()
        if gaps := crypto.fips_gaps():
            why = f"fips: required, but not in FIPS mode: {', '.join(gaps)}; {crypto.FIPS_HOW_TO}"
            self.add("fips", version, "this process", False, why, "fips")
        else:
            why = "cryptography's and Python's OpenSSL run in FIPS mode"
            self.add("fips", version, "this process", True, why, "fips")


def _aws(service: str, region: str) -> Locate:
    return lambda host: aws_service_host(host, service, region)


def _aws_any_region(service: str) -> Locate:
    """For endpoint variables, which apply whatever the region: the region the host names."""

    def locate(host: str) -> HostPlace | None:
        labels = host.split(".")
        for region in {*labels[1:3], "us-east-1"}:
            found = aws_service_host(host, service, region)
            if found is not None:
                return found
        return None

    return locate


def loopback_allowed(plan: Plan) -> Plan:
    """The plan with its policy's allow_loopback set (the --allow-loopback flag), so every
    later check of the same plan, wiring's included, accepts loopback endpoints too."""
    policy = plan.residency
    if policy is None or policy.allow_any or policy.allow_loopback:
        return plan
    return plan.model_copy(update={"residency": policy.model_copy(update={"allow_loopback": True})})


def check_residency(
    plan: Plan, *, allow_loopback: bool = False, rehearsal: bool = False
) -> list[ResidencyCheck]:
    """Every check made, allowed or not. A plan with something in a cloud and no policy gets
    one refusal; `allow_any` one row saying nothing is placed (FIPS is checked either way)."""
    c = _Checker(plan, allow_loopback, rehearsal)
    policy = plan.residency
    if policy is None and (parts := _cloud_parts(plan)):
        need = "needs" if len(parts) == 1 else "need"
        why = (
            f"{' and '.join(parts)} {need} a residency policy: name the allowed places"
            " (aws_partitions, azure_clouds), or set residency: {allow_any: true} to go without"
        )
        c.add("residency", "none", "unknown", False, why)
    elif policy is not None and policy.allow_any:
        why = "no residency policy, by the plan's choice: endpoints are not placed"
        c.add("residency.allow_any", "true", "any", True, why)
    c.store("destination", plan.destination)
    c.kek("keys", plan.keys, unwrap=False)
    for index, kek in enumerate(plan.keys.previous):
        c.kek(f"keys.previous[{index}]", kek, unwrap=True)
    c.landings(plan)
    c.aws_environment(plan)
    c.state(plan)
    c.backend()
    return c.checks


def enforce_residency(
    plan: Plan, *, allow_loopback: bool = False, rehearsal: bool = False
) -> list[ResidencyCheck]:
    """The checks, or ResidencyError naming the plan file and every refused field.
    `rehearsal`: a dry run, which reads no connection string, may go without one."""
    checks = check_residency(plan, allow_loopback=allow_loopback, rehearsal=rehearsal)
    refused = [chk for chk in checks if not chk.allowed]
    if refused:
        first, *rest = refused
        lines = [f"{first.rule} refused {first.value!r}: {first.reason}"]
        lines += [
            f"{plan.plan_path}: {r.field}: {r.rule} refused {r.value!r}: {r.reason}" for r in rest
        ]
        raise ResidencyError(str(plan.plan_path), first.field, "\n".join(lines))
    return checks

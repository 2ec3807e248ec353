"""Where a plan's destination data and keys may live: its residency policy, checked before any
byte moves (migrator/residency)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from migrator.plan.section import PlanModel, field_errors
from migrator.plan.types import NonEmpty

__all__ = ["AWS_PARTITIONS", "AZURE_CLOUDS", "ResidencyPlan"]

AWS_PARTITIONS = ("aws", "aws-us-gov", "aws-cn", "aws-iso", "aws-iso-b")
AZURE_CLOUDS = ("AzureCloud", "AzureUSGovernment", "AzureChinaCloud")


class ResidencyPlan(PlanModel):
    """Where destination data and keys may live; checked before any byte moves."""

    aws_partitions: tuple[Literal[AWS_PARTITIONS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Allowed AWS partitions, e.g. [aws-us-gov]."
    )
    azure_clouds: tuple[Literal[AZURE_CLOUDS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Allowed Azure clouds, e.g. [AzureUSGovernment]."
    )
    unwrap_aws_partitions: tuple[Literal[AWS_PARTITIONS], ...] = Field(  # type: ignore[valid-type]
        default=(),
        description="Further partitions a keys.previous KEK may lie in: it only unwraps, e.g."
        " [aws] while keys move out of a commercial KMS.",
    )
    unwrap_azure_clouds: tuple[Literal[AZURE_CLOUDS], ...] = Field(  # type: ignore[valid-type]
        default=(), description="Further clouds a keys.previous KEK may lie in (it only unwraps)."
    )
    state_hosts: tuple[NonEmpty, ...] | None = Field(
        default=None,
        description="Hosts a PostgreSQL state store (state_url or MIGRATOR_STATE_URL) may be at,"
        " exactly; 'localhost' admits a local socket. null: not checked.",
    )
    landing_hosts: tuple[NonEmpty, ...] | None = Field(
        default=None,
        description="Hosts a landing table's PostgreSQL (datasets[].landing.table.url_env) may"
        " be at, exactly; 'localhost' admits a local socket. A landing table at a host not"
        " listed is refused (loopback only with allow_loopback).",
    )
    allow_loopback: bool = Field(
        default=False,
        description="Also accept loopback endpoints (moto, Azurite) and a local destination"
        " folder: tests and rehearsals only, like --allow-loopback.",
    )
    allow_any: bool = Field(
        default=False,
        description="No residency policy, said explicitly: an s3 or azure destination, or cloud"
        " keys, are refused without a policy unless this is true.",
    )

    @model_validator(mode="after")
    def _allow_any_alone(self) -> Self:
        if self.allow_any:
            named = [name for name in self.model_fields_set if name != "allow_any"]
            if named:
                message = "allow_any: true sets no policy: leave out " + ", ".join(sorted(named))
                raise field_errors("ResidencyPlan", [(("allow_any",), message)])
        return self

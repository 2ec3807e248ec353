"""Residency and FIPS: every endpoint a plan's destination and keys will use is checked, the way
the SDK will connect, before a byte moves.

A plan's `residency` names the AWS partitions and Azure clouds data and keys may live in. The
checks read the plan and the environment the SDKs would read (connection strings, botocore's
endpoint variables, the state store's URL); no request is sent, so every command refuses at
once, and the dry run reports them. `fips: required` adds FIPS endpoints and a crypto backend
in FIPS mode.
"""

from migrator.residency.checks import (
    ResidencyCheck,
    ResidencyError,
    check_residency,
    enforce_residency,
    loopback_allowed,
)
from migrator.residency.endpoints import EndpointRefused, is_loopback, parse_endpoint
from migrator.residency.fips import CryptoBackend, crypto_backend

__all__ = [
    "CryptoBackend",
    "EndpointRefused",
    "ResidencyCheck",
    "ResidencyError",
    "check_residency",
    "crypto_backend",
    "enforce_residency",
    "is_loopback",
    "loopback_allowed",
    "parse_endpoint",
]

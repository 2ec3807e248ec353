"""The crypto this process uses, and whether it runs in FIPS mode.

Two OpenSSL libraries are at work: the `cryptography` package's, for every seal and signature
(AES-256-GCM, HKDF, HMAC, ECDSA P-256), and the Python interpreter's, under `ssl`
(TLS to every endpoint) and `hashlib`. cryptography's manylinux wheels bundle an OpenSSL that
never runs in FIPS mode, and so does a Python built on a distribution's plain OpenSSL. A plan
with `fips: required` runs only where both are a FIPS-validated OpenSSL with its FIPS provider
active (deploy/README.md, "FIPS 140").
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

FIPS_HOW_TO = (
    "build the image on a FIPS-validated OpenSSL, with cryptography compiled against it and"
    " the FIPS provider active (deploy/README.md, section FIPS 140)"
)


@dataclass(frozen=True, slots=True)
class CryptoBackend:
    """What `migrator crypto` prints, and what `fips: required` checks."""

    library: str  # e.g. "cryptography 46.0.1"
    openssl: str  # cryptography's OpenSSL, e.g. "OpenSSL 3.0.9 30 May 2023"
    openssl_number: int  # its OPENSSL_VERSION_NUMBER
    fips: bool  # its default library context has FIPS properties on
    tls: str  # the interpreter's OpenSSL (ssl, hashlib)
    tls_fips: bool
    algorithms: dict[str, bool]  # each algorithm migrator uses, and whether it is offered


def openssl_version() -> str:
    from cryptography.hazmat.backends.openssl.backend import backend

    return backend.openssl_version_text()


def cryptography_fips() -> bool:
    """True when cryptography's OpenSSL runs with FIPS properties (its FIPS provider)."""
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl

    return bool(rust_openssl.is_fips_enabled())


def interpreter_fips() -> bool:
    """True when the interpreter's OpenSSL (ssl, hashlib) runs in FIPS mode."""
    import _hashlib  # CPython's OpenSSL binding; get_fips_mode() since 3.9

    return bool(_hashlib.get_fips_mode())


def fips_gaps() -> list[str]:
    """The libraries not in FIPS mode; empty when `fips: required` may run."""
    gaps = [] if cryptography_fips() else [f"cryptography's {openssl_version()}"]
    if not interpreter_fips():
        gaps.append(f"Python's ssl ({ssl.OPENSSL_VERSION})")
    return gaps


def crypto_backend() -> CryptoBackend:
    """The running backend, probed: versions, FIPS mode and the algorithms offered."""
    import cryptography
    from cryptography.hazmat.backends.openssl.backend import backend

    return CryptoBackend(
        library=f"cryptography {cryptography.__version__}",
        openssl=openssl_version(),
        openssl_number=backend.openssl_version_number(),
        fips=cryptography_fips(),
        tls=ssl.OPENSSL_VERSION,
        tls_fips=interpreter_fips(),
        algorithms=_offered_algorithms(),
    )


def _offered_algorithms() -> dict[str, bool]:
    """Each algorithm tried once on throwaway keys: a FIPS provider may lack some."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def aes_gcm() -> None:
        AESGCM(bytes(32)).encrypt(bytes(12), b"probe", None)

    def hkdf() -> None:
        HKDF(hashes.SHA256(), 32, salt=None, info=b"probe").derive(bytes(32))

    def hmac_sha256() -> None:
        mac = hmac.HMAC(bytes(32), hashes.SHA256())
        mac.update(b"probe")
        mac.finalize()

    def ecdsa_p256() -> None:
        ec.generate_private_key(ec.SECP256R1()).sign(b"probe", ec.ECDSA(hashes.SHA256()))

    probes = {
        "AES-256-GCM": aes_gcm,
        "HKDF-SHA256": hkdf,
        "HMAC-SHA256": hmac_sha256,
        "ECDSA P-256": ecdsa_p256,
    }
    offered: dict[str, bool] = {}
    for name, probe in probes.items():
        try:
            probe()
            offered[name] = True
        except (UnsupportedAlgorithm, ValueError):
            offered[name] = False
    return offered

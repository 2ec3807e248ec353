"""A moto S3 server on 127.0.0.1 for the demo and the tests: nothing leaves the machine."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from moto.server import ThreadedMotoServer

from migrator.demo.stopping import StopsOnExit

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

START_TIMEOUT_SECONDS = 15.0

# Dummy credentials: moto accepts any, and passing them explicitly means boto3 never reads
# the machine's environment or credential files.
TEST_ACCESS_KEY_ID = "testing"
TEST_SECRET_ACCESS_KEY = "testing"  # noqa: S105 - moto accepts any value


class MotoServer(StopsOnExit):
    """A running moto server; stop it with `stop()` or use it as a context manager."""

    def __init__(self, server: ThreadedMotoServer, endpoint_url: str) -> None:
        self._server = server
        self.endpoint_url = endpoint_url
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._server.stop()


def start_moto_server(
    host: str = "127.0.0.1", *, timeout: float = START_TIMEOUT_SECONDS
) -> MotoServer:
    """Starts moto on a free port of `host` and returns once it answers HTTP requests.

    Raises RuntimeError with the reason if it cannot start.
    """
    # Bind once ourselves so a bad address fails at once with the OS's reason: moto's own
    # start() would wait forever for a server thread that died on the same error.
    try:
        with socket.socket(_address_family(host), socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError as exc:
        raise RuntimeError(f"cannot start moto server on {host}: {exc}") from exc

    werkzeug_log = logging.getLogger("werkzeug")
    if werkzeug_log.level == logging.NOTSET:
        werkzeug_log.setLevel(logging.WARNING)  # one log line per request otherwise

    # Port 0: the OS picks the port when moto binds, so two test runs can never race for one.
    server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    starter = threading.Thread(target=server.start, name="moto-start", daemon=True)
    starter.start()
    starter.join(timeout)
    if starter.is_alive():
        raise RuntimeError(f"moto server on {host} did not start within {timeout:.0f}s")

    bound_host, port = server.get_host_and_port()
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    moto = MotoServer(server, f"http://{url_host}:{port}")
    try:
        _wait_until_answering(moto.endpoint_url, deadline=time.monotonic() + timeout)
    except RuntimeError:
        moto.stop()
        raise
    return moto


def s3_client(endpoint_url: str, region: str = "us-east-1") -> S3Client:
    """A boto3 S3 client for the local moto server, with dummy credentials and no proxy."""
    session = boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name=region,
    )
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        config=Config(proxies={}, s3={"addressing_style": "path"}),
    )


def kms_client(endpoint_url: str, region: str = "us-east-1") -> Any:
    """A boto3 KMS client for the local moto server, with dummy credentials and no proxy."""
    session = boto3.session.Session(
        aws_access_key_id=TEST_ACCESS_KEY_ID,
        aws_secret_access_key=TEST_SECRET_ACCESS_KEY,
        region_name=region,
    )
    return session.client("kms", endpoint_url=endpoint_url, config=Config(proxies={}))


def _address_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _wait_until_answering(endpoint_url: str, *, deadline: float) -> None:
    # No proxy handler: a proxy from the environment must never see local test traffic.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with opener.open(endpoint_url + "/", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # any HTTP answer means the server is up
        except OSError as exc:
            last_error = exc
            time.sleep(0.05)
    raise RuntimeError(f"moto server at {endpoint_url} did not answer: {last_error}")

"""The fault proxy itself, against a small echo server (and once against moto)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from migrator.demo.motoserver import MotoServer, s3_client
from tests.faultproxy import SLOW_DOWN_XML, FaultProxy, matching

pytestmark = pytest.mark.integration


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with what it received; /bytes/N answers N bytes, chunked if ?chunked."""

    protocol_version = "HTTP/1.1"
    server: EchoServer

    def do_GET(self) -> None:
        self.server.connections.add(self.client_address)
        if self.path.startswith("/bytes/"):
            path, _, query = self.path.partition("?")
            self._send_bytes(
                _pattern(int(path.removeprefix("/bytes/"))), chunked=query == "chunked"
            )
        else:
            self._echo(b"")

    def do_HEAD(self) -> None:
        self.server.connections.add(self.client_address)
        self._echo(b"", head_only=True)

    def do_PUT(self) -> None:
        self.server.connections.add(self.client_address)
        self._echo(self._read_body())

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            pieces = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                pieces.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass  # trailer fields
            return b"".join(pieces)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _echo(self, body: bytes, *, head_only: bool = False) -> None:
        answer = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "headers": {name.lower(): value for name, value in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if not head_only:
            self.wfile.write(answer)

    def _send_bytes(self, data: bytes, *, chunked: bool) -> None:
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(data), 1000):
                piece = data[start : start + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.connections: set[tuple[str, int]] = set()


def _pattern(size: int) -> bytes:
    return (bytes(range(251)) * (size // 251 + 1))[:size]


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.server_address[1]) as running:
        yield running
    assert running.errors == []


def connect(proxy: FaultProxy, timeout: float = 10.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


def test_forwards_get_and_put_with_bodies_and_records_them(proxy: FaultProxy) -> None:
    conn = connect(proxy)
    body = _pattern(300_000)
    status, answer = request(conn, "PUT", "/bucket/key?partNumber=2&uploadId=u", body)
    assert status == 200
    echoed = json.loads(answer)
    assert echoed["size"] == len(body)
    assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
    assert request(conn, "GET", "/bytes/70000") == (200, _pattern(70_000))
    assert [request[:3] for request in proxy.requests] == [
        ("PUT", "/bucket/key", "partNumber=2&uploadId=u"),
        ("GET", "/bytes/70000", ""),
    ]
    assert proxy.requests[0].body_size == len(body)
    assert proxy.count(method="PUT", query_has="partNumber") == 1
    assert proxy.count(path_has="/bytes/") == 1
    assert proxy.injected == []


def test_forwards_chunked_request_and_response_bodies(proxy: FaultProxy) -> None:
    conn = connect(proxy)
    pieces = [_pattern(5000), b"second", _pattern(12_345)]
    conn.request("PUT", "/chunked", body=iter(pieces), encode_chunked=True)
    echoed = json.loads(conn.getresponse().read())
    assert echoed["headers"]["transfer-encoding"] == "chunked"
    assert echoed["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert request(conn, "GET", "/bytes/4500?chunked") == (200, _pattern(4500))


def test_head_answer_has_no_body(proxy: FaultProxy) -> None:
    conn = connect(proxy)
    status, body = request(conn, "HEAD", "/object")
    assert (status, body) == (200, b"")
    assert request(conn, "GET", "/bytes/10") == (200, _pattern(10))  # framing still in step


def test_keep_alive_uses_one_connection_each_side(proxy: FaultProxy, echo: EchoServer) -> None:
    conn = connect(proxy)
    for index in range(5):
        assert request(conn, "PUT", f"/k/{index}", b"x" * index)[0] == 200
    assert len(echo.connections) == 1
    assert len(proxy.requests) == 5


def test_answers_expect_100_continue_itself(proxy: FaultProxy) -> None:
    body = _pattern(2000)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(
            b"PUT /expecting HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        reply = _read_until_close_or(sock, b"}")
    echoed = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    assert echoed["sha256"] == hashlib.sha256(body).hexdigest()
    assert "expect" not in echoed["headers"]


def test_fail_next_answers_without_forwarding_and_keeps_the_connection(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    proxy.fail_next(2)
    conn = connect(proxy)
    assert request(conn, "PUT", "/a", b"data") == (503, SLOW_DOWN_XML)
    assert request(conn, "GET", "/bytes/3") == (503, SLOW_DOWN_XML)
    assert request(conn, "GET", "/bytes/3") == (200, _pattern(3))
    proxy.fail_next(status=500, body=b"boom", content_type="text/plain")
    assert request(conn, "GET", "/bytes/3") == (500, b"boom")
    assert [kind for kind, _ in proxy.injected] == ["fail", "fail", "fail"]
    assert len(echo.connections) == 1  # only the one forwarded request reached the target


def test_faults_apply_only_to_matching_requests(proxy: FaultProxy) -> None:
    proxy.fail_next(1, match=matching("PUT", query_has="partNumber"))
    conn = connect(proxy)
    assert request(conn, "GET", "/bytes/1")[0] == 200
    assert request(conn, "PUT", "/k", b"1")[0] == 200
    assert request(conn, "PUT", "/k?partNumber=1", b"1")[0] == 503
    assert request(conn, "PUT", "/k?partNumber=1", b"1")[0] == 200
    (kind, seen), *_ = proxy.injected
    assert kind == "fail" and seen[:3] == ("PUT", "/k", "partNumber=1")


def test_reset_next_reads_the_request_then_resets(proxy: FaultProxy, echo: EchoServer) -> None:
    proxy.reset_next(match=matching("PUT"))
    conn = connect(proxy)
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected)):
        request(conn, "PUT", "/lost", _pattern(100_000))
    assert proxy.requests[0].body_size == 100_000
    assert echo.connections == set()  # never forwarded
    conn.close()
    assert request(conn, "PUT", "/kept", b"1")[0] == 200  # http.client reconnects


def test_delay_holds_matching_requests(proxy: FaultProxy) -> None:
    proxy.delay(0.5, match=matching("GET"), n=1)
    conn = connect(proxy)
    started = time.monotonic()
    assert request(conn, "GET", "/bytes/5") == (200, _pattern(5))
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    assert request(conn, "GET", "/bytes/5") == (200, _pattern(5))
    assert time.monotonic() - started < 0.5


def test_delay_past_the_client_timeout_times_it_out(proxy: FaultProxy) -> None:
    proxy.delay(3)
    conn = connect(proxy, timeout=0.3)
    with pytest.raises(TimeoutError):
        request(conn, "GET", "/bytes/5")


def test_cut_response_next_sends_half_the_body_then_closes(proxy: FaultProxy) -> None:
    proxy.cut_response_next(match=matching("GET"))
    conn = connect(proxy)
    conn.request("GET", "/bytes/10000")
    response = conn.getresponse()
    assert response.status == 200
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert len(caught.value.partial) == 5000
    conn.close()
    assert request(conn, "GET", "/bytes/10000") == (200, _pattern(10_000))


def test_cut_response_without_body_cuts_the_head(proxy: FaultProxy) -> None:
    proxy.cut_response_next()
    conn = connect(proxy)
    with pytest.raises((http.client.RemoteDisconnected, http.client.BadStatusLine)):
        request(conn, "HEAD", "/object")


def test_connections_are_bounded(echo: EchoServer) -> None:
    with FaultProxy("127.0.0.1", echo.server_address[1], max_connections=1) as proxy:
        first, second = connect(proxy), connect(proxy, timeout=0.5)
        assert request(first, "GET", "/bytes/1")[0] == 200  # first holds the only slot
        with pytest.raises(TimeoutError):
            request(second, "GET", "/bytes/1")
        first.close()
        second.close()
        second.timeout = 10
        assert request(second, "GET", "/bytes/1")[0] == 200


def test_stop_closes_idle_connections_promptly(echo: EchoServer) -> None:
    proxy = FaultProxy("127.0.0.1", echo.server_address[1]).start()
    conn = connect(proxy)
    assert request(conn, "GET", "/bytes/1")[0] == 200  # now idle, kept alive
    proxy.delay(30)
    waiting = threading.Thread(target=lambda: _ignore_errors(request, connect(proxy), "GET", "/"))
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    proxy.stop()
    assert time.monotonic() - started < 3
    waiting.join(5)
    assert not waiting.is_alive()
    assert not any(thread.name.startswith("faultproxy") for thread in threading.enumerate())


def test_only_forwards_to_loopback() -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy("192.0.2.1", 80)
    with pytest.raises(ValueError, match="http://host:port"):
        FaultProxy.for_url("https://127.0.0.1")


def test_forwards_chunked_and_aws_chunked_uploads_to_moto(moto_server: MotoServer) -> None:
    client = s3_client(moto_server.endpoint_url)
    client.create_bucket(Bucket="faultproxy-chunked")
    data = _pattern(150_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big"))
    # aws-chunked as botocore frames a checksum trailer (werkzeug, under moto, cannot read
    # HTTP trailers, so this one goes with a Content-Length).
    aws_chunked = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (len(data), data, crc)
    with FaultProxy.for_url(moto_server.endpoint_url) as proxy:
        conn = connect(proxy)
        conn.request("PUT", "/faultproxy-chunked/plain", body=iter([data[:7], data[7:]]))
        assert conn.getresponse().read() == b""
        status, _ = request(
            conn,
            "PUT",
            "/faultproxy-chunked/aws",
            aws_chunked,
            {
                "Content-Encoding": "aws-chunked",
                "X-Amz-Decoded-Content-Length": str(len(data)),
                "X-Amz-Trailer": "x-amz-checksum-crc32",
                "X-Amz-Content-Sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            },
        )
        assert status == 200
        assert [seen.headers.get("transfer-encoding") for seen in proxy.requests] == [
            "chunked",
            None,
        ]
        assert proxy.requests[1].body_size == len(aws_chunked)
        assert proxy.errors == []
    for key in ("plain", "aws"):
        assert client.get_object(Bucket="faultproxy-chunked", Key=key)["Body"].read() == data


def _read_until_close_or(sock: socket.socket, end: bytes) -> bytes:
    received = b""
    while not received.endswith(end):
        piece = sock.recv(65536)
        if not piece:
            break
        received += piece
    return received


def _ignore_errors(function: Callable[..., object], *args: object) -> None:
    with contextlib.suppress(OSError, http.client.HTTPException):
        function(*args)

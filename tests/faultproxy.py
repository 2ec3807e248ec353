"""An HTTP/1.1 fault-injection proxy on 127.0.0.1, for tests against moto or Azurite.

Each request is forwarded to the target byte for byte (keep-alive; Content-Length, chunked and
aws-chunked bodies alike), recorded, and, when a rule matches it, answered with an error,
dropped with a connection reset (before its body, after it, or after the target answered),
delayed, or answered with a response cut short (or well framed but short):

    with FaultProxy("127.0.0.1", moto_port) as proxy:
        proxy.fail_next(3, match=matching("PUT"))  # three 503 SlowDown answers
        client = make_client(endpoint_url=proxy.url)
        ...
        assert proxy.count(method="PUT") == 4

The proxy answers `Expect: 100-continue` itself (and drops that header when forwarding; SigV4
never signs it), so a fault can follow the whole request body.
"""

from __future__ import annotations

import contextlib
import http
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BufferedReader
from types import TracebackType
from typing import Literal, NamedTuple
from urllib.parse import parse_qs, urlsplit

SLOW_DOWN_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message>"
    b"<RequestId>faultproxy</RequestId></Error>"
)


def s3_error_xml(code: str, message: str) -> bytes:
    """An S3 error body, as a look-alike answers what it lacks: s3_error_xml("NotImplemented",
    "A header you provided implies functionality that is not implemented")."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>faultproxy</RequestId></Error>"
    ).encode()


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_HEAD_BYTES = 64 * 1024
_POLL_SECONDS = 0.1  # how often the accept loop looks at the stop flag


class SeenRequest(NamedTuple):
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # names lowercased; a repeated header keeps its last value
    body_size: int  # bytes of body on the wire, chunk framing included


Match = Callable[[SeenRequest], bool]
FaultKind = Literal["fail", "reset", "reset-head", "reset-response", "delay", "cut", "short"]
ResetAt = Literal["head", "request", "response"]
_RESET_KINDS: dict[ResetAt, FaultKind] = {
    "head": "reset-head",
    "request": "reset",
    "response": "reset-response",
}


def matching(
    method: str | None = None,
    *,
    path_has: str | None = None,
    query_has: str | None = None,
    header: str | None = None,
    query_param: str | None = None,
) -> Match:
    """A rule predicate: every given condition must hold (`header` is a name that is present,
    `query_param` the exact name of a query parameter, with or without a value: "uploads")."""

    def match(request: SeenRequest) -> bool:
        return (
            (method is None or request.method == method.upper())
            and (path_has is None or path_has in request.path)
            and (query_has is None or query_has in request.query)
            and (header is None or header.lower() in request.headers)
            and (
                query_param is None
                or query_param in parse_qs(request.query, keep_blank_values=True)
            )
        )

    return match


@dataclass
class _Rule:
    kind: FaultKind
    remaining: int | None  # None: every matching request
    match: Match | None
    status: int = 503
    body: bytes = b""
    content_type: str = "application/xml"
    seconds: float = 0.0
    headers: Mapping[str, str] | None = None  # extra response headers of a "fail"


class _ProtocolError(Exception):
    """Bytes that are not the HTTP/1.1 this proxy understands."""


class _StaleConnection(Exception):
    """A kept-alive upstream connection closed before answering: safe to resend once."""


class FaultProxy:
    """Threaded, at most `max_connections` client connections at a time; stop() joins them."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        max_connections: int = 64,
        idle_timeout: float = 30.0,
        upstream_timeout: float = 60.0,
    ) -> None:
        if target_host not in LOOPBACK_HOSTS:
            raise ValueError(f"FaultProxy only forwards to loopback, not {target_host!r}")
        self.target = (target_host, target_port)
        self.errors: list[str] = []  # unexpected failures inside the proxy, for assertions
        self._idle_timeout = idle_timeout
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._requests: list[SeenRequest] = []
        self._injected: list[tuple[FaultKind, SeenRequest]] = []
        self._rules: list[_Rule] = []
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL_SECONDS)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="faultproxy-accept", daemon=True
        )
        self._started = False

    @classmethod
    def for_url(cls, url: str) -> FaultProxy:
        """A proxy in front of `http://host:port` (such as a moto server's endpoint_url)."""
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port URL, not {url!r}")
        return cls(parts.hostname, parts.port)

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        if not self._started:
            self._started = True
            self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._started:
            self._acceptor.join(timeout)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            _shutdown(sock)
        for thread in threads:
            thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # --- what was seen --------------------------------------------------------------------

    @property
    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def injected(self) -> list[tuple[FaultKind, SeenRequest]]:
        """Each fault applied so far, with the request it was applied to."""
        with self._lock:
            return list(self._injected)

    def count(
        self,
        method: str | None = None,
        *,
        path_has: str | None = None,
        query_has: str | None = None,
        header: str | None = None,
        query_param: str | None = None,
    ) -> int:
        match = matching(
            method, path_has=path_has, query_has=query_has, header=header, query_param=query_param
        )
        return sum(1 for request in self.requests if match(request))

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()
            self._injected.clear()

    # --- faults ---------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 503,
        body: bytes = SLOW_DOWN_XML,
        content_type: str = "application/xml",
        match: Match | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next n matching requests with `status` and `body` (and `headers`, such as
        Azure's x-ms-error-code), not forwarding them."""
        self._add(
            _Rule(
                "fail",
                n,
                match,
                status=status,
                body=body,
                content_type=content_type,
                headers=headers,
            )
        )

    def fail_every(
        self,
        *,
        status: int,
        body: bytes,
        match: Match,
        content_type: str = "application/xml",
    ) -> None:
        """Answer every matching request with `status` and `body`, for as long as the rule
        stands (clear_faults ends it): an operation the server does not have."""
        self._add(_Rule("fail", None, match, status=status, body=body, content_type=content_type))

    def reset_next(
        self, n: int = 1, *, match: Match | None = None, at: ResetAt = "request"
    ) -> None:
        """Reset the connection (TCP RST) of the next n matching requests, `at`:

        - "request": once the whole request is read; it is not forwarded (kind "reset");
        - "head": once its head is read, before its body (a client waiting on
          `Expect: 100-continue` never sends it); matched with body_size 0 (kind "reset-head");
        - "response": once the target has answered it: the request took effect, but the client
          never hears so (kind "reset-response").
        """
        self._add(_Rule(_RESET_KINDS[at], n, match))

    def delay(self, seconds: float, *, match: Match | None = None, n: int | None = None) -> None:
        """Hold matching requests (the next n, or all) `seconds` before forwarding them."""
        self._add(_Rule("delay", n, match, seconds=seconds))

    def cut_response_next(self, n: int = 1, *, match: Match | None = None) -> None:
        """Forward, then send the head and half the body (or half the status line), close."""
        self._add(_Rule("cut", n, match))

    def short_response_next(self, n: int = 1, *, match: Match | None = None) -> None:
        """Forward, then answer with half the body in a response framed for just that half
        (Content-Length rewritten): nothing at the HTTP level tells the client it is short.
        A response without a body is sent as it is."""
        self._add(_Rule("short", n, match))

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def _add(self, rule: _Rule) -> None:
        if rule.remaining is not None and rule.remaining < 1:
            raise ValueError(f"a fault needs n >= 1, not {rule.remaining}")
        with self._lock:
            self._rules.append(rule)

    def _record(self, request: SeenRequest, *, head: bool = False) -> _Rule | None:
        """Logs the request and takes the first rule matching it, if any.

        With `head` (the body not read yet) only "reset-head" rules are looked at, and the
        request is logged only when one matches: otherwise it is logged with its body.
        """
        with self._lock:
            if not head:
                self._requests.append(request)
            for rule in self._rules:
                if (rule.kind == "reset-head") != head:
                    continue
                if rule.match is None or rule.match(request):
                    if head:
                        self._requests.append(request)
                    if rule.remaining is not None:
                        rule.remaining -= 1
                        if rule.remaining == 0:
                            self._rules.remove(rule)
                    self._injected.append((rule.kind, request))
                    return rule
        return None

    # --- serving --------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=_POLL_SECONDS):
                continue
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                return
            conn.settimeout(self._idle_timeout)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True
            )
            with self._lock:
                self._sockets.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        upstream = _Upstream(self.target, self._upstream_timeout, self._track, self._untrack)
        reader = client.makefile("rb")
        try:
            while not self._stopping.is_set():
                if not self._exchange(client, reader, upstream):
                    return
        except (_ProtocolError, _StaleConnection) as exc:
            self._note(f"{type(exc).__name__}: {exc}")
        except OSError:
            pass  # the client went away or timed out: normal after resets, delays and cuts
        except Exception as exc:  # a bug in the proxy: record it for the test to see
            self._note(f"{type(exc).__name__}: {exc}")
        finally:
            reader.close()
            upstream.close()
            self._untrack(client)
            _close(client)
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()

    def _exchange(self, client: socket.socket, reader: BufferedReader, upstream: _Upstream) -> bool:
        """Serves one request; False when the client connection is to be closed."""
        head = _read_head(reader)
        if head is None:
            return False
        start_line, headers = _parse_head(head)
        method, target, _version = [*start_line.split(" ", 2), "", ""][:3]
        path, _, query = target.partition("?")
        if self._record(SeenRequest(method, path, query, headers, 0), head=True) is not None:
            _reset(client)  # a "reset-head" rule: before the body (and before 100 Continue)
            return False
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = _without_header(head, b"expect")
        body = _read_body(reader, headers, until_close=False)
        rule = self._record(SeenRequest(method, path, query, headers, len(body)))
        wants_close = headers.get("connection", "").lower() == "close"
        if rule is not None and rule.kind == "reset":
            _reset(client)
            return False
        if rule is not None and rule.kind == "fail":
            client.sendall(_error_response(rule, with_body=method != "HEAD"))
            return not wants_close
        if rule is not None and rule.kind == "delay" and self._stopping.wait(rule.seconds):
            return False
        try:
            response_head, response_body, upstream_closed = upstream.forward(head + body, method)
        except (OSError, _ProtocolError, _StaleConnection) as exc:
            self._note(f"upstream {self.target}: {type(exc).__name__}: {exc}")
            client.sendall(_bad_gateway())
            return False
        if rule is not None and rule.kind == "reset-response":
            _reset(client)
            return False
        if rule is not None and rule.kind == "short" and response_body:
            payload = _payload(response_head, response_body)
            client.sendall(_reframed(response_head, payload[: len(payload) // 2]))
            return False
        if rule is not None and rule.kind == "cut":
            status_line_end = response_head.index(b"\n")
            cut = (
                response_head + response_body[: len(response_body) // 2]
                if response_body
                else response_head[: status_line_end // 2]
            )
            client.sendall(cut)
            return False
        client.sendall(response_head + response_body)
        return not (upstream_closed or wants_close)

    def _note(self, message: str) -> None:
        if not self._stopping.is_set():
            with self._lock:
                self.errors.append(message)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)


class _Upstream:
    """One kept-alive connection to the target per client connection, opened when needed."""

    def __init__(
        self,
        target: tuple[str, int],
        timeout: float,
        track: Callable[[socket.socket], None],
        untrack: Callable[[socket.socket], None],
    ) -> None:
        self._target = target
        self._timeout = timeout
        self._track = track  # so stop() can shut the socket down under a blocked thread
        self._untrack = untrack
        self._sock: socket.socket | None = None
        self._reader: BufferedReader | None = None

    def forward(self, request: bytes, method: str) -> tuple[bytes, bytes, bool]:
        """(response head, raw body, whether the target closed the connection after it)."""
        reused = self._sock is not None
        try:
            return self._send(request, method)
        except (_StaleConnection, ConnectionError):
            self.close()
            if not reused:
                raise
            return self._send(request, method)  # the target closed an idle connection: once more

    def _send(self, request: bytes, method: str) -> tuple[bytes, bytes, bool]:
        if self._sock is None or self._reader is None:
            self._sock = socket.create_connection(self._target, timeout=self._timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._track(self._sock)
            self._reader = self._sock.makefile("rb")
        self._sock.sendall(request)
        while True:
            head = _read_head(self._reader)
            if head is None:
                raise _StaleConnection("closed before answering")
            status_line, headers = _parse_head(head)
            status = _status_of(status_line)
            if not 100 <= status < 200:
                break  # 1xx are interim answers (100 Continue): the proxy gave its own
        has_body = method != "HEAD" and status not in (204, 304)
        body = _read_body(self._reader, headers, until_close=True) if has_body else b""
        framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        closes = (
            headers.get("connection", "").lower() == "close"
            or (
                status_line.startswith("HTTP/1.0")
                and "keep-alive" not in headers.get("connection", "").lower()
            )
            or (has_body and not framed)  # that body ended where the connection did
        )
        if closes:
            self.close()
        return head, body, closes

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._untrack(self._sock)
            _close(self._sock)
        self._sock = self._reader = None


# --- HTTP/1.1 framing -------------------------------------------------------------------


def _read_head(reader: BufferedReader) -> bytes | None:
    """A message head up to its blank line, raw; None at a clean end between messages."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEAD_BYTES + 1)
        if not line:
            if not lines:
                return None
            raise _ProtocolError("connection closed inside a message head")
        if not lines and line in (b"\r\n", b"\n"):
            continue  # an empty line before a message is allowed (RFC 9112 section 2.2)
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise _ProtocolError(f"message head over {MAX_HEAD_BYTES} bytes")
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    start_line, *fields = head.decode("latin-1").split("\n")
    headers: dict[str, str] = {}
    for field in fields:
        name, colon, value = field.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return start_line.strip(), headers


def _status_of(status_line: str) -> int:
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise _ProtocolError(f"bad status line {status_line[:80]!r}")
    return int(parts[1])


def _without_header(head: bytes, name: bytes) -> bytes:
    lines = head.split(b"\n")
    kept = [line for line in lines if line.split(b":", 1)[0].strip().lower() != name]
    return b"\n".join(kept)


def _read_body(reader: BufferedReader, headers: Mapping[str, str], *, until_close: bool) -> bytes:
    """The body as it came on the wire: chunked framing and trailers are kept."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(reader)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError as exc:
            raise _ProtocolError(f"bad Content-Length {headers['content-length']!r}") from exc
        return _read_exact(reader, length)
    return reader.read() if until_close else b""


def _read_chunked(reader: BufferedReader) -> bytes:
    pieces: list[bytes] = []
    while True:
        size_line = reader.readline(MAX_HEAD_BYTES)
        if not size_line.endswith(b"\n"):
            raise _ProtocolError("chunked body ended inside a chunk-size line")
        pieces.append(size_line)
        try:
            # Chunk extensions (aws-chunked puts its chunk-signature there) follow a ';'.
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as exc:
            raise _ProtocolError(f"bad chunk-size line {size_line[:80]!r}") from exc
        if size == 0:
            while True:  # trailer fields (aws-chunked sends its checksum here), then a blank line
                line = reader.readline(MAX_HEAD_BYTES)
                if not line.endswith(b"\n"):
                    raise _ProtocolError("chunked body ended inside its trailer")
                pieces.append(line)
                if line in (b"\r\n", b"\n"):
                    return b"".join(pieces)
        pieces.append(_read_exact(reader, size + 2))


def _read_exact(reader: BufferedReader, length: int) -> bytes:
    data = reader.read(length)
    if len(data) != length:
        raise _ProtocolError(f"body ended after {len(data)} of {length} bytes")
    return data


def _error_response(rule: _Rule, *, with_body: bool) -> bytes:
    reason = http.HTTPStatus(rule.status).phrase if rule.status in _KNOWN_STATUSES else "Error"
    extra = "".join(f"{name}: {value}\r\n" for name, value in (rule.headers or {}).items())
    head = (
        f"HTTP/1.1 {rule.status} {reason}\r\n"
        f"Content-Type: {rule.content_type}\r\n"
        f"Content-Length: {len(rule.body)}\r\n"
        "x-amz-request-id: faultproxy\r\n"
        f"{extra}"
        "\r\n"
    ).encode("latin-1")
    return head + rule.body if with_body else head


def _payload(head: bytes, raw_body: bytes) -> bytes:
    """A response body without its chunked framing (trailers dropped)."""
    _, headers = _parse_head(head)
    if "chunked" not in headers.get("transfer-encoding", "").lower():
        return raw_body
    pieces: list[bytes] = []
    pos = 0
    while True:
        line_end = raw_body.index(b"\n", pos)
        size = int(raw_body[pos:line_end].split(b";", 1)[0].strip(), 16)
        if size == 0:
            return b"".join(pieces)
        pieces.append(raw_body[line_end + 1 : line_end + 1 + size])
        pos = line_end + 1 + size + 2


def _reframed(head: bytes, body: bytes) -> bytes:
    """`head` with Content-Length set to `body`'s length and no Transfer-Encoding, then body."""
    kept = _without_header(_without_header(head, b"content-length"), b"transfer-encoding")
    kept = kept.rstrip(b"\r\n") + b"\r\n"
    return kept + b"Content-Length: %d\r\n\r\n" % len(body) + body


def _bad_gateway() -> bytes:
    return b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


_KNOWN_STATUSES = frozenset(status.value for status in http.HTTPStatus)


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()

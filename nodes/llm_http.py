"""One HTTP exchange with a language model server, bounded by a deadline and stoppable by Cancel.

Standard library only (``http.client`` over sockets this module opens). The exchange runs in a worker thread;
the caller waits for it until the deadline while polling ``should_stop`` and, when either comes first, shuts the
socket down so the worker ends too. So ``timeout`` bounds everything (name lookup, connect, TLS, the reply's
headers and body, however slowly a server trickles them), and Cancel stops a request within a tenth of a second.
Every failure of the network or of the HTTP layer becomes an ``HTTPFailure`` naming what went wrong; the caller
(``llm_client``) turns it into a message with the fix. Redirects are never followed. Nothing is logged.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

MAX_REPLY_BYTES = 16 * 1024 * 1024
POLL_S = 0.05  # how often the waiting caller checks should_stop


class HTTPFailure(Exception):
    """The exchange failed; ``kind`` says how ("unreachable", "timeout", "cancelled", "tls", "protocol",
    "too_large"), the message what happened (may repeat server text: redact before showing)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """A checked URL: scheme, host (lower case, ASCII, IPv6 without brackets), port, path (ASCII, no query)."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"


@dataclass(frozen=True)
class Route:
    """How to reach a target: ``loopback_only`` (the host must resolve to this machine's loopback only; connect to
    those addresses and nothing else, never through a proxy) or through ``proxy`` (a checked http:// proxy, with
    optional ``proxy_auth``), or directly (None)."""

    loopback_only: bool = False
    proxy: Target | None = None
    proxy_auth: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Response:
    """Status, the Location header (redirects) and the body (at most MAX_REPLY_BYTES)."""

    status: int
    location: str | None
    body: bytes


def loopback_address(host: str) -> bool:
    """True when ``host`` is an IP literal on this machine's loopback (127.0.0.0/8, ::1, ::ffff:127.x)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def resolve_loopback(host: str, port: int) -> tuple[str, ...]:
    """The addresses of ``host`` ("localhost" or a loopback literal), all on loopback, or HTTPFailure."""
    if loopback_address(host):
        return (host,)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise HTTPFailure("unreachable", f"host '{host}' not found ({err})") from None
    addresses = tuple(dict.fromkeys(info[4][0] for info in infos))
    strangers = [a for a in addresses if not loopback_address(a)]
    if strangers or not addresses:
        raise HTTPFailure("unreachable", f"'{host}' resolves to {', '.join(strangers) or 'nothing'}, which is not "
                          "this machine's loopback")
    return addresses


def proxy_for(target: Target) -> tuple[Target, str | None] | None:
    """The proxy the environment's http_proxy / https_proxy / no_proxy give for ``target`` (None: go direct)."""
    proxies = urllib.request.getproxies()
    proxy_url = proxies.get(target.scheme)
    if not proxy_url or urllib.request.proxy_bypass(target.host):
        return None
    if "://" not in proxy_url:
        proxy_url = "http://" + proxy_url
    try:
        parts = urllib.parse.urlsplit(proxy_url)
        port = parts.port or 80
    except ValueError:
        raise HTTPFailure("unreachable", f"the {target.scheme}_proxy setting is not a valid proxy address") from None
    if parts.scheme != "http" or not parts.hostname:
        raise HTTPFailure("unreachable", f"the {target.scheme}_proxy setting is not an http:// proxy address")
    auth = None
    if parts.username is not None:
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return Target("http", parts.hostname.lower(), port, ""), auth


class _Exchange:
    """The sockets one exchange opened (so the waiting caller can shut them down) and its outcome."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.aborted = False
        self.done = threading.Event()
        self.response: Response | None = None
        self.failure: BaseException | None = None
        self.phase = "connecting"
        self.received = 0

    def track(self, sock: socket.socket) -> None:
        with self.lock:
            self.sockets.append(sock)
            aborted = self.aborted
        if aborted:
            _shut(sock)

    def abort(self) -> None:
        with self.lock:
            self.aborted = True
            sockets = list(self.sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv/send on this socket
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Connection(http.client.HTTPConnection):
    """An HTTP(S) connection whose socket comes from ``dial`` (checked addresses, or a proxy tunnel) and whose
    TLS, when ``tls`` is given, checks the certificate against the URL's host name."""

    def __init__(self, target: Target, dial: Callable[[], socket.socket], tls: ssl.SSLContext | None,
                 timeout: float, track: Callable[[socket.socket], None]):
        super().__init__(target.host, target.port, timeout=timeout)
        self._dial, self._tls, self._server_name, self._track = dial, tls, target.host, track

    def connect(self):
        sock = self._dial()
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self._server_name, do_handshake_on_connect=False)
            self._track(sock)  # the TLS socket took over the plain one's descriptor: shut this one on abort
            sock.do_handshake()
        self.sock = sock


def _open_socket(host: str, port: int, addresses: tuple[str, ...] | None, exchange: _Exchange,
                 remaining: Callable[[], float]) -> socket.socket:
    if addresses is None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise HTTPFailure("unreachable", f"host '{host}' not found ({err})") from None
    else:
        infos = [info for address in addresses
                 for info in socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                                flags=socket.AI_NUMERICHOST)]
    last = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        exchange.track(sock)
        try:
            sock.settimeout(max(remaining(), 0.001))
            sock.connect(sockaddr)
            return sock
        except OSError as err:
            last = err
            _shut(sock)
    raise last if last else HTTPFailure("unreachable", f"host '{host}' has no address")


def _tunnel(sock: socket.socket, target: Target, auth: str | None) -> socket.socket:
    """Ask the proxy on ``sock`` for a tunnel to ``target`` (CONNECT); the socket then leads to the target."""
    lines = [f"CONNECT {target.netloc if target.port != 443 else target.netloc + ':443'} HTTP/1.1",
             f"Host: {target.netloc}"]
    if auth:
        lines.append(f"Proxy-Authorization: {auth}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    reply = http.client.HTTPResponse(sock, method="CONNECT")
    reply.begin()
    if reply.status != 200:
        raise HTTPFailure("unreachable", f"the proxy refused a tunnel to {target.netloc} (HTTP {reply.status})")
    return sock


def _run(exchange: _Exchange, target: Target, route: Route, method: str, headers: dict, body: bytes | None,
         tls: ssl.SSLContext | None, remaining: Callable[[], float]) -> None:
    try:
        if route.proxy is not None and target.scheme == "https":
            def dial():
                sock = _open_socket(route.proxy.host, route.proxy.port, None, exchange, remaining)
                return _tunnel(sock, target, route.proxy_auth)
            path = target.path
        elif route.proxy is not None:  # plain http through a proxy: the absolute URL goes to the proxy
            def dial():
                return _open_socket(route.proxy.host, route.proxy.port, None, exchange, remaining)
            path = target.url
            if route.proxy_auth:
                headers = headers | {"Proxy-Authorization": route.proxy_auth}
        else:
            def dial():
                addresses = resolve_loopback(target.host, target.port) if route.loopback_only else None
                return _open_socket(target.host, target.port, addresses, exchange, remaining)
            path = target.path
        connection = _Connection(target, dial, tls, max(remaining(), 0.001), exchange.track)
        connection.request(method, path or "/", body=body, headers=headers)
        exchange.phase = "waiting for the reply's headers"
        connection.sock.settimeout(max(remaining(), 0.001))
        response = connection.getresponse()
        exchange.phase = "reading the reply's body"
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > MAX_REPLY_BYTES:
            raise HTTPFailure("too_large", f"the reply would be {int(length)} bytes, more than the "
                              f"{MAX_REPLY_BYTES // 2**20} MiB a caption reply can be")
        chunks = []
        while True:
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            exchange.received += len(chunk)
            if exchange.received > MAX_REPLY_BYTES:
                raise HTTPFailure("too_large", f"the reply is larger than the {MAX_REPLY_BYTES // 2**20} MiB a "
                                  "caption reply can be")
        if response.length:  # Content-Length promised more than came
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        exchange.response = Response(response.status, response.getheader("Location"), b"".join(chunks))
        connection.close()
    except BaseException as err:  # handed to the caller, who decides what it means
        exchange.failure = err
    finally:
        for sock in exchange.sockets:
            _shut(sock)
        exchange.done.set()


def exchange(target: Target, route: Route, method: str, headers: dict, body: bytes | None, *, deadline: float,
             should_stop: Callable[[], bool] | None = None, tls: ssl.SSLContext | None = None) -> Response:
    """One request to ``target`` (URL already checked) by ``route``; the reply, or HTTPFailure. Returns or raises
    by ``deadline`` (time.monotonic()) and within POLL_S of ``should_stop()`` turning true."""
    if target.scheme == "https" and tls is None:
        tls = ssl.create_default_context()

    def remaining() -> float:
        return deadline - time.monotonic()

    state = _Exchange()
    worker = threading.Thread(target=_run, args=(state, target, route, method, headers, body, tls, remaining),
                              name="mova-llm-request", daemon=True)
    worker.start()
    while not state.done.wait(max(0.0, min(POLL_S, remaining()))):
        if should_stop is not None and should_stop():
            state.abort()
            raise HTTPFailure("cancelled", "cancelled")
        if remaining() <= 0:
            detail = _timeout_detail(state)  # before the abort: the worker moves on once its socket is shut
            state.abort()
            raise HTTPFailure("timeout", detail)
    if state.failure is not None:
        raise _failure(state.failure, state) from None
    return state.response


def _timeout_detail(state: _Exchange) -> str:
    if state.phase == "reading the reply's body":
        return f"while reading the reply's body ({state.received} bytes had come)"
    return f"while {state.phase}"


def _failure(err: BaseException, state: _Exchange) -> HTTPFailure:
    """What went wrong in the worker, as an HTTPFailure (server text in it still to be redacted)."""
    if isinstance(err, HTTPFailure):
        return err
    if isinstance(err, (TimeoutError, socket.timeout)):
        return HTTPFailure("timeout", _timeout_detail(state))
    if isinstance(err, http.client.RemoteDisconnected):
        return HTTPFailure("protocol", "the server closed the connection without any reply")
    if isinstance(err, http.client.LineTooLong):
        return HTTPFailure("protocol", "the reply has a line longer than 64 KiB in its headers")
    if isinstance(err, http.client.UnknownProtocol):
        return HTTPFailure("protocol", f"the reply speaks {err.args[0]!r}, not HTTP/1.x")
    if isinstance(err, http.client.BadStatusLine):
        line = err.args[0] if err.args else ""
        return HTTPFailure("protocol", f"the reply is not HTTP (it starts {line.strip()[:80]!r})" if line.strip()
                           else "the reply is not HTTP (its first line is empty)")
    if isinstance(err, http.client.IncompleteRead):
        return HTTPFailure("protocol", f"the reply's body broke off or its chunked encoding is broken (after "
                           f"{len(err.partial)} bytes)")
    if isinstance(err, http.client.HTTPException):
        text = str(err) or type(err).__name__
        if "headers" in text:
            return HTTPFailure("protocol", "the reply has more than 100 header lines")
        return HTTPFailure("protocol", f"the reply breaks the HTTP rules ({type(err).__name__}: {text})")
    if isinstance(err, ssl.SSLCertVerificationError):
        return HTTPFailure("tls", f"the server's TLS certificate is not valid for this host ({err.verify_message})")
    if isinstance(err, ssl.SSLError):
        return HTTPFailure("tls", f"TLS failed ({err.reason or err})")
    if isinstance(err, ConnectionRefusedError):
        return HTTPFailure("unreachable", "the connection was refused (nothing listens on that port)")
    if isinstance(err, ValueError):  # a chunk size that is no number, and the like
        return HTTPFailure("protocol", "the reply's chunked encoding is broken")
    if isinstance(err, OSError):
        reason = err.strerror or type(err).__name__
        return HTTPFailure("unreachable", f"the connection failed or broke ({reason})")
    return HTTPFailure("protocol", f"the exchange failed ({type(err).__name__})")

"""URL input: DNS pinning, redirects, limits, timeouts, and the service end to end.

The address rules themselves are tested in test_safehttp.py. Every socket is loopback.
Names that must resolve elsewhere come from the fake resolver (`dns`, in conftest.py)
patched over `trio.socket.getaddrinfo`, which `ffserve.transfer.safehttp` uses and httpx
does not: a request that reached httpx still naming the host would fail to connect, so a
passing test proves the connection went to the address that was checked.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import socket
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.transfer import safehttp
from ffserve.transfer.download import FetchPolicy, fetch_to_file
from tests.conftest import Media, StartServer
from tests.helpers import connect, probe, streams
from tests.transfer.conftest import PUBLIC_V4, PUBLIC_V6, FakeDNS, mock_client

# Any port: loopback servers listen on random ones (the port rule has its own tests).
PRIVATE_OK = FetchPolicy(allow_private=True, max_bytes=1 << 20, max_redirects=5, ports=())
PUBLIC_ONLY = FetchPolicy(allow_private=False, max_bytes=1 << 20, max_redirects=5, ports=())
BODY = bytes(range(256)) * 64  # 16 KiB, every byte value


# --- a tiny HTTP/1.1 server on loopback -------------------------------------------------

Route = Callable[[trio.abc.Stream], Awaitable[None]]


@attrs.frozen
class Seen:
    """A request as the server received it (header names lower-cased)."""

    method: str
    target: str
    headers: dict[str, str]
    connection: int


@attrs.define
class LocalServer:
    host: str
    routes: dict[str, Route] = attrs.Factory(dict)
    seen: list[Seen] = attrs.Factory(list)
    port: int = 0
    _connections: itertools.count[int] = attrs.Factory(itertools.count)

    def url(self, path: str, host: str | None = None, scheme: str = "http") -> str:
        host = host or self.host
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve requests on one connection until the client closes or asks to."""
        connection = next(self._connections)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                request_line, *lines = head.decode("latin-1").split("\r\n")
                method, target, _version = request_line.split(" ", 2)
                fields = (line.split(":", 1) for line in lines)
                headers = {name.strip().lower(): value.strip() for name, value in fields}
                self.seen.append(Seen(method, target, headers, connection))
                route = self.routes.get(target.split("?", 1)[0], status(404))
                await route(stream)
                if headers.get("connection", "").lower() == "close":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()


async def start_local(
    nursery: trio.Nursery, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None
) -> LocalServer:
    server = LocalServer(host)
    if tls is None:
        serve: Any = partial(trio.serve_tcp, server.handle, 0, host=host)
    else:
        serve = partial(trio.serve_ssl_over_tcp, server.handle, 0, tls, host=host)
    (listener,) = await nursery.start(serve)
    if tls is not None:
        listener = listener.transport_listener
    server.port = listener.socket.getsockname()[1]
    return server


def raw(data: bytes, *, then: str = "keep") -> Route:
    """Send `data` as is, then keep the connection, close it, or stall forever."""

    async def route(stream: trio.abc.Stream) -> None:
        await stream.send_all(data)
        if then == "close":
            await stream.aclose()
        elif then == "stall":
            await trio.sleep_forever()

    return route


def head(status_line: str = "200 OK", /, **headers: str | int) -> bytes:
    lines = [f"HTTP/1.1 {status_line}"] + [
        f"{k.replace('_', '-')}: {v}" for k, v in headers.items()
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ok(body: bytes, **headers: str | int) -> Route:
    return raw(head(content_length=len(body), **headers) + body)


def status(code: int) -> Route:
    return raw(head(f"{code} Whatever", content_length=0))


def redirect(location: str, code: int = 302) -> Route:
    return raw(head(f"{code} Moved", location=location, content_length=0))


@pytest.fixture
async def local(nursery: trio.Nursery) -> LocalServer:
    return await start_local(nursery)


def client(*, read: float = 5.0) -> httpx.AsyncClient:
    return safehttp.open_http_client(connect_timeout_s=5.0, read_timeout_s=read)


async def fetch_error(
    url: str, dest: Path, policy: FetchPolicy = PRIVATE_OK, *, read: float = 5.0
) -> JobError:
    async with client(read=read) as http:
        with pytest.raises(JobError) as caught:
            await fetch_to_file(http, url, dest, policy)
    return caught.value


async def test_a_hanging_resolver_is_bounded_by_the_connect_timeout(
    dns: FakeDNS, tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    dns.hang = True
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, connect=2))
    with trio.fail_after(10):
        async with http:
            with pytest.raises(JobError) as caught:
                await fetch_to_file(http, "http://slow.test/x", tmp_path / "in", PUBLIC_ONLY)
    assert caught.value.code == ErrorCode.URL_FORBIDDEN  # as for a name that does not resolve
    assert trio.current_time() == pytest.approx(2)


# --- the pinned request, through httpx.MockTransport ------------------------------------


@pytest.mark.parametrize(
    ("url", "answer", "host", "sni"),
    [
        (
            "https://user:p%40ss@media.test:8443/a/clip.mp4?sig=x%2By&e=1#frag",
            PUBLIC_V4,
            "media.test:8443",
            "media.test",
        ),
        ("https://media.test/clip.mp4?x=1", PUBLIC_V6, "media.test", "media.test"),
        ("http://media.test/clip.mp4?x=1", PUBLIC_V4, "media.test", None),
        (f"http://[{PUBLIC_V6}]:8080/clip.mp4?x=1", PUBLIC_V6, f"[{PUBLIC_V6}]:8080", None),
        (f"https://{PUBLIC_V4}/clip.mp4?x=1", PUBLIC_V4, PUBLIC_V4, PUBLIC_V4),
        ("https://bücher.test/clip.mp4?x=1", PUBLIC_V4, "xn--bcher-kva.test", "xn--bcher-kva.test"),
    ],
)
async def test_request_goes_to_the_checked_address_and_names_the_host(
    dns: FakeDNS, tmp_path: Path, url: str, answer: str, host: str, sni: str | None
) -> None:
    dns.answers[httpx.URL(url).raw_host.decode()] = [answer]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(BODY))

    # A jar cookie for every host: it must not reach a client-named server.
    with trio.fail_after(5):
        async with mock_client(handler, cookies={"session": "secret"}) as http:
            assert "cookie" in http.build_request("GET", "http://x.test/").headers
            count = await fetch_to_file(http, url, tmp_path / "in", PUBLIC_ONLY)
    assert count == len(BODY) and (tmp_path / "in").read_bytes() == BODY
    (request,) = seen
    target = httpx.URL(url)
    assert request.url.host == answer
    assert request.url.port == target.port
    assert request.url.raw_path == target.raw_path  # path and query, exactly
    assert request.headers["host"] == host
    assert request.extensions.get("sni_hostname") == sni
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["connection"] == "close"
    assert "cookie" not in request.headers
    if target.userinfo:
        assert (
            request.headers["authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
        )
    else:
        assert "authorization" not in request.headers


async def test_each_hop_is_resolved_and_checked_again(dns: FakeDNS, tmp_path: Path) -> None:
    """The name answers public for the first hop, then private (DNS rebinding)."""
    dns.answers["rebind.test"] = [PUBLIC_V4]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        dns.answers["rebind.test"] = ["10.0.0.1"]
        return httpx.Response(302, headers={"location": "/next"})

    with trio.fail_after(5):
        async with mock_client(handler) as http:
            with pytest.raises(JobError) as caught:
                await fetch_to_file(http, "http://rebind.test/x", tmp_path / "in", PUBLIC_ONLY)
    assert caught.value.code == ErrorCode.URL_FORBIDDEN
    assert [r.url.host for r in seen] == [PUBLIC_V4]
    assert dns.asked == ["rebind.test", "rebind.test"]


@pytest.mark.parametrize(
    "location",
    [
        "http://internal.test/admin",  # resolves to 10.0.0.5
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "file:///etc/passwd",
        "gopher://media.test/_x",
        "data:text/plain,hello",
        "mailto:someone@media.test",
        "ftp://media.test/clip.mp4",
    ],
)
async def test_redirect_to_a_forbidden_target_is_refused(
    dns: FakeDNS, tmp_path: Path, location: str
) -> None:
    dns.answers["media.test"] = [PUBLIC_V4]
    dns.answers["internal.test"] = ["10.0.0.5"]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(301, headers={"location": location})

    with trio.fail_after(5):
        async with mock_client(handler) as http:
            with pytest.raises(JobError) as caught:
                await fetch_to_file(http, "http://media.test/x", tmp_path / "in", PUBLIC_ONLY)
    assert caught.value.code == ErrorCode.URL_FORBIDDEN
    assert len(seen) == 1


async def test_an_encoded_body_is_refused(dns: FakeDNS, tmp_path: Path) -> None:
    dns.answers["media.test"] = [PUBLIC_V4]

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(b"\x1f\x8b...")
        )

    with trio.fail_after(5):
        async with mock_client(handler) as http:
            with pytest.raises(JobError) as caught:
                await fetch_to_file(http, "http://media.test/x", tmp_path / "in", PUBLIC_ONLY)
    assert caught.value.code == ErrorCode.URL_FETCH_FAILED
    assert "gzip" in caught.value.message


# --- fetch_to_file against loopback servers ---------------------------------------------


async def test_downloads_the_body(local: LocalServer, tmp_path: Path) -> None:
    local.routes["/clip.mp4"] = ok(BODY, content_type="video/mp4")
    with trio.fail_after(10):
        async with client() as http:
            url = local.url("/clip.mp4?sig=a%2Bb&e=1")
            assert await fetch_to_file(http, url, tmp_path / "in", PRIVATE_OK) == len(BODY)
    assert (tmp_path / "in").read_bytes() == BODY
    (seen,) = local.seen
    assert (seen.method, seen.target) == ("GET", "/clip.mp4?sig=a%2Bb&e=1")
    assert seen.headers["host"] == f"127.0.0.1:{local.port}"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["connection"] == "close"


async def test_downloads_over_ipv6_loopback(nursery: trio.Nursery, tmp_path: Path) -> None:
    try:
        server = await start_local(nursery, host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    server.routes["/clip.mp4"] = ok(BODY)
    with trio.fail_after(10):
        async with client() as http:
            await fetch_to_file(http, server.url("/clip.mp4"), tmp_path / "in", PRIVATE_OK)
    assert (tmp_path / "in").read_bytes() == BODY
    assert server.seen[0].headers["host"] == f"[::1]:{server.port}"


async def test_a_name_connects_to_the_address_it_resolved_to(
    dns: FakeDNS, local: LocalServer, tmp_path: Path
) -> None:
    """`media.test` exists only in the fake resolver; `::1` first refuses the connection."""
    dns.answers["media.test"] = ["::1", "127.0.0.1"]
    local.routes["/clip.mp4"] = ok(BODY)
    with trio.fail_after(10):
        async with client() as http:
            url = f"http://user:pw@media.test:{local.port}/clip.mp4"
            await fetch_to_file(http, url, tmp_path / "in", PRIVATE_OK)
    assert (tmp_path / "in").read_bytes() == BODY
    (seen,) = local.seen
    assert seen.headers["host"] == f"media.test:{local.port}"
    assert seen.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert dns.asked.count("media.test") == 1


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (
            raw(
                head("200 OK", transfer_encoding="chunked") + b"5\r\nhello\r\n3\r\n!!!\r\n0\r\n\r\n"
            ),
            b"hello!!!",
        ),
        (raw(head("200 OK") + BODY, then="close"), BODY),  # no length: read to close
        (
            raw(head("200 OK", content_length=10) + BODY, then="close"),
            BODY[:10],
        ),  # more than claimed
    ],
)
async def test_body_framings(
    local: LocalServer, tmp_path: Path, route: Route, expected: bytes
) -> None:
    local.routes["/x"] = route
    with trio.fail_after(10):
        async with client() as http:
            count = await fetch_to_file(http, local.url("/x"), tmp_path / "in", PRIVATE_OK)
    assert count == len(expected)
    assert (tmp_path / "in").read_bytes() == expected


@pytest.mark.parametrize(
    "route",
    [
        raw(head(content_length=len(BODY)) + BODY),  # declared too large: refused before reading
        raw(head() + BODY, then="close"),  # no length: refused while reading
        raw(head(transfer_encoding="chunked") + b"%x\r\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
    ],
)
async def test_size_cap(local: LocalServer, tmp_path: Path, route: Route) -> None:
    local.routes["/big"] = route
    policy = attrs.evolve(PRIVATE_OK, max_bytes=len(BODY) - 1)
    with trio.fail_after(10):
        error = await fetch_error(local.url("/big"), tmp_path / "in", policy)
    assert error.code == ErrorCode.TOO_LARGE
    assert str(policy.max_bytes) in error.message
    assert not (tmp_path / "in").exists() or (tmp_path / "in").stat().st_size <= policy.max_bytes


@pytest.mark.parametrize(
    "route",
    [
        raw(b"", then="stall"),  # no response at all
        raw(head(content_length=len(BODY)) + BODY[:100], then="stall"),  # stalls mid-body
    ],
)
async def test_a_stalled_server_times_out(local: LocalServer, tmp_path: Path, route: Route) -> None:
    local.routes["/slow"] = route
    with trio.fail_after(10):
        error = await fetch_error(local.url("/slow"), tmp_path / "in", read=0.3)
    assert error.code == ErrorCode.URL_FETCH_FAILED
    assert "timed out" in error.message


async def test_a_truncated_body_fails(local: LocalServer, tmp_path: Path) -> None:
    local.routes["/short"] = raw(head(content_length=len(BODY)) + BODY[:100], then="close")
    with trio.fail_after(10):
        error = await fetch_error(local.url("/short"), tmp_path / "in")
    assert error.code == ErrorCode.URL_FETCH_FAILED


async def test_a_refused_connection_fails(tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with trio.fail_after(10):
        error = await fetch_error(f"http://127.0.0.1:{port}/x", tmp_path / "in")
    assert error.code == ErrorCode.URL_FETCH_FAILED


@pytest.mark.parametrize("code", [404, 500, 206, 302])
async def test_http_errors_name_the_status(local: LocalServer, tmp_path: Path, code: int) -> None:
    local.routes["/x"] = status(code)  # the 302 has no Location
    with trio.fail_after(10):
        error = await fetch_error(local.url("/x"), tmp_path / "in")
    assert error.code == ErrorCode.URL_FETCH_FAILED
    assert f"HTTP {code}" in error.message


@pytest.mark.parametrize(
    "location",
    [
        "/final?k=v",
        "final?k=v",
        "../final?k=v",
        "//127.0.0.1:{port}/final?k=v",
        "http://127.0.0.1:{port}/final?k=v",
    ],
)
@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
async def test_redirects_are_followed(
    local: LocalServer, tmp_path: Path, location: str, code: int
) -> None:
    local.routes["/a/start"] = redirect(location.format(port=local.port), code)
    local.routes["/final"] = ok(BODY)
    local.routes["/a/final"] = ok(BODY)
    with trio.fail_after(10):
        async with client() as http:
            await fetch_to_file(http, local.url("/a/start"), tmp_path / "in", PRIVATE_OK)
    assert (tmp_path / "in").read_bytes() == BODY
    assert [s.target.split("?")[-1] for s in local.seen[1:]] == ["k=v"]


async def test_redirect_limit(local: LocalServer, tmp_path: Path) -> None:
    for n in range(3):
        local.routes[f"/{n}"] = redirect(f"/{n + 1}")
    local.routes["/3"] = ok(BODY)
    local.routes["/loop"] = redirect("/loop")
    three = attrs.evolve(PRIVATE_OK, max_redirects=3)
    with trio.fail_after(10):
        async with client() as http:
            await fetch_to_file(http, local.url("/0"), tmp_path / "in", three)
        assert [s.target for s in local.seen] == ["/0", "/1", "/2", "/3"]
        local.seen.clear()
        error = await fetch_error(
            local.url("/1"), tmp_path / "in", attrs.evolve(three, max_redirects=1)
        )
        assert error.code == ErrorCode.URL_FETCH_FAILED and "redirects" in error.message
        local.seen.clear()
        error = await fetch_error(local.url("/loop"), tmp_path / "in", three)
        assert error.code == ErrorCode.URL_FETCH_FAILED and "more than 3 redirects" in error.message
        assert len(local.seen) == 4


async def test_a_url_or_redirect_to_another_port_is_refused(
    local: LocalServer, tmp_path: Path
) -> None:
    """The port rule holds for the URL and for every hop: a redirect cannot take the
    request to a port the client could not have named."""
    other = unused_port()
    local.routes["/ok"] = ok(BODY)
    local.routes["/start"] = redirect(f"http://127.0.0.1:{other}/ok")
    policy = attrs.evolve(PRIVATE_OK, ports=(local.port,))
    with trio.fail_after(10):
        async with client() as http:
            await fetch_to_file(http, local.url("/ok"), tmp_path / "in", policy)
        error = await fetch_error(local.url("/start"), tmp_path / "in", policy)
        assert error.code == ErrorCode.URL_FORBIDDEN
        assert f"port {other}" in error.message
        error = await fetch_error(f"http://127.0.0.1:{other}/ok", tmp_path / "in", policy)
        assert error.code == ErrorCode.URL_FORBIDDEN
    assert [s.target for s in local.seen] == ["/ok", "/start"]


def unused_port() -> int:
    """A loopback port nobody listens on (nothing may reach it anyway)."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port: int = unused.getsockname()[1]
    return port


async def test_redirect_from_a_public_to_a_private_address_is_refused(
    local: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real sockets: 127.0.0.1 plays a public host, every other loopback stays private."""
    public = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(safehttp, "is_public", lambda address: address == public)
    local.routes["/ok"] = ok(BODY)
    local.routes["/start"] = redirect(f"http://127.0.0.2:{local.port}/ok")
    with trio.fail_after(10):
        async with client() as http:
            await fetch_to_file(http, local.url("/ok"), tmp_path / "in", PUBLIC_ONLY)
        error = await fetch_error(local.url("/start"), tmp_path / "in", PUBLIC_ONLY)
    assert error.code == ErrorCode.URL_FORBIDDEN
    assert [s.target for s in local.seen] == ["/ok", "/start"]


# --- TLS: SNI and certificate checked against the host name, not the pinned IP ----------


def tls_contexts(tmp_path: Path, hostname: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts: a throwaway CA and a certificate for `hostname` only."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: str,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        certificate("ffserve test CA", ca_key, "ffserve test CA", ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        certificate(hostname, key, "ffserve test CA", ca_key)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (tmp_path / "leaf.pem").write_bytes(
        leaf.public_bytes(pem)
        + key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "leaf.pem")
    return server, ssl.create_default_context(cadata=ca.public_bytes(pem).decode())


async def test_https_to_the_pinned_address_verifies_the_host_name(
    dns: FakeDNS, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server_tls, client_tls = tls_contexts(tmp_path, "media.test")
    names: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = record_sni
    server = await start_local(nursery, tls=server_tls)
    server.routes["/clip.mp4"] = ok(BODY)
    dns.answers["media.test"] = ["127.0.0.1"]
    dns.answers["other.test"] = ["127.0.0.1"]
    with trio.fail_after(10):
        async with httpx.AsyncClient(verify=client_tls, timeout=5) as http:
            url = server.url("/clip.mp4", host="media.test", scheme="https")
            await fetch_to_file(http, url, tmp_path / "in", PRIVATE_OK)
            assert (tmp_path / "in").read_bytes() == BODY
            # Same address, another name: a new connection whose certificate does not
            # match. Reusing the first connection from the pool would wrongly succeed.
            other = server.url("/clip.mp4", host="other.test", scheme="https")
            with pytest.raises(JobError) as caught:
                await fetch_to_file(http, other, tmp_path / "in", PRIVATE_OK)
    assert caught.value.code == ErrorCode.URL_FETCH_FAILED
    assert names == ["media.test", "other.test"]
    (seen,) = server.seen
    assert seen.headers["host"] == f"media.test:{server.port}"


# --- end to end through the service -----------------------------------------------------


async def test_url_job_end_to_end(
    start_server: StartServer, nursery: trio.Nursery, media: Media, tmp_path: Path
) -> None:
    source = await start_local(nursery)
    source.routes["/clip.mp4"] = ok(media.clip.read_bytes(), content_type="video/mp4")
    endpoints = await start_server(
        security={"allow_private_urls": True, "url_ports": [source.port]}
    )
    with trio.fail_after(30):
        async with connect(endpoints.url) as ws:
            await ws.start(
                "url-1", "thumbnail", {"timestamp": 1.0, "width": 320}, url=source.url("/clip.mp4")
            )
            result = await ws.collect("url-1")
    assert result.types[0] == "ack"
    assert result.final["type"] == "completed", result.final
    (video,) = streams(probe(result.save(tmp_path)), "video")
    assert (video["width"], video["height"]) == (320, 180)  # the clip's 16:9, so it was the input
    assert [s.target for s in source.seen] == ["/clip.mp4"]


async def test_url_job_to_loopback_is_forbidden_by_default(
    start_server: StartServer, local: LocalServer
) -> None:
    local.routes["/clip.mp4"] = ok(BODY)
    # Its port allowed: the address rule is what refuses it.
    endpoints = await start_server(security={"url_ports": [local.port]})
    with trio.fail_after(30):
        async with connect(endpoints.url) as ws:
            for job_id, url in [("url-1", local.url("/clip.mp4")), ("url-2", "file:///etc/passwd")]:
                await ws.start(job_id, "thumbnail", {"timestamp": 1.0}, url=url)
                result = await ws.collect(job_id)
                assert result.final["code"] == ErrorCode.URL_FORBIDDEN, result.final
                assert result.final["job_id"] == job_id
            await ws.send({"type": "ping"})
            assert (await ws.recv_json())["type"] == "pong"
    assert local.seen == []


async def test_each_chunk_is_admitted_to_the_temp_disk(local: LocalServer, tmp_path: Path) -> None:
    """A download whose size was not announced asks for room before every write; the
    first refusal ends it with nothing more written."""
    body = bytes(1024 * 1024)
    local.routes["/big"] = ok(body)
    asked: list[int] = []

    def check_room(size: int) -> None:
        if sum(asked) + size > 100_000:
            raise JobError("no room", code=ErrorCode.TOO_LARGE)
        asked.append(size)

    async with client() as http:
        with pytest.raises(JobError) as caught, trio.fail_after(10):
            await fetch_to_file(http, local.url("/big"), tmp_path / "in", PRIVATE_OK, check_room)
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert asked and (tmp_path / "in").stat().st_size == sum(asked) <= 100_000

"""The address rules and pinned requests shared by URL input and URL output.

Names resolve through the fake resolver (`dns`, in conftest.py); no request leaves loopback
or the MockTransport.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.transfer import safehttp
from ffserve.transfer.safehttp import check_url, is_public, resolve, send_pinned
from tests.transfer.conftest import PUBLIC_V4, PUBLIC_V6, FakeDNS, mock_client

BODY = bytes(range(256)) * 64  # 16 KiB, every byte value


def client() -> httpx.AsyncClient:
    return safehttp.open_http_client(connect_timeout_s=5.0, read_timeout_s=5.0)


# --- is_public, check_url ---------------------------------------------------------------

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    PUBLIC_V4,
    PUBLIC_V6,
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, client 8.8.8.8
]
NOT_PUBLIC = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "192.0.0.1",
    "192.0.0.8",  # IPv4 dummy address (the stdlib before 3.12.4 calls it global)
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.1",
    "203.0.113.1",
    "::1",
    "::",
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fc00::1",
    "fd12:3456::1",
    "fec0::1",  # site-local (deprecated; the stdlib calls it global)
    "ff02::1",
    "ff0e::1",  # global-scope multicast
    "2001:db8::1",
    "100::1",  # discard-only
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible (the stdlib calls it global)
    "::ffff:0:127.0.0.1",  # IPv4-translated
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::808:808",  # local-use NAT64 (the stdlib calls it global)
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://media.test/clip.mp4",
        "https://media.test:8443/a/b.mp4?sig=a%2Bb&e=1#frag",
        "https://user:secret@media.test/clip.mp4",
        f"http://[{PUBLIC_V6}]:8080/clip.mp4",
        "HTTPS://Media.TEST/clip.mp4",
        "https://bücher.test/clip.mp4",
    ],
)
def test_check_url_accepts_http_urls(url: str) -> None:
    assert check_url(url, ports=()).scheme in ("http", "https")  # (): any port


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://media.test/clip.mp4",
        "gopher://media.test:70/_x",
        "data:video/mp4;base64,AAAA",
        "javascript:alert(1)",
        "ws://media.test/x",
        "/clip.mp4",
        "//media.test/clip.mp4",
        "http:///clip.mp4",
        "http://user@/clip.mp4",
        "http://[::1/clip.mp4",
        "http://0177.0.0.1/",
        "",
        "https://media.test/" + "a" * safehttp.MAX_URL_LENGTH,
    ],
)
def test_check_url_refuses(url: str) -> None:
    with pytest.raises(JobError) as caught:
        check_url(url, ports=())
    assert caught.value.code == ErrorCode.URL_FORBIDDEN


@pytest.mark.parametrize(
    ("url", "ports"),
    [
        ("http://media.test/x", (80, 443)),
        ("https://media.test/x", (80, 443)),
        ("http://media.test:80/x", (80, 443)),
        ("https://media.test:443/x", (443,)),
        ("https://media.test:8443/x", (80, 8443)),
        ("http://media.test:25/x", ()),
    ],
)
def test_check_url_allows_the_configured_ports(url: str, ports: tuple[int, ...]) -> None:
    assert check_url(url, ports=ports).host == "media.test"


@pytest.mark.parametrize(
    ("url", "ports", "port"),
    [
        ("http://media.test:8080/x", (80, 443), 8080),
        ("https://media.test:25/x", (80, 443), 25),  # a PUT body to a mail server
        (f"http://[{PUBLIC_V6}]:6379/x", (80, 443), 6379),
        ("https://media.test/x", (80,), 443),  # the scheme's default port counts
        ("http://media.test/x", (443, 8080), 80),
    ],
)
def test_check_url_refuses_other_ports(url: str, ports: tuple[int, ...], port: int) -> None:
    with pytest.raises(JobError) as caught:
        check_url(url, ports=ports, what="output.url")
    assert caught.value.code == ErrorCode.URL_FORBIDDEN
    message = caught.value.message
    assert message.startswith("output.url") and f"port {port}" in message
    assert "only port(s)" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:p%40ss@media.test:8443/a/clip.mp4?X-Amz-Signature=abc&e=1#frag",
            "https://media.test:8443/a/clip.mp4",
        ),
        ("http://token@media.test/clip.mp4?sig=x", "http://media.test/clip.mp4"),
        (f"http://[{PUBLIC_V6}]:8080/x?k=v", f"http://[{PUBLIC_V6}]:8080/x"),
        ("https://media.test/plain.mp4", "https://media.test/plain.mp4"),
        ("http://[::1/clip.mp4?sig=x", "<invalid URL>"),
    ],
)
def test_redact_url_drops_userinfo_query_and_fragment(url: str, shown: str) -> None:
    assert safehttp.redact_url(url) == shown
    if shown != "<invalid URL>":
        assert safehttp.redact_url(httpx.URL(url)) == shown


# --- resolve ----------------------------------------------------------------------------


async def test_resolve_returns_every_address_in_order(dns: FakeDNS) -> None:
    dns.answers["media.test"] = [PUBLIC_V6, PUBLIC_V4, PUBLIC_V6]
    with trio.fail_after(5):
        addresses = await resolve(httpx.URL("https://media.test/x"), allow_private=False)
    assert addresses == [ipaddress.ip_address(PUBLIC_V6), ipaddress.ip_address(PUBLIC_V4)]


@pytest.mark.parametrize("private", ["10.0.0.7", "127.0.0.1", "fd00::1", "::ffff:192.168.0.1"])
async def test_resolve_refuses_a_name_with_any_private_address(dns: FakeDNS, private: str) -> None:
    dns.answers["mixed.test"] = [PUBLIC_V4, private]
    url = httpx.URL("http://mixed.test/x")
    with trio.fail_after(5):
        with pytest.raises(JobError) as caught:
            await resolve(url, allow_private=False)
        assert caught.value.code == ErrorCode.URL_FORBIDDEN
        assert "mixed.test" in caught.value.message
        assert len(await resolve(url, allow_private=True)) == 2


async def test_resolve_unknown_or_empty_name_fails(dns: FakeDNS) -> None:
    dns.answers["empty.test"] = []
    with trio.fail_after(5):
        for host in ("nowhere.test", "empty.test"):
            with pytest.raises(JobError) as caught:
                await resolve(httpx.URL(f"http://{host}/"), allow_private=True)
            assert caught.value.code == ErrorCode.URL_FORBIDDEN
            assert host in caught.value.message


async def test_a_refused_name_and_a_missing_one_get_the_same_answer(
    dns: FakeDNS, autojump_clock: trio.abc.Clock
) -> None:
    """Otherwise a client could map which internal names exist: one that resolves to a
    private address would answer differently from one that does not resolve at all."""
    url = httpx.URL("http://probe.test/")
    answers: list[tuple[str, str]] = []
    async with client() as http:
        for answer in (["10.0.0.5"], ["::1"], None, [], "hang"):
            dns.answers.pop("probe.test", None)
            dns.hang = answer == "hang"
            if isinstance(answer, list):
                dns.answers["probe.test"] = answer
            with trio.fail_after(60), pytest.raises(JobError) as caught:
                await safehttp.resolve_in_time(http, url, allow_private=False)
            answers.append((caught.value.code, caught.value.message))
    assert answers == [answers[0]] * 5, answers
    assert answers[0][0] == ErrorCode.URL_FORBIDDEN


async def test_resolve_asks_for_the_idna_name(dns: FakeDNS) -> None:
    dns.answers["xn--bcher-kva.test"] = [PUBLIC_V4]
    with trio.fail_after(5):
        await resolve(httpx.URL("https://bücher.test/"), allow_private=False)
    assert dns.asked == ["xn--bcher-kva.test"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://2130706433/",  # inet_aton spellings of 127.0.0.1
        "http://0x7f.1/",
        "http://127.1/",
    ],
)
async def test_resolve_refuses_loopback_spellings(url: str) -> None:
    """Real resolver: numeric forms and /etc/hosts, no network needed."""
    with trio.fail_after(5):
        with pytest.raises(JobError) as caught:
            await resolve(httpx.URL(url), allow_private=False)
    assert caught.value.code == ErrorCode.URL_FORBIDDEN


# --- the shared client -----------------------------------------------------------------


async def test_the_service_client_keeps_no_cookies() -> None:
    response = httpx.Response(
        200,
        headers={"set-cookie": "tracker=1; Path=/"},
        request=httpx.Request("GET", f"http://{PUBLIC_V4}/x"),
    )
    async with httpx.AsyncClient() as plain, client() as ours:
        plain.cookies.extract_cookies(response)
        assert len(plain.cookies.jar) == 1  # what a default client would keep and resend
        ours.cookies.extract_cookies(response)
        assert len(ours.cookies.jar) == 0
        assert not ours.follow_redirects and not ours.trust_env


# --- send_pinned: the checked addresses in turn -----------------------------------------

FIRST, SECOND = ipaddress.ip_address(PUBLIC_V6), ipaddress.ip_address(PUBLIC_V4)


def refuse_first(
    error: type[httpx.TransportError], seen: list[tuple[httpx.Request, bytes]]
) -> Callable[[httpx.Request], httpx.Response]:
    """A MockTransport handler: FIRST fails with `error`, SECOND answers 201."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request, request.content))  # MockTransport has read the body
        if request.url.host == str(FIRST):
            raise error("no route", request=request)
        return httpx.Response(201, stream=httpx.ByteStream(b"answer"))

    return handler


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout])
async def test_send_pinned_goes_on_to_the_next_address(error: type[httpx.TransportError]) -> None:
    target = httpx.URL("https://user:pw@media.test:8443/bucket/out.mkv?sig=a%2Bb")
    seen: list[tuple[httpx.Request, bytes]] = []
    made: list[int] = []

    def body() -> AsyncIterator[bytes]:
        made.append(len(made))

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(BODY), 4096):
                await trio.lowlevel.checkpoint()
                yield BODY[start : start + 4096]

        return chunks()

    with trio.fail_after(5):
        async with mock_client(refuse_first(error, seen), cookies={"session": "secret"}) as http:
            response = await send_pinned(
                http,
                "PUT",
                target,
                [FIRST, SECOND],
                headers={"Content-Length": str(len(BODY))},
                content_factory=body,
            )
            try:
                assert response.status_code == 201
                assert not response.is_closed  # streamed: the caller reads or closes it
                assert await response.aread() == b"answer"
            finally:
                await response.aclose()
    assert made == [0, 1]  # a fresh body for each attempt
    assert [(r.method, r.url.host) for r, _ in seen] == [("PUT", str(FIRST)), ("PUT", str(SECOND))]
    assert [content for _, content in seen] == [BODY, BODY]
    request = seen[-1][0]
    assert request.url.port == 8443
    assert request.url.raw_path == b"/bucket/out.mkv?sig=a%2Bb"
    assert request.headers["host"] == "media.test:8443"
    assert request.extensions.get("sni_hostname") == "media.test"
    assert request.headers["connection"] == "close"
    assert request.headers["content-length"] == str(len(BODY))
    assert request.headers["authorization"].startswith("Basic ")
    assert "cookie" not in request.headers


async def test_send_pinned_without_a_body_over_http() -> None:
    seen: list[tuple[httpx.Request, bytes]] = []
    with trio.fail_after(5):
        async with mock_client(refuse_first(httpx.ConnectError, seen)) as http:
            target = httpx.URL("http://media.test/clip.mp4")
            response = await send_pinned(http, "GET", target, [FIRST, SECOND])
            await response.aclose()
    assert response.status_code == 201
    request, content = seen[-1]
    assert (request.method, request.url.host, content) == ("GET", str(SECOND), b"")
    assert request.headers["host"] == "media.test"
    assert "sni_hostname" not in request.extensions


async def test_send_pinned_raises_the_last_addresses_error() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        error = httpx.ConnectError if request.url.host == str(FIRST) else httpx.ConnectTimeout
        raise error(request.url.host, request=request)

    with trio.fail_after(5):
        async with mock_client(handler) as http:
            target = httpx.URL("https://media.test/x")
            with pytest.raises(httpx.ConnectTimeout, match=str(SECOND)):
                await send_pinned(http, "GET", target, [FIRST, SECOND])
            with pytest.raises(ValueError):
                await send_pinned(http, "GET", target, [])
    assert seen == [str(FIRST), str(SECOND)]


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError])
async def test_send_pinned_tries_no_other_address_once_one_connected(
    error: type[httpx.TransportError],
) -> None:
    """The request may have reached the server: sending it again elsewhere is not safe."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        raise error("after connecting", request=request)

    with trio.fail_after(5):
        async with mock_client(handler) as http:
            with pytest.raises(error):
                await send_pinned(http, "GET", httpx.URL("https://media.test/x"), [FIRST, SECOND])
    assert seen == [str(FIRST)]

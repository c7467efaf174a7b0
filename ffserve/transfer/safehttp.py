"""Requests to client-named HTTP(S) URLs, sent only to addresses that were checked.

The host is resolved here, every address is checked (loopback, private, link-local,
CGNAT, multicast, reserved, site-local and IPv4-embedding forms are refused unless
`allow_private_urls`), and the request then goes to a checked address with the
original Host header and TLS server name (SNI and certificate check): DNS cannot
change its answer in between. URL input (`ffserve.transfer.download`) and URL output
(`ffserve.transfer.publish`) both go through `send_pinned`.

The shared client must not carry state from one client's request into another's:
requests are built without the client's cookie jar, and each asks `Connection: close`
so that no pooled connection (keyed by the pinned IP, not the host name) is ever
reused for a different host name on the same address, whose certificate was never
checked. `open_http_client` builds a client whose jar also never stores cookies.

A URL's userinfo and query are secrets (basic auth, presigned signatures such as
X-Amz-Signature): every URL ffserve logs or echoes goes through `redact_url`, and each
request is logged here, redacted, instead of by httpx (whose logger the service quietens).
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import logging
import math
from collections.abc import AsyncIterator, Callable, Collection, Sequence

import httpx
import trio

from ffserve.errors import ErrorCode, JobError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Longer than any real signed media URL; short enough that nobody logs a megabyte.
MAX_URL_LENGTH = 8192
DEFAULT_PORTS = {"http": 80, "https": 443}

# RFC 6052 well-known NAT64 prefix: the IPv4 address is the low 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not global, though `is_global` says so in some or all Python versions.
_NOT_GLOBAL = (
    ipaddress.IPv4Network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.IPv6Network("fec0::/10"),  # site-local: deprecated, still routed inside sites
    ipaddress.IPv6Network("64:ff9b:1::/48"),  # RFC 8215 local-use NAT64: not decodable
)


def open_http_client(*, connect_timeout_s: float, read_timeout_s: float) -> httpx.AsyncClient:
    """The process's one client for untrusted URLs (use it as `async with`).

    No redirects (followed by hand, each hop checked), no proxy or netrc from the
    environment, and a cookie jar that refuses every cookie: a jar shared by all
    clients would let one client's server set cookies sent to another's, and grow
    without bound. HTTP/1.1 only: with HTTP/2 a connection is shared by concurrent
    requests whatever `Connection: close` says (see the module docstring).
    """
    no_cookies = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])
    return httpx.AsyncClient(
        timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
        follow_redirects=False,
        trust_env=False,
        cookies=http.cookiejar.CookieJar(policy=no_cookies),
    )


def redact_url(url: str | httpx.URL) -> str:
    """`url` as it may be logged or shown: scheme, host, port and path, without the
    userinfo, query and fragment where credentials and presigned signatures travel."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"


def _forbidden(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_FORBIDDEN)


def _unreachable(host: str) -> JobError:
    """The one answer for a host that is refused, does not resolve, has no address, or
    whose lookup timed out: different answers would let a client map which internal
    names exist (a private address) and which do not (no address)."""
    return _forbidden(f"host {host[:100]!r} is not allowed or cannot be reached")


def is_public(address: IPAddress) -> bool:
    """True for addresses on the public internet only.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged by
    that IPv4 address. The stdlib's `is_global` alone is not enough: it calls multicast,
    IPv4-compatible (`::7f00:1`), site-local, local-use NAT64 and (before 3.12.4)
    192.0.0.0/24 addresses global.
    """
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # drop any %scope
        embedded = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
            or (ipaddress.IPv4Address(address.packed[-4:]) if address in _NAT64 else None)
        )
        if embedded is not None:
            return is_public(embedded)
    if any(address in network for network in _NOT_GLOBAL):
        return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


def check_url(url: str, *, ports: Collection[int], what: str = "input.url") -> httpx.URL:
    """`url` parsed, if it is an absolute http(s) URL with a host on one of `ports`
    (`[security] url_ports`; empty allows any port).

    Errors: JobError(URL_FORBIDDEN) for anything else.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _forbidden(f"{what} is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _forbidden(f"{what} is not a valid URL") from None
    if parsed.scheme not in DEFAULT_PORTS or not parsed.host:
        raise _forbidden(f"{what} must be an http:// or https:// URL with a host")
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    if ports and port not in ports:
        allowed = ", ".join(str(p) for p in sorted(ports))
        raise _forbidden(f"{what} names port {port}; URLs may use only port(s) {allowed}")
    return parsed


async def resolve(url: httpx.URL, *, allow_private: bool) -> list[IPAddress]:
    """Every address `url`'s host resolves to, in resolver order, after checking them all.

    One non-public address refuses the host: otherwise a name answering with both a
    public and a private address would let the connection pick the private one.

    Errors: JobError(URL_FORBIDDEN), the same for a name that does not resolve as for
    one that resolves to a refused address (see `_unreachable`).
    """
    host = url.raw_host  # IDNA-encoded bytes; an IPv6 literal without brackets
    shown = host.decode("ascii", "replace")
    port = url.port or DEFAULT_PORTS[url.scheme]
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _unreachable(shown) from None
    addresses: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise _unreachable(shown)
    if not allow_private and not all(is_public(address) for address in addresses):
        raise _unreachable(shown)
    return addresses


async def resolve_in_time(
    client: httpx.AsyncClient, target: httpx.URL, allow_private: bool
) -> list[IPAddress]:
    """`resolve`, bounded by the client's connect timeout.

    Errors: JobError(URL_FORBIDDEN), a lookup that timed out included (`_unreachable`).
    """
    with trio.move_on_after(client.timeout.connect or math.inf):
        return await resolve(target, allow_private=allow_private)
    raise _unreachable(target.raw_host.decode("ascii", "replace"))


def pinned_request(
    client: httpx.AsyncClient,
    method: str,
    target: httpx.URL,
    address: IPAddress,
    *,
    headers: dict[str, str] | None = None,
    content: AsyncIterator[bytes] | None = None,
) -> httpx.Request:
    """`method` `target`, sent to `address`: the URL names the IP, Host and SNI the host.

    The URL keeps its userinfo (httpx sends it as Basic auth), port, path and query. Each
    request gets a fresh connection (pooled ones are keyed by IP, not by TLS name) and no
    cookies (the jar is shared by every client of the server).
    """
    base = {
        "Host": target.netloc.decode("ascii"),  # host[:port], brackets for IPv6, no userinfo
        "Connection": "close",
    }
    extensions = (
        {"sni_hostname": target.raw_host.decode("ascii")} if target.scheme == "https" else {}
    )
    request = client.build_request(
        method,
        target.copy_with(host=str(address)),
        headers={**base, **(headers or {})},
        content=content,
        extensions=extensions,
    )
    request.headers.pop("cookie", None)
    return request


async def send_pinned(
    client: httpx.AsyncClient,
    method: str,
    target: httpx.URL,
    addresses: Sequence[IPAddress],
    *,
    headers: dict[str, str] | None = None,
    content_factory: Callable[[], AsyncIterator[bytes]] | None = None,
) -> httpx.Response:
    """`pinned_request` to each of `addresses` in turn until one connects; the response is
    streamed (the caller closes it).

    Only a failure to connect (httpx.ConnectError, httpx.ConnectTimeout) goes on to the
    next address; the last address's error, and any other error, is raised as is. The
    body comes from `content_factory()`, called once per attempt, as an async iterator
    can be consumed only once.

    Errors: httpx.HTTPError; ValueError for no addresses.
    """
    if not addresses:
        raise ValueError("send_pinned needs at least one address")

    async def send(address: IPAddress) -> httpx.Response:
        content = content_factory() if content_factory is not None else None
        request = pinned_request(client, method, target, address, headers=headers, content=content)
        shown = f"{method} {redact_url(target)} (at {address})"
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.info("%s failed: %s", shown, type(exc).__name__)
            raise
        log.info("%s: HTTP %d", shown, response.status_code)
        return response

    *others, last = addresses
    for address in others:
        try:
            return await send(address)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            continue
    return await send(last)

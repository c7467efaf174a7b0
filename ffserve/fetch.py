"""URL input: stream a client-named HTTP(S) resource to the job's file.

The host is resolved here, every address is checked (loopback, private, link-local,
CGNAT, multicast, reserved and IPv4-mapped forms are refused unless
`allow_private_urls`), and the request then goes to the checked address with the
original Host header and TLS server name: DNS cannot change its answer in between.
Redirects are followed by hand so each hop is checked the same way.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urljoin

import attrs
import httpx
import trio

from ffserve.errors import ErrorCode, JobError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class FetchPolicy:
    allow_private: bool
    max_bytes: int
    max_redirects: int


def _forbidden(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_FORBIDDEN)


def _failed(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_FETCH_FAILED)


def is_public(address: IPAddress) -> bool:
    """True for addresses on the public internet only."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = (
            address.ipv4_mapped
            or address.sixtofour
            or (address.teredo[1] if address.teredo else None)
        )
        if embedded is not None:
            return is_public(embedded)
        if address in ipaddress.IPv6Network("64:ff9b::/96"):  # NAT64 of an IPv4 address
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not address.is_multicast


def check_url(url: str) -> httpx.URL:
    """Errors: JobError(URL_FORBIDDEN) for anything but an absolute http(s) URL with a host."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _forbidden("input.url is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _forbidden("input.url must be an http:// or https:// URL with a host")
    return parsed


async def resolve(url: httpx.URL, *, allow_private: bool) -> IPAddress:
    """The address to connect to, after checking every address the host resolves to."""
    host = url.host
    try:
        infos = await trio.socket.getaddrinfo(host, url.port or 443, type=trio.socket.SOCK_STREAM)
    except OSError:
        raise _failed(f"cannot resolve host {host[:100]!r}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise _failed(f"host {host[:100]!r} has no address")
    if not allow_private:
        for address in addresses:
            if not is_public(address):
                raise _forbidden(f"host {host[:100]!r} resolves to a non-public address")
    return addresses[0]


async def fetch_to_file(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    policy: FetchPolicy,
) -> int:
    """Download `url` into `dest`; returns the byte count.

    Errors: JobError(URL_FORBIDDEN | URL_FETCH_FAILED | TOO_LARGE).
    """
    target = check_url(url)
    for _hop in range(policy.max_redirects + 1):
        address = await resolve(target, allow_private=policy.allow_private)
        pinned = target.copy_with(host=str(address))
        headers = {"Host": target.netloc.decode("ascii"), "Accept-Encoding": "identity"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with client.stream(
                "GET", pinned, headers=headers, extensions=extensions
            ) as response:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    target = check_url(urljoin(str(target), response.headers["location"]))
                    continue
                if response.status_code != 200:
                    raise _failed(f"fetching the input URL returned HTTP {response.status_code}")
                return await _save(response, dest, policy.max_bytes)
        except httpx.TimeoutException:
            raise _failed("fetching the input URL timed out") from None
        except httpx.HTTPError as exc:
            raise _failed(f"fetching the input URL failed ({type(exc).__name__})") from None
    raise _failed(f"more than {policy.max_redirects} redirects")


async def _save(response: httpx.Response, dest: Path, max_bytes: int) -> int:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise JobError(
            f"input URL is {int(declared)} bytes; the limit is {max_bytes}",
            code=ErrorCode.TOO_LARGE,
        )
    written = 0
    async with await trio.open_file(dest, "wb") as out:
        async for chunk in response.aiter_raw():
            written += len(chunk)
            if written > max_bytes:
                raise JobError(
                    f"input URL is larger than the limit of {max_bytes} bytes",
                    code=ErrorCode.TOO_LARGE,
                )
            await out.write(chunk)
    return written

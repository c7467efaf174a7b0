"""URL input: stream a client-named HTTP(S) resource to the job's file.

Every request goes out through `ffserve.transfer.safehttp`: the host is resolved, every
address checked, and the request sent to a checked address with the original Host
header and TLS server name. Redirects are followed by hand so each hop is checked the
same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.transfer.safehttp import check_url, resolve_in_time, send_pinned

REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class FetchPolicy:
    allow_private: bool
    max_bytes: int
    max_redirects: int
    ports: tuple[int, ...]  # `[security] url_ports`, for the URL and every redirect hop


def _forbidden(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_FORBIDDEN)


def _failed(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_FETCH_FAILED)


async def fetch_to_file(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    policy: FetchPolicy,
    check_room: Callable[[int], None] = lambda _: None,
) -> int:
    """Download `url` into `dest`; returns the byte count.

    Timeouts are the client's: its connect timeout also bounds name resolution, its
    read timeout a stall between bytes. The caller bounds the whole download.

    `check_room(n)` is asked before `n` more bytes are written (temp disk admission).

    Errors: JobError(URL_FORBIDDEN | URL_FETCH_FAILED | TOO_LARGE).
    """
    target = check_url(url, ports=policy.ports)
    try:
        for _hop in range(policy.max_redirects + 1):
            response = await _open(client, target, policy)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECTS and location is not None:
                    target = _next_hop(target, location, policy.ports)
                    continue
                if response.status_code != 200:
                    raise _failed(f"fetching the input URL returned HTTP {response.status_code}")
                return await _save(response, dest, policy.max_bytes, check_room)
            finally:
                await response.aclose()
    except httpx.TimeoutException:
        raise _failed("fetching the input URL timed out") from None
    except httpx.InvalidURL:
        # Our requests' URLs are valid; httpx raises this while parsing a Location
        # it will not follow, for a scheme without a host (data:, mailto:, ...).
        raise _forbidden("the input URL redirects to a URL that is not http(s)") from None
    except httpx.HTTPError as exc:
        raise _failed(f"fetching the input URL failed ({type(exc).__name__})") from None
    raise _failed(f"more than {policy.max_redirects} redirects")


async def _open(
    client: httpx.AsyncClient, target: httpx.URL, policy: FetchPolicy
) -> httpx.Response:
    """Resolve, check, then GET from the checked addresses in turn until one connects."""
    addresses = await resolve_in_time(client, target, policy.allow_private)
    get = {"Accept-Encoding": "identity"}
    return await send_pinned(client, "GET", target, addresses, headers=get)


def _next_hop(target: httpx.URL, location: str, ports: tuple[int, ...]) -> httpx.URL:
    """Errors: JobError(URL_FORBIDDEN) for a Location that is not an http(s) URL on one
    of `ports`."""
    try:
        joined = str(target.join(location))
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _forbidden("the input URL redirects to an invalid URL") from None
    return check_url(joined, ports=ports, what="the redirect target")


async def _save(
    response: httpx.Response, dest: Path, max_bytes: int, check_room: Callable[[int], None]
) -> int:
    """Write the raw body to `dest`, refusing it once it passes `max_bytes`.

    Raw, because decoding a compressed body would turn a small download into an
    unbounded amount of work; we asked for identity, so anything else is refused.
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise _failed(f"the input URL was sent with Content-Encoding {encoding[:40]!r}")
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
            check_room(len(chunk))
            await out.write(chunk)
    return written

"""URL output: PUT a job's result to a client-named HTTP(S) URL (e.g. a presigned S3 URL).

The same address rules as URL input, from `ffserve.transfer.safehttp`: the host is resolved
and every address checked, and the request goes to a checked address with the original
Host header and TLS server name. The body streams from disk; redirects are not followed (a
presigned URL does not redirect, and a redirected PUT would re-send the body elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from ffserve.errors import ErrorCode, JobError
from ffserve.transfer.safehttp import check_url, redact_url, resolve_in_time, send_pinned

READ_BYTES = 1024 * 1024


def _failed(message: str) -> JobError:
    return JobError(message, code=ErrorCode.URL_UPLOAD_FAILED)


async def _body(path: Path) -> AsyncIterator[bytes]:
    async with await trio.open_file(path, "rb") as f:
        while chunk := await f.read(READ_BYTES):
            yield chunk


async def put_file(
    client: httpx.AsyncClient,
    url: str,
    path: Path,
    content_type: str,
    *,
    allow_private: bool,
    ports: tuple[int, ...],
) -> str:
    """Upload `path` to `url` with PUT; returns the URL without its query.

    Errors: JobError(URL_FORBIDDEN) for a URL, port or host that is not allowed, or a
    host that does not resolve; JobError(URL_UPLOAD_FAILED) for connect, timeout or a
    non-2xx answer.
    """
    target = check_url(url, ports=ports, what="output.url")
    addresses = await resolve_in_time(client, target, allow_private)
    size = (await trio.Path(path).stat()).st_size
    headers = {"Content-Length": str(size), "Content-Type": content_type}
    try:
        response = await send_pinned(
            client, "PUT", target, addresses, headers=headers, content_factory=lambda: _body(path)
        )
        # Closed unread: only the status matters, and a body the other end chose
        # (endless, or slow) must cost neither memory nor time.
        await response.aclose()
    except httpx.TimeoutException:
        raise _failed("uploading to the output URL timed out") from None
    except httpx.HTTPError as exc:
        raise _failed(f"uploading to the output URL failed ({type(exc).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise _failed(f"the output URL answered HTTP {response.status_code}")
    return redact_url(target)  # where it went, without the secrets

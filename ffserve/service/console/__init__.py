"""The web console: a page at `/` of the HTTP port that runs jobs from a browser.

The page (static/: plain HTML, JS and CSS, no build step, nothing fetched from elsewhere)
is a WebSocket client like any other: it speaks the protocol of docs/protocol.md to the
job port, uploading and downloading with chunked transfer (section 8.4), and builds its
option forms from `/console/schema.json` (ffserve.wire.option_schema). It holds no
secret and needs none: with `[auth] mode = "jwt"` the user pastes a token, which the
page puts in the WebSocket URL as `access_token` (section 1.1).

Every response carries a Content-Security-Policy that lets the page load only its own
files and connect only to its own origin and the service's WebSocket port (blob: URLs
are allowed for images and media: the previews of results are Blob URLs).
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import attrs

from ffserve.config import Config
from ffserve.wire.option_schema import describe_operations

Headers = list[tuple[bytes, bytes]]

_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
    "/console/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
SCHEMA_PATH = "/console/schema.json"
# A Host header's name part as a browser sends it: a DNS name, an IPv4 or a bracketed
# IPv6 address. Anything else is not echoed into the policy.
_HOSTNAME = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")


@attrs.frozen
class ConsoleResponse:
    status: int
    kind: str
    body: bytes
    # Beyond content-type and content-length.
    headers: Headers


@attrs.frozen
class Console:
    """The console's files (read once) and what the page is told about the service."""

    files: dict[str, bytes]
    settings: dict[str, Any]
    fallback_host: str

    @classmethod
    def load(cls, config: Config, ws_port: int) -> Console:
        """Errors: OSError if the package's static files are missing (a broken install)."""
        static = resources.files(__name__) / "static"
        files = {path: (static / name).read_bytes() for path, (name, _) in _ASSETS.items()}
        settings = {
            "protocol": 1,
            # The page connects to ws://<the host it was loaded from>:<ws_port>/.
            "ws_port": ws_port,
            "auth_required": config.auth.mode != "off",
            "chunk_bytes": config.chunk_bytes,
            "max_upload_bytes": config.max_upload_bytes,
            "operations": describe_operations(),
        }
        host = config.server.host
        fallback = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return cls(files, settings, f"[{fallback}]" if ":" in fallback else fallback)

    def respond(self, path: str, host: bytes | None, secure: bool) -> ConsoleResponse | None:
        """The page, an asset or the schema; None for a path that is not the console's.

        `host` is the request's Host header: the policy names the WebSocket origin on the
        host name the browser used, which is the one the page will connect to.
        """
        if path == SCHEMA_PATH:
            body = json.dumps(self.settings, separators=(",", ":")).encode()
            kind = "application/json"
        elif path in _ASSETS:
            body, kind = self.files[path], _ASSETS[path][1]
        else:
            return None
        headers = [
            (b"content-security-policy", self.policy(host, secure).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"cache-control", b"no-cache"),
        ]
        return ConsoleResponse(200, kind, body, headers)

    def policy(self, host: bytes | None, secure: bool) -> str:
        hostname = self._hostname(host)
        scheme = "wss" if secure else "ws"
        ws_origin = f"{scheme}://{hostname}:{self.settings['ws_port']}"
        return "; ".join(
            (
                "default-src 'none'",
                "script-src 'self'",
                "style-src 'self'",
                "img-src 'self' blob:",
                "media-src 'self' blob:",
                f"connect-src 'self' {ws_origin}",
                "base-uri 'none'",
                "form-action 'none'",
                "frame-ancestors 'none'",
            )
        )

    def _hostname(self, host: bytes | None) -> str:
        text = (host or b"").decode("ascii", "replace").strip()
        name = text.rsplit(":", 1)[0] if text.count(":") == 1 or "]:" in text else text
        return name if _HOSTNAME.fullmatch(name) else self.fallback_host

"""Service configuration: `config.toml` into frozen attrs classes, then environment overrides.

Every key `key` of section `[section]` can be overridden by `FFSERVE_<SECTION>_<KEY>`
(upper case), e.g. `FFSERVE_SERVER_PORT=9000`; a list takes a JSON array or a
comma-separated list (`FFSERVE_SECURITY_URL_PORTS=80,443`). Unknown keys, in the file or in the
environment, are errors: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ffserve.errors import ValidationError
from ffserve.schema import in_range, is_network, non_empty, one_of, structure

ENV_PREFIX = "FFSERVE_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


@attrs.frozen
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=in_range(0, 65535))
    http_port: int = attrs.field(default=8081, validator=in_range(0, 65535))
    # The web console at / on the HTTP port (ffserve.service.console); off: / is 404.
    console: bool = True
    # trio-websocket reads the socket in chunks of this size; 4 KiB (its default) costs a
    # Python round trip per 4 KiB of upload, so large uploads crawl.
    receive_buffer_kb: int = attrs.field(default=256, validator=in_range(4, 16384))
    outbound_queue: int = attrs.field(default=32, validator=in_range(1, 10000))
    max_connections: int = attrs.field(default=4096, validator=in_range(1, 1_000_000))
    handshake_timeout_s: float = attrs.field(default=10.0, validator=in_range(0.1, 3600))
    drain_timeout_s: float = attrs.field(default=10.0, validator=in_range(0, 3600))
    # A client that takes none of a write for this long is dropped, its jobs cancelled.
    send_timeout_s: float = attrs.field(default=30.0, validator=in_range(0.1, 3600))
    # Connections (handshakes in progress included) from one client address.
    max_connections_per_ip: int = attrs.field(default=64, validator=in_range(1, 1_000_000))
    # Connections refused over a connection cap that may stay open at once, for a moment,
    # so their 503 is read before the close; past it they are closed as soon as answered.
    max_refused_connections: int = attrs.field(default=256, validator=in_range(0, 1_000_000))
    # A connection with no job and no message from its client for this long is closed.
    idle_timeout_s: float = attrs.field(default=300.0, validator=in_range(0.1, 86400))
    # Messages (and control frames) read per second from one connection, past a burst:
    # beyond it the connection is not read until the bucket refills (back-pressure).
    max_messages_per_s: float = attrs.field(default=50.0, validator=in_range(0.1, 1e9))
    message_burst: int = attrs.field(default=100, validator=in_range(1, 1_000_000_000))
    # Peers (addresses or CIDRs, e.g. a load balancer) whose word on the client's address
    # is taken: a PROXY protocol header when proxy_protocol, else X-Forwarded-For.
    trusted_proxies: tuple[str, ...] = attrs.field(
        default=(), validator=attrs.validators.deep_iterable(is_network())
    )
    proxy_protocol: bool = False


@attrs.frozen
class JobsConfig:
    max_concurrent: int = attrs.field(default=2, validator=in_range(1, 1024))
    queue_limit: int = attrs.field(default=256, validator=in_range(0, 100_000))
    timeout_s: float = attrs.field(default=600.0, validator=in_range(0.1, 86400))
    input_timeout_s: float = attrs.field(default=120.0, validator=in_range(0.1, 86400))
    per_connection_limit: int = attrs.field(default=64, validator=in_range(1, 100_000))
    # Seconds a refused client is told to wait before it tries again: BUSY errors'
    # `details.retry_after_s`, and the Retry-After of /ready's 503 when full.
    retry_after_s: float = attrs.field(default=2.0, validator=in_range(0, 3600))


@attrs.frozen
class LimitsConfig:
    max_upload_mb: float = attrs.field(default=2048.0, validator=in_range(0.001, 1_000_000))
    max_message_mb: float = attrs.field(default=256.0, validator=in_range(0.001, 4096))
    max_output_mb: float = attrs.field(default=2048.0, validator=in_range(0.001, 1_000_000))
    max_duration_s: float = attrs.field(default=4 * 3600.0, validator=in_range(1, 1e7))
    max_width: int = attrs.field(default=7680, validator=in_range(16, 65536))
    max_height: int = attrs.field(default=4320, validator=in_range(16, 65536))
    # Largest chunk of a chunked transfer, both ways (KiB).
    chunk_kb: int = attrs.field(default=1024, validator=in_range(16, 16384))
    # Streams in one input, and its highest frame rate: more is refused before FFmpeg runs.
    max_streams: int = attrs.field(default=16, validator=in_range(1, 1024))
    max_fps: float = attrs.field(default=1000.0, validator=in_range(1, 1_000_000))
    # Pixels of all the frames one job's FFmpeg holds at once (one per input it opens):
    # four frames at the largest size by default.
    max_pixels_in_flight: int = attrs.field(default=4 * 7680 * 4320, validator=in_range(1, 2**40))
    # Largest text message (KiB): a longer one closes the connection with 1009.
    max_text_kb: int = attrs.field(default=64, validator=in_range(1, 16384))
    # Frames under 1 KiB one message may be split into: more closes the connection (1008).
    max_small_fragments: int = attrs.field(default=1024, validator=in_range(1, 1_000_000_000))

    @property
    def max_pixels(self) -> int:
        """Pixels of the largest frame, also enforced while decoding (-max_pixels)."""
        return self.max_width * self.max_height


@attrs.frozen
class FFmpegConfig:
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    threads: int = attrs.field(default=0, validator=in_range(0, 256))
    kill_grace_s: float = attrs.field(default=0.5, validator=in_range(0, 60))
    # Scheduling niceness of FFmpeg/ffprobe children (0-19): above 0 the event loop wins
    # the CPU when every core is encoding, so pings and progress stay prompt.
    niceness: int = attrs.field(default=10, validator=in_range(0, 19))


@attrs.frozen
class StorageConfig:
    temp_dir: str = ""
    # Free space kept in reserve: an announced upload that would eat into it is refused.
    reserve_mb: float = attrs.field(default=512.0, validator=in_range(0, 1e9))


@attrs.frozen
class SecurityConfig:
    allow_private_urls: bool = False
    url_connect_timeout_s: float = attrs.field(default=10.0, validator=in_range(0.1, 600))
    url_read_timeout_s: float = attrs.field(default=30.0, validator=in_range(0.1, 3600))
    url_max_redirects: int = attrs.field(default=5, validator=in_range(0, 20))
    # Ports a client-named URL (input, output, each redirect hop) may use; empty: any.
    # Without it an output URL could PUT to any service on a public host (an open relay).
    url_ports: tuple[int, ...] = attrs.field(
        default=(80, 443), validator=attrs.validators.deep_iterable(in_range(1, 65535))
    )
    # Origins a browser's upgrade may come from ("https://app.example.com"); others get
    # 403. Empty: any. Requests without an Origin header (not from a browser) are allowed.
    allowed_origins: tuple[str, ...] = ()


@attrs.frozen
class QuotasConfig:
    """Each client's quota where its token's `quota` claim does not say (ffserve.jobs.quota)."""

    concurrent_jobs: int = attrs.field(default=64, validator=in_range(1, 100_000))
    queued_jobs: int = attrs.field(default=16, validator=in_range(1, 100_000))
    connections: int = attrs.field(default=64, validator=in_range(1, 1_000_000))
    # 0: no limit beyond the server's own (limits.max_upload_mb; FFmpeg run time).
    input_mb: float = attrs.field(default=0.0, validator=in_range(0, 1_000_000))
    ffmpeg_s_per_hour: float = attrs.field(default=0.0, validator=in_range(0, 1e9))
    operations: tuple[str, ...] = ()


@attrs.frozen
class SandboxConfig:
    # "auto": confine FFmpeg/ffprobe with bubblewrap when it works here, warn when not;
    # "required": refuse to start without it; "off": run them unconfined.
    mode: str = attrs.field(default="auto", validator=one_of("auto", "required", "off"))
    bwrap: str = "bwrap"
    # Address space of one FFmpeg or ffprobe process (RLIMIT_AS), MiB.
    memory_mb: int = attrs.field(default=3072, validator=in_range(64, 1_048_576))
    # Open files (RLIMIT_NOFILE) and tasks (RLIMIT_NPROC: threads count) per process.
    open_files: int = attrs.field(default=256, validator=in_range(16, 65536))
    tasks: int = attrs.field(default=256, validator=in_range(4, 65536))
    # memory.max of each child's cgroup (its whole sandbox, no swap), MiB, where a delegated
    # cgroup v2 subtree allows one (docs/sandbox.md).
    job_memory_mb: int = attrs.field(default=3072, validator=in_range(16, 1_048_576))
    # Build a job's sandbox while its input arrives (at most jobs.max_concurrent at once),
    # so that FFmpeg's start does not wait for bubblewrap's few milliseconds of setup.
    warm: bool = True


@attrs.frozen
class AuthConfig:
    # "off": anyone who reaches the port may run jobs (local development); "jwt": every
    # WebSocket upgrade, /metrics and the detailed /health need a valid token.
    mode: str = attrs.field(default="off", validator=one_of("off", "jwt"))
    # HS256 shared secret (the file's bytes, trailing line breaks ignored); "": none.
    secret_file: str = ""
    # A PEM public key or a JWKS (`{"keys": [...]}`, chosen by the token's `kid`) of
    # ES256/RS256/EdDSA keys, so a back-end mints tokens and ffserve only verifies; "": none.
    public_key_file: str = ""
    audience: str = attrs.field(default="ffserve", validator=non_empty)
    # Clock skew allowed on exp, nbf and iat, in seconds.
    leeway_s: float = attrs.field(default=30.0, validator=in_range(0, 3600))


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    jobs: JobsConfig = JobsConfig()
    limits: LimitsConfig = LimitsConfig()
    ffmpeg: FFmpegConfig = FFmpegConfig()
    storage: StorageConfig = StorageConfig()
    security: SecurityConfig = SecurityConfig()
    sandbox: SandboxConfig = SandboxConfig()
    quotas: QuotasConfig = QuotasConfig()
    auth: AuthConfig = AuthConfig()

    @classmethod
    def load(cls, path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
        """Read `path` (if given), apply `FFSERVE_*` overrides from `env`, validate.

        Errors: ConfigError naming the file and key.
        """
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        return cls.from_dict(
            data, os.environ if env is None else env, source=str(path or "defaults")
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any], env: Mapping[str, str], source: str = "") -> Config:
        data = {
            section: dict(values) if isinstance(values, dict) else values
            for section, values in data.items()
        }
        for name, raw in env.items():
            if name.startswith(ENV_PREFIX):
                section, key, value = _env_override(name, raw)
                data.setdefault(section, {})[key] = value
        try:
            return structure(data, cls)
        except ValidationError as exc:
            where = (exc.field or "$").removeprefix("$.")
            raise ConfigError(f"{source}: bad config key {where}: {exc.message}") from None

    def replace(self, section: str, **changes: Any) -> Config:
        """A copy with some keys of one section changed (CLI flags, tests)."""
        return attrs.evolve(self, **{section: attrs.evolve(getattr(self, section), **changes)})

    @property
    def max_upload_bytes(self) -> int:
        return int(self.limits.max_upload_mb * 1024 * 1024)

    @property
    def reserve_bytes(self) -> int:
        return int(self.storage.reserve_mb * 1024 * 1024)

    @property
    def chunk_bytes(self) -> int:
        return self.limits.chunk_kb * 1024

    @property
    def max_message_bytes(self) -> int:
        return int(self.limits.max_message_mb * 1024 * 1024)

    @property
    def max_text_bytes(self) -> int:
        return self.limits.max_text_kb * 1024

    @property
    def max_output_bytes(self) -> int:
        return int(self.limits.max_output_mb * 1024 * 1024)


def _env_override(name: str, raw: str) -> tuple[str, str, Any]:
    """Map `FFSERVE_JOBS_TIMEOUT_S=30` to ("jobs", "timeout_s", 30.0)."""
    rest = name[len(ENV_PREFIX) :].lower()
    for section in attrs.fields(attrs.resolve_types(Config)):
        prefix = section.name + "_"
        if rest.startswith(prefix):
            key = rest[len(prefix) :]
            section_type: Any = section.type
            fields = {f.name: f for f in attrs.fields(attrs.resolve_types(section_type))}
            if key in fields:
                return section.name, key, _parse_env_value(name, raw, fields[key].type)
    raise ConfigError(f"unknown environment override {name}")


def _parse_env_value(name: str, raw: str, kind: Any) -> Any:
    if typing.get_origin(kind) in (list, tuple):
        return _parse_env_list(name, raw, typing.get_args(kind)[0])
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def _parse_env_list(name: str, raw: str, item: Any) -> list[Any]:
    """`[80, 443]` (a JSON array, its items checked when structured) or `80,443`; a
    blank value is the empty list."""
    text = raw.strip()
    if not text.startswith("["):
        parts = (part.strip() for part in text.split(","))
        return [_parse_env_value(name, part, item) for part in parts if part]
    try:
        values = json.loads(text)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a valid JSON array") from None
    if not isinstance(values, list):
        raise ConfigError(f"{name}={raw!r} is not a valid JSON array")
    return values

"""The front door: who a connection's client is, and whether it may come in.

    FrontDoor.seat(peer)        at accept: counted from here until the connection closes
    FrontDoor.turn_away(seat)   a seat over a cap is refused at once (503), unread
    FrontDoor.expects_proxy_header(seat)
    FrontDoor.identify(seat, address)   the PROXY header's client, then the per-address cap
    FrontDoor.admit(seat, request)      after the upgrade request: XFF, caps, Origin
    FrontDoor.refusing()        whether a refused connection may wait for its client's close

Every connection holds a `Seat` from accept to close, so handshakes in progress count
against `[server] max_connections` and `max_connections_per_ip` as open connections do.
A connection over either cap is not counted, so refused connections cannot crowd out
anyone else; and it is refused as soon as the cap is known to be reached (at accept, or
once a proxy names the client), before its request is read: a client that sends
nothing must not hold a descriptor for the handshake timeout. Its 503 then waits for
the client to close for a moment, at most `max_refused_connections` of them at once
(`ffserve.wire.websocket` says why). Each refusal is audited once and counted in
`ffserve_handshakes_refused_total{reason}`.

The client's address is the TCP peer's, unless the peer is in `[server] trusted_proxies`:
then it is the PROXY protocol header's (`proxy_protocol = true`) or the rightmost
X-Forwarded-For address that is not itself a trusted proxy. An untrusted peer's PROXY
header or X-Forwarded-For is never read: anyone could claim any address.
"""

from __future__ import annotations

import contextlib
import enum
from collections import Counter
from collections.abc import Iterator, Sequence

import attrs

from ffserve.audit import AuditLog
from ffserve.config import Config
from ffserve.metrics import Metrics
from ffserve.wire.address import Network, client_address, is_in, networks
from ffserve.wire.handshake import HandshakeFailed, UpgradeRequest, refusal


class Refusal(enum.Enum):
    """Why the door refuses a connection; the value is what the client and the audit
    log are told, the lower-case name the metric's label."""

    MAX_CONNECTIONS = "too many connections"
    MAX_CONNECTIONS_PER_IP = "too many connections from this address"
    ORIGIN = "origin not allowed"


@attrs.define(eq=False)
class Seat:
    """One connection's place, from accept to close."""

    peer: str  # the TCP peer's address
    client: str  # the client's address, once known (the peer's until then)
    counted_as: str | None = None  # the address this seat counts against, once claimed
    refused: Refusal | None = None  # the cap it is over (then it is not counted)


@attrs.define
class Occupancy:
    """Connections held, in total and per client address; mirrored in `metrics`. And
    refused connections still open (`refusing`), at most `max_refusing`."""

    max_total: int
    max_per_address: int
    metrics: Metrics
    max_refusing: int = 0
    per_address: Counter[str] = attrs.Factory(Counter)
    total: int = 0
    refusing: int = 0

    @contextlib.contextmanager
    def seat(self, peer: str) -> Iterator[Seat]:
        seat = Seat(peer, peer)
        if self.total >= self.max_total:
            seat.refused = Refusal.MAX_CONNECTIONS
        else:
            self._count(1)
        try:
            yield seat
        finally:
            if not seat.refused or seat.counted_as is not None:
                self._count(-1)
            if seat.counted_as is not None:
                self.per_address[seat.counted_as] -= 1
                if not self.per_address[seat.counted_as]:
                    del self.per_address[seat.counted_as]

    def claim(self, seat: Seat, address: str) -> None:
        """Count `seat` against `address`, or mark it refused (and no longer counted)."""
        seat.client = address
        if seat.refused or seat.counted_as is not None:
            return
        if self.per_address[address] >= self.max_per_address:
            seat.refused = Refusal.MAX_CONNECTIONS_PER_IP
            self._count(-1)
            return
        self.per_address[address] += 1
        seat.counted_as = address

    @contextlib.contextmanager
    def lingering(self) -> Iterator[bool]:
        """Whether one more refused connection may stay open (then it counts until the
        block ends)."""
        if self.refusing >= self.max_refusing:
            yield False
            return
        self.refusing += 1
        try:
            yield True
        finally:
            self.refusing -= 1

    def _count(self, change: int) -> None:
        self.total += change
        self.metrics.connections = self.total


@attrs.define(eq=False)
class FrontDoor:
    occupancy: Occupancy
    audit: AuditLog
    trusted: tuple[Network, ...] = ()
    proxy_protocol: bool = False
    allowed_origins: frozenset[str] = frozenset()

    @classmethod
    def open(cls, config: Config, metrics: Metrics, audit: AuditLog) -> FrontDoor:
        server = config.server
        for reason in Refusal:  # every series from the start
            metrics.handshakes_refused.labels(reason.name.lower())
        return cls(
            Occupancy(
                server.max_connections,
                server.max_connections_per_ip,
                metrics,
                max_refusing=server.max_refused_connections,
            ),
            audit,
            networks(server.trusted_proxies),
            server.proxy_protocol,
            frozenset(_origin(o) for o in config.security.allowed_origins),
        )

    def seat(self, peer: str) -> contextlib.AbstractContextManager[Seat]:
        return self.occupancy.seat(peer)

    def refusing(self) -> contextlib.AbstractContextManager[bool]:
        """Whether a refused connection may wait a moment for its client to close
        (`[server] max_refused_connections` at once); if not, it is closed at once."""
        return self.occupancy.lingering()

    def trusts(self, address: str) -> bool:
        return is_in(address, self.trusted)

    def turn_away(self, seat: Seat) -> None:
        """Errors: HandshakeFailed with the 503 to send, if `seat` is over a cap."""
        if seat.refused:
            self.refuse(seat, seat.refused, 503)

    def expects_proxy_header(self, seat: Seat) -> bool:
        return self.proxy_protocol and self.trusts(seat.peer)

    def identify(self, seat: Seat, client: str | None) -> None:
        """The client's address is known (None: the peer's own): count it, unless it
        will come from X-Forwarded-For, which is read with the request.

        Errors: HandshakeFailed (503) if that puts it over a cap."""
        if self.trusts(seat.peer) and not self.proxy_protocol:
            return
        self.occupancy.claim(seat, client or seat.peer)
        self.turn_away(seat)

    def admit(self, seat: Seat, request: UpgradeRequest) -> None:
        """Errors: HandshakeFailed with the 503 or 403 to send (audited here, once)."""
        if self.trusts(seat.peer) and not self.proxy_protocol:
            forwarded = _header(request, b"x-forwarded-for")
            self.occupancy.claim(seat, forwarded_client(forwarded, self.trusted) or seat.peer)
        self.turn_away(seat)
        origin = _header(request, b"origin")
        if (
            self.allowed_origins
            and origin is not None
            and _origin(origin) not in self.allowed_origins
        ):
            self.refuse(seat, Refusal.ORIGIN, 403)

    def refuse(self, seat: Seat, reason: Refusal, status: int) -> None:
        self.occupancy.metrics.handshakes_refused.labels(reason.name.lower()).inc()
        self.audit.record(
            "handshake_refused", client=seat.client, subject=None, reason=reason.value
        )
        raise HandshakeFailed(reason.value, refusal(status, body=reason.value.encode()))


def forwarded_client(header: str | None, trusted: Sequence[Network]) -> str | None:
    """The rightmost X-Forwarded-For address that is not a trusted proxy: the last hop
    our own proxies saw. What lies left of it, the client wrote itself. None when there
    is no such address (no header, only proxies, or not an address)."""
    for entry in reversed((header or "").split(",")):
        try:
            address = client_address(entry.strip())
        except ValueError:
            return None
        if not is_in(address, trusted):
            return address
    return None


def _header(request: UpgradeRequest, name: bytes) -> str | None:
    values = [value for key, value in request.headers if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


def _origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()

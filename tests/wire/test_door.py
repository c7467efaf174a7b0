"""The front door, without sockets: who the client is behind trusted proxies, the
connection caps (handshakes counted from accept), the origin check, and one audit line
per refusal."""

from __future__ import annotations

import pytest

from ffserve.audit import AuditLog
from ffserve.config import Config
from ffserve.metrics import Metrics
from ffserve.wire.address import networks
from ffserve.wire.door import FrontDoor, Refusal, forwarded_client
from ffserve.wire.handshake import HandshakeFailed, UpgradeRequest

TRUSTED = networks(["10.0.0.0/8", "192.0.2.1"])


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("1.2.3.4, 203.0.113.9", "203.0.113.9"),  # the left one is the client's own word
        ("203.0.113.9, 10.1.2.3", "203.0.113.9"),  # a chain of our own proxies
        ("203.0.113.9,192.0.2.1, 10.0.0.5", "203.0.113.9"),
        ("2001:db8::9", "2001:db8::9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped: the IPv4 client's
        ("203.0.113.9, ::ffff:10.1.2.3", "203.0.113.9"),  # a mapped proxy is still ours
        ("10.0.0.5", None),  # only proxies
        ("not-an-address", None),
        ("", None),
        (None, None),
    ],
)
def test_forwarded_for_is_its_rightmost_untrusted_address(
    header: str | None, client: str | None
) -> None:
    assert forwarded_client(header, TRUSTED) == client


def door(**server: object) -> tuple[FrontDoor, Metrics]:
    config = Config().replace("server", **server)
    config = config.replace("security", allowed_origins=("https://app.example.com",))
    metrics = Metrics()
    return FrontDoor.open(config, metrics, AuditLog()), metrics


def request(*headers: tuple[bytes, bytes]) -> UpgradeRequest:
    return UpgradeRequest("/", list(headers), b"k" * 24)


def test_connections_count_from_accept_per_address_and_in_total() -> None:
    front, metrics = door(max_connections=3, max_connections_per_ip=2)
    with front.seat("198.51.100.1") as a, front.seat("198.51.100.1") as b:
        front.identify(a, None)
        front.identify(b, None)
        assert metrics.connections == 2
        with front.seat("198.51.100.1") as c:
            with pytest.raises(HandshakeFailed) as refused:  # at once: no request read
                front.identify(c, None)
            assert refused.value.response.startswith(b"HTTP/1.1 503 ")
            assert c.refused is Refusal.MAX_CONNECTIONS_PER_IP
            assert metrics.connections == 2  # a refused one is not counted
        with front.seat("198.51.100.2") as d, front.seat("198.51.100.3") as e:
            front.identify(d, None)
            assert not d.refused and metrics.connections == 3
            assert e.refused is Refusal.MAX_CONNECTIONS
            with pytest.raises(HandshakeFailed):
                front.turn_away(e)
    assert metrics.connections == 0
    assert not front.occupancy.per_address
    counts = {
        reason: metrics.registry.get_sample_value(
            "ffserve_handshakes_refused_total", {"reason": reason}
        )
        for reason in ("max_connections", "max_connections_per_ip", "origin")
    }
    assert counts == {"max_connections": 1, "max_connections_per_ip": 1, "origin": 0}


def test_refused_connections_that_may_linger_are_bounded() -> None:
    front, _ = door(max_refused_connections=2)
    with front.refusing() as a, front.refusing() as b:
        assert a and b
        with front.refusing() as c:
            assert not c  # closed as soon as answered
    with front.refusing() as d:
        assert d  # given back
    assert front.occupancy.refusing == 0


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted() -> None:
    front, metrics = door(trusted_proxies=("10.0.0.0/8",), max_connections_per_ip=1)
    forwarded = (b"x-forwarded-for", b"203.0.113.9")
    with front.seat("10.0.0.5") as a, front.seat("10.0.0.5") as b:
        front.identify(a, None)
        front.identify(b, None)  # counted only once its request names its client
        assert metrics.connections == 2 and not front.occupancy.per_address
        front.admit(a, request(forwarded))
        assert a.client == "203.0.113.9"
        with pytest.raises(HandshakeFailed) as refused:
            front.admit(b, request(forwarded))
        assert refused.value.response.startswith(b"HTTP/1.1 503 ")
    with front.seat("198.51.100.1") as untrusted:
        front.identify(untrusted, None)
        front.admit(untrusted, request(forwarded))
        assert untrusted.client == "198.51.100.1"  # anyone can write the header


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        (b"https://app.example.com", True),
        (b"HTTPS://App.Example.com/", True),
        (b"https://evil.example.com", False),
        (b"null", False),
    ],
)
def test_origins(origin: bytes | None, allowed: bool, caplog: pytest.LogCaptureFixture) -> None:
    front, _ = door()
    headers = [(b"origin", origin)] if origin is not None else []
    with front.seat("198.51.100.1") as seat:
        front.identify(seat, None)
        if allowed:
            front.admit(seat, request(*headers))
            return
        with pytest.raises(HandshakeFailed) as refused:
            front.admit(seat, request(*headers))
    assert refused.value.response.startswith(b"HTTP/1.1 403 ")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "ffserve.audit"]
    assert "handshake_refused client=198.51.100.1" in line and "origin" in line


def test_an_ipv4_client_is_one_client_whether_or_not_its_address_is_mapped() -> None:
    front, _ = door(trusted_proxies=("10.0.0.0/8",), max_connections_per_ip=1)
    plain = (b"x-forwarded-for", b"203.0.113.9")
    mapped = (b"x-forwarded-for", b"::ffff:203.0.113.9")
    with front.seat("10.0.0.5") as a, front.seat("10.0.0.6") as b:
        front.admit(a, request(plain))
        with pytest.raises(HandshakeFailed):
            front.admit(b, request(mapped))
        assert b.client == "203.0.113.9"
        assert dict(front.occupancy.per_address) == {"203.0.113.9": 1}

"""The PROXY protocol header (HAProxy send-proxy, send-proxy-v2), sans-I/O: valid v1 and
v2 headers name the relayed client, UNKNOWN and LOCAL name none, anything else is refused."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ffserve.wire.proxy import V2_SIGNATURE, ProxyHeader, ProxyHeaderInvalid, parse_proxy_header

REST = b"GET / HTTP/1.1\r\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack(">BBH", command, family, len(body)) + body


def tcp4(source: str, destination: str = "10.0.0.1") -> bytes:
    addresses = b"".join(ipaddress.IPv4Address(a).packed for a in (source, destination))
    return addresses + struct.pack(">HH", 51000, 8080)


def tcp6(source: str, destination: str = "::1") -> bytes:
    addresses = b"".join(ipaddress.IPv6Address(a).packed for a in (source, destination))
    return addresses + struct.pack(">HH", 51000, 8080)


@pytest.mark.parametrize(
    ("header", "client"),
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\n", "203.0.113.7"),
        (b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 8080\r\n", "2001:db8::7"),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ff:: ff:: 1 2\r\n", None),
        (v2(0x21, 0x11, tcp4("203.0.113.7")), "203.0.113.7"),
        (v2(0x21, 0x21, tcp6("2001:db8::7")), "2001:db8::7"),
        # An IPv4 client relayed as IPv4-mapped IPv6 is the same client as over IPv4.
        (b"PROXY TCP6 ::ffff:203.0.113.7 ::ffff:10.0.0.1 51000 8080\r\n", "203.0.113.7"),
        (v2(0x21, 0x21, tcp6("::ffff:203.0.113.7")), "203.0.113.7"),
        # TLVs after the addresses (HAProxy sends some) are skipped.
        (v2(0x21, 0x11, tcp4("198.51.100.2") + b"\x04\x00\x01\x00"), "198.51.100.2"),
        (v2(0x20, 0x00, b""), None),  # LOCAL: the balancer's own health check
        (v2(0x21, 0x00, b""), None),  # UNSPEC
    ],
    ids=[
        *("v1-tcp4", "v1-tcp6", "v1-unknown", "v1-unknown-args"),
        *("v2-tcp4", "v2-tcp6", "v1-tcp6-mapped", "v2-tcp6-mapped"),
        *("v2-tlv", "v2-local", "v2-unspec"),
    ],
)
def test_a_valid_header_names_its_client_and_its_length(header: bytes, client: str | None) -> None:
    assert parse_proxy_header(header + REST) == ProxyHeader(client, len(header))


@pytest.mark.parametrize(
    "header",
    [b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 8080\r\n", v2(0x21, 0x11, tcp4("203.0.113.7"))],
    ids=["v1", "v2"],
)
def test_a_header_cut_anywhere_needs_more(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse_proxy_header(header[:cut]) is None, cut


@pytest.mark.parametrize(
    "data",
    [
        REST,  # a client that sends no header
        b"\x16\x03\x01\x00",  # TLS
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",  # a port missing
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",  # family and address disagree
        b"PROXY TCP4 203.0.113.999 10.0.0.1 1 2\r\n",
        b"PROXY TCP4 203.0.113.7 10.0.0.1 1 65536\r\n",
        b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
        b"PROXY TCP4  203.0.113.7 10.0.0.1 1 2\r\n",  # two spaces
        b"PROXY " + b"x" * 200,  # no line end within 107 bytes
        V2_SIGNATURE[:5] + b"x",
        v2(0x11, 0x11, tcp4("203.0.113.7")),  # version 1 in the binary form
        v2(0x22, 0x11, tcp4("203.0.113.7")),  # unknown command
        v2(0x21, 0x11, b"\x00" * 8),  # too short for two IPv4 addresses and ports
        v2(0x21, 0x12, tcp4("203.0.113.7")),  # UDP
        v2(0x21, 0x31, b"\x00" * 216),  # a Unix socket
        V2_SIGNATURE + struct.pack(">BBH", 0x21, 0x11, 60000),  # a huge length
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderInvalid):
        parse_proxy_header(data)

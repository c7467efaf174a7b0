"""The PROXY protocol header a load balancer puts before a connection's own bytes
(HAProxy `send-proxy` is version 1, `send-proxy-v2` version 2), sans-I/O.

    parse_proxy_header(first bytes) -> ProxyHeader | None (incomplete)

The header says which client the balancer is relaying; it is believed only from a peer
in `[server] trusted_proxies` (the caller's decision). A header that is neither version,
or is malformed, is refused: a trusted peer that is meant to send one and does not is
misconfigured, and guessing would let a client name any address it likes.

Errors: ProxyHeaderInvalid.
"""

from __future__ import annotations

import ipaddress
import struct

import attrs

from ffserve.wire.address import plain

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line, CRLF included (the spec's own bound)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = len(V2_SIGNATURE) + 4  # signature, version/command, family, length
_V2_MAX_BODY = 1024  # addresses and TLVs; HAProxy sends far less
_V2_LOCAL, _V2_PROXY = 0x20, 0x21
_V2_TCP4, _V2_TCP6 = 0x11, 0x21


class ProxyHeaderInvalid(Exception):
    """The bytes are not a PROXY protocol header we accept; the message says why."""


@attrs.frozen
class ProxyHeader:
    # The relayed client's address (an IPv4-mapped one as plain IPv4: one client, one
    # address); None when the balancer gives none (v1 UNKNOWN, v2 LOCAL: its own health
    # checks), so the peer's own address stands.
    client: str | None
    length: int  # bytes the header took; what follows is the client's


def parse_proxy_header(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`, or None until more bytes may complete it.

    Errors: ProxyHeaderInvalid, as soon as the bytes cannot start a valid header."""
    if data[:1] == V2_SIGNATURE[:1]:
        if data[: len(V2_SIGNATURE)] != V2_SIGNATURE[: len(data)]:
            raise ProxyHeaderInvalid("not a PROXY protocol header")
        return _parse_v2(data)
    if data[: len(V1_PREFIX)] != V1_PREFIX[: len(data)]:
        raise ProxyHeaderInvalid("not a PROXY protocol header")
    return _parse_v1(data)


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderInvalid("PROXY v1 line longer than 107 bytes")
        return None
    words = data[:end].split(b" ")
    if words[1:2] == [b"UNKNOWN"]:
        return ProxyHeader(None, end + 2)
    if len(words) != 6 or words[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderInvalid("malformed PROXY v1 line")
    try:
        source = ipaddress.ip_address(words[2].decode("ascii"))
        ipaddress.ip_address(words[3].decode("ascii"))
        ports = [int(word) for word in words[4:6] if word.isdigit()]
    except (UnicodeDecodeError, ValueError):
        raise ProxyHeaderInvalid("malformed PROXY v1 addresses") from None
    if source.version != (4 if words[1] == b"TCP4" else 6):
        raise ProxyHeaderInvalid("PROXY v1 address does not match its family")
    if len(ports) != 2 or not all(0 <= port <= 65535 for port in ports):
        raise ProxyHeaderInvalid("malformed PROXY v1 ports")
    return ProxyHeader(str(plain(source)), end + 2)


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < _V2_FIXED:
        return None
    command, family, size = struct.unpack_from(">BBH", data, len(V2_SIGNATURE))
    if command not in (_V2_LOCAL, _V2_PROXY):
        raise ProxyHeaderInvalid(f"PROXY v2 version/command {command:#x}")
    if size > _V2_MAX_BODY:
        raise ProxyHeaderInvalid(f"PROXY v2 header of {size} bytes")
    if len(data) < _V2_FIXED + size:
        return None
    length = _V2_FIXED + size
    body = data[_V2_FIXED:length]
    if command == _V2_LOCAL:
        return ProxyHeader(None, length)
    address_size = {_V2_TCP4: 4, _V2_TCP6: 16}.get(family)
    if address_size is None:
        # UDP or a Unix socket: not a TCP client this service could have.
        return ProxyHeader(None, length) if family == 0x00 else _unsupported(family)
    if size < 2 * address_size + 4:
        raise ProxyHeaderInvalid("PROXY v2 header too short for its addresses")
    source = ipaddress.ip_address(bytes(body[:address_size]))
    return ProxyHeader(str(plain(source)), length)


def _unsupported(family: int) -> ProxyHeader:
    raise ProxyHeaderInvalid(f"PROXY v2 family {family:#x} is not TCP")

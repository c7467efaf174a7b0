"""Client addresses: one identity per client, and the networks trusted to name one.

A dual-stack listener sees an IPv4 client as `::ffff:1.2.3.4`, and a proxy may relay
one that way (PROXY TCP6, X-Forwarded-For); the same client over plain IPv4 is
`1.2.3.4`. Per-address caps, `trusted_proxies` and the audit log must see one client,
so every address is made plain (`client_address`) where it enters the server.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def plain(ip: IPAddress) -> IPAddress:
    """`ip`, or the IPv4 address an IPv4-mapped IPv6 address stands for."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_address(text: str) -> str:
    """The address `text` names, written one way for each client.

    Errors: ValueError if `text` is not an IP address."""
    return str(plain(ipaddress.ip_address(text)))


def networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def is_in(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = plain(ipaddress.ip_address(address))
    except ValueError:
        return False
    return any(ip in network for network in trusted)

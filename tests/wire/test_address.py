"""Client addresses: an IPv4 client is one address however it reaches the server."""

from __future__ import annotations

import socket

import pytest
import trio

from ffserve.wire.address import client_address, is_in, networks
from ffserve.wire.websocket import _peer


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("::FFFF:CB00:7109", "203.0.113.9"),
        ("2001:DB8::9", "2001:db8::9"),
        ("::1", "::1"),
    ],
)
def test_client_address_writes_each_client_one_way(text: str, address: str) -> None:
    assert client_address(text) == address


def test_client_address_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        client_address("proxy.local")


def test_a_mapped_address_is_in_the_ipv4_network() -> None:
    trusted = networks(["10.0.0.0/8"])
    assert is_in("::ffff:10.1.2.3", trusted) and is_in("10.1.2.3", trusted)
    assert not is_in("::ffff:192.0.2.1", trusted) and not is_in("not an address", trusted)


async def test_a_dual_stack_listeners_ipv4_peer_is_its_ipv4_address() -> None:
    """A dual-stack socket (IPV6_V6ONLY off) sees an IPv4 client as ::ffff:a.b.c.d."""
    listener = trio.socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        await listener.bind(("::ffff:127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        with trio.fail_after(5):
            client = await trio.open_tcp_stream("127.0.0.1", port)
            accepted, peer = await listener.accept()
            async with client, trio.SocketStream(accepted) as stream:
                assert peer[0] == "::ffff:127.0.0.1"
                assert _peer(stream) == "127.0.0.1"

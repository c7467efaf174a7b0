"""URL tests: a fake resolver, and an httpx client whose transport is a function.

Every socket is loopback. Names that must resolve elsewhere come from a fake resolver
(`dns`) patched over `trio.socket.getaddrinfo`, which `ffserve.transfer.safehttp` uses
and httpx does not: a request that reached httpx still naming the host would fail to
connect, so a passing test proves the connection went to the address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import attrs
import httpx
import pytest
import trio

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2001:4860:4860::8888"


# --- a fake resolver --------------------------------------------------------------------


@attrs.define
class FakeDNS:
    answers: dict[str, list[str]] = attrs.Factory(dict)
    asked: list[str] = attrs.Factory(list)
    hang: bool = False

    async def getaddrinfo(
        self, host: bytes | str, port: int, *args: Any, **kwargs: Any
    ) -> list[tuple[Any, ...]]:
        name = host.decode("ascii") if isinstance(host, bytes) else host
        self.asked.append(name)
        if self.hang:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        try:
            return [_addrinfo(str(ipaddress.ip_address(name)), port)]  # a literal: no lookup
        except ValueError:
            pass
        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [_addrinfo(address, port) for address in self.answers[name]]


def _addrinfo(address: str, port: int) -> tuple[Any, ...]:
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    fake = FakeDNS()
    monkeypatch.setattr(trio.socket, "getaddrinfo", fake.getaddrinfo)
    return fake


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any
) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler), **kwargs)

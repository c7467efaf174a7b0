"""Regression tests for failures found in review: each one once broke the server."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
from trio_websocket import ConnectionClosed

from ffserve.service.server import Endpoints
from tests.conftest import Media
from tests.helpers import connect, upgrade_request


async def test_clients_resetting_mid_handshake_do_not_stop_the_server(
    server: Endpoints, media: Media
) -> None:
    with trio.fail_after(30):
        for _ in range(30):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await stream.send_all(upgrade_request(server.port))
            # SO_LINGER 0: close with a TCP reset while the server is accepting.
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            stream.socket.close()
        await trio.sleep(0.2)
        async with connect(server.url) as client:
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}
            result = await client.run("thumbnail", media.clip, {"timestamp": 0.5})
            assert result.final["type"] == "completed", result.final


async def test_a_huge_text_frame_is_refused_before_parsing(server: Endpoints) -> None:
    """Past `[limits] max_text_kb` (64 KiB) the connection is closed with 1009 from the
    frame's header: the text is neither parsed nor read (it once was, up to 4 MiB)."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            with pytest.raises(ConnectionClosed) as closed:
                await client.ws.send_message('{"type": "ping", "pad": "' + "x" * (2 << 20) + '"}')
                await client.recv_json()
            assert closed.value.reason.code == 1009
        async with connect(server.url) as client:
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}


async def test_output_url_with_several_outputs_is_refused_at_start(server: Endpoints) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.send(
                {
                    "type": "start_job",
                    "job_id": "t",
                    "operation": "thumbnail",
                    "input": {"source": "upload"},
                    "options": {"count": 3},
                    "output": {"url": "https://example.com/out.jpg"},
                }
            )
            error = await client.recv_json()
            assert (error["type"], error["code"], error["job_id"]) == (
                "error",
                "VALIDATION_ERROR",
                "t",
            )
            assert error["details"]["field"] == "$.output"


async def test_a_refused_job_says_nothing_more_about_its_upload(
    server: Endpoints, media: Media
) -> None:
    """v1 clients send the upload right after start_job; if the job is refused, its
    error is the only message for that job."""
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.start("r", "speed", {"speed_factor": 99})
            await client.upload("r", media.clip)
            error = await client.recv_json()
            assert (error["code"], error["job_id"]) == ("VALIDATION_ERROR", "r")
            await client.send({"type": "ping"})
            assert await client.recv_json() == {"type": "pong"}
            # The id is not poisoned: the same id can be a good job afterwards.
            result = await client.run("thumbnail", media.clip, {"timestamp": 0.5}, job_id="r")
            assert result.final["type"] == "completed", result.final


async def test_probe_with_an_output_url_is_refused(server: Endpoints) -> None:
    with trio.fail_after(30):
        async with connect(server.url) as client:
            await client.send(
                {
                    "type": "start_job",
                    "job_id": "p",
                    "operation": "probe",
                    "input": {"source": "upload"},
                    "output": {"url": "https://example.com/x"},
                }
            )
            error = await client.recv_json()
            assert (error["code"], error["details"]["field"]) == ("VALIDATION_ERROR", "$.output")

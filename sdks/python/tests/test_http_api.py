"""What the SDK sees of the SPEC §17 HTTP server API: messages published
by a backend through ``POST /api/publish`` and operator disconnects.
Skipped ("server lacks §17") while the server answers ``/api/*`` with 404."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

import arqonbus
from arqonbus import ArqonBus

from .conftest import FAST, WAIT, Connect, StartServer, messages
from .servers import BusServer

API_KEY = "python-sdk-test-key"


def _post(server: BusServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{server.bus_addr}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        with error:
            text = error.read()
        try:
            return error.code, json.loads(text or b"{}")
        except ValueError:
            return error.code, {}


async def api_post(server: BusServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, reply = await asyncio.to_thread(_post, server, path, body)
    if status == 404 and reply.get("error_code") not in arqonbus.ERROR_CLASSES:
        pytest.skip(f"server lacks §17 (POST {path} answered 404)")
    assert status == 200, (status, reply)
    return reply


@pytest.fixture
def api_server(start_server: StartServer) -> BusServer:
    return start_server(env={"ARQONBUS_API_KEY": API_KEY})


async def test_http_publish_reaches_subscribers(
    api_server: BusServer, clients: Connect, room: str
) -> None:
    bus = await clients(api_server.url)
    sub = await bus.join(room, "api")
    reply = await api_post(
        api_server, "/api/publish", {"room": room, "channel": "api", "payload": {"from": "backend"}}
    )
    (message,) = await messages(sub, 1)
    assert message.payload == {"from": "backend"}
    assert message.sender == "arqonbus" and message.type == "message"
    assert (message.seq, message.epoch) == (reply["seq"], reply["epoch"])


async def test_http_send_reaches_the_inbox(api_server: BusServer, clients: Connect) -> None:
    bus = await clients(api_server.url)
    await api_post(api_server, "/api/send", {"to_client": bus.client_id, "payload": {"hi": 1}})
    direct = await bus.inbox.get(WAIT)
    assert direct.payload == {"hi": 1} and direct.sender == "arqonbus"


async def test_operator_disconnect_is_final(api_server: BusServer) -> None:
    async with ArqonBus(api_server.url, reconnect=FAST) as bus:
        await api_post(api_server, "/api/disconnect", {"client_id": bus.client_id})
        with pytest.raises(arqonbus.DisconnectedByOperator):
            await asyncio.wait_for(bus.wait_closed(), WAIT)

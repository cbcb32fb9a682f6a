"""Socket.IO's WebSocket transport through the gateway (patterns.tunnel): a client that opens
with WebSocket, and one that starts with long-polling and upgrades, both get their pushes."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest
import requests
import socketio

from microlab.lab import Lab, sandbox_env
from microlab.launcher import SandboxProcess
from microlab.topology import load_topology
from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(sandbox: SandboxProcess) -> Lab:
    return Lab.from_env({**os.environ, **sandbox_env(sandbox.state, sandbox.run_dir.path)})


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
def test_pushes_arrive_over_websocket_through_the_gateway(lab: Lab, transports: list[str]) -> None:
    customer = lab.customer("Wes")
    token = customer.headers["Authorization"].removeprefix("Bearer ")
    pushed: list[dict] = []
    client = socketio.Client(reconnection=False)
    client.on("notification", pushed.append)
    client.connect(lab.gateway, auth={"token": token}, transports=transports, wait_timeout=20)
    try:
        # A polling client upgrades in the background, as a browser's does.
        wait_for(lambda: client.transport() == "websocket", timeout=10,
                 what="the client on the websocket transport")
        product = lab.in_stock(minimum=1)
        order = customer.post(f"{lab.gateway}/api/orders", timeout=30,
                              json={"items": [{"product_id": product["id"], "quantity": 1}]})
        assert order.status_code == 201, order.text
        wait_for(lambda: any(order.json()["id"] in json.dumps(item) for item in pushed),
                 timeout=20, what="the order's push over the websocket")
    finally:
        client.disconnect()


def test_a_websocket_without_a_token_is_refused(lab: Lab) -> None:
    refusals: list[object] = []
    client = socketio.Client(reconnection=False)
    client.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError, match="failed to connect"):
        client.connect(lab.gateway, transports=["websocket"], wait_timeout=10)
    # Refused by notifications for the token, through the tunnel (not a tunnel that failed).
    assert refusals and "a token is required" in json.dumps(refusals), refusals


def test_websockets_past_half_the_gateways_threads_stay_on_polling(lab: Lab) -> None:
    """Each tunnelled WebSocket holds one of the gateway's threads: past half of them an upgrade
    is refused (503 too_many_websockets), the client keeps long-polling and HTTP is served."""
    cap = load_topology().service("gateway").threads // 2
    token = lab.customer("Tess").headers["Authorization"].removeprefix("Bearer ")

    def client(transports: list[str]) -> socketio.Client:
        opened = socketio.Client(reconnection=False)
        opened.connect(lab.gateway, auth={"token": token}, transports=transports,
                       wait_timeout=20)
        return opened

    websockets: list[socketio.Client] = []
    try:
        while _opens_a_websocket(client, keep=websockets):
            assert len(websockets) <= cap, f"{len(websockets)} websockets open, cap {cap}"
        assert len(websockets) == cap
        polling = client(["polling", "websocket"])
        time.sleep(2)  # a browser's client tries its upgrade at once, and is refused
        assert polling.transport() == "polling"
        assert requests.get(f"{lab.gateway}/api/products?limit=1", timeout=5).status_code == 200
        polling.disconnect()

        websockets.pop().disconnect()  # its tunnel closes and frees a place
        wait_for(lambda: _opens_a_websocket(client, keep=websockets), timeout=10,
                 what="a websocket once another closed")
    finally:
        for opened in websockets:
            opened.disconnect()


def _opens_a_websocket(client: Callable[[list[str]], socketio.Client],
                       keep: list[socketio.Client]) -> bool:
    try:
        keep.append(client(["websocket"]))
    except socketio.exceptions.ConnectionError:
        return False
    return True

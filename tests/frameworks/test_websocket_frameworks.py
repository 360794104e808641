"""Starlette and FastAPI WebSocket endpoints served by Pounce.

Each framework app serves the same endpoints, checked the same way:

* ``/ws/echo`` -> accept (with the ``json`` subprotocol when offered), answer every JSON
  message with ``{"framework": NAME, "echo": <message>, "path": ..., "query": ...}``
* ``/ws/close`` -> accept, then close with 4003 and a reason
* ``/ws/boom`` -> accept, then raise: the server closes with 1011
* ``/ws/deny`` -> refuse with an HTTP 401 JSON response (the websocket.http.response extension)
* ``/ws/reject`` -> close before accepting: HTTP 403
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket, WebSocketException
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocketDisconnect
from tests.protocols.websocket.conftest import ws_server
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


async def _echo(websocket: WebSocket, framework: str) -> None:
    offered = websocket.scope.get("subprotocols", [])
    await websocket.accept(subprotocol="json" if "json" in offered else None)
    try:
        while True:
            message = await websocket.receive_json()
            await websocket.send_json(
                {
                    "framework": framework,
                    "echo": message,
                    "path": websocket.url.path,
                    "query": websocket.query_params.get("q"),
                }
            )
    except WebSocketDisconnect:
        pass


async def _close(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close(code=4003, reason="the framework says bye")


async def _boom(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.receive_text()
    raise ValueError("failing on purpose in a WebSocket endpoint")


async def _deny(websocket: WebSocket) -> None:
    await websocket.send_denial_response(JSONResponse({"detail": "token needed"}, 401))


# -- Starlette ---------------------------------------------------------------------------


async def starlette_echo(websocket: WebSocket) -> None:
    await _echo(websocket, "starlette")


async def starlette_reject(websocket: WebSocket) -> None:
    await websocket.close(code=1008)


starlette_app = Starlette(
    routes=[
        WebSocketRoute("/ws/echo", starlette_echo),
        WebSocketRoute("/ws/close", _close),
        WebSocketRoute("/ws/boom", _boom),
        WebSocketRoute("/ws/deny", _deny),
        WebSocketRoute("/ws/reject", starlette_reject),
    ]
)

# -- FastAPI -----------------------------------------------------------------------------

fastapi_app = FastAPI()


@fastapi_app.websocket("/ws/echo")
async def fastapi_echo(websocket: WebSocket) -> None:
    await _echo(websocket, "fastapi")


@fastapi_app.websocket("/ws/reject")
async def fastapi_reject(websocket: WebSocket) -> None:
    raise WebSocketException(code=1008, reason="no entry")


fastapi_app.add_api_websocket_route("/ws/close", _close)
fastapi_app.add_api_websocket_route("/ws/boom", _boom)
fastapi_app.add_api_websocket_route("/ws/deny", _deny)

FRAMEWORKS = [
    pytest.param(("starlette", starlette_app), id="starlette"),
    pytest.param(("fastapi", fastapi_app), id="fastapi"),
]


def ws_connect(url: str, path: str, **kwargs: Any) -> ClientConnection:
    return connect(
        "ws://" + url.removeprefix("http://") + path, open_timeout=5, close_timeout=5, **kwargs
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_accept_and_echo_json(framework: tuple[str, Any]) -> None:
    name, app = framework
    with ws_server(app) as running, ws_connect(
        running.url, "/ws/echo?q=caf%C3%A9", subprotocols=["json"]
    ) as ws:
        assert ws.subprotocol == "json"
        for message in ({"n": 1}, ["a", "\u00e9"], "text", 42):
            ws.send(json.dumps(message))
            reply = json.loads(ws.recv(timeout=5))
            assert reply == {
                "framework": name,
                "echo": message,
                "path": "/ws/echo",
                "query": "caf\u00e9",
            }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_close_with_code_and_reason(framework: tuple[str, Any]) -> None:
    _, app = framework
    with ws_server(app) as running, ws_connect(running.url, "/ws/close") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            4003,
            "the framework says bye",
        )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_exception_in_endpoint_closes_with_1011(framework: tuple[str, Any]) -> None:
    _, app = framework
    with ws_server(app) as running:
        with ws_connect(running.url, "/ws/boom") as ws:
            ws.send("go")
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=5)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1011
        # The server keeps serving after the endpoint failed.
        with ws_connect(running.url, "/ws/echo") as ws:
            ws.send('"again"')
            assert json.loads(ws.recv(timeout=5))["echo"] == "again"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_denial_response(framework: tuple[str, Any]) -> None:
    _, app = framework
    with ws_server(app) as running:
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(running.url, "/ws/deny")
        response = refused.value.response
        assert response.status_code == 401
        assert json.loads(response.body or b"") == {"detail": "token needed"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_reject_before_accept_is_403(framework: tuple[str, Any]) -> None:
    _, app = framework
    with ws_server(app) as running:
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(running.url, "/ws/reject")
        assert refused.value.response.status_code == 403

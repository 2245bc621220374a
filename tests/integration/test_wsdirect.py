"""Feed messages written straight to the socket (web/wsdirect.py): the frames are what wsproto
reads, hypercorn's connections take the direct way, and order holds when a frame goes out only
in part or falls back to hypercorn."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import TextMessage

from conveyor.node import Node
from conveyor.web import wsdirect
from tests.helpers import base_url


@pytest.mark.parametrize("text", ["", "a", "é" * 62, "x" * 125, "x" * 126, "ü" * 40_000, "y" * 65_536])
def test_frames_read_back_as_the_text(text: str) -> None:
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(wsdirect.frame(text))
    events = list(client.events())
    assert len(events) == 1 and isinstance(events[0], TextMessage)
    assert events[0].data == text and events[0].message_finished


class ShortWrites:
    """os for wsdirect whose write takes at most 64 KiB: a large frame always goes out in part,
    whatever the socket's buffer holds; counts the writes it cut short."""

    def __init__(self) -> None:
        self.cut = 0
        self.writes = 0

    def write(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if len(data) > 65_536:
            self.cut += 1
        return os.write(fd, data[:65_536])


@pytest.fixture
def short_writes(monkeypatch: pytest.MonkeyPatch) -> ShortWrites:
    writes = ShortWrites()
    monkeypatch.setattr(wsdirect, "os", writes)
    return writes


async def _serve(app: Any, nursery: trio.Nursery) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, app, config)
    return str(binds[0]).replace("http://", "ws://")


async def test_direct_and_fallback_keep_the_order(nursery: trio.Nursery, short_writes: ShortWrites) -> None:
    """A large frame the socket takes in part, small ones around it, and some sent the ordinary
    way: the client reads them all, whole and in order, and the direct way was taken."""
    senders: list[wsdirect.DirectSender] = []
    texts = ["first", "z" * 4_000_000, *[f"m{i}" for i in range(200)], "é" * 300_000, "last"]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})

        async def ordinary(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        sender = wsdirect.DirectSender(scope.get(wsdirect.SCOPE_KEY), ordinary)
        senders.append(sender)
        for i, text in enumerate(texts):
            await (ordinary(text) if i % 3 == 2 else sender.send(text))
        await receive()  # until the client closes

    url = await _serve(wsdirect.KeepSend(app), nursery)
    async with open_websocket_url(url + "/", max_message_size=8_000_000) as ws:
        got = [await ws.get_message() for _ in texts]
    assert got == texts
    assert [s.direct for s in senders] == [True]
    assert short_writes.cut == 2  # both large frames went out in part, the rest hypercorn's way


async def test_messages_sent_together_go_out_in_one_write(
    nursery: trio.Nursery, short_writes: ShortWrites
) -> None:
    """send_many frames its texts into one write; the client reads each message whole and in
    order, a large one among them too (the write takes it in part, hypercorn sends the rest)."""
    batches = [["a", "b" * 200, "c" * 70_000], ["d"], ["é" * 100, "f"]]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sender = wsdirect.DirectSender(scope.get(wsdirect.SCOPE_KEY), None)  # type: ignore[arg-type]
        for batch in batches:
            await sender.send_many(batch)
        await receive()  # until the client closes

    url = await _serve(wsdirect.KeepSend(app), nursery)
    async with open_websocket_url(url + "/") as ws:
        got = [await ws.get_message() for batch in batches for _ in batch]
    assert got == [text for batch in batches for text in batch]
    assert short_writes.writes == len(batches)
    assert short_writes.cut == 1


async def test_a_cancelled_send_still_ends_its_frame(nursery: trio.Nursery, short_writes: ShortWrites) -> None:
    """A frame that went out in part is finished even when its sender is cancelled: the
    client reads the whole message and then a clean close, not a garbled stream."""
    big = "q" * 4_000_000

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("no lifespan")
        await receive()
        await send({"type": "websocket.accept"})
        sender = wsdirect.DirectSender(scope.get(wsdirect.SCOPE_KEY), None)  # type: ignore[arg-type]
        with trio.CancelScope() as scope:  # cancelled already (a closer) when the frame
            scope.cancel()  # goes out in part
            await sender.send(big)
        await send({"type": "websocket.close", "code": 1000})

    url = await _serve(wsdirect.KeepSend(app), nursery)
    async with open_websocket_url(url + "/", max_message_size=8_000_000) as ws:
        assert await ws.get_message() == big
        with pytest.raises(ConnectionClosed) as closed:
            await ws.get_message()
    assert closed.value.reason.code == 1000
    assert short_writes.cut == 1


async def test_without_the_server_send_it_falls_back() -> None:
    sent: list[str] = []

    async def ordinary(text: str) -> None:
        sent.append(text)

    sender = wsdirect.DirectSender(None, ordinary)
    assert not sender.direct
    await sender.send("hello")
    await sender.send_many(["one", "two"])
    assert sent == ["hello", "one", "two"]


async def test_the_nodes_feed_goes_the_direct_way(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    senders: list[wsdirect.DirectSender] = []
    made = wsdirect.DirectSender.__init__

    def spy(self: wsdirect.DirectSender, *args: Any) -> None:
        made(self, *args)
        senders.append(self)

    monkeypatch.setattr(wsdirect.DirectSender, "__init__", spy)
    url = base_url(node)
    async with open_websocket_url(url.replace("http://", "ws://") + "/ws") as ws:
        assert json.loads(await ws.get_message())["type"] == "CONNECTED"
        await ws.send_message(json.dumps({"type": "SUBSCRIBE", "tenantId": "direct"}))
        assert json.loads(await ws.get_message())["type"] == "SUBSCRIBED"
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/jobs", json={"tenantId": "direct", "type": "sleep", "payload": {"delayMs": 0}})
            assert r.status_code == 201, r.text
        statuses = []
        while "COMPLETED" not in statuses:
            msg = json.loads(await ws.get_message())
            assert msg["jobId"] == r.json()["jobId"]
            statuses.append(msg["status"])
    assert statuses == ["PENDING", "RUNNING", "COMPLETED"]
    assert [s.direct for s in senders] == [True]

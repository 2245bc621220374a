"""An answer's head goes out with its body, in one write (web/httpfix.py), on a real hypercorn."""

from __future__ import annotations

from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from conveyor.web import httpfix


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
    if scope["path"] == "/slow":
        await trio.sleep(0.3)  # between the head and the body
    await send({"type": "http.response.body", "body": b"hello"})


async def _serve(nursery: trio.Nursery) -> tuple[str, int]:
    httpfix.install()
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, app, config)
    host, _, port = str(binds[0]).removeprefix("http://").rpartition(":")
    return host, int(port)


async def _read_answer(stream: trio.SocketStream) -> bytes:
    got = b""
    while not got.endswith(b"hello"):
        chunk = await stream.receive_some()
        assert chunk, got
        got += chunk
    return got


async def test_the_head_waits_for_the_body_and_goes_with_it(nursery: trio.Nursery) -> None:
    host, port = await _serve(nursery)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.move_on_after(0.15) as early:
            await stream.receive_some()
        assert early.cancelled_caught, "the head went out before the body"
        first = await stream.receive_some()
        assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"\r\n\r\nhello"), first


async def test_kept_alive_answers_and_protocol_errors_still_go_out(nursery: trio.Nursery) -> None:
    host, port = await _serve(nursery)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        for _ in range(3):  # one connection, one answer after another
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = await _read_answer(stream)
            assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
    bad = await trio.open_tcp_stream(host, port)
    async with bad:
        await bad.send_all(b"NOT HTTP AT ALL\r\n\r\n")
        got = b""
        with trio.fail_after(5):
            while chunk := await bad.receive_some():
                got += chunk
        assert got.startswith(b"HTTP/1.1 400"), got

"""A loopback TCP proxy that a test can cut and restore: a store going down, as a node sees it."""

from __future__ import annotations

from typing import Any

import trio


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port as before, after a cut) and forward to the target."""
        self._scope = await nursery.start(self._serve)

    def cut(self) -> None:
        """Close the listener and every open connection at once."""
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    async def _serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            task_status.started(scope)
            await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client, await trio.open_tcp_stream("127.0.0.1", self.target_port) as server:

            async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                try:
                    async for chunk in src:
                        await dst.send_all(chunk)
                except trio.BrokenResourceError:
                    pass
                nursery.cancel_scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)

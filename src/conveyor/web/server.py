"""Serving the HTTP application with hypercorn, as the node's `http` child."""

from __future__ import annotations

import functools
from typing import Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..config import Config
from . import httpfix
from .bodies import ASGIApp


class CannotListen(Exception):
    """The HTTP address cannot be bound (in use, or not this machine's)."""


def hypercorn_config(config: Config) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [f"[{config.host}]:{config.port}" if ":" in config.host else f"{config.host}:{config.port}"]
    hc.graceful_timeout = 5.0
    hc.websocket_max_message_size = 64 * 1024
    # a request waiting for the body budget holds at most this many chunks of its body (64 KiB
    # each) in hypercorn; the rest stays in the kernel, pushing back on the client
    hc.max_app_queue_size = 2
    # connections the kernel queues until the node accepts them (hypercorn's default, 100,
    # overflowed under 250 clients at once: the kernel then drops handshakes, and clients see
    # retransmission delays or, on a loaded machine, a connection closed without an answer)
    hc.backlog = 2048
    hc.accesslog = None  # the node logs its requests itself (web/access.py)
    hc.include_server_header = False
    return hc


async def serve_http(
    app: ASGIApp,
    config: Config,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set; started with the URLs it listens on. CannotListen when
    the address cannot be bound."""
    httpfix.install()  # an answer's head and body in one write
    async with trio.open_nursery() as nursery:
        try:
            urls = await nursery.start(
                functools.partial(
                    hypercorn_serve, cast(Any, app), hypercorn_config(config), shutdown_trigger=shutdown.wait,
                )
            )
        except* OSError as group:  # before it serves: the address is taken or not ours
            exc: BaseException = group
            while isinstance(exc, BaseExceptionGroup):
                exc = exc.exceptions[0]
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise CannotListen(f"cannot listen on {config.host}:{config.port}: {why}") from None
        task_status.started(urls)

"""Webhook SSRF: a tenant's webhook cannot reach the node's own network.

Every target of the table is refused at connect time, fails its job at once (one attempt, no
retry) with a clear error, and a canary listening on loopback sees no connection at all. A
redirect from an allowed server to loopback is refused at the hop. The allowed-networks setting
(a trusted internal service) is shown to work, so the guard is not simply "refuse everything".
"""

from __future__ import annotations

import functools
from typing import Any

import httpx
import trio

from tests.helpers import base_url
from tests.integration.test_jobs import finished, submit


class Canary:
    """Listeners on loopback (IPv4 and IPv6) that count every connection made to them."""

    def __init__(self) -> None:
        self.hits = 0
        self.port = 0
        self.port6 = 0

    async def _count(self, stream: trio.SocketStream) -> None:
        self.hits += 1
        await stream.aclose()

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, self._count, 0, host="127.0.0.1")
        )
        self.port = listeners[0].socket.getsockname()[1]
        listeners6 = await nursery.start(functools.partial(trio.serve_tcp, self._count, 0, host="::1"))
        self.port6 = listeners6[0].socket.getsockname()[1]


async def _redirector(location: str, stream: trio.SocketStream) -> None:
    """A tiny HTTP server: /ok answers 200, anything else redirects to `location`."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        request += chunk
    if request.split(b" ", 2)[1] == b"/ok":
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    else:
        answer = (
            f"HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\n"
            "connection: close\r\n\r\n"
        ).encode()
    await stream.send_all(answer)
    await stream.aclose()


async def test_internal_webhook_targets_are_refused_once_and_never_reached(
    start_node: Any, tenant: str, nursery: trio.Nursery
) -> None:
    canary = Canary()
    await canary.start(nursery)
    redirect_listeners = await nursery.start(
        functools.partial(
            trio.serve_tcp,
            functools.partial(_redirector, f"http://127.0.0.1:{canary.port}/steal"),
            0,
            host="127.0.0.2",
        )
    )
    redirector = f"http://127.0.0.2:{redirect_listeners[0].socket.getsockname()[1]}"
    node = await start_node(
        webhook_allow_private=False, webhook_allow_networks=("127.0.0.2/32",), max_attempts=3
    )
    p, p6 = canary.port, canary.port6
    # an address named in the URL is refused at submit (400), saying why
    literal = {
        "loopback": (f"http://127.0.0.1:{p}/", "a loopback address"),
        "IPv6 loopback": (f"http://[::1]:{p6}/", "a loopback address"),
        "IPv4-mapped loopback": (f"http://[::ffff:127.0.0.1]:{p}/", "IPv4-mapped"),
        "decimal loopback": (f"http://2130706433:{p}/", "a loopback address"),
        "short loopback": (f"http://127.1:{p}/", "a loopback address"),
        "unspecified": (f"http://0.0.0.0:{p}/", "unspecified"),
        "cloud metadata": ("http://169.254.169.254/latest/meta-data/", "link-local"),
        "RFC 1918": ("http://10.0.0.1/", "private"),
        "CGNAT": ("http://100.64.0.1/", "shared (CGNAT)"),
        "unique-local": ("http://[fd00::1]/", "unique-local"),
        "https to loopback": (f"https://127.0.0.1:{p}/", "a loopback address"),
    }
    # a name is checked when the job runs, against every address it resolves to, on every hop
    named = {
        "name resolving to loopback": f"http://localhost:{p}/",
        "redirect to loopback": f"{redirector}/go",
    }
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            for name, (url, why) in literal.items():
                r = await client.post("/jobs", json={
                    "tenantId": tenant, "type": "webhook", "payload": {"url": url, "method": "GET"}})
                assert r.status_code == 400, (name, r.text)
                (detail,) = r.json()["details"]
                assert detail["field"] == "payload.url" and why in detail["message"], (name, detail)
            ids = {
                name: await submit(client, tenant, "webhook", {"url": url, "method": "GET"})
                for name, url in named.items()
            }
            allowed = await submit(client, tenant, "webhook", {"url": f"{redirector}/ok", "method": "GET"})
            jobs = {name: await finished(client, job_id) for name, job_id in ids.items()}
            control = await finished(client, allowed)
    assert control["status"] == "COMPLETED", control  # an allowed network is reachable
    for name, job in jobs.items():
        assert job["status"] == "FAILED", (name, job)
        assert job["attempts"] == 1, (name, job)  # refused at once, not retried
        assert job["error"].startswith("webhook refused: webhook target "), (name, job["error"])
    assert "a loopback address" in jobs["redirect to loopback"]["error"]
    assert "a loopback address" in jobs["name resolving to loopback"]["error"]
    assert canary.hits == 0  # refused before any connect: none can still be on its way


async def test_only_http_and_https_webhooks_are_accepted(node: Any, tenant: str) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            for url in ("file:///etc/passwd", "gopher://127.0.0.1/", "ftp://example.com/x", "//x/y"):
                r = await client.post(
                    "/jobs", json={"tenantId": tenant, "type": "webhook", "payload": {"url": url}}
                )
                assert r.status_code == 400, url
                assert r.json()["details"][0]["field"] == "payload.url"

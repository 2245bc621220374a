"""The `webhook` job: one real HTTP request; any non-2xx answer is a (retried) failure.

The result is the status code and a bounded excerpt of the response body.

A tenant's webhook must not reach the node's own network (SSRF). Every connection, the first and
each redirect hop, goes through GuardedBackend: it resolves the host once, refuses it when any of
its addresses is one that netpolicy refuses, and connects to the address it checked (so a DNS
answer cannot change between check and use). TLS still verifies the certificate against the host
name. A refused target fails the job at once, without retries. CONVEYOR_WEBHOOK_ALLOW_PRIVATE
lifts the address check for trusted deployments and tests.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import trio

from ..config import Config
from ..model import Envelope
from ..netpolicy import Network, networks, refusal
from ..storable import clean_text
from .base import FieldError, Handler, JobFailed, Registry

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
EXCERPT_BYTES = 2048
ERROR_EXCERPT = 200  # characters of a failed answer's body kept in the job's error, on one line
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_REDIRECTS = 5


class TargetRefused(Exception):
    """The webhook's host resolves to an address it may not reach."""


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's trio backend, connecting only to addresses the policy allows."""

    def __init__(self, allowed: tuple[Network, ...] = ()) -> None:
        self._inner = httpcore.TrioBackend()
        self._allowed = allowed

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with trio.fail_after(timeout if timeout is not None else float("inf")):
                infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, trio.TooSlowError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            why = refusal(address, self._allowed)
            if why is not None:
                raise TargetRefused(f"webhook target {host} resolves to {address}, {why}")
            addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"{host} has no address")
        return await self._inner.connect_tcp(
            str(addresses[0]), port, timeout=timeout, local_address=local_address,
            socket_options=socket_options,
        )

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    def __init__(self, allowed: tuple[Network, ...] = ()) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=GuardedBackend(allowed),
        )


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]{0,8192}")
_LABEL = re.compile(rb"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MAX_URL = 2048


def url_problem(url: Any) -> str | None:
    """Why a webhook URL can never be requested, or None. It is parsed by httpx, which sends
    the request, so that what passes here is what runs."""
    what = f"must be an absolute http:// or https:// URL of at most {MAX_URL} characters"
    if not isinstance(url, str) or len(url) > MAX_URL:
        return what
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        return f"{what} ({exc})"
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        return what
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        return f"{what} (its port must be from 1 to 65535)"
    host = parsed.raw_host
    try:
        ipaddress.ip_address(host.decode("ascii"))
        return None
    except ValueError:
        pass
    labels = host.removesuffix(b".").split(b".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{what} (its host {parsed.host!r} is not a valid host name or address)"
    return None


def literal_address(url: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL names literally (as the resolver reads it: 127.0.0.1, [::1], and the
    legacy IPv4 forms 2130706433 or 127.1), or None when its host is a name."""
    host = httpx.URL(url).raw_host.decode("ascii")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def validate(payload: dict[str, Any], allowed: tuple[Network, ...] | None = ()) -> list[FieldError]:
    """What is wrong with a webhook payload. `allowed`: the networks a target may be in besides
    public ones (None: any address); a literal address outside them is refused here, and a name
    is checked when the job runs, against every address it resolves to."""
    errors = []
    if (why := url_problem(payload.get("url"))) is not None:
        errors.append(FieldError("url", why))
    elif allowed is not None and (address := literal_address(payload["url"])) is not None:
        if (refused := refusal(address, allowed)) is not None:
            errors.append(FieldError("url", f"must not name {address}: it is {refused}"))
    method = payload.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        errors.append(FieldError("method", f"must be one of {', '.join(sorted(METHODS))}"))
    headers = payload.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) and _HEADER_NAME.fullmatch(k) and _HEADER_VALUE.fullmatch(v)
        for k, v in headers.items()
    ):
        errors.append(FieldError(
            "headers", "must be an object of header names (letters, digits, !#$%&'*+-.^_`|~) "
                       "and printable ASCII values"))
    return errors


def one_line(text: str, most: int) -> str:
    """Text as one line of at most `most` characters: runs of whitespace (newlines included)
    become one space, and a cut is marked with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[: most - 1].rstrip() + "…"


def register(registry: Registry, config: Config) -> None:
    allowed = networks(config.webhook_allow_networks)

    def transport() -> httpx.AsyncBaseTransport:
        if config.webhook_allow_private:
            return httpx.AsyncHTTPTransport(trust_env=False)
        return GuardedTransport(allowed)

    async def run(job: Envelope, payload: dict[str, Any]) -> Any:
        method = payload.get("method", "POST").upper()
        headers = dict(payload.get("headers") or {})
        headers.setdefault("X-Conveyor-Job", job.id)
        headers.setdefault("X-Conveyor-Attempt", str(job.attempt))
        body = payload.get("body")
        kwargs: dict[str, Any] = {}
        if isinstance(body, str):
            kwargs["content"] = body
        elif body is not None:
            kwargs["json"] = body
        # a little longer than the attempt's own deadline, which ends it with a clear message
        timeout = httpx.Timeout(job.timeout_ms / 1000 + 1)
        try:
            async with httpx.AsyncClient(
                transport=transport(),
                timeout=timeout,
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                trust_env=False,
            ) as client:
                async with client.stream(method, payload["url"], headers=headers, **kwargs) as resp:
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= MAX_RESPONSE_BYTES:
                            break
        except TargetRefused as exc:
            raise JobFailed(f"webhook refused: {exc}", retryable=False) from exc
        except httpx.TooManyRedirects as exc:
            raise JobFailed(f"webhook request failed: more than {MAX_REDIRECTS} redirects") from exc
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            # a redirect to a URL that cannot be requested: asking again will not help
            raise JobFailed(f"webhook request failed: {exc}", retryable=False) from exc
        except httpx.HTTPError as exc:
            raise JobFailed(f"webhook request failed: {type(exc).__name__}: {exc}") from exc
        # what the remote server said, kept storable (a NUL in it must not fail the job)
        excerpt = clean_text(b"".join(chunks)[:EXCERPT_BYTES].decode("utf-8", "replace"), EXCERPT_BYTES)
        if not 200 <= resp.status_code < 300:
            raise JobFailed(f"webhook answered HTTP {resp.status_code}: {one_line(excerpt, ERROR_EXCERPT)}")
        return {"status": resp.status_code, "body": excerpt}

    def check(payload: dict[str, Any]) -> list[FieldError]:
        return validate(payload, None if config.webhook_allow_private else allowed)

    registry.register(Handler("webhook", check, run, default_timeout_ms=lambda p: 30_000))

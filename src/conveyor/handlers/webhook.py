"""The `webhook` job: one real HTTP request; any non-2xx answer is a (retried) failure.

The result is the status code and a bounded excerpt of the response body.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from ..config import Config
from ..model import Envelope
from . import FieldError, Handler, JobFailed, Registry

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
EXCERPT_BYTES = 2048
MAX_RESPONSE_BYTES = 1024 * 1024


def validate(payload: dict[str, Any]) -> list[FieldError]:
    errors = []
    url = payload.get("url")
    parts = urlsplit(url) if isinstance(url, str) and len(url) <= 2048 else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            FieldError("url", "must be an absolute http:// or https:// URL of at most 2048 characters")
        )
    method = payload.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in METHODS:
        errors.append(FieldError("method", f"must be one of {', '.join(sorted(METHODS))}"))
    headers = payload.get("headers", {})
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        errors.append(FieldError("headers", "must be an object of string values"))
    return errors


def register(registry: Registry, config: Config) -> None:
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
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
                async with client.stream(method, payload["url"], headers=headers, **kwargs) as resp:
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        chunks.append(chunk)
                        size += len(chunk)
                        if size >= MAX_RESPONSE_BYTES:
                            break
        except httpx.HTTPError as exc:
            raise JobFailed(f"webhook request failed: {type(exc).__name__}: {exc}") from exc
        excerpt = b"".join(chunks)[:EXCERPT_BYTES].decode("utf-8", "replace")
        if not 200 <= resp.status_code < 300:
            raise JobFailed(f"webhook answered HTTP {resp.status_code}: {excerpt[:200]}")
        return {"status": resp.status_code, "body": excerpt}

    registry.register(Handler("webhook", validate, run, default_timeout_ms=lambda p: 30_000))

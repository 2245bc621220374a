"""What both clients share: requests described as data, how an answer becomes a result or an
ApiError, and the feed's rules (subscribe, resume after the last eventId, answer PINGs), so that
the blocking and the async client cannot drift apart."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import attrs
import httpx
from httpx_ws import WebSocketDisconnect

from .errors import ERRORS, ApiError, Unauthorized
from .records import Event

PAGE = 100


@attrs.frozen
class _Call:
    method: str
    path: str
    body: Any = None
    params: dict[str, Any] | None = None
    ok: tuple[int, ...] = (200,)


def _answer(call: _Call, response: httpx.Response) -> Any:
    """The JSON of a success, or the ApiError the answer says, raised."""
    if response.status_code in call.ok:
        return None if response.status_code == 204 else response.json()
    raise _error_of(response)


def _error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except (ValueError, httpx.ResponseNotRead):
        body = {"error": response.reason_phrase}
    if not isinstance(body, dict):
        body = {"error": str(body)[:200]}
    after = response.headers.get("Retry-After")
    kind = ERRORS.get(response.status_code, ApiError)
    return kind(response.status_code, str(body.get("error")), body.get("details"),
                float(after) if after and after.isdigit() else None)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _job_path(job_id: str, *action: str) -> str:
    """/jobs/<id>[/action], the id quoted: an id is never read as more of the path."""
    return "/".join(("/jobs", quote(job_id, safe=""), *action))


def _job_body(type_: str, payload: Mapping[str, Any], tenant: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    names = {"max_attempts": "maxAttempts", "timeout_ms": "timeoutMs", "priority": "priority",
             "delay_ms": "delayMs", "run_at": "runAt"}
    unknown = set(options) - set(names)
    if unknown:
        raise TypeError(f"unknown job options: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
    body: dict[str, Any] = {"type": type_, "payload": dict(payload)}
    if tenant is not None:
        body["tenantId"] = tenant
    body.update({names[k]: v for k, v in options.items() if v is not None})
    if isinstance(body.get("runAt"), datetime):
        when = body["runAt"]
        if when.tzinfo is None:
            raise ValueError("run_at must be an aware datetime (with a tzinfo)")
        body["runAt"] = when.isoformat()
    return body


def _schedule_path(name: str, *action: str) -> str:
    return "/".join(("/schedules", quote(name, safe=""), *action))


def _tenant_params(tenant: str | None) -> dict[str, Any] | None:
    return {"tenantId": tenant} if tenant else None


def _put_schedule(
    tenant: str | None, name: str, type_: str, payload: Mapping[str, Any], cron: str | None, every: str | None,
    timezone: str | None, paused: bool, options: Mapping[str, Any],
) -> _Call:
    """PUT /schedules/{name}: options are the job's max_attempts, timeout_ms and priority."""
    names = {"max_attempts": "maxAttempts", "timeout_ms": "timeoutMs", "priority": "priority"}
    unknown = set(options) - set(names)
    if unknown:
        raise TypeError(f"unknown job options: {', '.join(sorted(unknown))} (known: {', '.join(names)})")
    job = {"type": type_, "payload": dict(payload), **{names[k]: v for k, v in options.items() if v is not None}}
    body: dict[str, Any] = {"job": job, "paused": paused}
    for field, value in (("tenantId", tenant), ("cron", cron), ("every", every), ("timezone", timezone)):
        if value is not None:
            body[field] = value
    return _Call("PUT", _schedule_path(name), body, ok=(200, 201))


def _schedule_call(tenant: str | None, method: str, name: str, *action: str) -> _Call:
    """GET, DELETE, or POST pause / resume of one schedule."""
    return _Call(method, _schedule_path(name, *action), params=_tenant_params(tenant),
                 ok=(204,) if method == "DELETE" else (200,))


def _list_params(tenant: str | None, status: str | None, type_: str | None, cursor: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": PAGE} | ({"cursor": cursor} if cursor else {})
    for name, value in (("tenantId", tenant), ("status", status), ("type", type_)):
        if value is not None:
            params[name] = value
    return params


def _ws_url(base: str) -> str:
    base = base.rstrip("/")
    return ("wss://" + base[8:] if base.startswith("https://") else "ws://" + base.removeprefix("http://")) + "/ws"


# -- the feed's rules, as both clients follow them --------------------------------------------

class _Feed:
    """Where a client is in its tenant's feed, and what to answer each message with."""

    def __init__(self, tenant: str | None, after: str | None) -> None:
        self.tenant = tenant
        self.last = after
        self.delivered = 0  # events given to the caller (a connection that gave some resets the backoff)

    def subscribe(self, connected: dict[str, Any]) -> str:
        if connected.get("type") != "CONNECTED":
            raise ApiError(0, f"unexpected first message on the feed: {connected}")
        tenant = self.tenant or connected.get("tenantId")
        if tenant is None:
            raise ApiError(0, "auth is off on this node: give the client a tenant")
        self.tenant = tenant
        message: dict[str, Any] = {"type": "SUBSCRIBE", "tenantId": tenant}
        if self.last is not None:
            message["lastEventId"] = self.last
        return json.dumps(message)

    def take(self, msg: dict[str, Any]) -> tuple[Event | None, str | None]:
        """(the event to give the caller or None, the reply to send or None)."""
        kind = msg.get("type")
        if kind == "PING":
            return None, json.dumps({"type": "PONG"})
        if kind == "SUBSCRIBED":
            if self.last is None:
                self.last = msg.get("lastEventId")
            return Event.from_json(msg), None
        if kind == "ERROR":
            raise ApiError(0, str(msg.get("error")))
        if kind == "RESYNC":
            self.last = msg.get("lastEventId")
            return Event.from_json(msg), None
        if "eventId" in msg:
            self.last = msg["eventId"]
            self.delivered += 1
            return Event.from_json(msg), None
        return None, None


def _closed_for_good(exc: BaseException) -> ApiError | None:
    """The error to raise when the node refused us for good (bad key), or None to reconnect."""
    if isinstance(exc, WebSocketDisconnect) and exc.code == 4401:
        return Unauthorized(401, exc.reason or "unauthenticated")
    return None


def _upgrade_refusal(exc: BaseException) -> ApiError | None:
    response = getattr(exc, "response", None)
    if isinstance(response, httpx.Response) and response.status_code in (401, 403, 429):
        return _error_of(response)
    return None

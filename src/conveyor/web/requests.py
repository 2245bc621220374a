"""What every route does with its request: who the caller is, whether its tenant may read now,
and the body as JSON whose every value can be stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from quart import request

from .. import storable, validation
from ..auth import Principal
from ..handlers import FieldError
from .bodies import PRINCIPAL, authorization_of
from .context import Services
from .reads import TenantReads


def json_body_of(raw: bytes | str) -> Any:
    """A request body as JSON whose every value can be stored; Invalid says what is wrong."""
    try:
        body = storable.loads(raw)
    except storable.Malformed as exc:
        raise validation.Invalid("Malformed JSON", [FieldError("body", str(exc))]) from None
    return validation.storable_body(body)


class Requests:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.reads = TenantReads(svc.limits.of, svc.metrics)

    async def caller(self) -> Principal:
        """The authenticated caller (tenant None when auth is off); raises Unauthorized."""
        return await self.caller_of(request.scope)

    async def caller_of(self, scope: Mapping[str, Any]) -> Principal:
        """The caller of an ASGI request (the routes in front of quart have no quart request)."""
        checked = scope.get(PRINCIPAL)
        if isinstance(checked, Principal):
            return checked  # authenticated by the body gate
        return await self.svc.auth.from_header(authorization_of(scope))

    @asynccontextmanager
    async def reading(self, cost: int = 1, who: Principal | None = None) -> AsyncIterator[Principal]:
        """Within: a read by the caller (authenticated here unless given), within its tenant's
        bounds on this node (reads.py)."""
        who = who or await self.caller()
        if who.tenant is None:
            yield who
        else:
            async with self.reads.read(who.tenant, cost):
                yield who

    async def json_body(self) -> Any:
        return json_body_of(await request.get_data())

    async def object_body(self) -> dict[str, Any]:
        """The body as a JSON object; an empty body is {}."""
        value = await self.json_body() if (await request.get_data()).strip() else {}
        if not isinstance(value, dict):
            raise validation.Invalid("Validation failed", [FieldError("body", "must be a JSON object")])
        return value

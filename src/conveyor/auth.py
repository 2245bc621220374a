"""Who is calling: API keys to tenants, with a bounded cache in front of PostgreSQL.

A key the node has seen is checked in memory (its digest is cached, never the key). The tenancy
actor asks PostgreSQL every few seconds which cached keys were revoked and forgets them, so a
revoked key stops working on every node within that interval (at once on the node that revoked it).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import attrs

from . import keys
from .stores import PostgresStore

CACHE_SIZE = 10_000
CACHE_TTL_S = 300.0


class Unauthorized(Exception):
    """No valid credentials (401); the message says what was wrong, never whose key it was."""


@attrs.frozen
class Principal:
    # tenant None: auth is off, and the request names its tenant (the reference's protocol)
    tenant: str | None
    key_id: str | None = None


@attrs.frozen
class _Entry:
    tenant: str
    digest: str
    cached_at: float


class Authenticator:
    def __init__(self, pg: PostgresStore, *, enabled: bool) -> None:
        self.pg = pg
        self.enabled = enabled
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    async def _entry(self, key_id: str) -> _Entry | None:
        entry = self._cache.get(key_id)
        if entry is not None and time.monotonic() - entry.cached_at < CACHE_TTL_S:
            self._cache.move_to_end(key_id)
            return entry
        row = await self.pg.find_key(key_id)
        if row is None or row["revoked_at"] is not None:
            self._cache.pop(key_id, None)
            return None
        entry = _Entry(row["tenant_id"], row["digest"], time.monotonic())
        self._cache[key_id] = entry
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry

    async def authenticate(self, raw: str | None) -> Principal:
        """The tenant of an API key; raises Unauthorized. With auth off, anyone (tenant None)."""
        if not self.enabled:
            return Principal(None)
        if not raw:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        key_id = keys.key_id_of(raw)
        if key_id is None:
            raise Unauthorized("malformed API key")
        entry = await self._entry(key_id)
        if entry is None or not keys.matches(raw, entry.digest):
            raise Unauthorized("invalid or revoked API key")
        return Principal(entry.tenant, key_id)

    async def from_header(self, header: str | None) -> Principal:
        """The caller named by an `Authorization` header (absent: no key); raises Unauthorized,
        also for a header that is not `Bearer <key>`. With auth off, anyone (tenant None)."""
        key = keys.bearer(header)
        if header and key is None and self.enabled:
            raise Unauthorized("the Authorization header must read 'Bearer <key>'")
        return await self.authenticate(key)

    async def active_tenant(self, key_id: str) -> str | None:
        """The tenant of a key that is not revoked, or None (for tickets issued by that key)."""
        entry = await self._entry(key_id)
        return entry.tenant if entry else None

    def cached_ids(self) -> list[str]:
        return list(self._cache)

    def forget(self, key_ids: set[str]) -> None:
        for key_id in key_ids:
            self._cache.pop(key_id, None)

"""API keys and WebSocket tickets: their format, generation and digests. Pure, no I/O.

A key reads `cvk_<id>_<secret>`: the id is public (it names the key in listings and lets a
lookup find the one row to compare against); only a SHA-256 digest of the whole key is stored.
Keys carry 256 bits of randomness, so a fast digest is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import TypeGuard

PREFIX = "cvk"
_KEY_RE = re.compile(r"cvk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
TENANT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
TENANT_ID_RULE = "must be 1-100 characters of letters, digits, '_', '.', '-', starting with a letter or digit"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """A fresh key: (key id, the key to show once, its digest to store)."""
    key_id = secrets.token_hex(8)
    key = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, digest(key)


def key_id_of(raw: str) -> str | None:
    """The id of a well-formed key, or None: a malformed key costs no lookup."""
    match = _KEY_RE.fullmatch(raw)
    return match[1] if match else None


def matches(raw: str, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(raw), stored_digest)


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def new_ticket() -> tuple[str, str]:
    """A WebSocket ticket: (the ticket for the client, the digest Redis keeps it under)."""
    ticket = secrets.token_urlsafe(32)
    return ticket, digest(ticket)


def valid_tenant_id(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and TENANT_ID_RE.fullmatch(value) is not None

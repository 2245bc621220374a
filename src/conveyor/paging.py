"""Keyset cursors for GET /jobs: the last job of a page, as an opaque token that the next page
starts after. Pure: no I/O.

A list is ordered newest first by (created_at, id), so a walk with cursors neither skips nor
repeats a job while new ones arrive (they come before the first page), however deep it goes.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

MAX_CURSOR_CHARS = 200


def encode(created_at: datetime, job_id: str) -> str:
    text = f"{created_at.isoformat(timespec='microseconds')}|{job_id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(token: str) -> tuple[datetime, str] | None:
    """The (created_at, id) a cursor names, or None when it is not one of ours."""
    if not token or len(token) > MAX_CURSOR_CHARS:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, _, job_id = text.partition("|")
        at = datetime.fromisoformat(when)
        parsed = str(uuid.UUID(job_id))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if at.tzinfo is None:
        return None
    return at, parsed

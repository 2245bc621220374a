"""A Python client for a conveyor node (or nginx in front of nodes): `Client` (blocking) and
`AsyncClient` (under trio or asyncio, through anyio).

    from conveyor.client import Client

    with Client("http://127.0.0.1:3000", api_key="cvk_…") as client:
        job_id = client.submit("sleep", {"delayMs": 100})
        job = client.wait(job_id, timeout=30)        # from the feed, not by polling
        print(job.status, job.attempts)

Every answer that is not a success raises ApiError (or the subclass for its status) carrying the
status, the API's message and its details. `events()` iterates over the tenant's feed and
resumes across reconnects from the last eventId it gave, as `conveyor watch` does; both clients
share the request descriptions and the feed's rules below, so they cannot drift apart.
"""

from __future__ import annotations

from .clients import AsyncClient, Client
from .errors import (
    ApiError,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from .records import TERMINAL, Event, Job, Schedule, Stats

__all__ = [
    "TERMINAL", "ApiError", "AsyncClient", "Client", "Conflict", "Event", "Forbidden", "Invalid", "Job",
    "NotFound", "RateLimited", "Schedule", "Stats", "Unauthorized", "Unavailable", "WaitTimeout",
]

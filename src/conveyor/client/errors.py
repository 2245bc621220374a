"""What a client call raises when the node answers with an error: ApiError, or the subclass for
its status, with the API's message and details."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """The node answered with an error: its status, message and details (field problems)."""

    def __init__(self, status: int, message: str, details: list[dict[str, Any]] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}" + "".join(
            f"; {d.get('field')}: {d.get('message')}" for d in details or ()))
        self.status = status
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


class Invalid(ApiError):
    """400: the request is wrong; details name each field."""


class Unauthorized(ApiError):
    """401: no key, or not a valid one."""


class Forbidden(ApiError):
    """403."""


class NotFound(ApiError):
    """404: no such job for this key's tenant."""


class Conflict(ApiError):
    """409: the job's state does not allow it (cancel an ended job, retry a running one)."""


class RateLimited(ApiError):
    """429: a limit of the tenant; retry_after says when to try again."""


class Unavailable(ApiError):
    """503: the node is busy or its storage is; retry_after says when to try again."""


ERRORS: dict[int, type[ApiError]] = {
    400: Invalid, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    422: Conflict, 429: RateLimited, 503: Unavailable,
}


class WaitTimeout(TimeoutError):
    """wait() gave up before the job ended."""

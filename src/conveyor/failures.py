"""What a store call can fail with, as every layer above the stores sees it."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The store cannot be reached right now; callers answer 503 or retry later."""


class DataRefused(Exception):
    """The store refused the values of a write (not an outage): retrying them cannot help.
    Callers that write a batch find the item it is about and answer or fail only that one."""


class Busy(Exception):
    """The node cannot take more work right now (503)."""

"""Embedded PostgreSQL and Valkey: what `conveyor serve` runs when DATABASE_URL or REDIS_URL is
unset (see services.py)."""

from .servers import EmbeddedError
from .services import DataDirError, embedded_services

__all__ = ["DataDirError", "EmbeddedError", "embedded_services"]

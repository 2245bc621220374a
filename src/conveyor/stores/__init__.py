"""The stores: PostgreSQL (the truth) and Redis (the dispatch index), both behind threads."""

from ..failures import DataRefused, StoreUnavailable
from .postgres import PostgresStore
from .redis import RedisStore

__all__ = ["DataRefused", "PostgresStore", "RedisStore", "StoreUnavailable"]

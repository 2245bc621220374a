"""The stores: PostgreSQL (the truth) and Redis (the dispatch index), both behind threads."""

from .postgres import PostgresStore, StoreUnavailable
from .redis import RedisStore

__all__ = ["PostgresStore", "RedisStore", "StoreUnavailable"]

"""conveyor: a multi-tenant job queue service on trio, PostgreSQL and Redis."""

from .config import Config, ConfigError, from_env
from .handlers import FieldError, Handler, JobFailed, Registry
from .model import Envelope, Status
from .node import Node, run_node

__all__ = [
    "Config",
    "ConfigError",
    "Envelope",
    "FieldError",
    "Handler",
    "JobFailed",
    "Node",
    "Registry",
    "Status",
    "from_env",
    "run_node",
]

"""Node configuration read from the environment.

Owns parsing and checking of every setting; an invalid value raises ConfigError naming the
setting, which the CLI turns into one line and exit code 2. It must not open connections.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

import attrs


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@attrs.frozen
class Config:
    database_url: str = ""  # unset: the embedded PostgreSQL of data_dir
    redis_url: str = ""  # unset: the embedded Valkey of data_dir
    data_dir: str = ""  # unset: the user's data directory (platformdirs), e.g. ~/.local/share/conveyor
    embedded: str = "auto"
    host: str = "127.0.0.1"
    port: int = 3000
    redis_prefix: str = "conveyor"
    concurrency: int = 32
    lease_seconds: float = 30.0
    max_attempts: int = 3
    backoff_base_ms: int = 1000
    backoff_cap_ms: int = 300_000
    max_body_bytes: int = 1024 * 1024
    body_budget_bytes: int = 32 * 1024 * 1024
    drain_grace_seconds: float = 30.0
    ws_send_queue: int = 1024
    writer_queue: int = 256
    pg_pool_size: int = 8
    redis_pool_size: int = 16
    redis_cluster: str = "auto"
    redis_shards: int = 0  # 0: 1 on a single Redis, shards.CLUSTER_DEFAULT_SHARDS on a cluster
    smtp_url: str = ""
    outbox_dir: str = "outbox"
    handler_modules: tuple[str, ...] = ()
    sleep_max_ms: int = 600_000
    node_id: str = ""
    reconcile_seconds: float = 5.0
    auth: bool = True
    admin_key: str = ""
    ws_origins: tuple[str, ...] = ()
    webhook_allow_private: bool = False
    access_log: bool = True
    webhook_allow_networks: tuple[str, ...] = ()
    tenant_max_running: int = 0
    tenant_submit_rate: float = 1000.0
    tenant_submit_burst: int = 5000
    tenant_max_queued: int = 100_000
    tenant_max_websockets: int = 100
    tenant_max_queued_bytes: int = 256 * 1024 * 1024
    tenant_read_rate: float = 50.0
    tenant_read_burst: int = 100
    retention_seconds: int = 7 * 86_400
    tenant_max_schedules: int = 100
    auth_refresh_seconds: float = 2.0
    idempotency_seconds: float = 86_400.0
    feed_retention_events: int = 10_000
    feed_retention_seconds: float = 3_600.0
    progress_interval_ms: int = 500
    ws_ping_seconds: float = 20.0
    ws_idle_timeout_seconds: float = 60.0


def _int_in(low: int, high: int, what: str) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise ConfigError(f"{name} must be {what}, got {raw!r}")
        return value

    return parse


_positive_int = _int_in(1, 2**31 - 1, "a positive integer")
_limit = _int_in(0, 2**31 - 1, "an integer >= 0 (0: no limit)")
_shards = _int_in(0, 1024, "an integer from 0 to 1024 (0: the mode's default)")
_port = _int_in(0, 65535, "a port number 0-65535")


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a positive number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number, got {raw!r}")
    return value


def _url(schemes: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme not in schemes:
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}, got {raw!r}")
        return raw

    return parse


def _prefix(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", raw):
        raise ConfigError(f"{name} must be 1-64 characters of letters, digits, '_.:-', got {raw!r}")
    return raw


def _text(name: str, raw: str) -> str:
    return raw


def _auto_on_off(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in ("auto", "on", "off"):
        raise ConfigError(f"{name} must be auto, on or off, got {raw!r}")
    return value


def _zero_or_more(what: str) -> Callable[[str, str], float]:
    """A finite number >= 0; `what` says what it is and what 0 means."""

    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 <= value < float("inf"):
            raise ConfigError(f"{name} must be {what}, got {raw!r}")
        return value

    return parse


_rate = _zero_or_more("a number >= 0 (0: no limit)")
_seconds_or_off = _zero_or_more("a number of seconds >= 0 (0: off)")


def _switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value not in ("on", "off", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"{name} must be on or off, got {raw!r}")
    return value in ("on", "true", "1", "yes")


def _secret(name: str, raw: str) -> str:
    if len(raw) < 24:
        raise ConfigError(f"{name} must be at least 24 characters (use a random string)")
    return raw


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if not re.fullmatch(r"https?://[^/\s]+", origin):
            raise ConfigError(f"{name} must be a comma-separated list of origins like https://app.example.com, got {origin!r}")
    return origins


def _networks(name: str, raw: str) -> tuple[str, ...]:
    nets = tuple(n.strip() for n in raw.split(",") if n.strip())
    for net in nets:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{name} must be a comma-separated list of networks like 10.1.0.0/16, got {net!r}") from None
    return nets


def _modules(name: str, raw: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in raw.split(",") if m.strip())
    for mod in mods:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", mod):
            raise ConfigError(f"{name} must be a comma-separated list of module names, got {raw!r}")
    return mods


# environment variable -> (Config field, parser, description for the README table)
SETTINGS: dict[str, tuple[str, Callable[[str, str], Any], str]] = {
    "DATABASE_URL": ("database_url", _url(("postgresql", "postgres")), "PostgreSQL connection URL (unset: an embedded PostgreSQL)"),
    "REDIS_URL": ("redis_url", _url(("redis", "rediss", "unix")), "Redis connection URL (unset: an embedded Valkey)"),
    "CONVEYOR_DATA_DIR": ("data_dir", _text, "where the embedded servers keep their data (unset: the user's data directory, ~/.local/share/conveyor)"),
    "CONVEYOR_EMBEDDED": ("embedded", _auto_on_off, "embedded servers for an unset URL: auto (on a loopback bind only), on, or off"),
    "CONVEYOR_HOST": ("host", _text, "address to bind (overridden by --host)"),
    "CONVEYOR_PORT": ("port", _port, "port to bind (overridden by --port; 0 picks a free one)"),
    "CONVEYOR_REDIS_PREFIX": ("redis_prefix", _prefix, "prefix of every Redis key"),
    "CONVEYOR_CONCURRENCY": ("concurrency", _positive_int, "executor pool size (jobs running at once)"),
    "CONVEYOR_LEASE_SECONDS": ("lease_seconds", _positive_float, "lease length of a claimed job"),
    "CONVEYOR_MAX_ATTEMPTS": ("max_attempts", _positive_int, "default attempts per job"),
    "CONVEYOR_BACKOFF_BASE_MS": ("backoff_base_ms", _positive_int, "first retry delay (doubles each attempt, jittered)"),
    "CONVEYOR_BACKOFF_CAP_MS": ("backoff_cap_ms", _positive_int, "longest retry delay"),
    "CONVEYOR_MAX_BODY_BYTES": ("max_body_bytes", _positive_int, "request body limit (413 above it)"),
    "CONVEYOR_BODY_BUDGET_BYTES": ("body_budget_bytes", _positive_int, "request bodies in flight on a node, in bytes (a quarter per tenant); beyond it 503"),
    "CONVEYOR_DRAIN_GRACE_SECONDS": ("drain_grace_seconds", _positive_float, "time running jobs get to finish on SIGTERM"),
    "CONVEYOR_WS_SEND_QUEUE": ("ws_send_queue", _positive_int, "messages buffered per WebSocket before it is closed as too slow"),
    "CONVEYOR_WRITER_QUEUE": ("writer_queue", _positive_int, "submissions waiting for group commit before 503"),
    "CONVEYOR_PG_POOL_SIZE": ("pg_pool_size", _positive_int, "PostgreSQL connections per node"),
    "CONVEYOR_REDIS_POOL_SIZE": ("redis_pool_size", _positive_int, "Redis connections per node and client (on a single Redis a node has two clients: up to twice this)"),
    "CONVEYOR_REDIS_CLUSTER": ("redis_cluster", _auto_on_off, "REDIS_URL names a Redis or Valkey Cluster: auto (ask the server), on, or off"),
    "CONVEYOR_REDIS_SHARDS": ("redis_shards", _shards, "shards of the dispatch index, the same on every node (0: 1 on a single Redis, 6 on a cluster); changing it takes `conveyor redis rebuild --wipe`"),
    "CONVEYOR_SMTP_URL": ("smtp_url", _url(("smtp", "smtps")), "SMTP server for email jobs (smtp://user:pass@host:port)"),
    "CONVEYOR_OUTBOX_DIR": ("outbox_dir", _text, "where email jobs are written when no SMTP server is set"),
    "CONVEYOR_HANDLER_MODULES": ("handler_modules", _modules, "extra modules that register job handlers"),
    "CONVEYOR_SLEEP_MAX_MS": ("sleep_max_ms", _positive_int, "largest delayMs a sleep job accepts"),
    "CONVEYOR_NODE_ID": ("node_id", _text, "name of this node in leases (default host:pid)"),
    "CONVEYOR_RECONCILE_SECONDS": ("reconcile_seconds", _positive_float, "how often Redis is checked against PostgreSQL and repaired"),
    "CONVEYOR_AUTH": ("auth", _switch, "require API keys (off is allowed only on a loopback bind, for development)"),
    "CONVEYOR_ADMIN_KEY": ("admin_key", _secret, "key of the admin HTTP API (/admin/...); unset disables it"),
    "CONVEYOR_WS_ORIGINS": ("ws_origins", _origins, "origins allowed to open WebSockets (comma-separated); unset allows any"),
    "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": ("webhook_allow_private", _switch, "let webhooks reach loopback and private addresses (trusted deployments, tests)"),
    "CONVEYOR_WEBHOOK_ALLOW_NETWORKS": ("webhook_allow_networks", _networks, "networks webhooks may reach although private (comma-separated CIDRs)"),
    "CONVEYOR_TENANT_MAX_RUNNING": ("tenant_max_running", _limit, "default cap on a tenant's jobs running at once, across all nodes (0: none)"),
    "CONVEYOR_TENANT_SUBMIT_RATE": ("tenant_submit_rate", _rate, "default jobs per second a tenant may submit, shared by all nodes (0: no limit)"),
    "CONVEYOR_TENANT_SUBMIT_BURST": ("tenant_submit_burst", _positive_int, "default burst of the submit rate limit, in jobs"),
    "CONVEYOR_TENANT_MAX_QUEUED": ("tenant_max_queued", _limit, "default cap on a tenant's unfinished jobs (0: none)"),
    "CONVEYOR_TENANT_MAX_WEBSOCKETS": ("tenant_max_websockets", _limit, "default cap on a tenant's open WebSockets per node (0: none)"),
    "CONVEYOR_TENANT_MAX_QUEUED_BYTES": ("tenant_max_queued_bytes", _limit, "default cap on the payload bytes of a tenant's unfinished jobs (0: none)"),
    "CONVEYOR_TENANT_READ_RATE": ("tenant_read_rate", _rate, "default reads per second a tenant may make of one node (0: no limit)"),
    "CONVEYOR_TENANT_READ_BURST": ("tenant_read_burst", _positive_int, "default burst of the read rate limit, in requests"),
    "CONVEYOR_RETENTION_SECONDS": ("retention_seconds", _limit, "finished jobs (COMPLETED, FAILED, CANCELLED) are deleted this long after they finished (0: kept forever); per tenant: retentionSeconds"),
    "CONVEYOR_TENANT_MAX_SCHEDULES": ("tenant_max_schedules", _limit, "default cap on a tenant's recurring schedules (0: none)"),
    "CONVEYOR_AUTH_REFRESH_SECONDS": ("auth_refresh_seconds", _positive_float, "how often revoked keys and tenant limits are re-read"),
    "CONVEYOR_IDEMPOTENCY_SECONDS": ("idempotency_seconds", _positive_float, "how long an Idempotency-Key is remembered"),
    "CONVEYOR_FEED_RETENTION_EVENTS": ("feed_retention_events", _positive_int, "job events kept per tenant for clients that resume (about; whole blocks are trimmed)"),
    "CONVEYOR_FEED_RETENTION_SECONDS": ("feed_retention_seconds", _positive_float, "how long job events are kept for clients that resume"),
    "CONVEYOR_PROGRESS_INTERVAL_MS": ("progress_interval_ms", _positive_int, "at most one JOB_PROGRESS event per job per this interval"),
    "CONVEYOR_WS_PING_SECONDS": ("ws_ping_seconds", _positive_float, "how often the node sends PING on each WebSocket"),
    "CONVEYOR_WS_IDLE_TIMEOUT_SECONDS": ("ws_idle_timeout_seconds", _seconds_or_off, "close a WebSocket that sent nothing (not even PONG) for this long (0: never)"),
    "CONVEYOR_ACCESS_LOG": ("access_log", _switch, "log one line per HTTP request and WebSocket (logger conveyor.access)"),
}


def from_env(environ: Mapping[str, str], **overrides: Any) -> Config:
    """Build a Config from environment variables; unset or empty ones keep their defaults."""
    values: dict[str, Any] = {}
    for env_name, (field, parse, _doc) in SETTINGS.items():
        raw = environ.get(env_name, "")
        if raw.strip():
            values[field] = parse(env_name, raw.strip())
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = Config(**values)
    check(config)
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check(config: Config) -> None:
    """Rules between settings; run_node checks them too, whoever built the Config."""
    if config.body_budget_bytes < config.max_body_bytes:
        raise ConfigError("CONVEYOR_BODY_BUDGET_BYTES must not be smaller than CONVEYOR_MAX_BODY_BYTES")
    if config.backoff_cap_ms < config.backoff_base_ms:
        raise ConfigError("CONVEYOR_BACKOFF_CAP_MS must not be smaller than CONVEYOR_BACKOFF_BASE_MS")
    unset = [name for name, url in (("DATABASE_URL", config.database_url), ("REDIS_URL", config.redis_url)) if not url]
    if unset and config.embedded == "off":
        raise ConfigError(f"{' and '.join(unset)} not set, and CONVEYOR_EMBEDDED=off")
    if unset and config.embedded == "auto" and not is_loopback(config.host):
        raise ConfigError(
            f"{' and '.join(unset)} not set: a node on {config.host!r} would keep its jobs in embedded "
            f"servers on this machine; set {' and '.join(unset)}, or CONVEYOR_EMBEDDED=on if that is what you want"
        )
    if not config.auth and not is_loopback(config.host):
        raise ConfigError(
            f"CONVEYOR_AUTH=off is allowed only on a loopback address (127.0.0.1, ::1, localhost), "
            f"but the node binds {config.host!r}: turn auth on or bind to loopback"
        )

from __future__ import annotations

import subprocess
import sys

import pytest

from conveyor.config import ConfigError, from_env


def test_defaults() -> None:
    config = from_env({})
    assert config.port == 3000
    assert config.host == "127.0.0.1"
    assert config.max_attempts == 3
    assert config.max_body_bytes == 1024 * 1024


EXTERNAL = {"DATABASE_URL": "postgresql://u@db/x", "REDIS_URL": "redis://cache:6379/1"}


def test_auth_is_on_by_default_and_off_only_on_loopback() -> None:
    assert from_env({}).auth is True
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert from_env({"CONVEYOR_AUTH": "off"}, host=host).auth is False
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(ConfigError, match="CONVEYOR_AUTH=off is allowed only on a loopback"):
            from_env({**EXTERNAL, "CONVEYOR_AUTH": "off", "CONVEYOR_HOST": host})
    assert from_env({**EXTERNAL, "CONVEYOR_HOST": "0.0.0.0"}).auth is True


def test_embedded_servers_for_unset_urls_on_loopback_only_unless_meant() -> None:
    assert from_env({}).database_url == "" and from_env({}).redis_url == ""  # embedded ones
    for host in ("0.0.0.0", "10.1.2.3"):
        with pytest.raises(ConfigError, match="DATABASE_URL and REDIS_URL not set: a node on .* CONVEYOR_EMBEDDED=on"):
            from_env({}, host=host)
        with pytest.raises(ConfigError, match="^REDIS_URL not set"):
            from_env({"DATABASE_URL": EXTERNAL["DATABASE_URL"]}, host=host)
        assert from_env({"CONVEYOR_EMBEDDED": "on"}, host=host).embedded == "on"
    with pytest.raises(ConfigError, match="DATABASE_URL not set, and CONVEYOR_EMBEDDED=off"):
        from_env({"CONVEYOR_EMBEDDED": "off", "REDIS_URL": EXTERNAL["REDIS_URL"]})
    with pytest.raises(ConfigError, match="CONVEYOR_EMBEDDED must be auto, on or off"):
        from_env({"CONVEYOR_EMBEDDED": "yes please"})
    assert from_env({**EXTERNAL, "CONVEYOR_EMBEDDED": "off"}, host="0.0.0.0").embedded == "off"


def test_reads_security_settings() -> None:
    config = from_env(
        {
            "CONVEYOR_ADMIN_KEY": "k" * 24,
            "CONVEYOR_WS_ORIGINS": "https://a.example.com, http://localhost:5173/",
            "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "on",
            "CONVEYOR_WEBHOOK_ALLOW_NETWORKS": "10.1.0.0/16,fd00::/8",
            "CONVEYOR_TENANT_SUBMIT_RATE": "2.5",
        }
    )
    assert config.admin_key == "k" * 24
    assert config.ws_origins == ("https://a.example.com", "http://localhost:5173")
    assert config.webhook_allow_private is True
    assert config.webhook_allow_networks == ("10.1.0.0/16", "fd00::/8")
    assert config.tenant_submit_rate == 2.5


def test_reads_reference_and_conveyor_names() -> None:
    config = from_env(
        {
            "DATABASE_URL": "postgresql://u@db/x",
            "REDIS_URL": "redis://cache:6379/1",
            "CONVEYOR_CONCURRENCY": "64",
            "CONVEYOR_LEASE_SECONDS": "12.5",
            "CONVEYOR_HANDLER_MODULES": "a.b, c",
        }
    )
    assert config.database_url == "postgresql://u@db/x"
    assert config.redis_url == "redis://cache:6379/1"
    assert config.concurrency == 64
    assert config.lease_seconds == 12.5
    assert config.handler_modules == ("a.b", "c")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONVEYOR_CONCURRENCY", "zero"),
        ("CONVEYOR_CONCURRENCY", "0"),
        ("CONVEYOR_LEASE_SECONDS", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "localhost:6379"),
        ("CONVEYOR_REDIS_PREFIX", "has space"),
        ("CONVEYOR_PORT", "70000"),
        ("CONVEYOR_HANDLER_MODULES", "not-a-module"),
        ("CONVEYOR_AUTH", "maybe"),
        ("CONVEYOR_ADMIN_KEY", "short"),
        ("CONVEYOR_WS_ORIGINS", "app.example.com"),
        ("CONVEYOR_WEBHOOK_ALLOW_NETWORKS", "10.0.0.0/33"),
        ("CONVEYOR_TENANT_SUBMIT_RATE", "-1"),
        ("CONVEYOR_TENANT_MAX_RUNNING", "-1"),
        ("CONVEYOR_TENANT_SUBMIT_BURST", "0"),
    ],
)
def test_invalid_setting_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})


def run_cli(*args: str, **env: str) -> tuple[int, list[str]]:
    """Run `conveyor` with only these settings (and a data directory that is never used: each
    case fails before it would start an embedded server); returns its exit code and stderr lines."""
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env={"PATH": "/usr/bin:/bin", "CONVEYOR_DATA_DIR": "/nonexistent/conveyor-test", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stderr.strip().splitlines()


@pytest.mark.parametrize(
    ("args", "env", "code", "says"),
    [
        (("migrate",), {"CONVEYOR_CONCURRENCY": "lots"}, 2, "CONVEYOR_CONCURRENCY"),
        (("serve", "--port", "0"), {"CONVEYOR_HANDLER_MODULES": "no_such_module_here"}, 2,
         "CONVEYOR_HANDLER_MODULES"),
        (("serve", "--port", "0"), {**EXTERNAL, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}, 1,
         "conveyor: PostgreSQL unavailable:"),
        (("serve", "--host", "0.0.0.0", "--port", "0"), {**EXTERNAL, "CONVEYOR_AUTH": "off"}, 2,
         "CONVEYOR_AUTH=off is allowed only on a loopback address"),
        (("serve", "--host", "0.0.0.0", "--port", "0"), {}, 2,
         "conveyor: invalid configuration: DATABASE_URL and REDIS_URL not set: a node on '0.0.0.0'"),
    ],
)
def test_cli_failures_exit_with_one_clear_line(
    args: tuple[str, ...], env: dict[str, str], code: int, says: str
) -> None:
    returncode, lines = run_cli(*args, **env)
    assert returncode == code
    assert len(lines) == 1 and says in lines[0], lines

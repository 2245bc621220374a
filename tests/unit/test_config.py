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
    ],
)
def test_invalid_setting_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_env({name: value})


def test_cli_invalid_configuration_exits_2_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "migrate"],
        env={"CONVEYOR_CONCURRENCY": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "CONVEYOR_CONCURRENCY" in lines[0]


def test_cli_unreachable_postgres_exits_1_with_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--port", "0"],
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conveyor: PostgreSQL unavailable:")


def test_cli_unimportable_handler_module_is_a_configuration_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "conveyor", "serve", "--port", "0"],
        env={"CONVEYOR_HANDLER_MODULES": "no_such_module_here", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONVEYOR_HANDLER_MODULES" in lines[0]

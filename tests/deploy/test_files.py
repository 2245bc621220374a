"""The deployment files agree with each other and with the code: services, ports, environment
names, healthchecks and the commands they call all exist. Docker is not run here; systemd's own
verifier checks the unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from conveyor.cli import _parser
from conveyor.config import SETTINGS, Config
from tests.faults.conftest import ROOT

KNOWN_ENV = set(SETTINGS) | {"PYTHONUNBUFFERED"}


def compose(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def test_development_compose_runs_postgres_16_and_redis_7_with_aof() -> None:
    services = compose("docker-compose.yml")["services"]
    assert services["postgres"]["image"] == "postgres:16"
    assert services["redis"]["image"] == "redis:7"
    assert "--appendonly" in services["redis"]["command"]
    assert services["postgres"]["ports"] == ["5432:5432"] and services["redis"]["ports"] == ["6379:6379"]
    for service in services.values():
        assert service["healthcheck"]["test"][0] == "CMD"
    # the ports are the ones the test suite tries first (tests/services.py); a node needs the URLs
    # set to use them (unset, it runs embedded servers)
    chooser = (ROOT / "tests" / "services.py").read_text()
    assert "127.0.0.1:5432" in chooser and "127.0.0.1:6379" in chooser
    assert Config().database_url == "" and Config().redis_url == ""


def test_production_compose_is_consistent() -> None:
    doc = compose("docker-compose.prod.yml")
    services = doc["services"]
    assert set(services) == {"postgres", "redis", "node", "nginx"}
    node = services["node"]
    assert node["build"] == "." and (ROOT / "Dockerfile").exists()
    # scalable with --scale node=N: no fixed name and no host port of its own
    assert "container_name" not in node and "ports" not in node
    for name in node["environment"]:
        assert name in KNOWN_ENV, f"{name} is not a setting conveyor reads"
    assert node["environment"]["CONVEYOR_HOST"] == "0.0.0.0"
    port = node["environment"]["CONVEYOR_PORT"]
    assert "@postgres:5432/" in node["environment"]["DATABASE_URL"]
    assert node["environment"]["REDIS_URL"].startswith("redis://redis:6379/")
    grace = float(node["environment"]["CONVEYOR_DRAIN_GRACE_SECONDS"])
    assert float(node["stop_grace_period"].rstrip("s")) > grace
    for service in services.values():
        for dependency in service.get("depends_on", {}):
            assert dependency in services
    assert services["node"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    # nginx mounts the repository's config, whose upstream is the node service on its port
    (mount,) = services["nginx"]["volumes"]
    source, target = mount.split(":")[:2]
    assert (ROOT / source).exists() and target == "/etc/nginx/nginx.conf"
    assert f"server node:{port} " in (ROOT / source).read_text()
    assert set(doc["volumes"]) == {"pgdata", "redisdata"}


def test_dockerfile_is_multi_stage_non_root_and_checks_readiness() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2 and "COPY --from=build" in text
    (user,) = re.findall(r"^USER (\S+)", text, re.M)
    assert user not in ("root", "0")
    for source in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    env = dict(re.findall(r"(CONVEYOR_\w+)=(\S+)", text))
    assert set(env) <= KNOWN_ENV
    assert re.search(rf"^EXPOSE {env['CONVEYOR_PORT']}$", text, re.M)
    health = re.search(r"HEALTHCHECK .*?CMD (\[.*\])", text, re.S)
    assert health and f"127.0.0.1:{env['CONVEYOR_PORT']}/health/ready" in health[1]
    assert re.search(r'^ENTRYPOINT \["conveyor"\]$', text, re.M)
    assert 'conveyor = "conveyor.cli:main"' in (ROOT / "pyproject.toml").read_text()
    (cmd,) = re.findall(r'^CMD \["(\w+)"\]$', text, re.M)
    assert _parser().parse_args([cmd]).command == "serve"


def test_the_readiness_route_the_healthchecks_call_exists() -> None:
    routes = (ROOT / "src" / "conveyor" / "web" / "health.py").read_text()
    assert '@app.get("/health/ready")' in routes


def unit_for_this_machine(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at this checkout's conveyor, as an install would."""
    conveyor = Path(sys.executable).parent / "conveyor"
    assert conveyor.exists()
    text = text.replace("/opt/conveyor/.venv/bin/conveyor", str(conveyor))
    text = text.replace("EnvironmentFile=/etc/conveyor/conveyor.env", f"EnvironmentFile={ROOT}/supervisors/conveyor.env")
    path = tmp_path / "conveyor.service"
    path.write_text(text)
    return path


def verify(unit: Path) -> str:
    done = subprocess.run(
        [shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    return (done.stdout + done.stderr).strip() + ("" if done.returncode == 0 else f"\nexit {done.returncode}")


def test_systemd_unit(tmp_path: Path) -> None:
    text = (ROOT / "supervisors" / "conveyor.service").read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    assert settings["KillSignal"] == "SIGTERM" and settings["Restart"] == "on-failure"
    assert float(settings["TimeoutStopSec"]) > Config().drain_grace_seconds
    assert settings["ExecStart"].endswith("conveyor serve") and settings["NoNewPrivileges"] == "yes"
    env_names = [line.split("=", 1)[0] for line in (ROOT / "supervisors" / "conveyor.env").read_text().splitlines()
                 if line and not line.startswith("#")]
    assert env_names and set(env_names) <= KNOWN_ENV
    if shutil.which("systemd-analyze") is None:
        return  # the static checks above still ran; the verifier is not on this machine
    assert verify(unit_for_this_machine(tmp_path, text)) == ""
    # and the verifier does complain about a broken unit, so an empty answer means something
    broken = unit_for_this_machine(tmp_path, text.replace("KillSignal=SIGTERM", "KillSignal=SIGNOPE"))
    assert "SIGNOPE" in verify(broken)


def test_supervisord_program() -> None:
    text = (ROOT / "supervisors" / "supervisord.conf").read_text()
    settings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith(";"))
    assert settings["command"].endswith("conveyor serve") and settings["stopsignal"] == "TERM"
    assert float(settings["stopwaitsecs"]) > Config().drain_grace_seconds
    assert {"0", "2"} <= set(settings["exitcodes"].split(","))
    for name in re.findall(r"(\w+)=\"", settings["environment"]):
        assert name in KNOWN_ENV


def test_help_says_its_whole_first_paragraph() -> None:
    # `conveyor --help` once stopped mid-sentence ("… `tenants` and"), cut at the first blank line
    text = _parser().format_help()
    description = text.split("\n\n")[1]
    assert " ".join(description.split()).endswith("rebuilds the dispatch index from PostgreSQL."), description

"""README.md stays true: its curl examples run against a real node, its table lists every setting."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import trio

from conveyor.config import SETTINGS, Config
from conveyor.node import Node
from tests.helpers import base_url, new_tenant

README = Path(__file__).resolve().parents[2] / "README.md"


def curl_commands() -> list[str]:
    text = README.read_text()
    section = text.split("## HTTP API", 1)[1].split("## WebSocket feed", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's HTTP API section has a bash block of curl examples"
    joined = block[1].replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip().startswith("curl ")]


async def test_readme_curl_examples_work(start_node: Any) -> None:
    node: Node = await start_node(auth=True)
    key = await new_tenant(node, "tenant-1")
    commands = curl_commands()
    assert len(commands) >= 4 and all("$KEY" in c for c in commands if "/jobs" in c)
    with trio.fail_after(30):
        for command in commands:
            command = command.replace("http://localhost:3000", base_url(node)).replace("$KEY", key)
            argv = shlex.split(command)
            argv[1:1] = ["-sS", "-w", "\n%{http_code}"]
            done = await trio.run_process(argv, capture_stdout=True, check=False)
            assert done.returncode == 0, command
            body, _, status = done.stdout.decode().rpartition("\n")
            assert status in ("200", "201"), (command, status, body)
            json.loads(body)


def test_readme_lists_every_setting_with_its_default() -> None:
    text = README.read_text()
    defaults = Config()
    for name, (field, _parse, doc) in SETTINGS.items():
        default = getattr(defaults, field)
        if isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = (",".join(default) if isinstance(default, tuple) else str(default)) or "(none)"
        assert f"| `{name}` | `{shown}` | {doc} |" in text, name
    assert "./scripts/serve" in text and "./scripts/test" in text

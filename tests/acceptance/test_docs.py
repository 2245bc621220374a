"""The examples of docs/api.md run against a real node: its bash blocks (each must exit 0) and
its WebSocket session (each line sent, each answer checked)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import trio
from trio_websocket import open_websocket_url

from conveyor.node import Node
from tests.helpers import base_url, new_tenant

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
CLIENT_DOC = DOC.with_name("client.md")


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(), re.S)


async def test_api_doc_bash_examples_run(start_node: Any) -> None:
    node: Node = await start_node(auth=True)
    key = await new_tenant(node, "tenant-1")
    examples = blocks("bash")
    assert len(examples) >= 5
    with trio.fail_after(60):
        for example in examples:
            script = "set -euo pipefail\n" + example.replace("http://localhost:3000", base_url(node))
            done = await trio.run_process(
                ["bash", "-c", script], env={**os.environ, "KEY": key},
                capture_stdout=True, capture_stderr=True, check=False,
            )
            assert done.returncode == 0, (example, done.stdout, done.stderr)


def matches(expected: dict[str, Any], got: dict[str, Any]) -> bool:
    return expected.keys() == got.keys() and all(
        v == "…" or got[k] == v for k, v in expected.items()
    )


async def test_api_doc_websocket_session_runs(start_node: Any) -> None:
    node: Node = await start_node(auth=True)
    key = await new_tenant(node, "tenant-1")
    (session,) = blocks("text")
    lines = [line for line in session.splitlines() if line.strip()]
    assert lines and all(line[:2] in ("> ", "< ") for line in lines)
    url = base_url(node).replace("http://", "ws://") + "/ws"
    with trio.fail_after(20):
        async with open_websocket_url(url) as ws:
            for line in lines:
                message = line[2:].replace("$KEY", key)
                if line.startswith("> "):
                    await ws.send_message(message)
                else:
                    got = json.loads(await ws.get_message())
                    assert matches(json.loads(message), got), (line, got)


def test_configuration_doc_lists_every_setting_with_a_valid_example() -> None:
    from conveyor.config import SETTINGS, Config

    text = (DOC.parent / "configuration.md").read_text()
    defaults = Config()
    for name, (field, parse, doc) in SETTINGS.items():
        row = re.search(rf"^\| `{name}` \| `([^`]*)` \| `([^`]*)` \| (.*) \|$", text, re.M)
        assert row, name
        default = getattr(defaults, field)
        if isinstance(default, bool):
            shown = "on" if default else "off"
        else:
            shown = (",".join(default) if isinstance(default, tuple) else str(default)) or "(none)"
        assert row[1] == shown and row[3] == doc, name
        parse(name, row[2])  # raises ConfigError if the example is not a valid value


def test_no_heading_is_left_empty() -> None:
    # README once had "## Inside a node" followed at once by the next heading (issue 14)
    root = Path(__file__).resolve().parents[2]
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # '#' in code is not a heading
        lines = [line for line in text.splitlines() if line.strip()]
        for here, after in zip(lines, lines[1:], strict=False):
            if here.startswith("#") and after.startswith("#"):
                assert after.count("#", 0, after.index(" ")) > here.count("#", 0, here.index(" ")), (
                    f"{path.name}: {here!r} has nothing under it before {after!r}")


async def test_client_doc_examples_run(start_node: Any, tenant: str) -> None:
    # docs/client.md's Python blocks, run as written against a real node (URL and KEY given)
    node: Node = await start_node(auth=True, max_attempts=1)
    key = await new_tenant(node, tenant)
    text = CLIENT_DOC.read_text()  # noqa: ASYNC240  (a small file, read once)
    examples = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(examples) == 2

    def run(source: str) -> None:
        exec(compile(source, "docs/client.md", "exec"), {"URL": base_url(node), "KEY": key})

    with trio.fail_after(60):
        for source in examples:
            # abandoned on timeout: an example that waits forever fails here instead of hanging
            await trio.to_thread.run_sync(run, source, abandon_on_cancel=True)

"""Every job type end to end through a real node: webhook against a local HTTP server, email
against a local SMTP sink and the outbox, data_processing results, retries and timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from aiosmtpd.controller import Controller

from conveyor.node import Node
from tests.conftest import free_port
from tests.helpers import base_url, wait_until


class HookServer:
    """A local HTTP server whose paths answer as the tests need; it records every hit."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}
        self.bodies: list[bytes] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                server.bodies.append(self.rfile.read(length))
                self.do_GET()

            def do_GET(self) -> None:
                hits = server.hits.setdefault(self.path, [])
                hits.append(time.monotonic())
                if self.path == "/ok":
                    status, body = 200, b'{"hello": "world"}'
                elif self.path == "/flaky":
                    status, body = (500, b"boom") if len(hits) == 1 else (200, b"recovered")
                elif self.path == "/big":
                    status, body = 200, b"y" * 100_000
                elif self.path == "/html501":
                    status = 501
                    body = b"<!DOCTYPE html>\n<html>\n  <head><title>501</title></head>\n" + b"  <p>not here</p>\n" * 200 + b"</html>\n"
                elif self.path == "/slow":
                    time.sleep(3)
                    status, body = 200, b"late"
                else:
                    status, body = 500, b"always broken"
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hooks() -> Iterator[HookServer]:
    server = HookServer()
    yield server
    server.close()


class Sink:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


async def submit(client: httpx.AsyncClient, tenant: str, type_: str, payload: Any, **extra: Any) -> str:
    r = await client.post("/jobs", json={"tenantId": tenant, "type": type_, "payload": payload, **extra})
    assert r.status_code == 201, r.text
    return r.json()["jobId"]


async def finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    async def terminal() -> dict[str, Any] | None:
        job = (await client.get(f"/jobs/{job_id}")).json()
        return job if job["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None

    return await wait_until(terminal)


async def test_webhook_success_stores_status_and_excerpt(node: Node, tenant: str, hooks: HookServer) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(
                client, tenant, "webhook",
                {"url": f"{hooks.url}/ok", "method": "POST", "body": {"n": 1},
                 "headers": {"X-Test": "yes"}},
            )
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED" and job["attempts"] == 1
    assert job["result"] == {"status": 200, "body": '{"hello": "world"}'}
    assert hooks.bodies == [b'{"n":1}']


async def test_webhook_500_then_success_is_retried(node: Node, tenant: str, hooks: HookServer) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "webhook", {"url": f"{hooks.url}/flaky", "method": "GET"})
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED"
    assert job["attempts"] == 2
    assert job["result"]["body"] == "recovered"
    assert len(hooks.hits["/flaky"]) == 2


async def test_retries_back_off_and_end_failed_with_the_last_error(
    start_node: Any, tenant: str, hooks: HookServer
) -> None:
    node = await start_node(backoff_base_ms=200, backoff_cap_ms=10_000)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "webhook", {"url": f"{hooks.url}/broken", "method": "GET"})
            job = await finished(client, job_id)
    assert job["status"] == "FAILED"
    assert job["attempts"] == 3
    assert "HTTP 500" in job["error"] and "always broken" in job["error"]
    assert job["runAt"] > job["createdAt"]  # each retry was due later than the submission
    hits = hooks.hits["/broken"]
    assert len(hits) == 3
    # equal jitter: the wait after attempt n is at least half of base * 2^(n-1)
    assert hits[1] - hits[0] >= 0.1
    assert hits[2] - hits[1] >= 0.2


async def test_a_webhook_error_keeps_one_bounded_line_of_the_answer(
    start_node: Any, tenant: str, hooks: HookServer
) -> None:
    # a 501 answering a page of HTML used to store many lines of it as the job's error
    node = await start_node(max_attempts=1)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "webhook", {"url": f"{hooks.url}/html501", "method": "GET"})
            job = await finished(client, job_id)
    assert job["status"] == "FAILED"
    assert job["error"].startswith("webhook answered HTTP 501: <!DOCTYPE html> <html> <head><title>501")
    assert "\n" not in job["error"] and job["error"].endswith("…")
    assert len(job["error"]) <= len("webhook answered HTTP 501: ") + 200


async def test_webhook_timeout_fails_after_max_attempts(node: Node, tenant: str, hooks: HookServer) -> None:
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(
                client, tenant, "webhook", {"url": f"{hooks.url}/slow", "method": "GET"},
                timeoutMs=300, maxAttempts=2,
            )
            job = await finished(client, job_id)
    assert job["status"] == "FAILED" and job["attempts"] == 2
    assert job["error"] == "timed out after 300 ms"


async def test_sleep_honours_its_timeout(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "sleep", {"delayMs": 60_000}, timeoutMs=100, maxAttempts=1)
            job = await finished(client, job_id)
    assert job["status"] == "FAILED" and job["error"] == "timed out after 100 ms"


async def test_email_is_delivered_over_smtp(start_node: Any, tenant: str, smtp_sink: Any) -> None:
    sink, port = smtp_sink
    node = await start_node(smtp_url=f"smtp://127.0.0.1:{port}")
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(
                client, tenant, "email", {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada"}
            )
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED", job
    assert job["result"]["delivered"] == "smtp"
    assert len(sink.messages) == 1
    envelope = sink.messages[0]
    assert envelope.rcpt_tos == ["ada@example.com"]
    msg = message_from_bytes(envelope.content)
    assert msg["Subject"] == "Hi" and msg.get_payload().strip() == "Hello Ada"
    assert msg["X-Conveyor-Job"] == f"{job_id}/1"


async def test_email_smtp_down_is_retried_then_failed(start_node: Any, tenant: str) -> None:
    node = await start_node(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(
                client, tenant, "email", {"to": "a@example.com", "subject": "s", "body": "b"}, maxAttempts=2
            )
            job = await finished(client, job_id)
    assert job["status"] == "FAILED" and job["attempts"] == 2
    assert "SMTP delivery failed" in job["error"]


async def test_email_without_smtp_goes_to_the_outbox(start_node: Any, tenant: str, tmp_path: Path) -> None:
    node = await start_node(outbox_dir=str(tmp_path / "outbox"))
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(
                client, tenant, "email", {"to": ["a@example.com", "b@example.com"], "subject": "S", "body": "B"}
            )
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED"
    path = Path(job["result"]["path"])
    assert path.parent == tmp_path / "outbox"
    msg = message_from_bytes(await trio.Path(path).read_bytes())
    assert msg["To"] == "a@example.com, b@example.com" and msg["Subject"] == "S"


async def test_data_processing_result_is_returned(node: Node, tenant: str) -> None:
    records = [{"team": "a", "ms": 10}, {"team": "b", "ms": 30}, {"team": "a", "ms": 20}]
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            plain = await submit(client, tenant, "data_processing",
                                 {"records": records, "operation": "mean", "field": "ms"})
            grouped = await submit(client, tenant, "data_processing",
                                   {"records": records, "operation": "max", "field": "ms", "groupBy": "team"})
            plain_job = await finished(client, plain)
            grouped_job = await finished(client, grouped)
    assert plain_job["status"] == "COMPLETED"
    assert plain_job["result"]["value"] == 20
    assert grouped_job["result"]["groups"] == {"a": 20, "b": 30}


async def test_non_retryable_failure_ends_at_once(node: Node, tenant: str) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "data_processing",
                                  {"records": [{"v": "x"}], "operation": "sum", "field": "v"})
            job = await finished(client, job_id)
    assert job["status"] == "FAILED" and job["attempts"] == 1
    assert "non-numeric" in job["error"]


async def test_a_deployment_adds_its_own_job_type(start_node: Any, tenant: str) -> None:
    node = await start_node(handler_modules=("tests.integration.extra_handlers",))
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs", json={"tenantId": tenant, "type": "echo", "payload": {"text": 1}})
            assert r.status_code == 400 and r.json()["details"][0]["field"] == "payload.text"
            job_id = await submit(client, tenant, "echo", {"text": "hi"})
            job = await finished(client, job_id)
    assert job["result"] == {"echo": "hi", "attempt": 1, "tenant": tenant}
    assert job["timeoutMs"] == 1000


async def test_inline_handlers_run_to_their_end(start_node: Any, tenant: str) -> None:
    node = await start_node(handler_modules=("tests.integration.extra_handlers",))
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            noop = await finished(client, await submit(client, tenant, "noop", {"any": ["thing"]}))
            shout = await finished(client, await submit(client, tenant, "shout", {"text": "hi"}))
            failed = await finished(client, await submit(client, tenant, "shout", {"text": "fail"}))
    assert (noop["status"], noop["result"], noop["attempts"]) == ("COMPLETED", None, 1)
    assert (shout["status"], shout["result"]) == ("COMPLETED", "HI")
    assert (failed["status"], failed["error"], failed["attempts"]) == ("FAILED", "asked to fail", 1)


async def test_a_batch_of_inline_jobs_runs_through_the_fetcher(node: Node, tenant: str) -> None:
    # more jobs than executors: the writer claims what the idle ones take, the fetcher the rest
    # (and runs them itself, executor.InlineJobs)
    n = node.config.concurrency * 3
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            r = await client.post("/jobs/batch", json={"jobs": [
                {"tenantId": tenant, "type": "noop", "payload": {"n": k}} for k in range(n)]})
            assert r.status_code == 201, r.text
            jobs = [await finished(client, job_id) for job_id in r.json()["jobIds"]]
        assert {(job["status"], job["attempts"], job["result"]) for job in jobs} == {("COMPLETED", 1, None)}
        # every slot back; the leases go once Redis has the outcomes too (after PostgreSQL)
        await wait_until(lambda: node.pool.busy() == 0 and node.pool.leases == {})


async def test_webhook_result_excerpt_is_bounded(node: Node, tenant: str, hooks: HookServer) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "webhook", {"url": f"{hooks.url}/big", "method": "GET"})
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED"
    assert job["result"]["body"] == "y" * 2048


async def test_heartbeat_keeps_a_job_longer_than_its_lease(start_node: Any, tenant: str) -> None:
    node = await start_node(lease_seconds=1.2)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=base_url(node)) as client:
            job_id = await submit(client, tenant, "sleep", {"delayMs": 3000})
            job = await finished(client, job_id)
    assert job["status"] == "COMPLETED" and job["attempts"] == 1


async def test_a_deadline_ends_an_attempt_running_in_a_thread(node: Node, tenant: str) -> None:
    records = [{"v": i, "g": i % 7} for i in range(40_000)]
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=base_url(node), timeout=20) as client:
            job_id = await submit(
                client, tenant, "data_processing",
                {"records": records, "operation": "mean", "field": "v", "groupBy": "g"},
                timeoutMs=1, maxAttempts=1,
            )
            job = await finished(client, job_id)
    assert job["status"] == "FAILED" and job["error"] == "timed out after 1 ms"

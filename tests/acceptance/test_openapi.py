"""schemathesis against a live `conveyor serve` with auth on, driven by its /openapi.json (issue 14):
every answer is no server error, has a status code, content type and body the document declares,
and the node's log holds no traceback. Once with a tenant's key over the job API, once with the
admin key over /admin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.nodes import Target, served_with_auth
from tests.helpers import ADMIN_KEY

pytestmark = pytest.mark.slow
EXAMPLES = os.environ.get("CONVEYOR_SCHEMATHESIS_EXAMPLES", "25")
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def target(template_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with served_with_auth(template_database, tmp_path_factory) as served:
        yield served


def _schemathesis(target: Target, key: str, paths: str, tmp_path: Path, job_id: str | None = None
                  ) -> subprocess.CompletedProcess[str]:
    """One run; with job_id, every {jobId} is that job's (else the ids are generated: 404s).
    One worker: CPython 3.11's ast.parse is not thread-safe (its recursion-depth check races,
    SystemError "AST constructor recursion depth mismatch"), and hypothesis parses lambdas."""
    program = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert program, "schemathesis is a test dependency (pyproject's test extra)"
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\njobId = "{job_id}"\n' if job_id else "")
    return subprocess.run(
        [program, "--config-file", str(config), "run", f"{target.url}/openapi.json", "--checks", CHECKS,
         "--header", f"Authorization: Bearer {key}", "--include-path-regex", paths, "--max-examples", EXAMPLES,
         "--seed", "14", "--workers", "1", "--phases", "examples,coverage,fuzzing", "--request-timeout", "10",
         "--no-color", "--generation-database", "none", "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )


def _seed_jobs(target: Target) -> list[str]:
    """A job of each end, so that lists and reads answer real records: COMPLETED, FAILED
    (a sum over a text field), CANCELLED, and one still PENDING or RUNNING."""
    headers = target.headers()
    bodies = [
        {"type": "sleep", "payload": {"delayMs": 1}},
        {"type": "data_processing", "payload": {"records": [{"v": "x"}], "operation": "sum", "field": "v"}},
        {"type": "sleep", "payload": {"delayMs": 1000}},
        {"type": "sleep", "payload": {"delayMs": 1000}},
    ]
    with httpx.Client(base_url=target.url, headers=headers, timeout=10) as http:
        ids = [target.check(http.post("/jobs", json=body)).json()["jobId"] for body in bodies]
        target.check(http.post(f"/jobs/{ids[2]}/cancel"))
        deadline = time.monotonic() + 20
        while {http.get(f"/jobs/{i}").json()["status"] for i in ids[:2]} != {"COMPLETED", "FAILED"}:
            assert time.monotonic() < deadline, "the seed jobs did not end"
            time.sleep(0.05)
    return ids


def _passes(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert " passed" in done.stdout, done.stdout[-3000:]


def test_the_job_api_answers_as_its_document_says(target: Target, tmp_path: Path) -> None:
    document = httpx.get(f"{target.url}/openapi.json").json()
    assert document["openapi"] == "3.1.0" and "/jobs" in document["paths"]
    ids = _seed_jobs(target)
    _passes(_schemathesis(target, target.keys["acme"], "^/(?!admin)", tmp_path))
    for job_id in ids[1:3]:  # a FAILED and a CANCELLED job: each route answers about a real job
        _passes(_schemathesis(target, target.keys["acme"], "^/jobs/", tmp_path, job_id))
    target.assert_clean(jobs_checked=False)


def test_the_admin_api_answers_as_its_document_says(target: Target, tmp_path: Path) -> None:
    _passes(_schemathesis(target, ADMIN_KEY, "^/admin", tmp_path))
    target.assert_clean(jobs_checked=False)

"""The dashboard, end to end: a real node, Debian's Chromium driven by Playwright."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import trio
from playwright.sync_api import Page, sync_playwright

from tests.browser.conftest import ARTIFACTS, chromium, tenant_key
from tests.conftest import free_port
from tests.faults.conftest import Cluster
from tests.integration.test_jobs import HookServer

# records every status each job's row has shown, in order
WATCH_BADGES = """() => {
  window.__history = {};
  const record = () => {
    for (const tr of document.querySelectorAll('#jobs tbody tr')) {
      const h = (window.__history[tr.dataset.id] ||= []);
      if (h[h.length - 1] !== tr.dataset.status) h.push(tr.dataset.status);
    }
  };
  new MutationObserver(record).observe(document.querySelector('#jobs tbody'), {childList: true, subtree: true});
  record();
}"""


class Browser:
    """A headless Chromium page; on an error, a screenshot and the page's console go with it."""

    def __init__(self, name: str, *, enforce_csp: bool = False) -> None:
        # Playwright's wait_for_function evaluates strings, which the page's CSP forbids: the
        # scenarios that use it bypass the CSP; the reconnect scenario runs under it
        self.name = name
        self.enforce_csp = enforce_csp
        self.console: list[str] = []

    def __enter__(self) -> Page:
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        self.page = self.browser.new_page(
            viewport={"width": 1360, "height": 900}, bypass_csp=not self.enforce_csp
        )
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return self.page

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        try:
            if exc is not None:
                shot(self.page, f"failure-{self.name}.png")
                exc.add_note("browser console:\n" + "\n".join(self.console[-30:]))
        finally:
            self.browser.close()
            self.playwright.stop()
        # the page's Content-Security-Policy must not have stopped anything it does
        blocked = [line for line in self.console if "Content Security Policy" in line]
        assert exc is not None or not blocked, blocked


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    page.fill('input[name="apiKey"]', key)
    page.click('#signin-form button[type="submit"]')
    page.wait_for_selector('#conn[data-state="live"]')


def create(page: Page, job_type: str, fields: dict[str, str], max_attempts: str = "") -> str:
    page.select_option("#create-type", job_type)
    for name, value in fields.items():
        page.fill(f'[name="payload.{name}"]', value)
    if max_attempts:
        page.click("#create-form details summary")
        page.fill('[name="maxAttempts"]', max_attempts)
    page.evaluate("document.querySelector('#create-result').textContent = ''")
    page.click('#create-form button[type="submit"]')
    page.wait_for_function("document.querySelector('#create-result').textContent.startsWith('created ')")
    if max_attempts:
        page.fill('[name="maxAttempts"]', "")
    return str(page.text_content("#create-result")).removeprefix("created ")


def row(job_id: str, status: str) -> str:
    return f'#jobs tr[data-id="{job_id}"][data-status="{status}"]'


def history(page: Page, job_id: str) -> list[str]:
    return list(page.evaluate(f"window.__history[{job_id!r}] || []"))


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def forms_scenario(url: str, key: str, hooks_url: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with Browser("forms") as page:
        sign_in(page, url, key)
        page.evaluate(WATCH_BADGES)

        # every job type from the form, each watched live to COMPLETED
        jobs = {
            "email": create(page, "email", {"to": "ada@example.com", "subject": "Hello", "body": "Hi"}),
            "webhook": create(page, "webhook", {"url": f"{hooks_url}/ok", "method": "POST"}),
            "data_processing": create(page, "data_processing", {
                "records": '[{"n": 1}, {"n": 2}, {"n": 39}]', "operation": "sum", "field": "n",
            }),
            "sleep": create(page, "sleep", {"delayMs": "1500"}),
        }
        for job_id in jobs.values():
            page.wait_for_selector(row(job_id, "COMPLETED"))
        seen["histories"] = {t: history(page, i) for t, i in jobs.items()}

        # a webhook that keeps failing ends FAILED, with its error on the row and in the detail
        failing = create(page, "webhook", {"url": f"{hooks_url}/broken"}, max_attempts="1")
        page.wait_for_selector(row(failing, "FAILED"))
        seen["failed_row_error"] = page.text_content(f'#jobs tr[data-id="{failing}"] td.err')
        page.click(f'#jobs tr[data-id="{failing}"] td.id')
        page.wait_for_selector("#detail[open]")
        page.wait_for_function("document.querySelectorAll('#detail-events li').length >= 3")
        seen["failed_detail_error"] = page.text_content("#detail-error")
        seen["failed_detail_events"] = page.eval_on_selector_all("#detail-events li", "els => els.map(e => e.textContent)")
        shot(page, "job-detail.png")
        page.click("#detail .close")

        # retry it from its row: it runs again (and fails again)
        page.click(f'#jobs tr[data-id="{failing}"] button.retry')
        page.wait_for_function(
            f"(window.__history[{failing!r}] || []).filter(s => s === 'FAILED').length >= 2"
        )
        seen["retried"] = history(page, failing)

        # cancel a running job from its row
        long = create(page, "sleep", {"delayMs": "30000"})
        page.wait_for_selector(row(long, "RUNNING"))
        page.click(f'#jobs tr[data-id="{long}"] button.cancel')
        page.wait_for_selector(row(long, "CANCELLED"))
        seen["cancelled"] = history(page, long)

        # validation errors, inline by their fields
        page.select_option("#create-type", "email")
        page.fill('[name="payload.to"]', "not-an-address")
        page.fill('[name="payload.subject"]', "")
        page.click('#create-form button[type="submit"]')
        page.wait_for_selector('small.error[data-for="payload.to"]:not(:empty)')
        seen["to_error"] = page.text_content('small.error[data-for="payload.to"]')
        seen["subject_error"] = page.text_content('small.error[data-for="payload.subject"]')
        seen["to_marked"] = page.eval_on_selector('[name="payload.to"]', "e => e.classList.contains('invalid')")
        shot(page, "create-form-errors.png")

        # a running job with a progress bar, the charts, the live log: the main view
        page.fill('[name="payload.to"]', "ada@example.com")
        page.fill('[name="payload.subject"]', "Hello")
        page.select_option("#create-type", "sleep")
        progressing = create(page, "sleep", {"delayMs": "8000"})
        page.wait_for_selector(f'#jobs tr[data-id="{progressing}"] .bar > span')
        seen["progress_text"] = page.text_content(f'#jobs tr[data-id="{progressing}"] .bar-text')
        page.wait_for_timeout(2500)  # the charts draw once a second
        shot(page, "dashboard.png")

        # filters and search by id
        page.select_option("#filter-status", "FAILED")
        page.wait_for_function("[...document.querySelectorAll('#jobs tbody tr')].every(r => r.dataset.status === 'FAILED')")
        seen["failed_filter"] = page.eval_on_selector_all("#jobs tbody tr", "rs => rs.map(r => r.dataset.id)")
        page.select_option("#filter-status", "")
        page.fill("#search-id", jobs["email"])
        page.click("#search-form button")
        page.wait_for_selector("#detail[open]")
        seen["searched"] = page.text_content("#detail-id")
    seen["jobs"] = jobs
    seen["failing"] = failing
    return seen


async def test_dashboard_creates_watches_fails_and_cancels(
    cluster: Cluster, hooks: HookServer, tenant: str
) -> None:
    node = await cluster.start("d", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=4)
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)
    with trio.fail_after(150):
        seen = await trio.to_thread.run_sync(forms_scenario, node.url, key, hooks.url)
    jobs = seen["jobs"]
    # each row went forward through the lifecycle and ended COMPLETED. A job that runs at once can
    # be COMPLETED before its row is first drawn (seen on embedded servers, pickup ~7 ms), so only
    # the slower sleep job must show every step live: PENDING, then RUNNING, then COMPLETED
    lifecycle = ["PENDING", "RUNNING", "COMPLETED"]
    for job_type, steps in seen["histories"].items():
        assert steps[-1] == "COMPLETED" and steps == sorted(steps, key=lifecycle.index), (job_type, steps)
    assert seen["histories"]["sleep"] == lifecycle
    assert "500" in seen["failed_row_error"] and seen["failed_detail_error"] == seen["failed_row_error"]
    assert any("FAILED" in e for e in seen["failed_detail_events"]), seen["failed_detail_events"]
    assert seen["cancelled"][-2:] == ["RUNNING", "CANCELLED"]
    retried = seen["retried"]
    assert retried[-1] == "FAILED" and retried.index("FAILED") < len(retried) - 1, retried
    assert set(retried[retried.index("FAILED") + 1 : -1]) <= {"PENDING", "RUNNING"}
    assert "valid email" in seen["to_error"] and seen["subject_error"] and seen["to_marked"]
    assert seen["progress_text"].endswith("of 8000 ms"), seen["progress_text"]
    assert seen["failed_filter"] == [seen["failing"]]
    assert seen["searched"] == jobs["email"]
    for name in ("dashboard.png", "create-form-errors.png", "job-detail.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000


def reconnect_scenario(url: str, key: str, restart: Any, submit_elsewhere: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with Browser("reconnect", enforce_csp=True) as page:
        sign_in(page, url, key)
        seen["before"] = page.get_attribute("#conn", "data-state")
        stop, start = restart
        stop()  # SIGTERM: the node drains and closes the socket with 1001
        page.wait_for_selector('#conn[data-state="reconnecting"]')
        seen["while_down"] = page.text_content("#conn-text")
        shot(page, "reconnecting.png")
        missed = submit_elsewhere()  # a job made and run while the page had no feed
        start()
        page.wait_for_selector('#conn[data-state="resumed"]', timeout=60_000)
        seen["after"] = page.text_content("#conn-text")
        page.wait_for_selector(row(missed, "COMPLETED"))  # heard from the resumed feed
        shot(page, "resumed.png")
    seen["missed"] = missed
    return seen


async def test_dashboard_shows_reconnect_and_resumes_after_a_node_restart(
    cluster: Cluster, tenant: str
) -> None:
    node = await cluster.start("d", port=free_port(), CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=4)
    other = await cluster.start("o", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=4)
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)

    def stop() -> None:
        node.signal(signal.SIGTERM)
        assert trio.from_thread.run(node.wait) == 0

    def start() -> None:
        trio.from_thread.run(node.start)

    def submit_elsewhere() -> str:
        r = httpx.post(f"{other.url}/jobs", json={"type": "sleep", "payload": {"delayMs": 0}},
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text
        return str(r.json()["jobId"])

    with trio.fail_after(120):
        seen = await trio.to_thread.run_sync(reconnect_scenario, node.url, key, (stop, start), submit_elsewhere)
    assert seen["before"] == "live"
    assert seen["while_down"] == "reconnecting…"
    assert seen["after"] == "live · resumed"


def many_jobs_scenario(url: str, key: str, flood: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with Browser("many") as page:
        sign_in(page, url, key)
        flood()  # 10,000 jobs: 30,000 events reach the page while it is open
        page.wait_for_function(
            "document.querySelector('#page-info').textContent.includes('10000 jobs')", timeout=60_000
        )
        # it still answers at once: the next page, and the rows stay one page's worth
        page.click("#next")
        page.wait_for_function("document.querySelector('#page-info').textContent.startsWith('page 2 of 400')")
        seen["rows"] = page.eval_on_selector_all("#jobs tbody tr", "rs => rs.length")
        started = page.evaluate("performance.now()")
        page.select_option("#filter-status", "COMPLETED")
        page.wait_for_function("document.querySelector('#page-info').textContent.startsWith('page 1 of')")
        seen["filter_ms"] = page.evaluate("performance.now()") - started
        seen["log_lines"] = page.eval_on_selector_all("#log li", "ls => ls.length")
    return seen


async def test_dashboard_stays_usable_with_10000_jobs(cluster: Cluster, tenant: str) -> None:
    node = await cluster.start("d", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=32,
                               CONVEYOR_TENANT_SUBMIT_RATE="0", CONVEYOR_TENANT_MAX_QUEUED="0")
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)

    def flood() -> None:
        body = {"jobs": [{"type": "sleep", "payload": {"delayMs": 0}}] * 1000}
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            for _ in range(10):
                assert client.post("/jobs/batch", json=body).status_code == 201

    with trio.fail_after(150):
        seen = await trio.to_thread.run_sync(many_jobs_scenario, node.url, key, flood)
    assert seen["rows"] == 25  # one page in the DOM, however many jobs
    assert seen["log_lines"] <= 200  # the live log keeps its last 200 lines
    print(f"filter answered in {seen['filter_ms']:.0f} ms")  # a measurement, not a pass/fail


def miscounted_scenario(url: str, key: str) -> dict[str, Any]:
    """A count the page got wrong (a load that raced the feed, as after a RESYNC, counts a job
    twice or not at all: made here by setting it) is set right from the node after new jobs."""
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client, \
            Browser("miscounted") as page:
        job = {"type": "sleep", "payload": {"delayMs": 0}}
        assert client.post("/jobs/batch", json={"jobs": [job] * 30}).status_code == 201
        sign_in(page, url, key)
        page.wait_for_function("document.querySelector('#page-info').textContent.includes('30 jobs')")
        page.evaluate("state.total = 1000")  # as if 970 creations had been counted twice
        assert client.post("/jobs/batch", json={"jobs": [job] * 5}).status_code == 201
        seen["at_once"] = page.wait_for_function(  # the feed's creations are counted at once...
            "document.querySelector('#page-info').textContent.includes('1005 jobs')").json_value()
        page.wait_for_function(  # ...and the node's count replaces the page's once they pause
            "document.querySelector('#page-info').textContent.includes('35 jobs')", timeout=10_000)
        seen["info"] = page.text_content("#page-info")
    return seen


async def test_dashboard_sets_a_miscounted_total_right_from_the_node(cluster: Cluster, tenant: str) -> None:
    node = await cluster.start("m", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=4, CONVEYOR_TENANT_SUBMIT_RATE="0")
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)
    with trio.fail_after(60):
        seen = await trio.to_thread.run_sync(miscounted_scenario, node.url, key)
    assert seen["at_once"] is True
    assert seen["info"] == "page 1 of 2 · 35 jobs", seen


def _visible(page: Page, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "e => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length)"))


def first_hour_scenario(url: str, key: str, open_url: str) -> dict[str, Any]:
    """What a new user met in the first hour (issue 14), as they met it."""
    seen: dict[str, Any] = {}
    with Browser("first-hour") as page:
        page.goto(url)
        page.wait_for_selector("#signin:not([hidden])")
        # signed out: the sign-in box alone, with the key field only (auth is on)
        seen["signed_out"] = {s: _visible(page, s) for s in ("#signin", "#app", "#key-row", "#tenant-row")}
        sign_in(page, url, key)
        page.reload()  # the key is in sessionStorage: still signed in, and the feed resumes
        page.wait_for_selector('#conn[data-state="resumed"], #conn[data-state="live"]')
        seen["after_reload"] = {s: _visible(page, s) for s in ("#signin", "#app")}
        # an untouched New job form holds no made-up values, so Create sends nothing invented
        page.select_option("#create-type", "webhook")
        seen["webhook_values"] = page.eval_on_selector_all(
            "#type-fields input, #type-fields textarea", "els => els.map(e => e.value)")
        page.click('#create-form button[type="submit"]')
        page.wait_for_selector('small.error[data-for="payload.url"]:not(:empty)')
        seen["untouched_result"] = page.text_content("#create-result")
        # a phone: nothing sticks out of the page, the side panel is on screen
        page.set_viewport_size({"width": 420, "height": 860})
        page.wait_for_timeout(300)
        seen["page_width"] = page.evaluate("document.documentElement.scrollWidth")
        box = page.eval_on_selector("aside", "e => { const r = e.getBoundingClientRect(); return [r.left, r.right]; }")
        seen["aside"] = box
        shot(page, "dashboard-420.png")
    with Browser("auth-off") as page:
        page.goto(open_url)
        page.wait_for_selector("#signin:not([hidden])")
        seen["auth_off"] = {s: _visible(page, s) for s in ("#key-row", "#tenant-row", "#app")}
    return seen


async def test_dashboard_first_hour_rough_edges(cluster: Cluster, tenant: str) -> None:
    node = await cluster.start("f", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=2)
    open_node = await cluster.start("o", CONVEYOR_CONCURRENCY=2)  # auth off (development)
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)
    with trio.fail_after(90):
        seen = await trio.to_thread.run_sync(first_hour_scenario, node.url, key, open_node.url)
    assert seen["signed_out"] == {"#signin": True, "#app": False, "#key-row": True, "#tenant-row": False}
    assert seen["after_reload"] == {"#signin": False, "#app": True}
    assert seen["webhook_values"] == ["", "", ""] and seen["untouched_result"] == ""
    assert seen["page_width"] <= 420, seen["page_width"]
    left, right = seen["aside"]
    assert 0 <= left and right <= 420, seen["aside"]
    assert seen["auth_off"] == {"#key-row": False, "#tenant-row": True, "#app": False}


GREEN_PIXELS = """(canvas) => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] < 60 && data[i + 1] > 100 && data[i + 2] < 100) n++;
  return n;
}"""


async def test_dashboard_opened_after_200_jobs_shows_them_in_its_charts(cluster: Cluster, tenant: str) -> None:
    node = await cluster.start("h", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=16, CONVEYOR_TENANT_SUBMIT_RATE="0")
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)

    def run_200() -> None:
        ok = {"type": "sleep", "payload": {"delayMs": 5}}
        bad = {"type": "data_processing", "maxAttempts": 1,
               "payload": {"records": [{"v": "x"}], "operation": "sum", "field": "v"}}
        with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
            for _ in range(2):  # two batches a few seconds apart: two points on the chart
                assert client.post("/jobs/batch", json={"jobs": [ok] * 80 + [bad] * 20}).status_code == 201
                while client.get("/stats").json()["unfinished"]:
                    time.sleep(0.1)
                time.sleep(5)

    def scenario() -> dict[str, Any]:
        run_200()
        with Browser("history") as page:  # opened after they ran: nothing on the feed since
            sign_in(page, node.url, key)
            page.wait_for_function(
                "document.querySelector('#throughput').getAttribute('aria-label').includes('160 completed')")
            shot(page, "dashboard-history.png")
            return {"label": page.get_attribute("#throughput", "aria-label"),
                    "green": page.eval_on_selector("#throughput", GREEN_PIXELS),
                    "depth_points": page.evaluate("state.depth.length")}

    with trio.fail_after(90):
        seen = await trio.to_thread.run_sync(scenario)
    assert "160 completed and 40 failed in the last hour" in seen["label"], seen
    assert seen["green"] > 20, seen  # the completed line is drawn
    assert seen["depth_points"] > 2, seen  # the queue depth's history, not only the polls since opening


def schedules_scenario(url: str, key: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        job = {"type": "sleep", "payload": {"delayMs": 0}}
        assert client.put("/schedules/tick", json={"every": "1s", "job": job}).status_code == 201
        assert client.put("/schedules/nightly", json={"cron": "0 3 * * *", "timezone": "Asia/Tokyo", "job": job}).status_code == 201
        with Browser("schedules") as page:
            sign_in(page, url, key)
            page.wait_for_function("document.querySelectorAll('#schedules tbody tr').length === 2")
            seen["names"] = page.eval_on_selector_all("#schedules tbody tr", "rs => rs.map(r => r.dataset.name)")
            seen["nightly_when"] = page.text_content('#schedules tr[data-name="nightly"] td:nth-child(2)')
            # the last job of tick, once it fired (the list refreshes every 5 s), opens its detail
            page.wait_for_selector('#schedules tr[data-name="tick"] a', timeout=20_000)
            last = page.get_attribute('#schedules tr[data-name="tick"] a', "title")
            shot(page, "dashboard-schedules.png")
            page.click('#schedules tr[data-name="tick"] a')
            page.wait_for_selector("#detail[open]")
            seen["detail_is_last_job"] = page.text_content("#detail-id") == last
            page.click("#detail .close")
            page.click('#schedules tr[data-name="tick"] button.pause')
            page.wait_for_selector('#schedules tr[data-name="tick"][data-paused="true"]')
            seen["paused_api"] = client.get("/schedules/tick").json()["paused"]
            seen["paused_next"] = page.text_content('#schedules tr[data-name="tick"] td.next')
            page.click('#schedules tr[data-name="tick"] button.resume')
            page.wait_for_selector('#schedules tr[data-name="tick"][data-paused="false"]')
            seen["resumed_api"] = client.get("/schedules/tick").json()["paused"]
            page.click('#schedules tr[data-name="nightly"] button.delete')
            page.wait_for_function("document.querySelectorAll('#schedules tbody tr').length === 1")
            seen["deleted_api"] = client.get("/schedules/nightly").status_code
    return seen


async def test_dashboard_shows_schedules_and_pauses_resumes_and_deletes_them(cluster: Cluster, tenant: str) -> None:
    node = await cluster.start("s", CONVEYOR_AUTH="on", CONVEYOR_CONCURRENCY=2)
    key = await trio.to_thread.run_sync(tenant_key, cluster, tenant)
    with trio.fail_after(90):
        seen = await trio.to_thread.run_sync(schedules_scenario, node.url, key)
    assert seen["names"] == ["nightly", "tick"]
    assert seen["nightly_when"] == "0 3 * * * (Asia/Tokyo)"
    assert seen["detail_is_last_job"] is True
    assert (seen["paused_api"], seen["paused_next"], seen["resumed_api"]) == (True, "paused", False)
    assert seen["deleted_api"] == 404

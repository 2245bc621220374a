// The conveyor dashboard: jobs from the REST API, kept current by the tenant's feed over a
// WebSocket that resumes from its last eventId. The API key lives in sessionStorage only.
"use strict";

const PAGE = 25;
const SPAN = 3600; // seconds shown by the charts
const SLOT = 5; // seconds per point of the completed/failed chart, as the node's history keeps them
const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const kid of kids) node.append(kid);
  return node;
};

const state = {
  key: sessionStorage.getItem("conveyor.key"),
  tenant: sessionStorage.getItem("conveyor.tenant"),
  authOn: true,
  status: "", type: "", page: 0, total: 0, totalExact: true,
  jobs: new Map(), // id -> job, the page on screen
  progress: new Map(), // id -> {progress, message}
  detail: null, // the id shown in the dialog
  counts: new Map(), // slot start (s) -> {completed, failed}
  depth: [], // [t, waiting, running]
  types: [],
};

// ---- HTTP ---------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = { error: text }; }
  if (!response.ok) throw Object.assign(new Error((body && body.error) || response.statusText), { status: response.status, body });
  return body;
}

const tenantQuery = () => (state.authOn ? "" : `tenantId=${encodeURIComponent(state.tenant)}`);
const withTenant = (path) => { const q = tenantQuery(); return q ? `${path}${path.includes("?") ? "&" : "?"}${q}` : path; };

// ---- sign in ------------------------------------------------------------------------------

async function start() {
  // Is auth on? An unauthenticated call answers 401 when it is.
  const saved = state.key; state.key = null; // asked without the key: 401 means auth is on
  try {
    await api("/job-types");
    state.authOn = false;
  } catch (err) { if (err.status !== 401) { state.key = saved; showSignin(`The node did not answer: ${err.message}`); return; } }
  state.key = saved; // kept in sessionStorage: a reload stays signed in
  if (!state.authOn) { $("#key-row").hidden = true; $("#tenant-row").hidden = false; $("#signin-help").textContent = "Auth is off on this node (development): name the tenant to watch."; }
  if ((state.authOn && state.key) || (!state.authOn && state.tenant)) { await enter(); } else showSignin("");
}

function showSignin(message) {
  $("#signin").hidden = false; $("#app").hidden = true; $("#sign-out").hidden = true;
  $("#signin-error").textContent = message;
}

$("#signin-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  if (state.authOn) state.key = form.apiKey.value.trim(); else state.tenant = form.tenantId.value.trim();
  try { await enter(); } catch (err) { showSignin(err.status === 401 ? "That key was not accepted." : err.message); }
});

$("#sign-out").addEventListener("click", () => {
  sessionStorage.clear(); location.reload();
});

async function enter() {
  const types = await api("/job-types");
  if (state.authOn) state.tenant = (await api("/stats")).tenantId; // the key's tenant
  if (state.authOn) sessionStorage.setItem("conveyor.key", state.key);
  sessionStorage.setItem("conveyor.tenant", state.tenant || "");
  state.types = types.types;
  $("#signin").hidden = true; $("#app").hidden = false; $("#sign-out").hidden = false;
  $("#tenant-name").textContent = state.tenant ? `tenant ${state.tenant}` : "";
  for (const t of state.types) { $("#filter-type").append(el("option", { value: t, textContent: t })); $("#create-type").append(el("option", { value: t, textContent: t })); }
  renderTypeFields();
  await loadJobs();
  await loadHistory(); // before the feed: what it hears from then on is added
  feed.connect();
  setInterval(pollDepth, 2000); pollDepth();
  setInterval(loadSchedules, 5000); loadSchedules();
  setInterval(drawCharts, 1000);
}

// ---- the job list -------------------------------------------------------------------------

// Every list read is numbered: rows come from the newest page load only, the total from the
// newest read of any kind, so an older answer that comes later overwrites nothing.
const reads = { asked: 0, page: 0, total: 0 };

async function readList(limit, offset) {
  const mine = ++reads.asked;
  const params = new URLSearchParams({ limit, offset });
  if (state.status) params.set("status", state.status);
  if (state.type) params.set("type", state.type);
  const body = await api(withTenant(`/jobs?${params}`));
  if (mine > reads.total) { reads.total = mine; state.total = body.total; state.totalExact = body.totalExact; }
  return { mine, body };
}

async function loadJobs() {
  const { mine, body } = await readList(PAGE, state.page * PAGE);
  if (mine < reads.page) return;
  reads.page = mine;
  if (!state.tenant && body.jobs.length) state.tenant = body.jobs[0].tenantId;
  state.jobs = new Map(body.jobs.map((j) => [j.id, j]));
  renderJobs();
}

// The total on screen grows with the feed's creation events, and is read again from the node
// (the total alone: the rows on screen stay as the feed left them) once creations pause for a
// second, and at least every 5 s while they go on. A page load that races the feed (after a
// RESYNC) can count a job twice or not at all; this sets it right.
const settling = { timer: null, since: 0 };
function settleTotal() {
  const now = Date.now();
  if (!settling.timer) settling.since = now;
  clearTimeout(settling.timer);
  const wait = Math.max(0, Math.min(1000, settling.since + 5000 - now));
  settling.timer = setTimeout(() => {
    settling.timer = null;
    readList(1, 0).then(renderJobs).catch(() => {});
  }, wait);
}

function renderJobs() {
  const tbody = $("#jobs tbody");
  tbody.replaceChildren(...[...state.jobs.values()].map(row));
  const pages = Math.max(1, Math.ceil(state.total / PAGE));
  const about = state.totalExact === false ? "about " : "";
  $("#page-info").textContent = `page ${state.page + 1} of ${about}${pages} · ${about}${state.total} jobs`;
  $("#prev").disabled = state.page === 0;
  $("#next").disabled = state.page + 1 >= pages;
}

function badge(status) { return el("span", { className: `badge ${status}`, textContent: status }); }

function progressBar(id) {
  const p = state.progress.get(id);
  if (!p) return "";
  const bar = el("div", { className: "bar" }, el("span", { style: `width:${Math.round(p.progress)}%` }));
  return el("div", { className: "progress" }, bar, el("span", { className: "bar-text", textContent: `${Math.round(p.progress)}% ${p.message || ""}` }));
}

function actions(job) {
  const box = el("span", { className: "actions" });
  if (job.status === "PENDING" || job.status === "RUNNING") box.append(el("button", { textContent: "Cancel", className: "cancel", onclick: (e) => { e.stopPropagation(); act(job.id, "cancel"); } }));
  if (job.status === "FAILED" || job.status === "CANCELLED") box.append(el("button", { textContent: "Retry", className: "retry", onclick: (e) => { e.stopPropagation(); act(job.id, "retry"); } }));
  return box;
}

function row(job) {
  const status = el("td", { className: "status" }, badge(job.status));
  if (job.status === "RUNNING") status.append(progressBar(job.id));
  const tr = el("tr", {},
    el("td", { className: "id", textContent: job.id.slice(0, 8), title: job.id }),
    el("td", { textContent: job.type || "" }),
    status,
    el("td", { textContent: `${job.attempts}/${job.maxAttempts}` }),
    el("td", { textContent: job.updatedAt ? new Date(job.updatedAt).toLocaleTimeString() : "" }),
    el("td", { className: "err", textContent: job.error || "", title: job.error || "" }),
    el("td", {}, actions(job)));
  tr.dataset.id = job.id; tr.dataset.status = job.status;
  tr.addEventListener("click", () => openDetail(job.id));
  return tr;
}

// Redraw changed rows once per frame, however many events arrive.
const dirty = new Set();
function touch(id) {
  if (!dirty.size) requestAnimationFrame(() => {
    for (const jid of dirty) {
      const job = state.jobs.get(jid);
      const old = document.querySelector(`#jobs tr[data-id="${jid}"]`);
      if (job && old) old.replaceWith(row(job));
    }
    dirty.clear();
  });
  dirty.add(id);
}

async function act(id, what) {
  try { const job = await api(`/jobs/${id}/${what}`, { method: "POST" }); merge(job); }
  catch (err) { log(`${what} ${id.slice(0, 8)}: ${err.message}`, true); }
}

const RANK = { PENDING: 0, RUNNING: 1, COMPLETED: 2, FAILED: 2, CANCELLED: 2 };
const stage = (job) => job.attempts * 10 + (RANK[job.status] ?? 0);

function merge(job) {
  const known = state.jobs.get(job.id);
  // an answer older than what the feed already showed is old news: the feed is ordered, answers
  // are snapshots, and timestamps of different transactions do not order them
  if (known && stage(job) < stage(known)) return;
  if (known) { Object.assign(known, job); touch(job.id); }
  if (state.detail === job.id) renderDetailHead(known || job);
}

for (const [sel, key] of [["#filter-status", "status"], ["#filter-type", "type"]]) {
  $(sel).addEventListener("change", (e) => { state[key] = e.target.value; state.page = 0; loadJobs(); });
}
$("#prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadJobs(); });
$("#next").addEventListener("click", () => { state.page += 1; loadJobs(); });
$("#search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const id = $("#search-id").value.trim();
  $("#search-error").textContent = "";
  if (id) openDetail(id).catch(() => { $("#search-error").textContent = `no job ${id}`; });
});

// ---- schedules ----------------------------------------------------------------------------

async function loadSchedules() {
  try {
    const body = await api(withTenant("/schedules"));
    $("#schedules tbody").replaceChildren(...body.schedules.map(scheduleRow));
    $("#schedules-empty").hidden = body.schedules.length > 0;
    $("#schedules").hidden = body.schedules.length === 0;
    $("#schedules-error").textContent = "";
  } catch (err) { $("#schedules-error").textContent = `schedules: ${err.message}`; }
}

function scheduleRow(s) {
  const when = s.cron ? `${s.cron}${s.timezone !== "UTC" ? ` (${s.timezone})` : ""}` : `every ${s.every}`;
  const next = s.paused ? "paused" : new Date(s.nextFireAt).toLocaleString();
  const last = s.lastJobId
    ? el("a", { href: "#", textContent: s.lastJobId.slice(0, 8), title: s.lastJobId, onclick: (e) => { e.preventDefault(); openDetail(s.lastJobId); } })
    : "–";
  const box = el("span", { className: "actions" },
    el("button", { textContent: s.paused ? "Resume" : "Pause", className: s.paused ? "resume" : "pause",
      onclick: () => scheduleAct(s.name, s.paused ? "resume" : "pause") }),
    el("button", { textContent: "Delete", className: "delete", onclick: () => scheduleAct(s.name, "delete") }));
  const tr = el("tr", {},
    el("td", { textContent: s.name }), el("td", { textContent: when }), el("td", { className: "next", textContent: next }),
    el("td", {}, last), el("td", {}, box));
  tr.dataset.name = s.name; tr.dataset.paused = String(s.paused);
  return tr;
}

async function scheduleAct(name, what) {
  const path = `/schedules/${encodeURIComponent(name)}${what === "delete" ? "" : `/${what}`}`;
  try { await api(withTenant(path), { method: what === "delete" ? "DELETE" : "POST" }); }
  catch (err) { $("#schedules-error").textContent = `${what} ${name}: ${err.message}`; }
  await loadSchedules();
}

// ---- job detail ---------------------------------------------------------------------------

async function openDetail(id) {
  const job = await api(`/jobs/${encodeURIComponent(id)}`);
  state.detail = job.id;
  renderDetailHead(job);
  $("#detail-payload").textContent = JSON.stringify(job.payload, null, 2);
  const history = await api(`/jobs/${job.id}/events`);
  $("#detail-events").replaceChildren(...history.events.map(eventItem));
  if (!$("#detail").open) $("#detail").showModal();
}

function renderDetailHead(job) {
  $("#detail-id").textContent = job.id;
  const b = $("#detail-badge"); b.className = `badge ${job.status}`; b.textContent = job.status;
  $("#detail-attempts").textContent = `attempt ${job.attempts} of ${job.maxAttempts}`;
  $("#detail-result").textContent = job.result == null ? "—" : JSON.stringify(job.result, null, 2);
  $("#detail-error").textContent = job.error || "—";
  $("#detail-progress").replaceChildren(job.status === "RUNNING" ? progressBar(job.id) : "");
  $("#detail-actions").replaceChildren(actions(job));
}

function eventItem(ev) {
  const what = ev.type === "JOB_PROGRESS" ? `progress ${Math.round(ev.progress)}% ${ev.message || ""}` : `${ev.status}${ev.error ? ` — ${ev.error}` : ""}`;
  return el("li", { textContent: `${ev.updatedAt ? new Date(ev.updatedAt).toLocaleTimeString() : ""} ${what} (attempt ${ev.attempts})` });
}

$("#detail").addEventListener("close", () => { state.detail = null; });

// ---- create -------------------------------------------------------------------------------

const FORMS = {
  email: [["to", "To", "ada@example.com"], ["subject", "Subject", "Hello"], ["body", "Body", "Hi Ada,", "textarea"]],
  webhook: [["url", "URL", "https://example.com/hook"], ["method", "Method", "POST"], ["body", "Body (JSON)", "{}", "textarea", "json"]],
  data_processing: [["records", "Records (JSON array)", '[{"n": 1}, {"n": 2}]', "textarea", "json"], ["operation", "Operation", "sum"], ["field", "Field", "n"], ["groupBy", "Group by (optional)", ""]],
  sleep: [["delayMs", "Delay (ms)", "1000", "input", "int"]],
};

function renderTypeFields() {
  const type = $("#create-type").value;
  const fields = FORMS[type] || [["payload", "Payload (JSON object)", "{}", "textarea", "object"]];
  $("#type-fields").replaceChildren(...fields.map(([name, label, placeholder, kind]) => {
    // the example is a placeholder, never a value: an untouched form sends nothing made up
    const input = el(kind === "textarea" ? "textarea" : "input", { name: `payload.${name}`, placeholder });
    return el("div", {}, el("label", { textContent: label }, input), el("small", { className: "error" }));
  }));
  for (const small of $("#type-fields").querySelectorAll("small")) small.dataset.for = small.previousSibling.lastChild.name;
}
$("#create-type").addEventListener("change", renderTypeFields);

function formPayload(form, type) {
  const problems = [];
  const fields = FORMS[type] || [["payload", "", "", "textarea", "object"]];
  let payload = {};
  for (const [name, , , , parse] of fields) {
    const raw = form.elements[`payload.${name}`].value.trim();
    if (raw === "") continue;
    if (parse === "json" || parse === "object") {
      try {
        const value = JSON.parse(raw);
        if (parse === "object") payload = value; else payload[name] = value;
      } catch { problems.push({ field: `payload.${name}`, message: "is not valid JSON" }); }
    } else if (parse === "int") {
      payload[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    } else payload[name] = raw;
  }
  return { payload, problems };
}

function showErrors(details) {
  const form = $("#create-form");
  for (const small of form.querySelectorAll("small.error")) small.textContent = "";
  for (const input of form.querySelectorAll(".invalid")) input.classList.remove("invalid");
  const unplaced = [];
  for (const d of details) {
    const small = form.querySelector(`small.error[data-for="${d.field}"]`) ||
      (d.field.startsWith("payload.") && form.querySelector('small.error[data-for="payload.payload"]'));
    if (small) {
      small.textContent = `${small.textContent ? small.textContent + "; " : ""}${d.message}`;
      const input = form.elements[small.dataset.for]; if (input) input.classList.add("invalid");
    } else unplaced.push(`${d.field} ${d.message}`);
  }
  $("#create-error").textContent = unplaced.join("; ");
}

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const type = form.type.value;
  const { payload, problems } = formPayload(form, type);
  $("#create-result").textContent = "";
  showErrors(problems);
  if (problems.length) return;
  const body = { type, payload };
  if (!state.authOn) body.tenantId = state.tenant;
  for (const name of ["maxAttempts", "timeoutMs", "priority", "delayMs"]) {
    const raw = form.elements[name].value.trim();
    if (raw) body[name] = /^\d+$/.test(raw) ? Number(raw) : raw;
  }
  try {
    const created = await api("/jobs", { method: "POST", body });
    showErrors([]);
    $("#create-result").textContent = `created ${created.jobId}`;
    const job = await api(`/jobs/${created.jobId}`);
    arrive(job);
  } catch (err) {
    if (err.status === 400 && err.body && err.body.details) showErrors(err.body.details);
    else $("#create-error").textContent = err.message;
  }
});

// A new job: at the top of the first page when it passes the filters.
function arrive(job) {
  if (state.jobs.has(job.id)) { merge(job); return; }
  if (state.page !== 0 || (state.status && state.status !== job.status) || (state.type && state.type !== job.type)) return;
  state.total += 1;
  state.jobs = new Map([[job.id, job], ...[...state.jobs].slice(0, PAGE - 1)]);
  renderJobs();
}

// ---- the feed -----------------------------------------------------------------------------

const feed = {
  ws: null, last: null, delay: 500, heard: 0, everConnected: false,
  key() { return `conveyor.last.${state.tenant}`; },

  indicator(stateName, text) {
    $("#conn").dataset.state = stateName; $("#conn-text").textContent = text;
  },

  async connect() {
    this.last = this.last || sessionStorage.getItem(this.key());
    this.indicator(this.everConnected ? "reconnecting" : "connecting", this.everConnected ? "reconnecting…" : "connecting…");
    let url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
    try {
      if (state.authOn) url += `?ticket=${encodeURIComponent((await api("/ws/tickets", { method: "POST" })).ticket)}`;
    } catch (err) { return this.retry(); }
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (m) => this.onMessage(JSON.parse(m.data));
    ws.onclose = () => { if (this.ws === ws) this.retry(); };
  },

  retry() {
    this.ws = null;
    this.indicator("reconnecting", "reconnecting…");
    setTimeout(() => this.connect(), this.delay);
    this.delay = Math.min(this.delay * 2, 5000);
  },

  send(msg) { if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg)); },

  onMessage(msg) {
    this.heard = Date.now();
    switch (msg.type) {
      case "CONNECTED": {
        const sub = { type: "SUBSCRIBE" };
        if (!state.authOn) sub.tenantId = state.tenant;
        if (this.last) sub.lastEventId = this.last;
        this.send(sub);
        break;
      }
      case "SUBSCRIBED":
        if (!this.last) this.save(msg.lastEventId);
        this.indicator(msg.resumed ? "resumed" : "live", msg.resumed ? "live · resumed" : "live");
        this.delay = 500; this.everConnected = true;
        break;
      case "RESYNC":
        log("feed: too far behind, reloading", true);
        this.save(msg.lastEventId);
        loadJobs();
        this.indicator("live", "live · reloaded");
        break;
      case "PING": this.send({ type: "PONG" }); break;
      case "JOB_UPDATE": this.save(msg.eventId); onUpdate(msg); break;
      case "JOB_PROGRESS": this.save(msg.eventId); onProgress(msg); break;
      case "ERROR": log(`feed error: ${msg.error}`, true); break;
      default: break;
    }
  },

  save(id) { if (id) { this.last = id; sessionStorage.setItem(this.key(), id); } },
};

// Our own heartbeat: a PING every 15 s, and a socket silent for 45 s is replaced.
setInterval(() => {
  if (!feed.ws || feed.ws.readyState !== WebSocket.OPEN) return;
  if (feed.heard && Date.now() - feed.heard > 45000) { feed.ws.close(); return; }
  feed.send({ type: "PING" });
}, 15000);

function onUpdate(msg) {
  if (msg.status === "COMPLETED" || msg.status === "FAILED") {
    const slot = slotOf(Date.parse(msg.updatedAt || new Date().toISOString()) / 1000);
    const c = state.counts.get(slot) || { completed: 0, failed: 0 };
    c[msg.status === "COMPLETED" ? "completed" : "failed"] += 1;
    state.counts.set(slot, c);
  }
  if (msg.status !== "RUNNING") state.progress.delete(msg.jobId);
  log(`${msg.jobId.slice(0, 8)} ${msg.status}${msg.error ? ` — ${msg.error}` : ""}`, msg.status === "FAILED");
  const known = state.jobs.get(msg.jobId);
  const fields = { status: msg.status, attempts: msg.attempts, maxAttempts: msg.maxAttempts, error: msg.error, updatedAt: msg.updatedAt };
  const created = msg.status === "PENDING" && msg.attempts === 0;
  if (created) settleTotal();
  // events come in the feed's order; only a creation event can be older than what is shown
  if (known && !created) { Object.assign(known, fields); touch(msg.jobId); }
  else if (!known && created) arrive({ id: msg.jobId, tenantId: msg.tenantId, type: msg.jobType, ...fields });
  if (state.detail === msg.jobId) {
    renderDetailHead({ ...(known || {}), id: msg.jobId, ...fields });
    $("#detail-events").append(eventItem(msg));
    if (msg.status === "COMPLETED") api(`/jobs/${msg.jobId}`).then(merge).catch(() => {});
  }
}

function onProgress(msg) {
  state.progress.set(msg.jobId, { progress: msg.progress, message: msg.message });
  if (state.jobs.has(msg.jobId)) touch(msg.jobId);
  if (state.detail === msg.jobId) { $("#detail-progress").replaceChildren(progressBar(msg.jobId)); $("#detail-events").append(eventItem(msg)); }
}

function log(text, bad = false) {
  const list = $("#log");
  list.prepend(el("li", { textContent: `${new Date().toLocaleTimeString()} ${text}`, className: bad ? "error" : "" }));
  while (list.children.length > 200) list.lastChild.remove();
}

// ---- charts -------------------------------------------------------------------------------

const slotOf = (seconds) => Math.floor(seconds / SLOT) * SLOT;

// The last hour as the node keeps it, so that the charts mean something from the first look;
// the feed (subscribed after this read) and pollDepth extend it live.
async function loadHistory() {
  try {
    const h = await api(withTenant("/stats/history"));
    const depth = [];
    h.completed.forEach((completed, i) => {
      const t = h.from / 1000 + i * h.slotSeconds;
      if (completed || h.failed[i]) state.counts.set(slotOf(t), { completed, failed: h.failed[i] });
      if (h.unfinished[i] !== null) depth.push([t + h.slotSeconds, Math.max(0, h.unfinished[i] - h.running[i]), h.running[i]]);
    });
    state.depth = depth.concat(state.depth);
  } catch { /* the charts start empty, as before the history */ }
}

async function pollDepth() {
  try {
    const d = await api(withTenant("/stats"));
    state.depth.push([Date.now() / 1000, d.waiting, d.running]);
    while (state.depth.length && Date.now() / 1000 - state.depth[0][0] > SPAN) state.depth.shift();
  } catch { /* the feed indicator tells of outages */ }
}

function drawCharts() {
  const now = slotOf(Date.now() / 1000);
  const completed = [], failed = [];
  for (let t = now - SPAN + SLOT; t <= now; t += SLOT) {
    const c = state.counts.get(t) || { completed: 0, failed: 0 };
    completed.push([t, c.completed]); failed.push([t, c.failed]);
  }
  for (const t of state.counts.keys()) if (t < now - SPAN) state.counts.delete(t);
  const total = (points) => points.reduce((n, [, v]) => n + v, 0);
  $("#throughput").setAttribute("aria-label",
    `jobs per 5 seconds: ${total(completed)} completed and ${total(failed)} failed in the last hour`);
  drawChart($("#throughput"), [
    { label: "completed", color: "#15803d", points: completed },
    { label: "failed", color: "#b91c1c", points: failed },
  ], SPAN);
  drawChart($("#depth"), [
    { label: "waiting", color: "#6b7280", points: state.depth.map(([t, w]) => [t, w]) },
    { label: "running", color: "#2563eb", points: state.depth.map(([t, , r]) => [t, r]) },
  ], SPAN);
}

start();

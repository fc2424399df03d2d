// The console's pages: they read the JSON API (docs/console.md) and refresh every two
// seconds. No framework: the pages are small, and every asset is served by the console.
"use strict";

const REFRESH_MS = 2000;
const STATUSES = ["running", "committed", "compensating", "completed", "failed",
  "needs_attention", "resolved"];

const $ = (selector) => document.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function badge(status) {
  return element("span", { class: `badge ${status}` }, status.replace("_", " "));
}

function when(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+\+00:00$/, "Z") : "–";
}

// The token is kept for this tab only (sessionStorage), never in a cookie.
function setUpToken() {
  const input = $("#token");
  input.value = sessionStorage.getItem("saga-console-token") || "";
  input.addEventListener("change", () => sessionStorage.setItem("saga-console-token", input.value));
}

async function api(path, options = {}) {
  const token = $("#token").value.trim();
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try { body = await response.json(); } catch { body = null; }
  return { ok: response.ok, status: response.status, body };
}

function showProblem(text) {
  const problem = $("#problem");
  problem.hidden = !text;
  problem.textContent = text || "";
  const live = $("#live");
  if (live) live.classList.toggle("stale", Boolean(text));
}

// --- the list -------------------------------------------------------------------------------

const list = { next: null, extra: [], timer: null };

function listQuery(after) {
  const params = new URLSearchParams();
  const q = $("#search").value.trim();
  if (q) params.set("q", q);
  if ($("#status-filter").value) params.set("status", $("#status-filter").value);
  if ($("#definition-filter").value) params.set("definition", $("#definition-filter").value);
  if (after) params.set("after", after);
  return `/api/sagas?${params}`;
}

function sagaRow(s) {
  const link = element("a", { href: `/sagas/${encodeURIComponent(s.saga_id)}` }, s.saga_id);
  return element("tr", { "data-saga-id": s.saga_id },
    element("td", {}, link), element("td", {}, `${s.definition} v${s.definition_version}`),
    element("td", {}, badge(s.status)), element("td", {}, s.current || ""),
    element("td", {}, s.reason_code || ""), element("td", {}, when(s.created_at)),
    element("td", {}, when(s.updated_at)));
}

async function refreshList() {
  const first = await api(listQuery(null));
  if (!first.ok) {
    showProblem(first.body?.error || `the console answered ${first.status}`);
    return;
  }
  showProblem(null);
  const rows = [...first.body.sagas, ...list.extra];
  $("#sagas tbody").replaceChildren(...rows.map(sagaRow));
  $("#empty").hidden = rows.length > 0;
  if (list.extra.length === 0) list.next = first.body.next;
  $("#more").hidden = !list.next;
}

async function loadMore() {
  const page = await api(listQuery(list.next));
  if (!page.ok) return showProblem(page.body?.error || `the console answered ${page.status}`);
  list.extra.push(...page.body.sagas);
  list.next = page.body.next;
  await refreshList();
}

async function startList() {
  for (const status of STATUSES) {
    $("#status-filter").append(element("option", { value: status }, status.replace("_", " ")));
  }
  const definitions = await api("/api/definitions");
  const names = definitions.ok ? [...new Set(definitions.body.map((d) => d.name))] : [];
  for (const name of names) $("#definition-filter").append(element("option", { value: name }, name));
  const restart = () => { list.extra = []; list.next = null; refreshList(); };
  $("#search").addEventListener("input", restart);
  $("#status-filter").addEventListener("change", restart);
  $("#definition-filter").addEventListener("change", restart);
  $("#filters").addEventListener("submit", (event) => event.preventDefault());
  $("#more").addEventListener("click", loadMore);
  await refreshList();
  list.timer = setInterval(refreshList, REFRESH_MS);
}

// --- one saga -------------------------------------------------------------------------------

const saga = { ident: null, graph: null, renders: 0, actions: "" };

function facts(s) {
  const rows = [["Definition", `${s.definition} v${s.definition_version}`],
    ["Created", when(s.created_at)], ["Updated", when(s.updated_at)],
    ["Deadline", when(s.deadline_at)], ["Outbox", `${s.outbox_pending} pending`]];
  return rows.flatMap(([name, value]) => [element("dt", {}, name), element("dd", {}, value)]);
}

function stepRow(step) {
  const last = step.errors.length ? step.errors[step.errors.length - 1] : null;
  return element("tr", { "data-step": `${step.step}:${step.operation}` },
    element("td", {}, step.step), element("td", {}, step.operation),
    element("td", {}, badge(step.status)), element("td", {}, String(step.attempts)),
    element("td", {}, when(step.started_at)), element("td", {}, when(step.finished_at)),
    element("td", { class: "wrap" }, last ? `${last.code}: ${last.detail}` : ""));
}

function timelineItem(e) {
  const what = [e.step, e.operation].filter(Boolean).join(" ");
  return element("li", {}, element("time", {}, when(e.at)),
    element("span", { class: "kind" }, e.kind), what ? `${what} · ` : "", e.detail || "",
    e.by ? ` (by ${e.by})` : "");
}

async function drawGraph(text) {
  if (text === saga.graph || !window.mermaid) return;
  saga.graph = text;
  saga.renders += 1;
  try {
    const { svg } = await window.mermaid.render(`graph-${saga.renders}`, text);
    $("#graph").innerHTML = svg;
  } catch (problem) {
    $("#graph").textContent = `The graph cannot be drawn: ${problem}`;
  }
}

function drawActions(actions) {
  const key = actions.join(",");
  $("#actions").hidden = actions.length === 0;
  if (key === saga.actions) return;
  saga.actions = key;
  $("#action-buttons").replaceChildren(...actions.map((action) => {
    const button = element("button", { type: "button", "data-action": action,
      class: action === "cancel" ? "danger" : null }, action);
    button.addEventListener("click", () => act(action));
    return button;
  }));
}

async function act(action) {
  const buttons = document.querySelectorAll("#action-buttons button");
  buttons.forEach((b) => { b.disabled = true; });
  $("#action-result").textContent = `${action}: asking the orchestrator…`;
  const answer = await api(`/api/sagas/${encodeURIComponent(saga.ident)}/${action}`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ operator: $("#operator").value.trim() || "console",
      note: $("#note").value }),
  });
  const verdict = answer.ok ? "done" : answer.status === 409 ? "refused" : "failed";
  const why = answer.body?.detail || answer.body?.error || `HTTP ${answer.status}`;
  $("#action-result").textContent = `${action} ${verdict}: ${why}`;
  buttons.forEach((b) => { b.disabled = false; });
  await refreshSaga();
}

async function refreshSaga() {
  const answer = await api(`/api/sagas/${encodeURIComponent(saga.ident)}`);
  if (!answer.ok) {
    showProblem(answer.body?.error || `the console answered ${answer.status}`);
    return;
  }
  showProblem(null);
  const s = answer.body;
  document.title = `${s.saga_id} · saga console`;
  $("#saga-id").textContent = s.saga_id;
  $("#saga-status").replaceWith(Object.assign(badge(s.status), { id: "saga-status" }));
  $("#facts").replaceChildren(...facts(s));
  $("#failure").hidden = !s.failure;
  $("#failure").textContent = s.failure
    ? `${s.failure.reason_code} at ${s.failure.step || "–"}: ${s.failure.reason}` : "";
  $("#attention").hidden = !s.attention;
  $("#attention").textContent = s.attention ? `Needs attention: ${s.attention}` : "";
  drawActions(s.actions);
  $("#steps tbody").replaceChildren(...s.steps.map(stepRow));
  $("#timeline").replaceChildren(...s.history.map(timelineItem));
  await drawGraph(s.graph);
}

async function startSaga() {
  saga.ident = decodeURIComponent(location.pathname.replace(/^\/sagas\//, ""));
  window.mermaid?.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral" });
  await refreshSaga();
  setInterval(refreshSaga, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  setUpToken();
  (document.body.dataset.page === "saga" ? startSaga : startList)();
});

// peach-scheduler dashboard: reads /api/v1, renders with DOM calls and textContent only (never HTML
// built from data), keeps the user's place across refreshes. The token lives in sessionStorage only.
"use strict";

const API = "api/v1";
const METADATA = "metadata";
const REFRESH_MS = 5000;
const TAIL_MS = 1000;
const PAGE = 25;
const SVG = "http://www.w3.org/2000/svg";

const state = {
  codops: null, // an organisation, or METADATA for the shared loop
  task: null, // "codops/task" when a task is selected
  pageBefore: [], // stack of `before` anchors: [] is the newest page
  next: null,
  links: { repositories: {}, yarn_ui: null },
  tail: null, // { runId, offset, timer }
  picked: [], // ids of the (at most two) runs picked for a diff, oldest pick first
  shown: new Map(), // run id -> run, for the runs on the page
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function say(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

// -- formatting ---------------------------------------------------------------------------------------

// Times are UTC, as everywhere in peach-scheduler; the column headers say so.
function when(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?Z$/, "") : "—";
}

// Long text (an outcome, an error, a reason) on one line, cut with an ellipsis; the full text on hover
// (title) and, on a click, in place.
function clipped(text, className) {
  const span = el("span", { className: `clip ${className || ""}`.trim(), title: text, tabindex: "0" }, text);
  span.addEventListener("click", () => span.classList.toggle("expanded"));
  return span;
}

function elapsed(iso) {
  return Math.max((Date.now() - Date.parse(iso)) / 1000, 0);
}

function memory(bytes) {
  const mib = bytes / 1048576;
  return mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${Math.round(mib)} MiB`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// Progress and ETA of a running task or run (API fields progress, progress_message, eta_seconds, overdue,
// expected_seconds; the formula is scheduler/eta.py). Not running: how long it usually takes.
function progressCell(item, running) {
  const cell = el("span", { className: "progress-cell" });
  if (!running) {
    cell.append(item.expected_seconds === null || item.expected_seconds === undefined ? "—" : `usually ${duration(item.expected_seconds)}`);
    cell.classList.add("muted");
    return cell;
  }
  if (item.progress !== null && item.progress !== undefined) {
    const percent = `${Math.round(item.progress * 100)}%`;
    cell.append(el("progress", { max: "1", value: String(item.progress), "aria-label": `progress ${percent}`, title: item.progress_message || percent }), ` ${percent}`);
    if (item.progress_message) cell.append(el("span", { className: "progress-message" }, ` ${item.progress_message}`));
  }
  let eta = "ETA unknown";
  if (item.eta_seconds !== null && item.eta_seconds !== undefined) eta = `ETA ${duration(item.eta_seconds)}`;
  if (item.overdue) eta = `${item.eta_seconds === null ? "" : `${eta}, `}overdue (usually ${duration(item.expected_seconds)})`;
  cell.append(el("span", { className: item.overdue ? "eta overdue" : "eta" }, ` ${eta}`));
  return cell;
}

function statusBadge(status) {
  return el("span", { className: `badge s-${(status || "none").toLowerCase()}` }, status || "never run");
}

function taskKey(task) {
  return `${task.codops}/${task.task}`;
}

function splitKey(key) {
  const at = key.indexOf("/");
  return at < 0 ? [state.codops, key] : [key.slice(0, at), key.slice(at + 1)];
}

// -- URL: the organisation and task are the user's place --------------------------------------------

function readURL() {
  const params = new URLSearchParams(location.search);
  state.codops = params.get("codops");
  const task = params.get("task");
  state.task = task && state.codops ? (task.includes("/") ? task : `${state.codops}/${task}`) : null;
}

function writeURL() {
  const params = new URLSearchParams();
  if (state.codops) params.set("codops", state.codops);
  if (state.task) {
    const [codops, task] = splitKey(state.task);
    params.set("task", state.codops === METADATA ? `${codops}/${task}` : task);
  }
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

// -- focus survives re-rendering: elements carry a data-focus key ------------------------------------

function rememberFocus() {
  const active = document.activeElement;
  return active && active.dataset ? active.dataset.focus : undefined;
}

function restoreFocus(key) {
  if (!key) return;
  const again = document.querySelector(`[data-focus="${CSS.escape(key)}"]`);
  if (again) again.focus();
}

// -- organisations ------------------------------------------------------------------------------------

async function loadOrganisations() {
  const organisations = await getJSON(`${API}/organisations`);
  const select = $("org");
  const chosen = state.codops;
  select.replaceChildren();
  for (const org of organisations) {
    const label = org.failing ? `${org.codops} (${org.failing} failing)` : org.codops;
    select.append(el("option", { value: org.codops }, label));
  }
  select.append(el("option", { value: METADATA }, "metadata loop (all organisations)"));
  if (!chosen && organisations.length) state.codops = organisations[0].codops;
  select.value = state.codops || METADATA;
}

// -- tasks --------------------------------------------------------------------------------------------

async function loadTasks() {
  const codops = state.codops;
  const metadata = codops === METADATA;
  const tasks = await getJSON(
    metadata ? `${API}/tasks?loop=${METADATA}` : `${API}/organisations/${encodeURIComponent(codops)}/tasks`,
  );
  const problems = metadata ? [] : await getJSON(`${API}/organisations/${encodeURIComponent(codops)}/problems`);
  const loops = await getJSON(`${API}/loops`);
  if (state.codops !== codops) return; // another organisation was chosen meanwhile: its own load renders
  $("tasks-title").textContent = metadata ? "Tasks of the metadata loop" : `Tasks of ${state.codops}`;
  renderProblems(problems);
  const focus = rememberFocus();
  const rows = tasks.map((task) => {
    const key = taskKey(task);
    const name = metadata ? key : task.task;
    const link = el("a", { href: `?codops=${encodeURIComponent(state.codops)}&task=${encodeURIComponent(metadata ? key : task.task)}`, "data-focus": `task:${key}`, "data-task": key }, name);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      selectTask(key);
    });
    const trigger = el("button", { type: "button", className: "trigger", "data-focus": `trigger:${key}`, "aria-label": `trigger ${name}` }, "Trigger");
    trigger.addEventListener("click", () => act(`${API}/organisations/${encodeURIComponent(task.codops)}/tasks/${encodeURIComponent(task.task)}/trigger`, `trigger of ${key}`));
    const running = task.state === "RUNNING" && Boolean(task.last_started_at);
    return el(
      "tr",
      { "data-task": key, className: key === state.task ? "selected" : null },
      el("td", {}, link, task.enabled ? null : el("span", { className: "muted" }, " (disabled)")),
      el(
        "td",
        { className: "state-cell" },
        el("span", { className: `state st-${task.state.toLowerCase()}` }, task.state),
        task.invalid_since ? el("span", { className: "muted" }, " since ", el("code", {}, task.invalid_since.slice(0, 12))) : null,
        task.reason ? clipped(task.reason, "why") : null,
      ),
      // One run per row: a running task shows its running run (start, time so far), not the previous
      // run's status and duration next to the new run's start.
      el("td", { className: "status-cell" }, ...(running ? [statusBadge("RUNNING")] : [statusBadge(task.last_status), task.last_error ? clipped(task.last_error, "error-line") : null])),
      el("td", {}, when(task.last_started_at)),
      el("td", { className: "num" }, running ? `${duration(elapsed(task.last_started_at))} so far` : duration(task.last_duration_seconds)),
      el("td", {}, task.executor),
      el("td", {}, task.loop),
      el("td", {}, when(task.next_due)),
      el("td", { className: "progress-col" }, progressCell(task, task.state === "RUNNING" && Boolean(task.running_run_id))),
      el("td", {}, trigger),
    );
  });
  $("tasks").tBodies[0].replaceChildren(...rows);
  $("tasks-empty").hidden = tasks.length > 0;
  renderExpectedPass(loops.find((loop) => loop.loop === (metadata ? METADATA : state.codops)));
  restoreFocus(focus);
}

function renderExpectedPass(loop) {
  const line = $("loop-expected");
  if (!loop) {
    line.textContent = "";
    return;
  }
  const without = loop.tasks_without_history ? ` (${loop.tasks_without_history} of ${loop.tasks} tasks never succeeded yet, not counted)` : "";
  line.textContent = loop.expected_pass_seconds === null ? "Expected pass: unknown, no task has succeeded yet" : `Expected pass: ${duration(loop.expected_pass_seconds)}${without}`;
}

function renderProblems(problems) {
  $("problems-section").hidden = problems.length === 0;
  $("problems").replaceChildren(
    ...problems.map((problem) => {
      const where = `${problem.repository}: ${problem.file}${problem.line ? `:${problem.line}` : ""}${problem.cell ? ` (cell ${problem.cell})` : ""}`;
      return el("li", { className: `problem ${problem.severity}` }, el("strong", {}, problem.severity), " ", el("code", {}, where), " ", problem.message);
    }),
  );
}

// -- one task: chart, runs, logs ------------------------------------------------------------------------

function selectTask(key) {
  state.task = key;
  state.pageBefore = [];
  state.picked = [];
  $("diff-section").hidden = true;
  stopTail();
  $("artifacts").hidden = true;
  $("log").textContent = "";
  $("log-title").textContent = "Log";
  writeURL();
  for (const row of $("tasks").tBodies[0].rows) row.classList.toggle("selected", row.dataset.task === key);
  refreshTask().catch((error) => say(error.message, true));
}

async function refreshTask() {
  $("task-section").hidden = !state.task;
  if (!state.task) return;
  const [codops, task] = splitKey(state.task);
  $("task-title").textContent = `${codops} / ${task}`;
  const query = `codops=${encodeURIComponent(codops)}&task=${encodeURIComponent(task)}`;
  const before = state.pageBefore.length ? `&before=${encodeURIComponent(state.pageBefore.at(-1))}` : "";
  const [page, series] = await Promise.all([
    getJSON(`${API}/runs?${query}&limit=${PAGE}${before}`),
    getJSON(`${API}/durations?${query}`),
  ]);
  renderRuns(page.runs, codops);
  state.next = page.next;
  $("older").disabled = !page.next;
  $("newer").disabled = state.pageBefore.length === 0;
  renderChart(series);
}

function commitLink(run, codops) {
  if (!run.version) return document.createTextNode("—");
  const base = state.links.repositories[codops];
  if (base && /^https?:\/\//.test(base)) {
    return el("a", { href: `${base.replace(/\.git$/, "").replace(/\/$/, "")}/commit/${encodeURIComponent(run.version)}`, title: run.version }, run.short_version);
  }
  return el("code", { title: run.version }, run.short_version);
}

function applicationLink(run) {
  if (!run.application_id) return document.createTextNode("—");
  if (state.links.yarn_ui) return el("a", { href: `${state.links.yarn_ui}/cluster/app/${encodeURIComponent(run.application_id)}` }, run.application_id);
  return el("code", {}, run.application_id);
}

function renderRuns(runs, codops) {
  const focus = rememberFocus();
  for (const run of runs) state.shown.set(run.id, run);
  const rows = runs.map((run) => {
    const pick = el("input", { type: "checkbox", className: "pick", "data-focus": `pick:${run.id}`, "aria-label": `pick run ${run.id} for a diff`, checked: state.picked.includes(run.id) });
    pick.addEventListener("change", () => pickRun(run.id, pick.checked));
    const log = el("button", { type: "button", className: "show-log", "data-focus": `log:${run.id}` }, "Log");
    log.addEventListener("click", () => showLog(run));
    const ran = el("button", { type: "button", className: "show-manifest", "data-focus": `manifest:${run.id}`, title: "what this run ran" }, "What ran");
    ran.addEventListener("click", () => showManifest(run).catch((error) => say(error.message, true)));
    const rerun = el("button", { type: "button", className: "rerun", "data-focus": `rerun:${run.id}`, title: "run again at this run's commit, with its dependency set and arguments" }, "Rerun");
    rerun.addEventListener("click", () => act(`${API}/runs/${encodeURIComponent(run.id)}/rerun`, `rerun of run ${run.id}`));
    const keep = el(
      "button",
      { type: "button", className: "keep", "data-focus": `keep:${run.id}`, "aria-pressed": String(Boolean(run.keep)), title: run.keep ? "kept: retention never prunes its artifacts (click to unkeep)" : "keep this run's artifacts whatever the retention policy" },
      run.keep ? "Kept" : "Keep",
    );
    keep.addEventListener("click", () =>
      act(`${API}/runs/${encodeURIComponent(run.id)}/keep`, `${run.keep ? "unkeep" : "keep"} of run ${run.id}`, run.keep ? "DELETE" : "PUT"),
    );
    const kill =
      run.status === "RUNNING" ? el("button", { type: "button", className: "kill", "data-focus": `kill:${run.id}` }, "Kill") : null;
    if (kill) kill.addEventListener("click", () => act(`${API}/runs/${encodeURIComponent(run.id)}/kill`, `kill of run ${run.id}`));
    return el(
      "tr",
      { "data-run": run.id, "data-status": run.status, className: state.tail && state.tail.runId === run.id ? "selected" : null },
      el("td", {}, commitLink(run, codops)),
      el("td", { title: when(run.started_at) }, when(run.started_at).slice(5)), // MM-DD hh:mm:ss, the year on hover
      el(
        "td",
        { className: "status-cell" },
        statusBadge(run.status),
        run.outcome ? clipped(run.outcome, "muted outcome") : null,
        run.error ? clipped(run.error, "error-line") : null,
        run.rerun_of ? el("span", { className: "muted rerun-of clip" }, `(rerun of ${run.rerun_of})`) : null,
        run.status === "RUNNING" ? progressCell(run, true) : null,
      ),
      el(
        "td",
        { className: "num" },
        duration(run.duration_seconds),
        run.peak_memory_bytes ? el("span", { className: "muted peak-memory", title: "peak memory of its local processes" }, ` peak ${memory(run.peak_memory_bytes)}`) : null,
        run.waited_seconds >= 1 ? el("span", { className: "muted waited", title: "waited for a capacity slot before it started" }, ` (waited ${duration(run.waited_seconds)})`) : null,
      ),
      el("td", {}, applicationLink(run)),
      el("td", { className: "actions" }, log, " ", ran, " ", rerun, " ", keep, kill ? " " : null, kill),
      el("td", {}, pick),
    );
  });
  $("runs").tBodies[0].replaceChildren(...rows);
  $("runs").classList.toggle("no-app", !runs.some((run) => run.application_id)); // local runs: no column
  $("diff-runs").disabled = state.picked.length !== 2;
  restoreFocus(focus);
}

// -- what ran, and what changed between two runs (text only) ------------------------------------------

function pickRun(id, on) {
  state.picked = state.picked.filter((picked) => picked !== id);
  if (on) state.picked.push(id);
  if (state.picked.length > 2) state.picked = state.picked.slice(-2);
  for (const box of document.querySelectorAll("#runs input.pick")) box.checked = state.picked.includes(box.closest("tr").dataset.run);
  $("diff-runs").disabled = state.picked.length !== 2;
}

// Each line its own text node; +/- lines of unified diffs coloured by class.
function showText(title, lines) {
  $("diff-title").textContent = title;
  const pre = $("diff");
  pre.replaceChildren(
    ...lines.map((line) => {
      let kind = null;
      if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("== ")) kind = "head";
      else if (line.startsWith("@@")) kind = "hunk";
      else if (line.startsWith("+")) kind = "add";
      else if (line.startsWith("-")) kind = "del";
      return el("span", { className: kind }, `${line}\n`);
    }),
  );
  $("diff-section").hidden = false;
}

async function showDiff() {
  if (state.picked.length !== 2) return;
  const [a, b] = [...state.picked].sort((x, y) => {
    const [rx, ry] = [state.shown.get(x), state.shown.get(y)];
    return rx && ry ? Date.parse(rx.started_at) - Date.parse(ry.started_at) : 0;
  });
  const response = await fetch(`${API}/runs/${encodeURIComponent(a)}/diff/${encodeURIComponent(b)}`);
  const body = await response.json();
  if (!response.ok) throw new Error(`diff refused (HTTP ${response.status}: ${body.detail})`);
  const lines = [];
  lines.push(body.commit.changed ? `commit: ${body.commit.a} -> ${body.commit.b}` : `commit: ${body.commit.a} (same)`);
  const section = (title, text) => {
    lines.push(`== ${title}: ${text ? "changed" : "same"}`);
    if (text) lines.push(...text.replace(/\n$/, "").split("\n"));
  };
  section("code (runner script)", body.code);
  section("definition (YAML)", body.definition);
  section("dependency set", body.dependencies.diff);
  for (const change of body.dependencies.changed) lines.push(`  changed ${change.name}: ${change.a} -> ${change.b}`);
  for (const [title, changes] of [["spark settings", body.spark], ["arguments", body.args]]) {
    const keys = Object.keys(changes);
    lines.push(`== ${title}: ${keys.length ? "changed" : "same"}`);
    for (const key of keys) lines.push(`  ${key}: ${JSON.stringify(changes[key].a)} -> ${JSON.stringify(changes[key].b)}`);
  }
  showText(`Diff of run ${a} -> run ${b}`, lines);
}

async function showManifest(run) {
  const response = await fetch(`${API}/runs/${encodeURIComponent(run.id)}/manifest`);
  const body = await response.json();
  if (!response.ok) throw new Error(`${run.id}: ${body.detail}`);
  const lines = [`commit: ${body.commit}`, `arguments: ${JSON.stringify(body.args)}`, "dependency set (installed):"];
  lines.push(...(body.frozen === null ? ["  (not known: the environment was not built)"] : body.frozen.map((item) => `  ${item}`)));
  if (body.spark) lines.push("spark-submit settings:", ...JSON.stringify(body.spark, null, 2).split("\n").map((line) => `  ${line}`));
  lines.push(`== definition (${body.definition_file})`, ...body.definition.split("\n"), "== runner script", ...body.runner.split("\n"));
  showText(`What run ${run.id} ran`, lines);
}

// Successes are green circles, failures red crosses, anything else (killed, timed out, lost, running)
// amber squares: told apart by shape as well as colour.
function renderChart(series) {
  const svg = $("chart");
  const width = Math.max(300, Math.round(svg.getBoundingClientRect().width) || 900); // 1 unit = 1 px: text unstretched
  svg.setAttribute("viewBox", `0 0 ${width} 220`);
  const height = 220;
  const pad = { left: 56, right: 12, top: 12, bottom: 28 };
  const points = series.points.filter((p) => p.started_at);
  const times = points.map((p) => Date.parse(p.started_at));
  const values = points.map((p) => p.duration_seconds || 0);
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const top = Math.max(1e-3, ...values) * 1.1;
  const x = (t) => pad.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right) : (width - pad.left - pad.right) / 2);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const node = (tag, attrs) => {
    const made = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) made.setAttribute(key, value);
    return made;
  };
  const parts = [
    node("line", { x1: pad.left, y1: height - pad.bottom, x2: width - pad.right, y2: height - pad.bottom, class: "axis" }),
    node("line", { x1: pad.left, y1: pad.top, x2: pad.left, y2: height - pad.bottom, class: "axis" }),
  ];
  const label = (text, attrs) => {
    const made = node("text", attrs);
    made.textContent = text;
    return made;
  };
  parts.push(label(duration(top), { x: pad.left - 4, y: pad.top + 10, class: "tick", "text-anchor": "end" }));
  parts.push(label("0", { x: pad.left - 4, y: height - pad.bottom, class: "tick", "text-anchor": "end" }));
  if (points.length) {
    parts.push(label(when(points[0].started_at), { x: pad.left, y: height - 8, class: "tick" }));
    parts.push(label(when(points.at(-1).started_at), { x: width - pad.right, y: height - 8, class: "tick", "text-anchor": "end" }));
  }
  points.forEach((p, i) => {
    const cx = x(times[i]);
    const cy = y(values[i]);
    let mark;
    if (p.status === "SUCCEEDED") mark = node("circle", { cx, cy, r: 4 });
    else if (p.status === "FAILED") mark = node("path", { d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx - 4},${cy + 4}L${cx + 4},${cy - 4}` });
    else mark = node("rect", { x: cx - 3.5, y: cy - 3.5, width: 7, height: 7 });
    mark.setAttribute("class", `pt pt-${p.status.toLowerCase()}`);
    mark.setAttribute("data-run", p.id);
    mark.setAttribute("data-status", p.status);
    const title = node("title", {});
    title.textContent = `${when(p.started_at)} · ${p.status} · ${duration(p.duration_seconds)}`;
    mark.append(title);
    parts.push(mark);
  });
  svg.replaceChildren(...parts);
  const failures = points.filter((p) => p.status !== "SUCCEEDED").length;
  const shown = points.length === series.total ? `${series.total} runs` : `${points.length} of ${series.total} runs (downsampled)`;
  $("chart-caption").textContent = `Durations over time: ${shown}; ● succeeded, ✕ failed, ■ other (${failures} not succeeded).`;
}

// -- logs ---------------------------------------------------------------------------------------------

function stopTail() {
  if (state.tail && state.tail.timer) clearTimeout(state.tail.timer);
  state.tail = null;
}

// A run's artifacts: download links (served as attachments, never opened in this page's origin).
function bytes(count) {
  if (count >= 1 << 30) return `${(count / (1 << 30)).toFixed(1)} GiB`;
  if (count >= 1 << 20) return `${(count / (1 << 20)).toFixed(1)} MiB`;
  if (count >= 1024) return `${(count / 1024).toFixed(1)} KiB`;
  return `${count} B`;
}

async function showArtifacts(run) {
  const box = $("artifacts");
  box.hidden = true;
  const listing = await getJSON(`${API}/runs/${encodeURIComponent(run.id)}/artifacts`);
  if (!listing.state) return;
  const links = listing.artifacts.map((artifact) => {
    const path = artifact.path.split("/").map(encodeURIComponent).join("/");
    const name = artifact.path.split("/").at(-1);
    const link = el("a", { href: `${API}/runs/${encodeURIComponent(run.id)}/artifacts/${path}`, download: name, "data-artifact": artifact.path, title: `sha256 ${artifact.sha256}` }, artifact.path);
    return el("li", {}, link, el("span", { className: "muted" }, ` ${bytes(artifact.size)}`));
  });
  $("artifact-list").replaceChildren(...links);
  $("artifacts-title").textContent = `Artifacts of run ${run.id}${listing.keep ? " (kept)" : ""}`;
  $("artifacts-note").textContent = listing.state === "pending" ? "collected when the run ends" : listing.note || "";
  box.hidden = false;
}

async function showLog(run) {
  stopTail();
  showArtifacts(run).catch((error) => say(error.message, true));
  const pre = $("log");
  $("log-title").textContent = `Log of run ${run.id} (${run.status})`;
  const response = await fetch(`${API}/runs/${encodeURIComponent(run.id)}/log`);
  const text = await response.text();
  pre.textContent = text;
  pre.dataset.run = run.id;
  for (const row of $("runs").tBodies[0].rows) row.classList.toggle("selected", row.dataset.run === run.id);
  if (run.status === "RUNNING") {
    state.tail = { runId: run.id, offset: new TextEncoder().encode(text).length, timer: null };
    $("log-title").textContent = `Log of run ${run.id} (RUNNING, following)`;
    state.tail.timer = setTimeout(tail, TAIL_MS);
  }
}

// Live tail: ask only for the bytes added since the last read (Range), until the run ends.
async function tail() {
  const current = state.tail;
  if (!current) return;
  try {
    const response = await fetch(`${API}/runs/${encodeURIComponent(current.runId)}/log`, { headers: { Range: `bytes=${current.offset}-` } });
    if (response.status === 206) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      current.offset += bytes.length;
      const pre = $("log");
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(document.createTextNode(new TextDecoder().decode(bytes)));
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
    const run = await getJSON(`${API}/runs/${encodeURIComponent(current.runId)}`);
    if (run.status !== "RUNNING" && response.status !== 206) {
      $("log-title").textContent = `Log of run ${run.id} (${run.status})`;
      state.tail = null;
      return;
    }
  } catch (error) {
    say(error.message, true);
  }
  if (state.tail === current) current.timer = setTimeout(tail, TAIL_MS);
}

async function showAllLogs() {
  stopTail();
  const rows = [...$("runs").tBodies[0].rows].map((row) => row.dataset.run).reverse();
  const texts = await Promise.all(rows.map((id) => fetch(`${API}/runs/${encodeURIComponent(id)}/log`).then((r) => r.text())));
  const pre = $("log");
  pre.textContent = rows.map((id, i) => `===== run ${id} =====\n${texts[i]}`).join("\n");
  delete pre.dataset.run;
  $("log-title").textContent = `Logs of ${rows.length} runs, oldest first`;
}

// -- actions: trigger, kill, rerun and keep carry the token the user typed -----------------------------

async function act(path, what, method = "POST") {
  const token = $("token").value.trim();
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const response = await fetch(path, { method, headers });
  if (response.ok) {
    say(`${what}: accepted`);
    refresh();
    return;
  }
  let detail = `HTTP ${response.status}`;
  try {
    detail = `${detail}: ${(await response.json()).detail}`;
  } catch (_) {
    // not JSON: the status says enough
  }
  say(`${what} refused (${detail})${response.status === 401 ? ": enter the API token above" : ""}`, true);
}

// -- refresh ------------------------------------------------------------------------------------------

let refreshing = false;
let refreshAgain = false; // asked while one was going (another organisation chosen): run once more after
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    await loadOrganisations();
    if (state.codops) {
      await loadTasks();
      await refreshTask();
    }
    document.body.dataset.loaded = String(Date.now());
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("updated").className = "";
  } catch (error) {
    // its own line: a refresh never overwrites what an action said in #status
    $("updated").textContent = `refresh failed: ${error.message}`;
    $("updated").className = "error";
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      refresh();
    }
  }
}

async function start() {
  readURL();
  const token = $("token");
  token.value = sessionStorage.getItem("peach-token") || "";
  token.addEventListener("change", () => sessionStorage.setItem("peach-token", token.value));
  $("org").addEventListener("change", (event) => {
    state.codops = event.target.value;
    state.task = null;
    state.pageBefore = [];
    state.picked = [];
    stopTail();
    writeURL();
    refresh();
  });
  $("older").addEventListener("click", () => {
    if (!state.next) return;
    state.pageBefore.push(state.next);
    refreshTask();
  });
  $("newer").addEventListener("click", () => {
    state.pageBefore = [];
    refreshTask();
  });
  $("all-logs").addEventListener("click", () => showAllLogs().catch((error) => say(error.message, true)));
  $("diff-runs").addEventListener("click", () => showDiff().catch((error) => say(error.message, true)));
  try {
    state.links = await getJSON(`${API}/dashboard`);
  } catch (_) {
    // links are a nicety
  }
  await refresh();
  writeURL();
  setInterval(refresh, REFRESH_MS);
}

start();

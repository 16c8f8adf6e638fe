// imgnorm dashboard: renders the pages from /api/v1 and keeps them live with
// server-sent events. Every event carries the whole view, so a page opened
// mid-job or reconnected after a drop is correct from its first event.
"use strict";

const app = document.getElementById("app");
const page = app.dataset.page;
const $ = (id) => document.getElementById(id);

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function num(n, d = 0) {
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: d, minimumFractionDigits: d });
}
function dur(s) {
  if (s == null || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
}
function bytes(b) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${num(b, i ? 1 : 0)} ${u[i]}`;
}
const badge = (s) => `<span class="badge ${esc(s)}">${esc(s)}</span>`;
function bar(pct, small) {
  const p = Math.max(0, Math.min(100, pct));
  return `<div class="bar${small ? " small" : ""}" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="${Math.floor(p)}"><span style="width:${p}%"></span><b>${num(p, 1)}%</b></div>`;
}

async function api(path, opts = {}) {
  const r = await fetch(path, { credentials: "same-origin", ...opts });
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error(body?.error || `${r.status} ${r.statusText}`);
  return body;
}

// ---- live updates ---------------------------------------------------------
function live(query, render) {
  const dot = $("live");
  let es;
  const connect = () => {
    es = new EventSource("/api/v1/events" + query);
    es.addEventListener("snapshot", (e) => {
      dot.textContent = "live"; dot.classList.add("on");
      render(JSON.parse(e.data));
    });
    es.onerror = () => {
      dot.textContent = "reconnecting…"; dot.classList.remove("on");
      // The browser retries by itself; a closed stream (e.g. a 401) is retried here.
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
    };
  };
  connect();
}

// ---- jobs -----------------------------------------------------------------
function renderJobs(s) {
  if (!s.jobs.length) {
    $("jobs").innerHTML = `<p class="muted">No jobs yet. <a href="/new">Upload a dataset and start one</a>.</p>`;
    return;
  }
  $("jobs").innerHTML = `<table><thead><tr><th>Job</th><th>Dataset</th><th>State</th><th>Progress</th>
    <th class="num">Images</th><th class="num">Images/s</th><th class="num hide-sm">Elapsed</th>
    <th class="num hide-sm">ETA</th><th class="num">Failed</th></tr></thead><tbody>${s.jobs.map((j) => `
    <tr><td><a class="mono" href="/jobs/${esc(j.id)}">${esc(j.id)}</a></td>
    <td>${esc(j.dataset ?? j.input)}</td><td>${badge(j.state)}</td><td>${bar(j.percent, true)}</td>
    <td class="num">${num(j.done)} / ${num(j.total)}</td><td class="num">${num(j.images_per_s, 1)}</td>
    <td class="num hide-sm">${dur(j.elapsed_s)}</td><td class="num hide-sm">${j.eta_s == null ? "–" : dur(j.eta_s)}</td>
    <td class="num">${num(j.failed)}</td></tr>`).join("")}</tbody></table>`;
}

// ---- workers --------------------------------------------------------------
const lease = (l) => `<span class="mono">${esc(l.job)} · batch ${l.batch}${l.attempt > 1 ? ` (try ${l.attempt})` : ""} · ${l.items} img</span>`;
function workerTable(ws, withHistory) {
  if (!ws.length) return `<p class="muted">No workers yet. Start some with <code>imgnorm worker --master http://MASTER:50051</code>.</p>`;
  return `<table id="worker-table"><thead><tr><th>Name</th><th class="hide-sm">Host</th><th>State</th><th>Current batch</th>
    <th class="num">Images</th><th class="num">Images/s</th><th class="num hide-sm">Last heartbeat</th>
    ${withHistory ? "<th>History</th>" : ""}</tr></thead><tbody>${ws.map((w) => `
    <tr data-worker="${w.id}"><td>${esc(w.name)} <span class="muted mono">#${w.id}</span></td><td class="hide-sm">${esc(w.host)}</td>
    <td>${badge(w.state)}</td><td>${w.current.length ? w.current.map(lease).join("<br>") : '<span class="muted">idle</span>'}</td>
    <td class="num">${num(w.images_done)}</td><td class="num">${num(w.images_per_s, 1)}</td>
    <td class="num hide-sm">${w.state === "dead" ? "–" : dur(w.last_heartbeat_s_ago) + " ago"}</td>
    ${withHistory ? `<td class="wrap"><ul class="history">${w.history.map((e) =>
      `<li>${esc(e.kind === "timedout" ? "died (heartbeat timeout)" : e.kind === "disconnected" ? "died (disconnected)" : e.kind)} <span class="muted">${dur(e.ago_s)} ago</span></li>`).join("")}</ul></td>` : ""}
    </tr>`).join("")}</tbody></table>`;
}

// ---- one job --------------------------------------------------------------
function chart(samples) {
  const W = 800, H = 220, L = 44, B = 22, T = 10;
  if (samples.length < 2) return `<p class="muted">Waiting for samples…</p>`;
  // images/s between consecutive samples, lightly smoothed over 3 points.
  const pts = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i][0] - samples[i - 1][0];
    if (dt > 0) pts.push([samples[i][0], (samples[i][1] - samples[i - 1][1]) / dt]);
  }
  const sm = pts.map((p, i) => {
    const w = pts.slice(Math.max(0, i - 1), i + 2);
    return [p[0], w.reduce((a, q) => a + q[1], 0) / w.length];
  });
  if (!sm.length) return `<p class="muted">Waiting for samples…</p>`;
  const t0 = samples[0][0], t1 = samples[samples.length - 1][0] || 1;
  const ymax = Math.max(1, ...sm.map((p) => p[1])) * 1.15;
  const x = (t) => L + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - L - 8);
  const y = (v) => T + (1 - v / ymax) * (H - T - B);
  const line = sm.map((p, i) => `${i ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
  const area = `${line}L${x(sm[sm.length - 1][0]).toFixed(1)},${y(0)}L${x(sm[0][0]).toFixed(1)},${y(0)}Z`;
  let grid = "";
  for (let k = 0; k <= 4; k++) {
    const v = (ymax * k) / 4;
    grid += `<line class="grid" x1="${L}" x2="${W - 8}" y1="${y(v)}" y2="${y(v)}"/><text x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${num(v)}</text>`;
  }
  grid += `<text x="${L}" y="${H - 5}">${dur(t0)}</text><text x="${W - 8}" y="${H - 5}" text-anchor="end">${dur(t1)}</text>`;
  return `<svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="images per second over time">
    ${grid}<path class="area" d="${area}"/><path class="line" d="${line}"/></svg>`;
}

function statsTable(st) {
  if (!st || !st.channels) return `<p class="muted">No statistics.</p>`;
  const rows = st.channels.map((c, i) => `<tr><td>${i}</td><td class="num">${num(c.count)}</td>
    <td class="num">${num(c.min, 4)}</td><td class="num">${num(c.max, 4)}</td><td class="num">${num(c.mean, 4)}</td><td class="num">${num(c.std, 4)}</td></tr>`).join("");
  return `<table><thead><tr><th>Channel</th><th class="num">Values</th><th class="num">Min</th><th class="num">Max</th>
    <th class="num">Mean</th><th class="num">Std</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function renderJob(s) {
  const j = s.job;
  if (!j) { $("progress").innerHTML = `<p class="msg error">No such job.</p>`; return; }
  $("state").className = `badge ${j.state}`; $("state").textContent = j.state;
  $("progress").innerHTML = bar(j.percent);
  const cell = (k, v) => `<div><small>${k}</small><strong>${v}</strong></div>`;
  $("numbers").innerHTML = cell("Images", `${num(j.done)} / ${num(j.total)}`) + cell("Images/s", num(j.images_per_s, 1)) +
    cell("Elapsed", dur(j.elapsed_s)) + cell("ETA", j.state === "running" ? dur(j.eta_s) : "–") +
    cell("OK", num(j.ok)) + cell("Failed", num(j.failed)) + cell("Skipped", num(j.skipped)) +
    cell("Dataset", esc(j.dataset ?? "–"));
  const acts = [];
  if (j.state === "running" || j.state === "queued") acts.push(`<button id="cancel" class="danger">Cancel job</button>`);
  if (j.state === "done" && j.downloadable) {
    acts.push(`<a id="download" class="button" href="/api/v1/jobs/${esc(j.id)}/archive" download>Download results (.tar)</a>`);
    acts.push(`<a id="manifest" class="button ghost" href="/api/v1/jobs/${esc(j.id)}/manifest" download>Manifest</a>`);
  }
  if (j.error) acts.push(`<p class="msg error">${esc(j.error)}</p>`);
  const html = acts.join("");
  if ($("actions").dataset.html !== html) { $("actions").innerHTML = html; $("actions").dataset.html = html; }
  $("chart").innerHTML = chart(j.samples);
  $("workers").innerHTML = workerTable(j.workers, false);
  $("failures").innerHTML = j.failures_total === 0 ? `<p class="muted">None.</p>` :
    `<table><thead><tr><th>Path</th><th>Reason</th><th class="num">Attempts</th></tr></thead><tbody>${j.failures.map((f) =>
      `<tr><td class="mono wrap">${esc(f.path)}</td><td class="wrap">${esc(f.reason)}</td><td class="num">${f.attempts}</td></tr>`).join("")}</tbody></table>
      ${j.failures_total > j.failures.length ? `<p class="muted">${num(j.failures_total - j.failures.length)} more in the manifest.</p>` : ""}`;
  if (j.stats) { $("results-card").hidden = false; $("stats").innerHTML = statsTable(j.stats); }
}

// ---- new job --------------------------------------------------------------
async function loadDatasets(select) {
  const ds = await api("/api/v1/datasets");
  const sel = $("job-dataset");
  sel.innerHTML = ds.length ? ds.map((d) => `<option value="${esc(d.name)}">${esc(d.name)} — ${num(d.files)} files, ${bytes(d.bytes)}</option>`).join("")
    : `<option value="">no datasets yet: upload one</option>`;
  if (select) sel.value = select;
}

function setupNew() {
  loadDatasets().catch((e) => { $("job-msg").textContent = e.message; });
  $("upload-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("up-msg"), name = $("up-name").value.trim(), files = $("up-files").files;
    msg.className = "msg";
    if (!files.length) { msg.textContent = "Choose files or an archive first."; msg.classList.add("error"); return; }
    const fd = new FormData();
    for (const f of files) fd.append("files", f, f.webkitRelativePath || f.name);
    $("up-submit").disabled = true; msg.textContent = "Uploading…";
    try {
      const r = await api(`/api/v1/datasets?name=${encodeURIComponent(name)}`, { method: "POST", body: fd });
      msg.textContent = `Dataset “${r.name}” created: ${num(r.images)} images (${bytes(r.bytes)})` +
        (r.skipped_total ? `, ${num(r.skipped_total)} non-image files skipped.` : ".");
      msg.classList.add("ok");
      await loadDatasets(r.name);
    } catch (e) { msg.textContent = e.message; msg.classList.add("error"); }
    $("up-submit").disabled = false;
  });
  $("job-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("job-msg");
    msg.className = "msg";
    const body = { dataset: $("job-dataset").value, scope: $("job-scope").value, dtype: $("job-dtype").value, channels: $("job-channels").value, format: $("job-format").value };
    const range = $("job-range").value.trim();
    if (range) {
      const p = range.split(",").map(Number);
      if (p.length !== 2 || p.some(isNaN)) { msg.textContent = "Range must be two numbers: A,B"; msg.classList.add("error"); return; }
      body.range = p;
    }
    $("job-submit").disabled = true;
    try {
      const r = await api("/api/v1/jobs", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      location.href = `/jobs/${encodeURIComponent(r.id)}`;
    } catch (e) { msg.textContent = e.message; msg.classList.add("error"); $("job-submit").disabled = false; }
  });
}

// ---- wiring ---------------------------------------------------------------
if (page === "jobs") live("", renderJobs);
function autoscaleCard(a) {
  if (!a) return "";
  const last = a.decisions.length ? a.decisions[a.decisions.length - 1] : null;
  return `<div id="autoscale" class="autoscale"><h2>Autoscaler <span class="muted">(${esc(a.backend)}, ${a.min_workers}..${a.max_workers})</span></h2>
    <p>Target <b>${a.desired}</b> · running ${a.running} · starting ${a.starting} · draining ${a.draining}
    · backlog ${num(a.backlog)}${a.rate_per_worker != null ? ` · ${num(a.rate_per_worker, 1)} images/s per worker` : ""}
    · ${num(a.worker_seconds, 0)} worker-seconds · started ${a.started_total}, drained ${a.stopped_total}, died ${a.died_total}</p>
    ${last ? `<p class="muted">Last decision: ${last.from} → ${last.to}: ${esc(last.reason)}</p>` : ""}</div>`;
}
if (page === "workers") live("", (s) => { $("workers").innerHTML = autoscaleCard(s.autoscale) + workerTable(s.workers, true); });
if (page === "job") {
  const id = app.dataset.job;
  live(`?job=${encodeURIComponent(id)}`, renderJob);
  $("actions").addEventListener("click", async (ev) => {
    if (ev.target.id !== "cancel") return;
    if (!confirm(`Cancel ${id}?`)) return;
    try { await api(`/api/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" }); }
    catch (e) { alert(e.message); }
  });
}
if (page === "new") setupNew();

//! The status page at `GET /`: this service's leadership, the running rollout (each planned
//! node's phase, the ones in flight) and the fleet (each node's state and connections, a bar
//! each, drawn against the busiest node), refreshed every second from `/api/status`. One
//! self-contained document: no framework, no asset from anywhere else, built with the DOM alone
//! (`textContent`, never `innerHTML`, so nothing read from Redis can become markup).
//!
//! Stable hooks, for people's scripts and for the browser test (`tests/tests/serve_page.rs`):
//!
//! - `body[data-refreshes]`: how many answers of `/api/status` were rendered; `body[data-stale]`
//!   while the last one failed (the error in `#error`, the last good state still shown);
//! - `#leadership[data-role=leader|standby]`, and `[data-leader]` naming the lease holder;
//! - `#rollout[data-status]` (`none` without a rollout), `[data-rollout-id]`, `[data-request]`;
//!   `#rollout-in-flight[data-nodes]` (names, space separated); `#rollout-plan li[data-node]`
//!   with `[data-phase]` and `[data-in-flight=true|false]`;
//! - `#nodes tr.node[data-node]` with `[data-state]`, `[data-connections]`, `[data-instance]`.

/// The page.
pub const HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ebb</title>
<style>
  :root { --ok: #2e8540; --busy: #c7691d; --idle: #8a8f98; --info: #2f6fb3; --bad: #b3261e; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em 2em; color: #1f2328; max-width: 75em; }
  header { display: flex; align-items: baseline; gap: 1em; flex-wrap: wrap; margin-bottom: 1em; }
  h1 { font-size: 1.4em; margin: 0; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .5em; }
  h2 .muted, h1 .muted { font-weight: normal; }
  code { font: 12.5px ui-monospace, monospace; background: #f3f4f6; padding: 0 .3em; border-radius: 3px; }
  .muted { color: #656d76; }
  .badge { display: inline-block; padding: 0 .55em; border-radius: 1em; font-size: .85em;
           font-weight: 600; color: #fff; background: var(--idle); }
  .badge.leader, .badge.active, .badge.running, .badge.completed { background: var(--ok); }
  .badge.standby, .badge.starting { background: var(--info); }
  .badge.draining, .badge.paused { background: var(--busy); }
  .badge.aborted, .badge.failed, .badge.unreadable { background: var(--bad); }
  #rollout { padding: .7em 1em; border: 1px solid #d0d7de; border-left: 4px solid var(--idle);
             border-radius: 4px; }
  #rollout[data-status="running"] { border-left-color: var(--ok); }
  #rollout[data-status="paused"] { border-left-color: var(--busy); }
  #rollout[data-status="aborted"], #rollout[data-status="unreadable"] { border-left-color: var(--bad); }
  #rollout-head { font-weight: 600; }
  #rollout-progress { margin: .4em 0; }
  progress { width: 16em; vertical-align: middle; }
  #rollout-plan { list-style: none; padding: 0; margin: .5em 0 0; display: flex; flex-wrap: wrap; gap: .4em; }
  #rollout-plan li { border: 1px solid #d0d7de; border-radius: 4px; padding: .1em .5em; }
  #rollout-plan li .phase { margin-left: .4em; color: var(--idle); }
  #rollout-plan li[data-phase="done"] .phase { color: var(--ok); }
  #rollout-plan li[data-in-flight="true"] { border-color: var(--busy); background: #fff4e5; font-weight: 600; }
  #rollout-plan li[data-in-flight="true"] .phase { color: var(--busy); }
  table { border-collapse: collapse; min-width: 46em; }
  th, td { text-align: left; padding: .3em 1em .3em 0; border-bottom: 1px solid #eaeef2; }
  th { font-weight: 600; color: #656d76; }
  td.connections { text-align: right; font-variant-numeric: tabular-nums; }
  .track { display: inline-block; width: 220px; height: .8em; background: #eaeef2; border-radius: 2px;
           vertical-align: middle; }
  .bar { display: block; height: 100%; background: var(--ok); border-radius: 2px; }
  tr[data-state="draining"] .bar, tr[data-state="drained"] .bar { background: var(--busy); }
  tr[data-state="starting"] .bar { background: var(--info); }
  #error { color: var(--bad); font-weight: 600; }
  body[data-stale] main { opacity: .55; }
  footer { margin-top: 2em; font-size: .9em; }
</style>
</head>
<body data-refreshes="0">
<header>
  <h1>ebb <span id="cluster" class="muted"></span></h1>
  <span id="leadership" class="badge" data-role="">…</span>
  <span id="lease" class="muted"></span>
</header>
<p id="error" role="alert"></p>
<noscript><p>This page needs JavaScript; the same data is at <a href="/api/status">/api/status</a>.</p></noscript>
<main>
<section aria-labelledby="rollout-title">
  <h2 id="rollout-title">Rollout</h2>
  <div id="rollout" data-status="none">loading…</div>
</section>
<section aria-labelledby="fleet-title">
  <h2 id="fleet-title">Fleet <span id="fleet-summary" class="muted"></span></h2>
  <table>
    <thead><tr><th>node</th><th>state</th><th>connections</th><th></th><th>instance</th><th>up</th><th>version</th></tr></thead>
    <tbody id="nodes"></tbody>
  </table>
</section>
</main>
<footer class="muted">
  <span id="meta"></span> · refreshed every second from <a href="/api/status">/api/status</a> ·
  <a href="/metrics">/metrics</a>
</footer>
<script>
"use strict";
const $ = id => document.getElementById(id);
// A class name from a value read from Redis: only [a-z0-9_-] survives.
const token = s => String(s ?? "").toLowerCase().replace(/[^a-z0-9_-]/g, "");
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function badge(text) { return el("span", text, "badge " + token(text)); }
function ago(ms) {
  if (typeof ms !== "number" || ms <= 0) return "";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.round(s / 60) + "m";
  return Math.round(s / 3600) + "h";
}
function renderLeadership(status) {
  const role = status.leader ? "leader" : "standby";
  const b = $("leadership");
  b.textContent = role;
  b.className = "badge " + role;
  b.dataset.role = role;
  const lease = status.lease;
  const holder = lease ? lease.host + " (pid " + lease.pid + ")" : "";
  b.dataset.leader = holder;
  $("lease").textContent = status.leader
    ? "this service (" + status.consumer + ") carries out requests"
    : (lease ? "standing by; the leader is " + holder + ", for " + ago(lease.since_ms)
             : "standing by; no leader right now");
  $("cluster").textContent = status.cluster ? "· cluster " + status.cluster : "";
}
function renderRollout(r) {
  const box = $("rollout");
  box.replaceChildren();
  for (const k of ["rolloutId", "request"]) delete box.dataset[k];
  if (!r) {
    box.dataset.status = "none";
    box.append(el("span", "no rollout running", "muted"));
    return;
  }
  box.dataset.status = token(r.status);
  if (r.id) box.dataset.rolloutId = r.id;
  if (r.request) box.dataset.request = r.request;
  const head = el("div");
  head.id = "rollout-head";
  head.append(badge(r.status), " rollout ");
  if (r.id) { const id = el("code", r.id); id.id = "rollout-id"; head.append(id); }
  if (r.request) {
    const req = el("code", r.request);
    req.id = "rollout-request";
    head.append(" · request ", req);
  }
  box.append(head);
  if (r.status === "unreadable") {
    box.append(el("div", "saved state unreadable: " + (r.reason || "?")));
    return;
  }
  const progress = el("div");
  progress.id = "rollout-progress";
  const bar = el("progress");
  bar.max = Math.max(1, r.nodes || 0);
  bar.value = r.done || 0;
  progress.append(bar, " " + r.done + " of " + r.nodes + " node(s) done");
  if (r.max_parallel) progress.append(" · max parallel " + r.max_parallel);
  box.append(progress);
  const flying = (r.in_flight || []);
  const line = el("div");
  line.id = "rollout-in-flight";
  line.dataset.nodes = flying.map(n => n.name).join(" ");
  line.textContent = "in flight: " +
    (flying.length ? flying.map(n => n.name + " (" + n.phase + ")").join(", ") : "none");
  box.append(line);
  if (r.reason) {
    const why = el("div", r.reason + (r.by ? " — " + r.by : ""), "muted");
    why.id = "rollout-reason";
    box.append(why);
  }
  const plan = el("ol");
  plan.id = "rollout-plan";
  plan.setAttribute("aria-label", "each planned node's phase");
  for (const n of (r.plan || [])) {
    const item = el("li");
    const inFlight = n.phase !== "pending" && n.phase !== "done";
    item.dataset.node = n.name;
    item.dataset.phase = n.phase;
    item.dataset.inFlight = String(inFlight);
    item.append(el("span", n.name, "name"), el("span", n.phase, "phase"));
    plan.append(item);
  }
  box.append(plan);
}
function renderNodes(nodes) {
  // Against the busiest node, not capacity: the bars show how even the fleet is (a capacity
  // is often the descriptor limit, against which every bar would be a sliver).
  const scale = Math.max(1, ...nodes.map(n => n.connections || 0));
  const body = $("nodes");
  body.replaceChildren();
  let active = 0, connections = 0;
  for (const node of nodes) {
    if (node.state === "active") active += 1;
    connections += node.connections || 0;
    const row = el("tr", undefined, "node");
    row.dataset.node = node.name;
    row.dataset.name = node.name;
    row.dataset.state = node.state;
    row.dataset.instance = node.instance || "";
    row.dataset.connections = String(node.connections);
    row.append(el("td", node.name, "name"));
    const state = el("td", undefined, "state");
    state.append(badge(node.state));
    row.append(state);
    row.append(el("td", node.capacity ? node.connections + " / " + node.capacity
                                      : String(node.connections), "connections"));
    const track = el("span", undefined, "track");
    const bar = el("span", undefined, "bar");
    bar.style.width = (100 * (node.connections || 0) / scale).toFixed(1) + "%";
    track.append(bar);
    const cell = el("td");
    cell.append(track);
    row.append(cell);
    const instance = el("td");
    const code = el("code", String(node.instance || "").slice(0, 8));
    code.title = node.instance || "";
    instance.append(code);
    row.append(instance);
    row.append(el("td", ago(node.started_at_ms), "up"));
    row.append(el("td", node.version || "", "version"));
    body.append(row);
  }
  $("fleet-summary").textContent = "· " + nodes.length + " node(s), " + active + " active, " +
    connections + " connection(s)";
}
function render(status) {
  renderLeadership(status);
  renderRollout(status.rollout);
  renderNodes(status.nodes || []);
  const r = status.rollout;
  document.title = "ebb" + (status.cluster ? " · " + status.cluster : "") +
    (r && r.id ? " · rollout " + r.done + "/" + r.nodes : "");
  $("meta").textContent = "updated " + new Date().toLocaleTimeString();
}
async function refresh() {
  try {
    const answer = await fetch("/api/status", { cache: "no-store" });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) throw new Error(body.error || "HTTP " + answer.status);
    render(body);
    $("error").textContent = "";
    delete document.body.dataset.stale;
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes) + 1);
  } catch (e) {
    $("error").textContent = "cannot read /api/status: " + e.message + " (showing the last state read)";
    document.body.dataset.stale = "";
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::HTML;

    #[test]
    fn the_page_is_self_contained_and_builds_no_markup_from_data() {
        for needle in [
            "http://",
            "https://",
            "src=",
            "<link",
            "@import",
            "innerHTML",
            "eval(",
        ] {
            assert!(!HTML.contains(needle), "the page holds {needle:?}");
        }
        assert!(HTML.contains(r#"fetch("/api/status""#));
    }
}

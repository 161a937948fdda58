//! The status page at `GET /`: the fleet (each node's state and connections, a bar each) and the
//! running rollout, refreshed every second from `/api/status`. One self-contained document: no
//! framework, no asset from anywhere else, readable with JavaScript's DOM alone.

/// The page.
pub const HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>ebb</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  #meta { color: #666; margin-bottom: 1.2em; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { text-align: left; padding: .25em .8em .25em 0; }
  .bar { background: #4a7; height: .8em; display: inline-block; vertical-align: middle; }
  .draining .bar, .drained .bar { background: #d84; }
  .state { font-weight: 600; }
  #rollout { margin: 1.2em 0; padding: .6em .8em; border: 1px solid #ccc; border-radius: 4px; }
  #rollout.none { color: #666; }
  .phase-done { color: #4a7; }
  .phase-pending { color: #999; }
  #error { color: #b00; }
</style>
</head>
<body>
<h1>ebb</h1>
<div id="meta">loading…</div>
<div id="rollout" class="none">no rollout</div>
<table>
  <thead><tr><th>node</th><th>state</th><th>connections</th><th></th><th>version</th></tr></thead>
  <tbody id="nodes"></tbody>
</table>
<p id="error"></p>
<script>
"use strict";
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function render(status) {
  document.getElementById("meta").textContent =
    (status.leader ? "leader" : "standby") + " · " + status.consumer + " · " +
    status.nodes.length + " node(s) · " + new Date().toLocaleTimeString();
  const most = Math.max(1, ...status.nodes.map(n => n.connections));
  const body = document.getElementById("nodes");
  body.replaceChildren();
  for (const node of status.nodes) {
    const row = document.createElement("tr");
    row.className = "node " + node.state;
    row.dataset.name = node.name;
    cell(row, node.name);
    cell(row, node.state, "state");
    cell(row, node.capacity ? node.connections + "/" + node.capacity : String(node.connections), "connections");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = Math.round(200 * node.connections / most) + "px";
    cell(row, "").appendChild(bar);
    cell(row, node.version);
    body.appendChild(row);
  }
  const box = document.getElementById("rollout");
  box.replaceChildren();
  const r = status.rollout;
  if (!r) { box.className = "none"; box.textContent = "no rollout"; return; }
  box.className = "rollout " + r.status;
  box.dataset.status = r.status;
  const head = document.createElement("div");
  head.id = "rollout-head";
  head.textContent = "rollout " + r.id + (r.request ? " (request " + r.request + ")" : "") +
    ": " + r.status + ", " + r.done + " of " + r.nodes + " done" + (r.reason ? " — " + r.reason : "");
  box.appendChild(head);
  const list = document.createElement("div");
  for (const n of (r.plan || [])) {
    const item = document.createElement("span");
    item.className = "phase phase-" + n.phase;
    item.dataset.name = n.name;
    item.textContent = n.name + ": " + n.phase + "  ";
    list.appendChild(item);
  }
  box.appendChild(list);
}
async function refresh() {
  try {
    const answer = await fetch("/api/status", { cache: "no-store" });
    if (!answer.ok) throw new Error("HTTP " + answer.status);
    render(await answer.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot read /api/status: " + e.message;
  }
}
refresh();
setInterval(refresh, 1000);
</script>
</body>
</html>
"#;

// The status page: reads /status.json every two seconds and redraws the tables. Every
// value is set as text (textContent), never as markup: caller IDs and User-Agents come
// from the network.
"use strict";

const REFRESH_MS = 2000;

function clock(ms) {
  const secs = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${two(m)}:${two(s)}` : `${m}:${two(s)}`;
}

function fill(id, headers, rows, rowClass) {
  const table = document.getElementById(id);
  table.replaceChildren();
  const head = table.insertRow();
  for (const header of headers) {
    const th = document.createElement("th");
    th.textContent = header;
    head.appendChild(th);
  }
  if (rows.length === 0) {
    const cell = table.insertRow().insertCell();
    cell.colSpan = headers.length;
    cell.className = "empty";
    cell.textContent = "none";
    return;
  }
  for (const row of rows) {
    const tr = table.insertRow();
    tr.className = rowClass ? rowClass(row) : "";
    for (const value of row.cells) {
      tr.insertCell().textContent = value == null ? "-" : String(value);
    }
  }
}

function media(call) {
  if (!call.media) return "-";
  return call.media.map((m) => `${m.packets}/${m.lost}/${m.jitter_ms.toFixed(1)}`).join(" ");
}

function draw(status) {
  const now = status.at_ms;
  document.getElementById("node").textContent = status.node;
  const updated = document.getElementById("updated");
  updated.className = "";
  updated.textContent = "updated " + new Date(now).toISOString().replace("T", " ").slice(0, 19) + " UTC";
  fill("calls", ["caller", "called", "state", "answered by", "pickup", "since ring", "talking", "media pkts/lost/jitter"],
    status.calls.map((c) => ({
      state: c.state,
      cells: [c.caller, c.called, c.state, c.answered_by, c.pickup, clock(now - c.started_ms),
        c.answered_ms == null ? null : clock(now - c.answered_ms), media(c)],
    })), (row) => row.state);
  fill("ports", ["chan", "kind", "line", "alarm", "call", "media from"],
    status.ports.map((p) => ({
      alarm: p.alarm,
      cells: [p.channel, p.kind, p.line_state, p.alarm ? "red" : null, p.call,
        p.media_peer == null ? null : p.media_peer + (p.srtp ? " srtp" : "")],
    })), (row) => (row.alarm ? "alarm" : ""));
  fill("registrations", ["extension", "transport", "from", "expires in", "user agent"],
    status.registrations.map((r) => ({
      cells: [r.extension, r.transport, r.source, clock(r.expires_at * 1000 - now), r.user_agent],
    })));
  fill("pickups", ["picker", "method", "call", "handover"],
    status.pickups.map((p) => ({ cells: [p.picker, p.method, p.call, p.replaces ? "replaces" : "bridge"] })));
  fill("recent-pickups", ["ended", "picker", "method", "path", "outcome"],
    status.recent_pickups.slice().reverse().map((p) => ({
      cells: [new Date(p.at_ms).toISOString().slice(11, 19), p.picker, p.method, p.path, p.outcome],
    })));
}

async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store" });
    if (!response.ok) throw new Error(response.status);
    draw(await response.json());
  } catch (error) {
    const updated = document.getElementById("updated");
    updated.className = "stale";
    updated.textContent = "cannot reach the gateway (" + error.message + "); retrying";
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();

"use strict";

// ------------------------------------------------------------------ settings

const MAX_ROWS = 200;         // transitions kept in the list
const MAX_HELD = 1000;        // transitions held while the list is paused
const MAX_MOVERS = 40;        // dots animated per update (a busy server makes hundreds of moves)
const MAX_DOTS = 12;          // dots drawn in one state's box
const POLL_MS = 2000;         // how often table.json is fetched if the event stream is refused
const SPARK_POINTS = 60;      // wake-ups/s samples in the little chart

// What each counter means (docs/request-table.md, "Counters"); shown as a tooltip.
const COUNTERS = {
  accept_paused: "accepting paused at max_connections",
  accept_errors: "accept() failed for lack of descriptors or memory",
  shed: "a waiting connection was accepted on the reserve descriptor and closed",
  too_long: "a framed message was over its limit",
  protocol_errors: "a framer raised a ProtocolError",
  backpressure: "a framed connection went to WRITING (its output above high water)",
  request_timeout: "a framed message did not arrive completely in time",
  idle_timeout: "a framed connection was idle too long",
  write_timeout: "a peer stopped reading: its connection was dropped",
  resets: "a socket error closed a framed connection",
  truncated: "a datagram was longer than max_packet_size",
  replies_queued: "a datagram reply had to wait for the socket",
  replies_dropped: "a datagram reply was dropped",
  reply_errors: "sending a datagram reply failed",
  replies_to_self: "a datagram reply to the server's own socket was dropped",
  dispatch_full: "every worker busy and the queue full: accepting paused",
  children_killed: "a forked child was killed by a signal",
  handshake_failed: "a TLS handshake failed",
  handshake_timeout: "a TLS client did not finish its handshake in time",
  proxy_untrusted: "a PROXY header came from a peer not in proxy_from",
  proxy_invalid: "a PROXY header was invalid or cut short",
  proxy_timeout: "a PROXY header did not arrive in time",
};

// ------------------------------------------------------------------ state

const panels = new Map();     // server name -> {section, svg, ended: {STATE: n}}
const held = [];              // transitions that arrived while paused
let paused = false;
let updates = 0;
const spark = [];

// ------------------------------------------------------------------ helpers

const $ = (selector, root = document) => root.querySelector(selector);

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
}

function row(cells) {          // cells: [text, className] pairs or plain texts
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const [text, className] = Array.isArray(cell) ? cell : [cell, ""];
    tr.append(element("td", String(text), className));
  }
  return tr;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
  return (n / 1024 / 1024).toFixed(1) + " MiB";
}

function seconds(s) {
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  return Math.floor(s / 60) + " min";
}

function setStatus(text, live) {
  const status = $("#status");
  status.textContent = text;
  status.className = live ? "live" : "down";
}

// ------------------------------------------------------------------ one panel per server

function panelFor(server) {
  let panel = panels.get(server.name);
  if (panel) return panel;
  const section = $("#server-panel").content.firstElementChild.cloneNode(true);
  section.dataset.server = server.name;
  section.dataset.kind = server.kind;
  $(".name", section).textContent = server.name;
  const diagram = document.getElementById("diagram-" + server.kind);
  let svg = null;
  if (diagram) {
    svg = diagram.content.querySelector("svg").cloneNode(true);
    if (server.dashboard) {    // the dashboard's own server: folded away
      const details = element("details");
      details.append(element("summary", "the dashboard's own server: its diagram"), svg);
      $(".diagram", section).append(details);
    } else {
      $(".diagram", section).append(svg);
    }
  } else {
    $(".diagram", section).append(element("p", "no diagram for records of kind " + server.kind, "muted"));
  }
  panel = {section, svg, ended: {}};
  panels.set(server.name, panel);
  $("#no-servers")?.remove();
  const list = $("#servers");
  if (server.dashboard) list.append(section);   // the dashboard last
  else list.insertBefore(section, $("section.server.self", list));
  if (server.dashboard) section.classList.add("self");
  return panel;
}

function showFacts(section, server) {
  const facts = $(".facts", section);
  facts.replaceChildren();
  const fact = (label, value) => {
    const span = element("span");
    span.append(element("span", label + " ", "muted"), element("b", value, "mono"));
    facts.append(span);
  };
  fact("family", server.family);
  fact("address", server.address);
  fact("handler", server.handler);
  fact("strategy", server.strategy);
  const h = server.handlers;
  if (h) {                      // its handlers, wherever they ran (the loop, worker threads, children)
    fact("in handlers", `${h.busy.toFixed(2)} busy \u00b7 ${h.runs_per_s.toFixed(1)} runs/s \u00b7 ` +
         `${(h.per_run * 1000).toFixed(2)} ms a run`);
    facts.lastChild.dataset.handlers = h.runs;
    facts.lastChild.title = "handlers running at once on average over the last second (0.5: one, half the " +
      "time), handler runs ended per second, and the mean run; " + h.runs + " runs, " + h.seconds.toFixed(3) +
      " s in all since the dashboard started timing this server";
  }
  if (server.tls) facts.append(element("span", "TLS", "tag"));
  if (server.proxy) facts.append(element("span", "PROXY protocol", "tag"));
  if (server.dashboard) facts.append(element("span", "this dashboard", "tag"));
}

// The counts on the diagram: each live state's badge shows how many records
// are in it now, with a dot per record; a final state's badge shows how many
// records have ended there since this page opened (they leave the table).
function showCounts(panel, server) {
  if (!panel.svg) return;
  for (const box of panel.svg.querySelectorAll("g.state")) {
    const name = box.dataset.state;
    const final = box.classList.contains("final");
    const n = final ? (panel.ended[name] || 0) : ((server.states || {})[name] || 0);
    $("[data-count]", box).textContent = n > 999 ? "999+" : String(n);
    box.classList.toggle("busy", !final && n > 0);
    if (!final) drawDots($("[data-dots]", box), n);
  }
}

function drawDots(group, n) {
  const shown = Math.min(n, MAX_DOTS);
  if (group.childElementCount === shown) return;
  group.replaceChildren();
  for (let i = 0; i < shown; i++) {
    const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    dot.setAttribute("cx", String((i - (shown - 1) / 2) * 7));
    dot.setAttribute("r", "2.5");
    group.append(dot);
  }
}

function showCounters(section, server) {
  const chips = $(".counters", section);
  chips.replaceChildren();
  const names = Object.keys(server.counters || {}).sort();
  for (const name of names) {
    const chip = element("span", name + " " + server.counters[name], "chip hit");
    chip.dataset.counter = name;
    chip.title = COUNTERS[name] || "counted by the server or its handler";
    chips.append(chip);
  }
  if (!names.length) chips.append(element("span", "no bound hit", "chip"));
  for (const [name, n] of Object.entries(server.totals || {})) {
    const chip = element("span", name + " " + n, "chip");
    chip.title = "records " + name + " since the server started";
    chips.append(chip);
  }
}

function showRecords(section, server) {
  const records = server.records || [];
  const body = $(".records", section);
  body.replaceChildren(...records.map((r) => {
    const tr = row([[r.id, "num"], r.state, r.peer, [seconds(r.age || 0), "num"], [seconds(r.since || 0), "num"],
                    [bytes(r.bytes_in || 0), "num"], [bytes(r.bytes_out || 0), "num"]]);
    tr.dataset.id = r.id;
    tr.dataset.state = r.state;
    return tr;
  }));
  if (server.more) body.append(row([["", ""], "\u2026 and " + server.more + " more", "", "", "", "", ""]));
  const live = Object.values(server.states || {}).reduce((a, b) => a + b, 0);
  $(".how-many", section).textContent = live;
  section.dataset.live = live;
}

function showServers(servers) {
  const seen = new Set();
  for (const server of servers) {
    seen.add(server.name);
    const panel = panelFor(server);
    showFacts(panel.section, server);
    showCounts(panel, server);
    showCounters(panel.section, server);
    showRecords(panel.section, server);
  }
  for (const [name, panel] of panels) {      // a server that is gone
    if (!seen.has(name)) { panel.section.remove(); panels.delete(name); }
  }
}

// ------------------------------------------------------------------ records moving

function center(svg, state) {
  const box = state && svg.querySelector(`g.state[data-state="${state}"]`);
  return box ? [Number(box.dataset.x), Number(box.dataset.y) + 11] : null;   // the box's row of dots
}

function flash(svg, from, to) {
  const edges = svg.querySelectorAll(`path.edge[data-to="${to}"]`);
  for (const edge of edges) {
    if (edge.dataset.from !== from && edge.dataset.from !== "ANY") continue;
    edge.classList.remove("hot");
    void edge.getBoundingClientRect();      // restart the highlight
    edge.classList.add("hot");
    clearTimeout(edge.cooling);
    edge.cooling = setTimeout(() => edge.classList.remove("hot"), 800);
  }
}

// Each move is a dot sliding from the old state's box to the new one's, and
// its arrow lighting up. A new record (no old state) comes from the start dot.
function animate(transitions) {
  let moved = 0;
  for (const t of transitions) {
    const panel = panels.get(t.server);
    if (!panel || !panel.svg) continue;
    if (panel.svg.querySelector(`g.state.final[data-state="${t.new}"]`)) {
      panel.ended[t.new] = (panel.ended[t.new] || 0) + 1;
    }
    flash(panel.svg, t.old || "NEW", t.new);
    if (moved >= MAX_MOVERS || t.old === t.new) continue;
    const to = center(panel.svg, t.new);
    const from = center(panel.svg, t.old) || (to && [to[0], to[1] - 70]);
    if (!to) continue;
    moved++;
    const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
    dot.setAttribute("r", "4");
    dot.style.transform = `translate(${from[0]}px, ${from[1]}px)`;
    panel.svg.querySelector(".movers").append(dot);
    void dot.getBoundingClientRect();       // let the start position take effect
    dot.style.transform = `translate(${to[0]}px, ${to[1]}px)`;
    setTimeout(() => { dot.style.opacity = "0"; }, 600);
    setTimeout(() => dot.remove(), 1200);
  }
}

// ------------------------------------------------------------------ the transitions list

function listTransitions(transitions, dropped, truncated) {
  if (paused) {
    held.push(...transitions);
    if (held.length > MAX_HELD) held.splice(0, held.length - MAX_HELD);
    $("#pause").textContent = `resume (${held.length} new)`;
    return;
  }
  const body = $("#transitions");
  for (const old of body.querySelectorAll("tr.fresh")) old.classList.remove("fresh");
  const rows = transitions.slice(-MAX_ROWS).map((t) => {
    const move = t.old ? `${t.old} \u2192 ${t.new}` : `new \u2192 ${t.new}`;
    const why = (t.event || "") + (t.event && t.reason ? ": " : "") + (t.reason || "");
    const tr = row([[(t.t || 0).toFixed(2), "num"], short(t.server), [t.id, "num"], move, [why, "reason"]]);
    tr.title = t.server;
    tr.className = "fresh";
    Object.assign(tr.dataset, {server: t.server, id: t.id, old: t.old || "", new: t.new});
    return tr;
  }).reverse();                               // newest on top
  if (dropped) rows.unshift(row(["", "", "", `\u2026 ${dropped} more not sent`, ""]));
  if (truncated) rows.unshift(row(["", "", "", "\u2026 and moves not watched (too many at once)", ""]));
  body.prepend(...rows);
  while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
}

// "tcp4 127.0.0.1:9000" -> "tcp4 :9000", "unix /tmp/x/echo.sock" -> "unix echo.sock": the
// list is narrow; the row's tooltip has the whole name.
function short(name) {
  const worker = String(name).match(/^worker (\d+): (.*)$/);   // under worker processes: "w2 tcp4 :9000"
  if (worker) return "w" + worker[1] + " " + short(worker[2]);
  const [family, address = ""] = String(name).split(" ", 2);
  const port = address.match(/:(\d+)$/);
  return family + " " + (port ? ":" + port[1] : address.split("/").pop());
}

function togglePause() {
  paused = !paused;
  const button = $("#pause");
  button.classList.toggle("paused", paused);
  button.textContent = paused ? "resume" : "pause";
  if (!paused) listTransitions(held.splice(0), 0, false);
}

// ------------------------------------------------------------------ the loop

function bar(id, parts) {        // parts: [[name, share of the bar (0..1), text, label (the name)]]
  const container = $("#" + id + "-bar"), legend = $("#" + id + "-legend");
  container.replaceChildren();
  legend.replaceChildren();
  for (const [name, share, text, label = name] of parts) {
    const span = element("span", undefined, "k-" + name);
    span.style.width = (Math.max(0, Math.min(1, share)) * 100).toFixed(1) + "%";
    container.append(span);
    const item = element("span");
    item.append(element("i", undefined, "k-" + name), `${label} ${text}`);
    legend.append(item);
  }
}

// The loop's time: between two select() calls it runs callbacks, among them
// the handlers of the servers that run theirs inline; the rest is the
// reactor's own work (accepting, reading, framing, writing).
// Under worker processes the loop is every worker's (its shares are their
// average), and only the workers' servers count, not the supervisor's own.
function showLoop(loop, servers, workers) {
  if (!loop) return;
  const wakeups = loop.wakeups_per_s || 0;
  $("#wakeups").textContent = wakeups.toFixed(1);
  $("#per-wakeup").textContent = (loop.ready_per_wakeup || 0).toFixed(2);
  const why = loop.why_per_s || {};
  const total = Object.values(why).reduce((a, b) => a + b, 0) || 1;
  bar("why", ["ready", "timers", "wakeup", "timeout"].map((k) => [k, (why[k] || 0) / total, (why[k] || 0).toFixed(1)]));
  const busy = loop.busy_share || 0, wait = loop.wait_share || 0;
  const loops = workers ? Math.max(1, workers.length) : 1;
  $("#loop h2").textContent = workers ? `The loops of ${loops} workers (wake-ups summed, time averaged)` : "The loop";
  const inline = Math.min(busy, servers.filter((s) => s.strategy === "inline" && s.handlers && (!workers || s.worker))
    .reduce((sum, s) => sum + s.handlers.busy, 0) / loops);
  const pct = (share) => `${(share * 100).toFixed(0)}%`;
  bar("time", [["handlers", inline, pct(inline), "inline handlers"],
               ["busy", busy - inline, pct(busy - inline), "the reactor's own work"],
               ["wait", wait, pct(wait), "waiting in select()"]]);
  spark.push(wakeups);
  if (spark.length > SPARK_POINTS) spark.shift();
  const top = Math.max(1, ...spark);
  const x = (i) => 120 - (spark.length - 1 - i) * 120 / (SPARK_POINTS - 1);   // the newest on the right
  const points = spark.map((v, i) => `${x(i).toFixed(1)},${(38 - v / top * 36).toFixed(1)}`);
  $("#spark polyline").setAttribute("points", points.join(" "));
}

// ------------------------------------------------------------------ the workers

// Under worker processes (serve --workers N --dashboard), the snapshot lists
// them: one row each, under the loop panel (which then sums their loops).
function showWorkers(workers) {
  let panel = $("#workers");
  if (!workers) { panel?.remove(); return; }
  if (!panel) {
    panel = element("section", undefined, "panel");
    panel.id = "workers";
    panel.append(element("h2", "Worker processes"));
    const table = element("table");
    const head = element("tr");
    for (const [text, className] of [["worker", "num"], ["pid", "num"], ["wake-ups/s", "num"], ["busy", "num"],
                                     ["report age", "num"]]) head.append(element("th", text, className));
    table.append(element("thead"), element("tbody"));
    $("thead", table).append(head);
    panel.append(table);
    $("#loop").after(panel);
  }
  $("tbody", panel).replaceChildren(...workers.map((w) => {
    const loop = w.loop || {};
    const tr = row([[w.worker, "num"], [w.pid, "num"], [(loop.wakeups_per_s || 0).toFixed(1), "num"],
                    [((loop.busy_share || 0) * 100).toFixed(0) + "%", "num"], [seconds(w.age || 0), "num"]]);
    tr.dataset.worker = w.worker;
    return tr;
  }));
}

// ------------------------------------------------------------------ feeding it

function show(data) {
  showLoop(data.loop, data.servers || [], data.workers);
  showWorkers(data.workers);
  showServers(data.servers || []);
  document.body.dataset.time = data.time;
}

function update(data) {
  const transitions = data.transitions || [];
  animate(transitions);                      // first: it counts the records that ended
  show(data);
  listTransitions(transitions, data.dropped || 0, Boolean(data.truncated));
  updates++;
  document.body.dataset.updates = updates;
}

let polling = null;

function poll() {                             // the fallback: snapshots only, no transitions
  fetch("table.json", {cache: "no-store"})
    .then((response) => response.json())
    .then((data) => { show(data); setStatus("polling table.json (the event stream was refused)", true); })
    .catch(() => setStatus("no answer from the dashboard", false));
}

function connect() {
  const source = new EventSource("events");
  source.addEventListener("snapshot", (e) => { show(JSON.parse(e.data)); setStatus("live", true); });
  source.addEventListener("update", (e) => { update(JSON.parse(e.data)); setStatus("live", true); });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {   // refused (503: too many watchers): poll instead
      if (!polling) { poll(); polling = setInterval(poll, POLL_MS); }
    } else {
      setStatus("reconnecting\u2026", false);          // the browser retries by itself
    }
  });
}

$("#cap").textContent = MAX_ROWS;
$("#pause").addEventListener("click", togglePause);
window.addEventListener("load", connect);

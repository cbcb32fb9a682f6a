// The control room page: polls the dashboard server's /api/state, draws it, and posts actions.
// Plain modern JavaScript, no build step; the only library is the Socket.IO client (window.io),
// served from /static/vendor once `make dashboard-assets` (or `make up`) has fetched it from npm.

const POLL_MS = 1000;
const TRACE_POLL_MS = 3000;
const MINOR = new Set(["registry", "mongo", "rabbitmq"]); // edges drawn faint, listed on demand

const $ = (selector) => document.querySelector(selector);
const view = { identity: null, edges: new Map(), seenTransitions: new Set(), socket: null };

// -- talking to the dashboard server ----------------------------------------------------------

async function api(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify({ ...body, sandbox: view.identity });
  }
  let answer;
  try {
    answer = await fetch(path, options);
  } catch (error) {
    throw new Error("the dashboard server does not answer (is the sandbox, or `make dashboard`, still running?)");
  }
  let data;
  try {
    data = await answer.json();
  } catch (error) {
    throw new Error(`the dashboard server sent something that is not JSON (${answer.status})`);
  }
  if (!answer.ok) throw new Error(data.error || `error ${answer.status}`);
  return data;
}

function banner(message, kind = "warning") {
  const box = $("#banner");
  box.hidden = !message;
  box.textContent = message || "";
  box.className = kind;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

const clock = (seconds) => new Date(seconds * 1000).toLocaleTimeString();

// -- the polling loop ---------------------------------------------------------------------------

async function poll() {
  try {
    const state = await api("GET", "/api/state");
    noticeRestart(state.sandbox);
    drawGraph(state);
    drawEdges(state.edges);
    drawBreakers(state.breakers, state.transitions);
    const problems = state.problems || [];
    const down = Object.entries(state.health).filter(([, word]) => word === "down").map(([name]) => name);
    if (down.length) problems.unshift(`down: ${down.join(", ")}`);
    if (Date.now() - (view.restartedAt || 0) < 20000) {
      problems.unshift("The sandbox restarted: this page now shows the new run");
    }
    banner(problems.join(" · "));
  } catch (error) {
    banner(`${error.message}; retrying every second`, "error");
  }
  setTimeout(poll, POLL_MS);
}

function noticeRestart(sandbox) {
  $("#sandbox-line").textContent = `sandbox ${sandbox.namespace || "(default namespace)"} · ` +
    (sandbox.started_at ? `started ${clock(sandbox.started_at)} · ` : "") + `gateway ${sandbox.gateway}`;
  if (view.identity !== null && view.identity !== sandbox.identity) {
    view.seenTransitions.clear();
    $("#transitions").replaceChildren(element("li", { class: "empty", text: "none yet" }));
    $("#feed").replaceChildren();
    $("#order-results").replaceChildren();
    connectFeed();
    view.restartedAt = Date.now();
  }
  view.identity = sandbox.identity;
}

// -- the graph ----------------------------------------------------------------------------------

function layers(services, edges) {
  // Longest path from the gateway, over calls between services (registry and infrastructure last).
  const depth = Object.fromEntries(services.map((name) => [name, 0]));
  const calls = edges.filter((edge) => edge.http && edge.callee !== "registry");
  for (let round = 0; round < services.length; round += 1) {
    for (const edge of calls) depth[edge.callee] = Math.max(depth[edge.callee], depth[edge.caller] + 1);
  }
  const deepest = Math.max(...Object.values(depth));
  if ("registry" in depth) depth.registry = deepest + 1;
  const rows = [];
  for (const [name, level] of Object.entries(depth)) (rows[level] ||= []).push(name);
  const infra = [...new Set(edges.filter((edge) => !edge.http).map((edge) => edge.callee))];
  if (infra.length) rows.push(infra);
  return rows.filter(Boolean);
}

function drawGraph(state) {
  const svg = $("#graph");
  const services = Object.keys(state.health);
  const rows = layers(services, state.edges);
  const [width, height] = [760, 470];
  const place = {};
  rows.forEach((row, level) => {
    row.sort();
    row.forEach((name, index) => {
      place[name] = { x: ((index + 1) * width) / (row.length + 1), y: 40 + (level * (height - 80)) / Math.max(1, rows.length - 1) };
    });
  });
  const ns = "http://www.w3.org/2000/svg";
  const make = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const parts = [];
  const labels = [];
  for (const edge of state.edges) {
    const [from, to] = [place[edge.caller], place[edge.callee]];
    if (!from || !to) continue;
    const minor = MINOR.has(edge.callee);
    const classes = `edge ${edge.state}${minor ? " minor" : ""}`;
    parts.push(make("line", { class: classes, x1: from.x, y1: from.y + 14, x2: to.x, y2: to.y - 14, "data-edge": edge.name }));
    if (!minor || edge.state !== "normal") {
      const text = edge.state === "cut" ? "✂ cut" : edge.calls
        ? `${edge.rate}/s · ${Math.round(edge.error_rate * 100)}% · ${edge.p95_ms ?? "–"} ms`
        : edge.state === "slowed" ? `+${edge.latency_ms} ms` : "";
      if (text) {
        // Near the callee's end: the gateway's many edges would otherwise label one spot.
        labels.push(make("text", { class: `edge-label ${edge.state}`, x: from.x + 0.68 * (to.x - from.x), y: from.y + 0.68 * (to.y - from.y) - 3 }, text));
      }
    }
  }
  for (const [name, { x, y }] of Object.entries(place)) {
    const health = state.health[name] || (services.includes(name) ? "unknown" : "infra");
    const group = make("g", { class: `node ${health}`, "data-service": name, "data-health": health });
    group.append(make("rect", { x: x - 52, y: y - 14, width: 104, height: 28 }), make("text", { x, y }, name));
    parts.push(group);
  }
  svg.replaceChildren(...parts, ...labels);
}

// -- the edges table ----------------------------------------------------------------------------

function edgeRow(edge) {
  const row = element("tr", { "data-edge": edge.name, class: MINOR.has(edge.callee) ? "infra" : "" });
  const latency = element("input", { class: "latency", inputmode: "numeric", "aria-label": `latency ms for ${edge.name}`, value: "800" });
  const jitter = element("input", { class: "jitter", inputmode: "numeric", "aria-label": `jitter ms for ${edge.name}`, value: "0" });
  const message = element("span", { class: "edge-message", role: "status" });
  const button = (label, action) => {
    const node = element("button", { type: "button", class: action, text: label });
    node.addEventListener("click", () => act(edge.name, action, message, { latency_ms: latency.value, jitter_ms: jitter.value }));
    return node;
  };
  row.append(
    element("td", { text: edge.name }),
    element("td", {}, element("span", { class: "badge state" })),
    element("td", { class: "rate" }), element("td", { class: "errors" }), element("td", { class: "p95" }),
    element("td", { class: "bytes" }),
    element("td", {}, latency), element("td", {}, jitter),
    element("td", {}, button("Slow", "latency"), " ", button("Cut", "cut"), " ", button("Restore", "restore"), message),
  );
  return row;
}

function drawEdges(edges) {
  const body = $("#edges tbody");
  const showInfra = $("#show-infra").checked;
  for (const edge of edges) {
    if (!view.edges.has(edge.name)) {
      const row = edgeRow(edge);
      view.edges.set(edge.name, row);
      body.append(row);
    }
    const row = view.edges.get(edge.name);
    row.dataset.state = edge.state;
    row.hidden = MINOR.has(edge.callee) && !showInfra && edge.state === "normal";
    const badge = row.querySelector(".state");
    badge.className = `badge state ${edge.state}`;
    badge.textContent = edge.state === "slowed" ? `slowed +${edge.latency_ms ?? "?"} ms` : edge.state;
    row.querySelector(".rate").textContent = edge.calls ? edge.rate : "–";
    row.querySelector(".errors").textContent = edge.calls ? `${Math.round(edge.error_rate * 100)}%` : "–";
    row.querySelector(".p95").textContent = edge.p95_ms === null ? "–" : `${edge.p95_ms} ms`;
    row.querySelector(".bytes").textContent = edge.bytes ? bytes(edge.bytes.received) : "–";
  }
}

function bytes(count) {
  if (count >= 1e6) return `${(count / 1e6).toFixed(1)} MB`;
  if (count >= 1e3) return `${(count / 1e3).toFixed(1)} kB`;
  return `${count} B`;
}

async function act(edge, action, message, values) {
  message.className = "edge-message";
  message.textContent = "…";
  try {
    const body = action === "latency" ? values : {};
    const answer = await api("POST", `/api/edges/${encodeURIComponent(edge)}/${action}`, body);
    message.textContent = answer.message;
  } catch (error) {
    message.className = "edge-message error";
    message.textContent = error.message;
  }
}

// -- breakers -----------------------------------------------------------------------------------

function drawBreakers(breakers, transitions) {
  const groups = Object.entries(breakers).map(([service, peers]) => {
    const rows = Object.values(peers).map((breaker) => element("div",
      { class: "breaker", "data-service": service, "data-breaker": breaker.name, "data-state": breaker.state },
      element("span", { text: `→ ${breaker.name}` }),
      element("small", { text: `${breaker.calls} calls · ${breaker.failures} failed · ${breaker.rejected} rejected` }),
      element("span", { class: `badge ${breaker.state}`, text: breaker.state.replace("_", "-") })));
    return element("div", { class: "breaker-group" }, element("h4", { text: service }),
      ...(rows.length ? rows : [element("small", { text: "no calls yet" })]));
  });
  $("#breakers").replaceChildren(...groups);
  const list = $("#transitions");
  for (const event of [...transitions].reverse()) {
    const key = `${event.service}/${event.breaker}/${event.at}/${event.to}`;
    if (view.seenTransitions.has(key)) continue;
    view.seenTransitions.add(key);
    list.querySelector(".empty")?.remove();
    list.prepend(element("li", { class: "fresh", "data-breaker": `${event.service}/${event.breaker}`, "data-to": event.to },
      `${clock(event.at)} ${event.service} → ${event.breaker}: ${event.from} → `,
      element("span", { class: `badge ${event.to}`, text: event.to.replace("_", "-") })));
  }
}

// -- orders and the invariant check -------------------------------------------------------------

$("#orders-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const summary = $("#orders-summary");
  const button = $("#place-orders");
  button.disabled = true;
  summary.className = "";
  summary.textContent = "placing…";
  try {
    const { results } = await api("POST", "/api/orders", { count: $("#order-count").value });
    const list = $("#order-results");
    list.replaceChildren(...results.map((result) => element("li",
      { class: result.status >= 200 && result.status < 300 ? "placed" : "failed", "data-status": result.status, "data-ms": result.ms },
      `${result.status || "no answer"} in ${result.ms} ms — `,
      result.order ? `${result.order} ${result.order_status}` : result.message)));
    const placed = results.filter((result) => result.status >= 200 && result.status < 300).length;
    summary.textContent = `${placed} placed, ${results.length - placed} failed`;
  } catch (error) {
    summary.className = "error-text";
    summary.textContent = error.message;
  } finally {
    button.disabled = false;
  }
});

$("#check").addEventListener("click", async () => {
  const verdict = $("#verdict");
  verdict.className = "";
  verdict.textContent = "checking…";
  try {
    const report = await api("POST", "/api/check", {});
    verdict.className = report.ok ? "ok" : "failed";
    verdict.dataset.ok = report.ok;
    verdict.textContent = report.text;
  } catch (error) {
    verdict.className = "failed";
    verdict.textContent = error.message;
  }
});

$("#show-infra").addEventListener("change", () => {
  for (const row of view.edges.values()) {
    if (row.classList.contains("infra")) row.hidden = !$("#show-infra").checked && row.dataset.state === "normal";
  }
});

// -- the live notification feed (Socket.IO) -----------------------------------------------------

async function connectFeed() {
  const status = $("#feed-status");
  view.socket?.close();
  view.socket = null;
  if (typeof window.io !== "function") {
    status.textContent = "the Socket.IO client is not built: run `make dashboard-assets` (it fetches it from npm once)";
    return;
  }
  let session;
  try {
    session = await api("GET", "/api/session");
  } catch (error) {
    status.textContent = `no demo customer yet: ${error.message}; retrying in 5 s`;
    setTimeout(connectFeed, 5000);
    return;
  }
  $("#feed-user").textContent = `of ${session.user.email}`;
  // Through the dashboard's own /socket.io/, relayed to the gateway's: long-polling first, then
  // the upgrade to WebSocket, as a production client does.
  const socket = window.io({ auth: { token: session.token } });
  view.socket = socket;
  const transport = () => {
    status.dataset.transport = socket.io.engine.transport.name;
    status.textContent = `connected through the gateway (${status.dataset.transport})`;
  };
  socket.on("connect", () => {
    transport();
    socket.io.engine.once("upgrade", transport);
  });
  socket.on("connect_error", (error) => { status.textContent = `cannot connect: ${error.message}; retrying`; });
  socket.on("disconnect", (reason) => { status.textContent = `disconnected (${reason})`; });
  socket.on("notification", (notification) => {
    const when = notification.created_at ? new Date(notification.created_at).toLocaleTimeString() : "";
    $("#feed").prepend(element("li", { class: "fresh", "data-type": notification.type || "" },
      `${when} ${notification.title || notification.type || "notification"}: ${notification.message || notification.body || ""}`));
  });
}

// -- the latest trace as a waterfall ------------------------------------------------------------

async function pollTrace() {
  try {
    const { rows } = await api("GET", "/api/trace");
    drawWaterfall(rows);
  } catch (error) {
    $("#waterfall").replaceChildren(element("p", { class: "error-text", text: error.message }));
  }
  try {
    drawSagas((await api("GET", "/api/sagas")).sagas);
  } catch (error) {
    $("#sagas").replaceChildren(element("li", { class: "error-text", text: error.message }));
  }
  setTimeout(pollTrace, TRACE_POLL_MS);
}

// -- recent sagas -------------------------------------------------------------------------------

const STEP_MARK = { done: "✓", failed: "✗", compensated: "↺", uncertain: "?", pending: "·" };

function drawSagas(sagas) {
  if (!sagas.length) return;
  $("#sagas").replaceChildren(...sagas.map((saga) => {
    const outcome = saga.status === "completed" ? "ok" : saga.status === "compensated" ? "failed" : "half_open";
    const steps = element("span", { class: "saga-steps" }, ...saga.steps.flatMap((step, index) => [
      index ? " → " : "", element("span", { class: step.state, text: `${step.name} ${STEP_MARK[step.state] || step.state}` })]));
    return element("li", { "data-saga": saga.id, "data-status": saga.status },
      `${new Date(saga.updated_at).toLocaleTimeString()} ${saga.id} `,
      element("span", { class: `badge ${outcome}`, text: saga.status }), " ", steps,
      saga.error ? element("div", { class: "error-text", text: saga.error }) : "");
  }));
}

function drawWaterfall(rows) {
  if (!rows.length) return;
  const begin = Math.min(...rows.map((row) => row.start_ns));
  const total = Math.max(1, Math.max(...rows.map((row) => row.end_ns)) - begin);
  const title = element("p", { id: "trace-title", text: `trace ${rows[0].trace_id} · ${rows.length} spans · ${(total / 1e6).toFixed(1)} ms` });
  const lines = rows.map((row) => {
    const bar = element("div", { class: `bar${row.status === "error" ? " error" : ""}` });
    bar.style.left = `${((row.start_ns - begin) / total) * 100}%`;
    bar.style.width = `${((row.end_ns - row.start_ns) / total) * 100}%`;
    const name = element("span", { class: "name", title: row.name, text: row.name });
    name.style.paddingLeft = `${row.depth * 0.7}rem`;
    return element("div", { class: "row" }, element("span", { text: row.service }), name,
      element("div", { class: "bar-track" }, bar), element("span", { text: `${row.duration_ms.toFixed(1)} ms` }));
  });
  $("#waterfall").replaceChildren(title, ...lines);
}

poll();
connectFeed();
pollTrace();

// SwarmLM dashboard: draws what the gateway reads and checks from the swarm (/swarm/*), and chats
// through /v1/chat/completions. Plain DOM, no build step, nothing fetched from outside this server.
"use strict";

const STATUS_EVERY_MS = 2000;
const LEDGER_EVERY_MS = 8000;
const $ = (id) => document.getElementById(id);
const state = {
  model: null, authRequired: false, report: null, checkpoints: {}, names: new Map(),
  messages: [], ledgerPeer: null, busy: false,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) node.dataset[dk] = dv;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v;  // CSSOM, which the page's CSP allows (a style attribute it would not)
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
  return node;
}

const short = (peer) => (peer ? "…" + peer.slice(-10) : "");
// A node by the public name its record gives (the whole peer ID in the tooltip), else its ID's tail.
const label = (peer) => state.names.get(peer) || short(peer);
const when = (ns) => new Date(ns / 1e6).toLocaleTimeString();
const ranges = (blocks) => {
  const out = [];
  for (const b of blocks) {
    const last = out[out.length - 1];
    if (last && last[1] === b - 1) last[1] = b; else out.push([b, b]);
  }
  return out.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(", ");
};

function headers(json = false) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// A refresh still waiting (say, on a node that just left) is not started again on top of itself;
// asked for meanwhile, it runs once more when the current one ends (so a new selection is not lost).
function single(fn) {
  let running = null, again = false;
  const run = () => {
    if (running) { again = true; return running; }
    running = fn().finally(() => {
      running = null;
      if (again) { again = false; run(); }
    });
    return running;
  };
  return run;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
  return body;
}

// ---- coverage map and node table -----------------------------------------------------------

function drawCoverage(report) {
  const strip = $("coverage");
  strip.replaceChildren();
  const owners = report.servers_per_block.map(() => []);
  for (const n of report.nodes) {
    if (n.state !== "online" || !n.reached) continue;
    for (let b = n.blocks[0]; b < Math.min(n.blocks[1], report.num_blocks); b++) {
      owners[b].push(label(n.peer_id));
    }
  }
  report.servers_per_block.forEach((count, b) => {
    const cls = count === 0 ? "block unserved" : `block s${Math.min(count, 3)}`;
    const tip = count === 0 ? `block ${b}: UNSERVED` :
      `block ${b}: ${owners[b].join(", ")} — ${report.throughput_per_block[b].toFixed(1)} tok/s`;
    strip.append(el("div", { class: cls, title: tip, data: { block: b, servers: count } }, b));
  });
  const unserved = $("unserved");
  unserved.hidden = report.unserved.length === 0;
  unserved.textContent = `Unserved blocks ${ranges(report.unserved)}: no online node serves them, ` +
    "so generation cannot complete.";
  const spans = $("spans");
  spans.replaceChildren();
  for (const n of allNodes(report)) {
    const left = (100 * n.blocks[0]) / report.num_blocks;
    const width = (100 * (n.blocks[1] - n.blocks[0])) / report.num_blocks;
    const text = `${label(n.peer_id)} ${n.blocks[0]}:${n.blocks[1]} ${n.gone ? "(gone)" : stateOf(n)}`;
    spans.append(el("div", { class: "span-row" },
      el("div", { class: `span-bar ${n.gone ? "gone" : stateOf(n)}`, style: `left:${left}%;width:${width}%`,
                  title: `${text}\n${n.peer_id}` }, text)));
  }
}

// Nodes whose records expired stay listed as gone (the gateway remembers them), so a vanished node
// is visible, not just absent; a record whose node does not answer is not counted as online.
function allNodes(report) {
  return [...report.nodes, ...report.gone.map((n) => ({ ...n, gone: true }))];
}

const stateOf = (n) => (n.state === "online" && !n.reached ? "not-answering" : n.state);

function drawNodes(report) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  for (const n of allNodes(report)) {
    const cp = state.checkpoints[n.peer_id];
    const cpCell = !cp ? "…" : cp.error ? el("span", { class: "bad", title: cp.error }, "unreadable") :
      el("span", { class: "ok", title: `root ${cp.root}\n${cp.checkpoint}` }, `${cp.size} entries ✓`);
    const cosigs = !cp || cp.error ? "" : cp.cosignatures.length === 0 ? el("span", { class: "muted" }, "none yet") :
      el("span", { title: cp.cosignatures.map((c) =>
        `${c.witness} at size ${c.size}, ${new Date(c.timestamp * 1000).toLocaleTimeString()}`).join("\n") },
        cp.cosignatures.map((c) => `${label(c.witness)}@${c.size}`).join(", "));
    body.append(el("tr", { class: n.gone ? "gone" : "", data: { peer: n.peer_id } },
      el("td", { title: n.peer_id }, n.name ? `${n.name} ${short(n.peer_id)}` : short(n.peer_id)),
      el("td", {}, `${n.blocks[0]}:${n.blocks[1]}`),
      el("td", { class: n.gone ? "state-gone" : `state-${stateOf(n)}` },
        n.gone ? `gone (record expired ${new Date(n.gone_at * 1000).toLocaleTimeString()})` :
          stateOf(n).replace("-", " ")),
      el("td", { title: (n.relays || []).join("\n") },
        n.reach === "via relay" ? `via relay ${n.relays.map(label).join(", ")}` : n.reach || ""),
      el("td", {}, `${n.dtype} / ${n.device}`),
      el("td", {}, n.throughput.toFixed(1)),
      el("td", {}, n.active_sessions),
      el("td", {}, n.cache_tokens_left),
      el("td", {}, cpCell), el("td", {}, cosigs), el("td", {}, n.version)));
  }
  const select = $("ledger-node");
  const options = report.nodes.map((n) => [n.peer_id, `${label(n.peer_id)} ${n.blocks[0]}:${n.blocks[1]}`]);
  if (JSON.stringify(options) !== select.dataset.options) {  // rebuilt only when nodes change: keeps it usable
    const current = state.ledgerPeer || select.value;
    select.replaceChildren(...options.map(([peer, label]) => el("option", { value: peer }, label)));
    select.dataset.options = JSON.stringify(options);
    if (options.some(([peer]) => peer === current)) select.value = current;
  }
  state.ledgerPeer = select.value || null;
}

const refreshStatus = single(async () => {
  try {
    const status = await getJSON("/swarm/status");
    const report = status.models.find((m) => m.id === state.model) || status.models[0];
    state.report = report;
    for (const n of allNodes(report)) if (n.name) state.names.set(n.peer_id, n.name);
    $("root").textContent = `root ${report.root.slice(0, 16)}… · ${report.num_blocks} blocks`;
    const t = report.totals;
    const summary = $("summary");
    summary.textContent = `${t.blocks_covered}/${report.num_blocks} blocks covered · ${t.online} of ${t.nodes} ` +
      `nodes online · weakest block ${t.weakest_block_throughput.toFixed(1)} tok/s` +
      (t.unverified ? ` · ${t.unverified} not answering (not counted)` : "") + (t.gone ? ` · ${t.gone} gone` : "");
    summary.className = `summary ${report.unserved.length ? "bad" : "ok"}`;
    drawCoverage(report);
    drawNodes(report);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $("summary").textContent = `cannot read the swarm: ${e.message}`;
    $("summary").className = "summary bad";
  }
});

const refreshCheckpoints = single(async () => {
  try {
    const body = await getJSON(`/swarm/checkpoints?model=${encodeURIComponent(state.model)}`);
    state.checkpoints = body.nodes;
    if (state.report) drawNodes(state.report);
  } catch (e) {
    $("updated").textContent = `checkpoints: ${e.message}`;
  }
});

// ---- ledger explorer -----------------------------------------------------------------------

const refreshLedger = single(async () => {
  const peer = $("ledger-node").value;
  if (!peer) return;
  const session = $("ledger-session").value.trim();
  const query = new URLSearchParams({ model: state.model, limit: "20" });
  if (session) query.set("session", session);
  const bodyEl = $("serves").querySelector("tbody");
  try {
    const log = await getJSON(`/swarm/ledger/${encodeURIComponent(peer)}?${query}`);
    const seen = JSON.stringify([peer, session, log.size, log.serves.map((s) => [s.index, s.proof.valid])]);
    if (seen === bodyEl.dataset.seen) return;  // unchanged: keep the rows (and whatever is being clicked)
    bodyEl.dataset.seen = seen;
    $("ledger-head").textContent = `${label(peer)}: ${log.size} entries under its signed checkpoint; ` +
      `newest serve entries${session ? " of that session" : ""}: ${log.serves.length}` +
      (log.unverified_entries ? `; ${log.unverified_entries} entries FAILED verification` : "");
    bodyEl.replaceChildren(...log.serves.map((s) => el("tr", {
      class: session && s.session === session ? "highlight" : "", data: { session: s.session } },
      el("td", {}, s.index), el("td", {}, when(s.time_ns)), el("td", { class: "mono" }, s.session),
      el("td", { title: s.client }, label(s.client)), el("td", {}, `${s.blocks[0]}:${s.blocks[1]}`),
      el("td", {}, s.tokens),
      el("td", { class: s.receipted ? "ok" : "bad" }, s.receipted ? "signed" : "none"),
      el("td", {}, proofCell(s)))));
  } catch (e) {
    $("ledger-head").textContent = `${label(peer)}: ${e.message}`;
    bodyEl.replaceChildren();
    delete bodyEl.dataset.seen;
  }
});

function save(name, value) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(value, null, 2)], { type: "application/json" }));
  el("a", { href: url, download: name }).click();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}

function proofCell(serve) {
  const p = serve.proof;
  const link = el("a", { href: "#", title: "save, then check offline: swarmlm ledger check-proof FILE",
                         onclick: (e) => { e.preventDefault(); save(`proof-${serve.index}.json`, p.document); } },
                  "json");
  const title = p.error || `verified against the checkpoint of size ${p.tree_size}`;
  return el("span", { class: p.valid ? "ok" : "bad", title },
    p.valid ? "verified ✓ " : "INVALID ✗ ", link);
}

function explore(peer, session) {
  $("ledger-node").value = peer;
  state.ledgerPeer = peer;
  $("ledger-session").value = session;
  refreshLedger();
}

// ---- chat ----------------------------------------------------------------------------------

function provenanceView(p) {
  const links = p.chain.map((c, i) => [i ? " → " : "", el("a", {
    title: `${c.peer_id}: open its ledger at this session`, onclick: () => explore(c.peer_id, p.session_id),
  }, `${label(c.peer_id)} [${c.blocks[0]}:${c.blocks[1]})`)]).flat();
  return el("div", { class: "provenance", data: { session: p.session_id, root: p.model_root } },
    "session ", el("code", {}, p.session_id),
    " · model root ", el("code", { title: p.model_root }, p.model_root.slice(0, 16) + "…"),
    " · chain ", ...links, p.failovers ? ` · ${p.failovers} failover(s)` : "");
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

async function send(event) {
  event.preventDefault();
  if (state.busy) return;
  const text = $("chat-input").value.trim();
  if (!text) return;
  state.busy = true;
  $("chat-send").disabled = true;
  state.messages.push({ role: "user", content: text });
  const log = $("chat-log");
  log.append(el("div", { class: "msg user" }, text));
  const answer = el("span", { class: "text" });
  const bubble = el("div", { class: "msg assistant answer" }, answer);
  log.append(bubble);
  $("chat-input").value = "";
  const maxTokens = Number($("max-tokens").value);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(true),
      body: JSON.stringify({
        model: state.model, messages: state.messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($("temperature").value), max_tokens: maxTokens,
      }),
    });
    if (!response.ok) {
      const body = await response.json();
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    let provenance = null, usage = null, finish = null;
    for await (const chunk of sseEvents(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.swarmlm) provenance = chunk.swarmlm;
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices.length ? chunk.choices[0].delta : {};
      if (delta.content) answer.textContent += delta.content;
      if (chunk.choices.length && chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
      log.scrollTop = log.scrollHeight;
    }
    state.messages.push({ role: "assistant", content: answer.textContent });
    bubble.dataset.finish = finish || "";
    if (finish === "length") bubble.append(el("div", { class: "truncated" },
      `cut off at ${maxTokens} tokens (max tokens): raise it for the whole answer`));
    if (provenance) bubble.append(provenanceView(provenance));
    if (usage) bubble.append(el("div", { class: "provenance" },
      `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`));
    bubble.dataset.done = "true";
    setTimeout(refreshLedger, 1000);  // the nodes log the session as it closes
  } catch (e) {
    bubble.classList.add("error");
    answer.textContent += (answer.textContent ? "\n" : "") + e.message;
    bubble.dataset.done = "error";
    state.messages.pop();
  } finally {
    state.busy = false;
    $("chat-send").disabled = false;
  }
}

// ---- start ---------------------------------------------------------------------------------

async function start() {
  const info = await (await fetch("/swarm/info")).json();
  state.authRequired = info.auth_required;
  $("key-box").hidden = !info.auth_required;
  $("api-key").value = localStorage.getItem("swarmlm-api-key") || "";
  $("api-key").addEventListener("change", () => localStorage.setItem("swarmlm-api-key", $("api-key").value.trim()));
  $("model").replaceChildren(...info.models.map((m) => el("option", { value: m }, m)));
  state.model = info.models[0];
  $("model").addEventListener("change", () => {
    state.model = $("model").value;
    refreshStatus(); refreshCheckpoints();
  });
  $("ledger-node").addEventListener("change", () => { state.ledgerPeer = $("ledger-node").value; refreshLedger(); });
  $("ledger-session").addEventListener("change", refreshLedger);
  $("chat-form").addEventListener("submit", send);
  $("chat-clear").addEventListener("click", () => { state.messages = []; $("chat-log").replaceChildren(); });
  while (state.authRequired && !$("api-key").value.trim()) {  // ask before any request that would be refused
    $("summary").textContent = "this gateway wants its API key: enter it above";
    await new Promise((resolve) => $("api-key").addEventListener("change", resolve, { once: true }));
  }
  await refreshStatus();
  refreshCheckpoints().then(refreshLedger);
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(() => { refreshCheckpoints(); refreshLedger(); }, LEDGER_EVERY_MS);
}

start();

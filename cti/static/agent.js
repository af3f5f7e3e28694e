// Agent desktop: plain JS, no build step. Talks REST (/api) for most actions and the websocket
// (/ws) for pops, call updates and agent state (docs/protocol.md). Notes and dispositions go
// over the socket when it is open (the same server code as REST; REST when it is not).
//
// Token lifetime: access tokens are short-lived. Every refresh (before expiry: on the server's
// `token.expiring`, on a timer of our own, or after a 401) is also sent on the open websocket as
// a re-authentication, so an agent working all day is never disconnected; after a 4002 close
// the page refreshes and reconnects with its last seq (resume).
//
// Reload safety: tokens, the stream position (stream id + last seq) and the calls on screen
// live in sessionStorage, so a reload during a call shows the pop again at once and the
// websocket resumes where it left off (or the server sends a fresh snapshot).
// Everything from the server is inserted with textContent, never as HTML.
"use strict";

(function () {
  const S = sessionStorage;
  const KEY = { tokens: "cti.tokens", stream: "cti.stream", seq: "cti.last_seq", calls: "cti.calls" };
  const $ = (id) => document.getElementById(id);
  const state = {
    tokens: load(KEY.tokens),
    me: null,
    agent: null,
    calls: load(KEY.calls) || {},   // call_id -> pop (with .closed, .view_state)
    dispositions: {},               // call_id -> [{code,label}] | null (free text)
    ws: null,
    retry: 0,
    lastSeq: Number(S.getItem(KEY.seq) || "0") || null,
    stream: S.getItem(KEY.stream),
    refreshing: null,               // the refresh in flight (one at a time)
    wsToken: null,                  // the access token the open socket authenticated with
    expiringAt: 0,                  // Date.now() of the last refresh a token.expiring asked for
    renewTimer: null,
    nextId: 1,
    pending: {},                    // request id -> {resolve, reject, timer} of socket actions
  };

  function load(k) { try { return JSON.parse(S.getItem(k) || "null"); } catch (e) { return null; } }
  function save(k, v) { if (v === null || v === undefined) S.removeItem(k); else S.setItem(k, JSON.stringify(v)); }
  function el(tag, attrs, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") n.className = v; else if (k === "text") n.textContent = v;
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v); else n.setAttribute(k, v);
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) n.append(kid.nodeType ? kid : String(kid));
    return n;
  }
  function fmtTime(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : ""; }
  function fmtIso(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
  function dur(s) { s = Math.max(0, Math.floor(s)); const m = Math.floor(s / 60); return `${m}:${String(s % 60).padStart(2, "0")}`; }

  // ------------------------------------------------------------------ REST

  async function api(method, path, body) {
    const doFetch = () => fetch(path, {
      method,
      headers: Object.assign({ "Content-Type": "application/json" },
        state.tokens ? { Authorization: "Bearer " + state.tokens.access_token } : {}),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let r = await doFetch();
    if (r.status === 401 && state.tokens && await refresh()) r = await doFetch();
    let data = null;
    if (r.status !== 204) { try { data = await r.json(); } catch (e) { data = null; } }
    if (!r.ok) {
      const err = (data && data.error) || { message: r.statusText };
      const field = err.fields && err.fields.length ? ` (${err.fields.map((f) => f.field + ": " + f.message).join("; ")})` : "";
      const e = new Error((err.message || "request failed") + field);
      e.status = r.status; e.code = err.code;
      throw e;
    }
    return data;
  }

  function refresh() {
    if (!state.refreshing) state.refreshing = doRefresh().finally(() => { state.refreshing = null; });
    return state.refreshing;
  }

  async function doRefresh() {
    if (!state.tokens || !state.tokens.refresh_token) return false;
    let r;
    try {
      r = await fetch("/api/auth/refresh", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: state.tokens.refresh_token }),
      });
    } catch (e) { return false; }  // network trouble: the next attempt or the reconnect retries
    if (!r.ok) { if (r.status === 401) signOut(); return false; }
    const t = await r.json();
    setTokens(t);
    scheduleRenew(t.expires_in);
    reauth();  // the open socket takes the new token too: its expiry moves forward
    return true;
  }

  function reauth() {
    if (!state.tokens || !state.ws || state.ws.readyState !== 1) return;
    state.wsToken = state.tokens.access_token;
    state.ws.send(JSON.stringify({ type: "auth", token: state.wsToken }));
  }

  // our own timer, in case the server's token.expiring is missed: renew a minute (at most a
  // quarter of the lifetime) before the access token expires
  function scheduleRenew(lifetime) {
    if (state.renewTimer) clearTimeout(state.renewTimer);
    state.renewTimer = null;
    if (!(lifetime > 0)) return;
    const margin = Math.min(60, lifetime / 4);
    state.renewTimer = setTimeout(() => { state.renewTimer = null; refresh(); }, (lifetime - margin) * 1000);
  }

  function onTokenExpiring() {
    // a newer token than the socket's (a refresh after a 401, say): hand it over
    if (state.tokens && state.wsToken !== state.tokens.access_token) { reauth(); return; }
    // a warning window longer than the token's lifetime would ask again at once: not in a loop
    if (Date.now() - state.expiringAt < 10000) return;
    state.expiringAt = Date.now();
    refresh();
  }

  function setTokens(t) {
    state.tokens = t ? { access_token: t.access_token, refresh_token: t.refresh_token } : null;
    save(KEY.tokens, state.tokens);
  }

  // an action over the open socket (REST when it is not open); resolves with the result body,
  // rejects with an Error like api() does
  function sockAction(msg, restPath, restBody) {
    const ws = state.ws;
    if (!ws || ws.readyState !== 1 || !$("conn").dataset.state.startsWith("online")) return api("POST", restPath, restBody);
    const id = "a" + state.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { delete state.pending[id]; reject(new Error("no answer from the server: check and retry")); }, 15000);
      state.pending[id] = { resolve, reject, timer };
      ws.send(JSON.stringify(Object.assign({ id }, msg)));
    });
  }

  function settle(d, ok) {
    const p = d && state.pending[d.id];
    if (!p) return false;
    delete state.pending[d.id]; clearTimeout(p.timer);
    if (ok) { p.resolve(d.result); return true; }
    const field = d.fields && d.fields.length ? ` (${d.fields.map((f) => f.field + ": " + f.message).join("; ")})` : "";
    const e = new Error((d.message || "request failed") + field); e.code = d.code; e.status = d.status;
    p.reject(e);
    return true;
  }

  function failPending(why) {
    for (const [id, p] of Object.entries(state.pending)) { clearTimeout(p.timer); p.reject(new Error(why)); delete state.pending[id]; }
  }

  // ------------------------------------------------------------------ sign in / out

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const t = await api("POST", "/api/auth/login", {
        username: $("login-username").value, password: $("login-password").value,
      });
      setTokens(t);
      scheduleRenew(t.expires_in);
      await start();
    } catch (e) { $("login-error").textContent = e.message; }
  });

  $("signout").addEventListener("click", () => signOut());

  function signOut() {
    setTokens(null);
    if (state.renewTimer) { clearTimeout(state.renewTimer); state.renewTimer = null; }
    failPending("signed out");
    for (const k of Object.values(KEY)) S.removeItem(k);
    state.calls = {}; state.lastSeq = null; state.stream = null;
    if (state.ws) { state.ws.onclose = null; state.ws.close(); state.ws = null; }
    renderCalls();
    show(false);
  }

  function show(signedIn) {
    $("login-view").hidden = signedIn;
    $("desk-view").hidden = !signedIn;
    $("signout").hidden = !signedIn;
  }

  async function start() {
    try { state.me = await api("GET", "/api/me"); } catch (e) { signOut(); return; }
    show(true);
    $("who").textContent = `${state.me.account.display_name || state.me.account.username} (${state.me.account.role})`;
    const sel = $("pause-reason");
    sel.replaceChildren(...state.me.pause_reasons.map((r) => el("option", { value: r, text: r })));
    applyAgent(state.me.state);
    renderCalls();
    connect();
  }

  // ------------------------------------------------------------------ websocket

  function connect() {
    if (!state.tokens) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${proto}//${location.host}/ws`);
    state.ws = ws;
    $("conn").dataset.state = "connecting"; $("conn").textContent = "connecting";
    ws.onopen = () => {
      const auth = { type: "auth", token: state.tokens.access_token };
      state.wsToken = auth.token;
      if (state.lastSeq !== null && state.stream) { auth.last_seq = state.lastSeq; auth.stream = state.stream; }
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (m) => {
      let msg; try { msg = JSON.parse(m.data); } catch (e) { return; }
      onMessage(msg);
    };
    ws.onclose = async (ev) => {
      $("conn").dataset.state = "offline"; $("conn").textContent = "offline";
      if (state.ws !== ws) return;
      failPending("connection lost before the answer: the change may have been saved, check the call");
      state.ws = null;
      // token expired: refresh (signs out if the refresh token is refused), then resume
      if (ev.code === 4002) { await refresh(); if (!state.tokens) return; }
      else if (ev.code === 4001) { signOut(); return; }
      state.retry = Math.min(state.retry + 1, 6);
      setTimeout(connect, 250 * 2 ** (state.retry - 1));
    };
  }

  function ack(seq) {
    if (typeof seq !== "number") return;
    state.lastSeq = seq; S.setItem(KEY.seq, String(seq));
    if (state.ws && state.ws.readyState === 1) state.ws.send(JSON.stringify({ type: "ack", seq }));
  }

  function onMessage(msg) {
    const d = msg.data || {};
    switch (msg.type) {
      case "hello":
        state.retry = 0;
        if (typeof d.token_expires_at === "number" && typeof d.server_time === "number" && !state.renewTimer) scheduleRenew(d.token_expires_at - d.server_time);
        state.stream = d.stream; S.setItem(KEY.stream, d.stream);
        $("conn").dataset.state = "online"; $("conn").textContent = d.resumed ? "online (resumed)" : "online";
        if (typeof msg.seq === "number") ack(msg.seq);
        return;
      case "snapshot": {
        if (d.agent) applyAgent(d.agent);
        const fresh = {};
        for (const p of d.calls || []) fresh[p.call_id] = Object.assign(state.calls[p.call_id] || {}, p, { closed: p.state === "ended" && !!p.disposition });
        // keep closed cards the agent has not dismissed yet
        for (const [id, c] of Object.entries(state.calls)) if (!fresh[id] && c.closed) fresh[id] = c;
        state.calls = fresh; persistCalls(); renderCalls();
        ack(msg.seq);
        return;
      }
      case "pop": onPop(d); break;
      case "pop.update": onPopUpdate(d); break;
      case "call.update": onCallUpdate(d); break;
      case "agent.state": onAgentState(d); break;
      case "callback.due": onCallbackDue(d); break;
      case "token.expiring": onTokenExpiring(); return;
      case "auth.renewed": return;
      case "result": if (settle(d, true)) return; break;
      case "error": if (typeof msg.seq !== "number" && settle(d, false)) return; console.warn("server error", d); break;
      default: break;
    }
    if (typeof msg.seq === "number") ack(msg.seq);
  }

  function persistCalls() { save(KEY.calls, state.calls); }

  function onPop(p) {
    const prev = state.calls[p.call_id];
    state.calls[p.call_id] = Object.assign(prev || {}, p, { closed: false, view_state: p.state });
    persistCalls(); renderCall(p.call_id);
  }

  function onPopUpdate(d) {
    const c = state.calls[d.call_id]; if (!c) return;
    c.identification = d.identification; persistCalls(); renderCall(d.call_id);
  }

  const UPDATE_TEXT = {
    ringing_ended: "missed", answered_by_you: "on call", answered_elsewhere: "answered elsewhere",
    transferred_away: "transferred away", transferred_to_you: "transferred to you", ended: "ended",
  };

  function onCallUpdate(d) {
    const c = state.calls[d.call_id]; if (!c) return;
    c.view_state = d.state; c.reason = d.reason;
    if (d.state === "answered_by_you") { c.state = "answered"; c.answered_at = d.at; }
    if (d.state === "transferred_to_you") { c.closed = false; }
    if (d.state === "ended") { c.state = "ended"; c.ended_at = d.at; }
    if (["ringing_ended", "answered_elsewhere", "transferred_away"].includes(d.state)) { c.closed = true; c.state = "ended"; }
    // a call the agent never answered needs no after-call work: drop it after a moment
    if (c.closed && !c.answered_at) setTimeout(() => { if (state.calls[d.call_id] && state.calls[d.call_id].closed) { delete state.calls[d.call_id]; persistCalls(); renderCalls(); } }, 4000);
    persistCalls(); renderCall(d.call_id);
  }

  function onAgentState(d) {
    // agent.state carries an AgentStateChange; fetch the full view for queues/timers
    if (state.agent) { state.agent.status = d.status; state.agent.since = d.at; state.agent.reason = d.reason; }
    applyAgent(state.agent || { status: d.status, since: d.at, reason: d.reason });
    api("GET", "/api/me").then((me) => { state.me = me; applyAgent(me.state); }).catch(() => {});
  }

  function onCallbackDue(d) {
    $("callbacks").prepend(el("li", {}, el("span", { text: `${d.number || ""} ${fmtIso(d.due_at)} ${d.note || ""}` }),
      el("button", { type: "button", text: "Call", onclick: () => dial(d.number) })));
  }

  // ------------------------------------------------------------------ agent state

  function applyAgent(a) {
    if (!a) return;
    state.agent = a;
    const st = $("state");
    st.dataset.status = a.status;
    st.textContent = a.status.replace("_", " ") + (a.reason ? ` (${a.reason})` : "");
    const inQueues = a.status !== "logged_out";
    $("device-form").hidden = inQueues;
    $("device-logout").hidden = !inQueues;
    $("pause-box").hidden = !inQueues;
    $("pause").hidden = a.status === "paused";
    $("unpause").hidden = a.status !== "paused";
    if (a.device) $("device").value = a.device;
    $("wrapup").hidden = !(a.status === "wrap_up" && a.wrap_up_until);
  }

  setInterval(() => {
    const a = state.agent; if (!a) return;
    $("state-timer").textContent = a.since && a.status !== "logged_out" ? dur(Date.now() / 1000 - a.since) : "";
    if (a.status === "wrap_up" && a.wrap_up_until) $("wrapup-left").textContent = dur(a.wrap_up_until - Date.now() / 1000);
  }, 500);

  async function stateAction(method, path, body) {
    $("state-error").textContent = "";
    try { applyAgent(await api(method, path, body)); } catch (e) { $("state-error").textContent = e.message; }
  }

  $("device-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const queues = $("queues").value.split(/[\s,]+/).filter(Boolean);
    stateAction("POST", "/api/agent/login", { device: $("device").value.trim(), queues });
  });
  $("device-logout").addEventListener("click", () => stateAction("POST", "/api/agent/logout"));
  $("pause").addEventListener("click", () => stateAction("POST", "/api/agent/pause", { reason: $("pause-reason").value }));
  $("unpause").addEventListener("click", () => stateAction("POST", "/api/agent/unpause"));
  $("wrapup-end").addEventListener("click", () => stateAction("POST", "/api/agent/wrapup/end"));

  // ------------------------------------------------------------------ pop cards

  function renderCalls() {
    const box = $("calls");
    for (const n of [...box.querySelectorAll(".call")]) if (!state.calls[n.dataset.callId]) n.remove();
    for (const id of Object.keys(state.calls)) renderCall(id);
    $("no-calls").hidden = Object.keys(state.calls).length > 0;
  }

  function callNode(id) {
    let node = [...$("calls").querySelectorAll(".call")].find((n) => n.dataset.callId === id);
    if (!node) {
      node = $("call-template").content.firstElementChild.cloneNode(true);
      node.dataset.callId = id;
      wireCall(node, id);
      $("calls").prepend(node);
    }
    return node;
  }

  function renderCall(id) {
    const c = state.calls[id];
    $("no-calls").hidden = Object.keys(state.calls).length > 0;
    if (!c) return;
    const n = callNode(id);
    n.dataset.state = c.closed ? "closed" : c.state;
    n.querySelector(".dir").textContent = c.direction;
    n.querySelector(".caller").textContent = (c.caller.name ? c.caller.name + " " : "") + (c.caller.number || "withheld number");
    const meta = [];
    if (c.queue) meta.push("queue " + c.queue);
    if (c.did) meta.push("DID " + c.did);
    if (c.campaign) meta.push("campaign " + c.campaign + (c.lead ? " / lead " + c.lead : ""));
    for (const [k, v] of Object.entries(c.ivr || {})) meta.push(`IVR ${k}: ${v}`);
    if (c.transferred) meta.push("transferred");
    n.querySelector(".meta").textContent = meta.join(" · ");
    n.querySelector(".call-state").textContent = UPDATE_TEXT[c.view_state] || c.state;
    n.querySelector(".dismiss").hidden = !(c.closed || c.state === "ended");
    renderIdent(n.querySelector(".ident"), c);
    renderHistory(n.querySelector(".history"), c);
    const notes = n.querySelector(".notes");
    notes.replaceChildren(...(c.notes || []).map((t) => el("li", { text: t })));
    n.querySelector(".dispo-current").textContent = c.disposition ? "disposition: " + c.disposition : "";
    const canWork = !!c.answered_at;
    for (const b of n.querySelectorAll(".work button, .work textarea, .work input, .work select")) b.disabled = !canWork;
    if (canWork && state.dispositions[id] === undefined) loadDispositions(id, n);
  }

  async function loadDispositions(id, n) {
    state.dispositions[id] = null;
    let list = null;
    try { list = (await api("GET", "/api/dispositions?call_id=" + encodeURIComponent(id))).dispositions; } catch (e) { list = null; }
    state.dispositions[id] = list;
    const sel = n.querySelector(".dispo-code"), other = n.querySelector(".dispo-other");
    if (list && list.length) {
      sel.replaceChildren(...list.map((d) => el("option", { value: d.code, text: d.label || d.code })));
      sel.hidden = false; other.hidden = true;
    } else { sel.hidden = true; other.hidden = false; }
  }

  function kv(rows) {
    return el("table", {}, ...rows.filter((r) => r[1] !== "" && r[1] !== null && r[1] !== undefined)
      .map(([k, v]) => el("tr", {}, el("th", { text: k }), el("td", { text: String(v) }))));
  }

  function cardView(card) {
    const box = el("div", { class: "card", "data-customer-id": card.id });
    box.append(el("h3", { class: "customer-name", text: card.name }, card.vip ? el("span", { class: "badge vip", text: "VIP" }) : null,
      card.segment ? el("span", { class: "badge", text: card.segment }) : null));
    box.append(kv([["Address", [card.street, [card.postcode, card.city].filter(Boolean).join(" "), card.country].filter(Boolean).join(", ")],
      ["Language", card.language], ["Time zone", card.time_zone],
      ["Phones", (card.phones || []).map((p) => `${p.e164} (${p.kind})`).join(", ")],
      ["E-mail", (card.emails || []).join(", ")],
      ["Ids", (card.external_ids || []).map((x) => `${x.type} ${x.value}`).join(", ")]]));
    const custom = Object.entries(card.custom || {}).filter(([, v]) => v !== null && v !== "");
    if (custom.length) box.append(el("h4", { text: "Details" }), kv(custom.map(([k, v]) => [k, typeof v === "boolean" ? (v ? "yes" : "no") : v])));
    if ((card.consent || []).length) box.append(el("h4", { text: "Consent" }), el("ul", { class: "consent" },
      ...card.consent.map((c) => el("li", { text: `${c.channel}/${c.purpose}: ${c.granted ? "yes" : "NO"} (${c.source})` }))));
    if ((card.open_cases || []).length) box.append(el("h4", { text: "Open cases" }), el("ul", { class: "cases" },
      ...card.open_cases.map((c) => el("li", { text: `#${c.id} ${c.type}${c.category ? "/" + c.category : ""} ${c.subject} (${c.status})` }))));
    if ((card.recent || []).length) box.append(el("h4", { text: "Recent interactions" }), el("ul", { class: "recent" },
      ...card.recent.map((i) => el("li", { text: `${fmtIso(i.offered_at)} ${i.direction} ${i.agent || ""} ${i.disposition || ""} ${i.notes || ""}` }))));
    return box;
  }

  function renderIdent(box, c) {
    const ident = c.identification || { status: "degraded" };
    box.dataset.status = ident.status;
    const kids = [];
    const pick = (cust) => el("button", { type: "button", class: "link-customer", text: "This is the caller",
      onclick: () => linkCustomer(c.call_id, { customer_id: cust.id }) });
    const candidates = () => el("ul", { class: "results candidates" }, ...(ident.candidates || []).map((cd) =>
      el("li", {}, el("span", { text: `${cd.customer.name} ${cd.customer.postcode || ""} ${cd.customer.city || ""} — ${cd.evidence.join(", ")}` }),
        c.answered_at ? pick(cd.customer) : null)));
    if (ident.status === "one" && ident.card) {
      kids.push(cardView(ident.card));
    } else if (ident.status === "many") {
      kids.push(el("p", { class: "warn-box", text: "Several customers match this caller: pick the right one." }), candidates());
    } else if (ident.status === "conflict") {
      kids.push(el("p", { class: "warn-box conflict", text: "Conflict: the caller's number and the IVR input point to different customers. Check who is calling." }));
      if (ident.card) kids.push(cardView(ident.card));
      kids.push(candidates());
    } else if (ident.status === "degraded") {
      kids.push(el("p", {}, el("span", { class: "badge degraded", text: "CRM unavailable" }),
        " Number only: ", el("strong", { text: c.caller.number || "withheld" }), el("span", { class: "muted", text: " (details follow when the CRM answers)" })));
    } else {
      kids.push(el("p", { class: "unknown", text: ident.withheld ? "Withheld number." : "Unknown caller." }));
      if (c.answered_at) kids.push(unknownFlow(c));
    }
    box.replaceChildren(...kids);
  }

  function unknownFlow(c) {
    const wrap = el("div", { class: "unknown-flow" });
    const results = el("ul", { class: "results" });
    const q = el("input", { placeholder: "search name, number, e-mail", maxlength: "200", "aria-label": "search customer" });
    wrap.append(el("form", { class: "inline", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const r = await api("GET", "/api/customers?q=" + encodeURIComponent(q.value));
        results.replaceChildren(...r.customers.map((cu) => el("li", {}, el("span", { text: `${cu.name} ${cu.postcode} ${cu.city}` }),
          el("button", { type: "button", text: "Link", onclick: () => linkCustomer(c.call_id, { customer_id: cu.id }) }))));
      } catch (e) { callError(c.call_id, e.message); }
    } }, q, el("button", { type: "submit", text: "Search" })), results);
    const name = el("input", { placeholder: "name", maxlength: "200", required: "", class: "new-name", "aria-label": "new customer name" });
    const email = el("input", { placeholder: "e-mail (optional)", maxlength: "254", class: "new-email", "aria-label": "new customer e-mail" });
    wrap.append(el("form", { class: "inline create-customer", onsubmit: (ev) => {
      ev.preventDefault();
      const create = { name: name.value };
      if (email.value) create.emails = [email.value];
      linkCustomer(c.call_id, { create });
    } }, name, email, el("button", { type: "submit", text: "Create customer" })));
    return wrap;
  }

  function renderHistory(box, c) {
    const h = c.history || [];
    if (!h.length) { box.replaceChildren(); return; }
    box.replaceChildren(el("h4", { text: "Earlier on this call" }), el("ul", {},
      ...h.map((x) => el("li", { text: `${x.agent} ${fmtTime(x.answered_at)}–${fmtTime(x.ended_at)} ${x.disposition || ""} ${(x.notes || []).join(" / ")}` }))));
  }

  function callError(id, msg) {
    const n = callNode(id); n.querySelector(".call-error").textContent = msg || "";
  }
  function callInfo(id, msg) {
    const n = callNode(id); n.querySelector(".call-info").textContent = msg || "";
  }

  async function callAction(id, path, body, onOk, sockMsg) {
    callError(id, "");
    try {
      const r = sockMsg ? await sockAction(sockMsg, path, body) : await api("POST", path, body);
      if (onOk) onOk(r);
      return r;
    } catch (e) { callError(id, e.message); return null; }
  }

  function mergePop(p) {
    const c = state.calls[p.call_id]; if (!c) return;
    Object.assign(c, { notes: p.notes, disposition: p.disposition, identification: p.identification, history: p.history });
    if (p.state === "ended" && p.disposition && c.state === "ended") c.closed = true;
    persistCalls(); renderCall(p.call_id);
  }

  function linkCustomer(id, body) {
    return callAction(id, `/api/calls/${encodeURIComponent(id)}/customer`, body, (p) => { mergePop(p); callInfo(id, "Customer linked."); });
  }

  function wireCall(n, id) {
    const enc = encodeURIComponent(id);
    n.querySelector(".dismiss").addEventListener("click", () => { delete state.calls[id]; persistCalls(); n.remove(); renderCalls(); });
    n.querySelector(".note-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const ta = n.querySelector(".note-text");
      if (!ta.value.trim()) return;
      callAction(id, `/api/calls/${enc}/notes`, { text: ta.value }, (p) => { ta.value = ""; mergePop(p); callInfo(id, "Note saved."); },
        { type: "note", call_id: id, text: ta.value });
    });
    n.querySelector(".dispo-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const sel = n.querySelector(".dispo-code"), other = n.querySelector(".dispo-other");
      const code = sel.hidden ? other.value.trim() : sel.value;
      if (!code) return;
      callAction(id, `/api/calls/${enc}/disposition`, { code }, (p) => { mergePop(p); callInfo(id, "Disposition saved."); },
        { type: "disposition", call_id: id, code });
    });
    n.querySelector(".case-link").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = n.querySelector(".case-id").value.trim(); if (!v) return;
      callAction(id, `/api/calls/${enc}/cases`, { case_ids: [v] }, () => callInfo(id, "Case linked."));
    });
    n.querySelector(".case-new").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const nc = { type: n.querySelector(".case-type").value.trim(), category: n.querySelector(".case-category").value.trim(), subject: n.querySelector(".case-subject").value.trim() };
      callAction(id, `/api/calls/${enc}/cases`, { new_case: nc }, (r) => callInfo(id, "Case opened: " + (r.case_ids || []).join(", ")));
    });
    n.querySelector(".callback-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const due = n.querySelector(".cb-due").value; if (!due) return;
      callAction(id, "/api/callbacks", { call_id: id, due, for_me: n.querySelector(".cb-me").checked, note: n.querySelector(".cb-note").value },
        (cb) => callInfo(id, `Callback scheduled for ${cb.due_local || cb.due_at} (${cb.time_zone}).`));
    });
  }

  // ------------------------------------------------------------------ side panel

  async function dial(number) {
    $("dial-result").textContent = "";
    try {
      const r = await api("POST", "/api/dial", { number });
      $("dial-result").textContent = `Calling ${r.number}: your phone ${r.device} rings first.`;
    } catch (e) { $("dial-result").textContent = e.message; }
  }
  $("dial-form").addEventListener("submit", (ev) => { ev.preventDefault(); dial($("dial-number").value.trim()); });

  $("search-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const list = $("search-results");
    try {
      const r = await api("GET", "/api/customers?q=" + encodeURIComponent($("search-q").value));
      list.replaceChildren(...r.customers.map((cu) => el("li", {}, el("span", { text: `${cu.name} ${cu.postcode} ${cu.city}` }),
        el("button", { type: "button", text: "Open", onclick: async () => {
          try { $("search-card").replaceChildren(cardView(await api("GET", "/api/customers/" + encodeURIComponent(cu.id)))); }
          catch (e) { $("search-card").textContent = e.message; }
        } }))));
      if (!r.customers.length) list.replaceChildren(el("li", { class: "muted", text: "Nothing found." }));
    } catch (e) { list.replaceChildren(el("li", { class: "error", text: e.message })); }
  });

  // ------------------------------------------------------------------ boot

  if (state.tokens) start(); else show(false);
})();

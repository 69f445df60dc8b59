"use strict";
// The ledgerd dashboard: plain JavaScript, no framework, no build step.
// It talks only to this server (the page's Content-Security-Policy allows
// nothing else): the REST API for the first view of each panel, then the
// live streams (Server-Sent Events) for every change after that. The
// session token lives in sessionStorage and leaves this origin never.
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "ledgerd.token";
  const CHART_MINUTES = 30;
  const RATE_SECONDS = 120;
  // A stream that has said nothing for this long is treated as dead: the
  // server sends a lag message at least every 5 s (platform every 1 s).
  const SILENCE_MS = 12000;
  // Read models this far behind make the figures visibly "may be stale".
  const LAGGING_MS = 1000;

  // ---------- small helpers ----------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function b64urlJSON(part) {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  // Money arrives as decimal strings with at most two decimals; sums are
  // done in integer cents (BigInt), never in floating point.
  function cents(s) {
    const m = /^(-?)(\d+)(?:\.(\d{1,2}))?$/.exec(String(s == null ? "0" : s).trim());
    if (!m) return 0n;
    const v = BigInt(m[2]) * 100n + BigInt((m[3] || "0").padEnd(2, "0"));
    return m[1] ? -v : v;
  }
  function fromCents(v) {
    const neg = v < 0n;
    const a = neg ? -v : v;
    return (neg ? "-" : "") + (a / 100n).toString() + "." + (a % 100n).toString().padStart(2, "0");
  }
  function money(s) {
    if (s === undefined || s === null || s === "") return "–";
    const str = String(s);
    const neg = str.startsWith("-");
    const abs = neg ? str.slice(1) : str;
    if (state.currency === "USD") return (neg ? "-$" : "$") + abs;
    return str + " " + state.currency;
  }
  function count(n) {
    if (n === undefined || n === null) return "–";
    return Number(n).toLocaleString("en-US");
  }
  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    if (isNaN(d)) return "–";
    const sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }
  function clock(ms) { return new Date(ms).toLocaleTimeString(); }
  function ago(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.round(ms / 60000) + " min";
  }

  // coalesce runs fn at most once at a time, delay ms after the first
  // trigger, and once more if triggered while it ran.
  function coalesce(fn, delay) {
    let timer = null, running = false, again = false;
    const run = async () => {
      timer = null; running = true;
      try { await fn(); } catch (e) { report(e); }
      running = false;
      if (again) { again = false; trigger(); }
    };
    const trigger = () => {
      if (running) { again = true; return; }
      if (!timer) timer = setTimeout(run, delay);
    };
    trigger.cancel = () => { clearTimeout(timer); timer = null; again = false; };
    return trigger;
  }

  function flash(node, text) {
    if (node.textContent === text) return;
    const first = node.textContent === "–";
    node.textContent = text;
    if (first) return;
    node.classList.add("changed");
    setTimeout(() => node.classList.remove("changed"), 700);
  }

  // ---------- session ----------

  const state = {
    token: null, claims: null, gen: 0, currency: "USD",
    streams: [], timers: [],
    // freshness
    conn: "connecting", since: 0, lag: null, lastMsg: 0, restStale: null,
  };

  class SessionEnded extends Error {}

  function report(err) {
    if (err instanceof SessionEnded) return;
    $("page-error").textContent = err && err.message ? err.message : String(err);
  }

  async function api(method, path, body) {
    const gen = state.gen;
    const res = await fetch(path, {
      method,
      headers: Object.assign({ Authorization: "Bearer " + state.token }, body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
    if (gen !== state.gen) throw new SessionEnded();
    if (res.status === 401) { endSession("Your session has ended; please log in again."); throw new SessionEnded(); }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (gen !== state.gen) throw new SessionEnded();
    if (!res.ok) {
      const e = new Error((data && data.error && data.error.message) || res.status + " " + res.statusText);
      e.status = res.status; e.data = data;
      throw e;
    }
    if (res.headers.get("X-Ledger-Stale") === "true") {
      state.restStale = { at: Date.now(), ms: Number(res.headers.get("X-Ledger-Projection-Lag-Ms")) || null };
      renderFreshness();
    }
    const date = Date.parse(res.headers.get("Date") || "");
    return { data, serverNow: isNaN(date) ? Date.now() : date };
  }

  function claimsOf(token) {
    try { return b64urlJSON(token.split(".")[1]); } catch (_) { return null; }
  }
  const isStaff = () => state.claims && (state.claims.role === "admin" || state.claims.role === "finance");

  function show(view) {
    for (const id of ["login-view", "customer-view", "staff-view"]) $(id).hidden = id !== view;
    $("who").hidden = view === "login-view";
    $("live").hidden = view === "login-view";
  }

  function endSession(message) {
    state.gen++;
    for (const s of state.streams) s.close();
    for (const t of state.timers) { clearTimeout(t); clearInterval(t); }
    for (const r of reloaders) r.cancel();
    state.streams = []; state.timers = [];
    state.token = null; state.claims = null; state.lag = null; state.restStale = null;
    sessionStorage.removeItem(TOKEN_KEY);
    resetViews();
    show("login-view");
    $("login-error").textContent = message || "";
    $("page-error").textContent = "";
    $("email").focus();
  }

  $("logout").addEventListener("click", () => endSession(""));

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = $("login-error");
    err.textContent = "";
    const email = $("email").value.trim(), password = $("password").value;
    if (!email || !password) { err.textContent = "Enter your email and password."; return; }
    const btn = e.submitter || e.target.querySelector("button");
    btn.disabled = true;
    try {
      const res = await fetch("/api/auth/login", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ email, password }),
      });
      const data = await res.json().catch(() => null);
      if (!res.ok) { err.textContent = (data && data.error && data.error.message) || "Login failed."; return; }
      sessionStorage.setItem(TOKEN_KEY, data.access_token);
      $("password").value = "";
      begin(data.access_token);
    } catch (ex) {
      err.textContent = "Could not reach ledgerd: " + ex.message;
    } finally { btn.disabled = false; }
  });

  function begin(token) {
    const claims = claimsOf(token);
    if (!claims || !claims.exp || claims.exp * 1000 <= Date.now()) { endSession(token ? "Your session has ended; please log in again." : ""); return; }
    state.token = token; state.claims = claims; state.gen++;
    state.conn = "connecting"; state.since = Date.now(); state.lastMsg = 0;
    $("who-email").textContent = claims.email || "";
    // A session cannot be renewed: when it expires, say so instead of
    // silently showing figures that no longer update.
    state.timers.push(setTimeout(() => endSession("Your session expired at " + clock(claims.exp * 1000) + "; please log in again."),
      Math.max(0, claims.exp * 1000 - Date.now())));
    state.timers.push(setInterval(watchdog, 1000));
    $("main").focus();
    if (isStaff()) startStaff(); else startCustomer();
  }

  // ---------- live streams ----------

  // openStream keeps an EventSource open. The browser reconnects by itself
  // after a dropped connection, sending Last-Event-ID so the server replays
  // what was missed (or sends a fresh snapshot). When the browser gives up
  // (the server refused the connection), a new EventSource is made after a
  // back-off: it starts with a snapshot, which replaces the page's state.
  function openStream(path, handlers) {
    const gen = state.gen;
    let es = null, backoff = 1000;
    const holder = { close() { if (es) es.close(); } };
    state.streams.push(holder);
    const connect = () => {
      if (gen !== state.gen) return;
      es = new EventSource(path + "?token=" + encodeURIComponent(state.token));
      es.onopen = () => {
        backoff = 1000; state.lastMsg = Date.now(); setConn("live");
        $("page-error").textContent = ""; // an error from while the connection was down
      };
      es.onerror = () => {
        if (gen !== state.gen) return;
        setConn("off");
        if (es.readyState === EventSource.CLOSED) {
          state.timers.push(setTimeout(connect, backoff));
          backoff = Math.min(backoff * 2, 15000);
        }
      };
      for (const [type, fn] of Object.entries(handlers)) {
        es.addEventListener(type, (ev) => {
          if (gen !== state.gen) return;
          state.lastMsg = Date.now();
          if (state.conn !== "live") setConn("live");
          let data;
          try { data = JSON.parse(ev.data); } catch (_) { return; }
          try { fn(data); } catch (e) { report(e); }
        });
      }
    };
    holder.restart = () => { if (es) es.close(); setConn("off"); connect(); };
    connect();
    return holder;
  }

  function setConn(c) {
    if (state.conn === c) return;
    state.conn = c; state.since = Date.now();
    renderFreshness();
  }

  function watchdog() {
    if (state.conn === "live" && state.lastMsg && Date.now() - state.lastMsg > SILENCE_MS) {
      // Silent for too long: the connection may be half-open. Start over.
      for (const s of state.streams) if (s.restart) s.restart();
    }
    renderFreshness();
  }

  // renderFreshness says how current the figures are: live and how far the
  // read models are behind, or since when live updates have stopped.
  function renderFreshness() {
    const live = $("live"), text = $("live-text");
    const staff = isStaff();
    const box = staff ? $("staff-freshness") : $("freshness");
    const view = staff ? $("staff-view") : $("customer-view");
    let cls = "on", head, long;
    const lag = state.lag;
    if (state.conn === "live") {
      if (lag && lag.ms >= LAGGING_MS) {
        cls = "lagging";
        head = "Live · " + ago(lag.ms) + " behind";
        long = "Live, but the read models are " + count(lag.events) + " event" + (lag.events === 1 ? "" : "s") + " (" + ago(lag.ms) +
          ") behind the ledger: the figures below may be that much out of date.";
      } else {
        head = "Live";
        long = "Live: figures update as calls complete. " + (!lag ? "Checking how far the read models are behind…" :
          lag.events === 0 ? "Read models are up to date." : "Read models are " + count(lag.events) + " event" + (lag.events === 1 ? "" : "s") + " (" + ago(lag.ms) + ") behind.");
      }
      if (state.lastMsg && Date.now() - state.lastMsg > 6000) {
        cls = "lagging";
        long += " No update received for " + Math.round((Date.now() - state.lastMsg) / 1000) + " s.";
      }
    } else if (state.conn === "connecting") {
      cls = "lagging"; head = "Connecting…";
      long = "Connecting to live updates; the figures below are from " + clock(state.since) + " and may be stale.";
    } else {
      cls = "off"; head = "Reconnecting…";
      long = "Live updates stopped at " + clock(state.since) + "; the figures below may be stale until the connection is back. Reconnecting…";
    }
    if (state.restStale && Date.now() - state.restStale.at < 10000) {
      long += " Some figures were read from a read model that was " + (state.restStale.ms != null ? ago(state.restStale.ms) + " " : "") + "behind.";
      if (cls === "on") cls = "lagging";
    }
    live.className = "live " + cls;
    if (text.textContent !== head) text.textContent = head;
    box.className = "freshness " + (cls === "on" ? "" : cls);
    if (box.textContent !== long) box.textContent = long;
    view.classList.toggle("stale", cls !== "on");
  }

  // ---------- customer view ----------

  const reloadKeys = coalesce(loadKeys, 150);
  const reloadEntries = coalesce(loadEntries, 150);
  const reloadTasks = coalesce(loadTasks, 150);
  const reloadChart = coalesce(loadChart, 250);
  const reloaders = [reloadKeys, reloadEntries, reloadTasks, reloadChart];

  let snapshots = 0;
  let tasks = new Map();
  let tasksListed = true; // whether GET /api/v1/tasks exists on this server
  let lastBalance = null;
  let entriesCursor = null;

  function startCustomer() {
    show("customer-view");
    snapshots = 0;
    renderFreshness();
    const gen = state.gen;
    const settle = (p) => p.catch((e) => { if (gen === state.gen) report(e); });
    settle(loadWallet()); settle(loadTotals()); settle(loadKeys()); settle(loadEntries()); settle(loadTasks()); settle(loadChart());
    openStream("/api/v1/usage/stream", {
      snapshot(d) {
        snapshots++;
        if (d.currency) state.currency = d.currency;
        setWallet(d.wallet);
        setTotals(d.today, d.month);
        setLag(d.lag);
        // A fresh snapshot after a reconnection replaces the state: what
        // happened while away is read again.
        if (snapshots > 1) { reloadKeys(); reloadEntries(); reloadTasks(); }
        reloadChart();
      },
      wallet(d) { setWallet(d); },
      usage(d) { setTotals(d.today, d.month); chartUsage(d); reloadKeys(); },
      task(d) { upsertTask(d); },
      key() { reloadKeys(); },
      lag(d) { setLag(d); },
    });
    state.timers.push(setInterval(drawChart, 10000));
  }

  function setLag(l) {
    if (!l) return;
    state.lag = { events: Number(l.events) || 0, ms: Number(l.ms) || 0 };
    renderFreshness();
  }

  async function loadWallet() {
    const { data } = await api("GET", "/api/v1/wallet");
    if (data.currency) state.currency = data.currency;
    setWallet(data);
  }

  function setWallet(w) {
    if (!w) return;
    flash($("balance"), money(w.balance));
    flash($("held"), money(w.held));
    flash($("available"), money(w.available));
    $("credits-box").hidden = w.credits === undefined;
    if (w.credits !== undefined) flash($("credits"), money(w.credits));
    // The statement changes only when paid money or grants do.
    const mark = w.balance + "/" + (w.credits || "");
    if (lastBalance !== null && mark !== lastBalance) reloadEntries();
    lastBalance = mark;
  }

  // loadTotals reads today's and this month's totals from the usage read
  // model until the stream's snapshot brings them.
  async function loadTotals() {
    const now = new Date();
    const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
    const to = new Date(now.getTime() + 24 * 3600 * 1000);
    const { data } = await api("GET", "/api/v1/usage?granularity=day&from=" + month.toISOString().replace(/\.\d+Z$/, "Z") +
      "&to=" + to.toISOString().replace(/\.\d+Z$/, "Z"));
    if (snapshots > 0) return; // the stream already said
    const today = now.toISOString().slice(0, 10);
    let mc = 0, ms = 0n, tc = 0, ts = 0n;
    for (const p of data.series || []) {
      mc += p.calls; ms += cents(p.spend);
      if (String(p.bucket).slice(0, 10) === today) { tc += p.calls; ts += cents(p.spend); }
    }
    setTotals({ calls: tc, spend: fromCents(ts) }, { calls: mc, spend: fromCents(ms) });
  }

  function setTotals(today, month) {
    if (today) { flash($("calls-today"), count(today.calls)); flash($("spend-today"), money(today.spend)); }
    if (month) { flash($("calls-month"), count(month.calls)); flash($("spend-month"), money(month.spend)); }
  }

  // ----- tasks -----

  function normTask(t) {
    return {
      id: t.task_id || t.taskId, model: t.model, status: t.status, cost: t.cost,
      created_at: t.created_at, completed_at: t.completed_at,
    };
  }

  async function loadTasks() {
    if (!tasksListed) return;
    let data;
    try {
      ({ data } = await api("GET", "/api/v1/tasks?limit=20"));
    } catch (e) {
      if (e.status === 404 || e.status === 405) { tasksListed = false; return; } // older server: the stream fills the table
      throw e;
    }
    tasks = new Map();
    for (const t of data.tasks || []) { const n = normTask(t); tasks.set(n.id, n); }
    renderTasks();
  }

  function upsertTask(t) {
    const n = normTask(t);
    const old = tasks.get(n.id);
    tasks.set(n.id, Object.assign({}, old, Object.fromEntries(Object.entries(n).filter(([, v]) => v !== undefined))));
    renderTasks();
  }

  function renderTasks() {
    const at = (t) => Date.parse(t.created_at) || 0;
    const list = [...tasks.values()].sort((a, b) => at(b) - at(a) || String(b.id).localeCompare(String(a.id))).slice(0, 20);
    tasks = new Map(list.map((t) => [t.id, t]));
    $("tasks").replaceChildren(...list.map((t) => el("tr", { "data-task": t.id },
      el("td", {}, el("code", { text: t.id })),
      el("td", { text: t.model || "–" }),
      el("td", { class: "status-" + t.status, text: t.status }),
      el("td", { class: "num", text: t.status === "failed" ? "not charged" : money(t.cost) }),
      el("td", { class: "opt", text: when(t.created_at) }),
      el("td", { class: "opt", text: when(t.completed_at) }))));
    $("tasks-empty").hidden = list.length > 0;
  }

  // ----- API keys -----

  async function loadKeys() {
    const { data } = await api("GET", "/api/users/me/api-keys");
    renderKeys(data || []);
  }

  function quotaText(q) {
    if (!q || (q.calls == null && q.spend == null)) return "none";
    const parts = [];
    if (q.calls != null) parts.push(count(q.calls) + " calls");
    if (q.spend != null) parts.push(money(q.spend));
    return parts.join(" / ") + " a month";
  }

  function renderKeys(keys) {
    const body = $("keys");
    // Keep an open confirmation across live refreshes.
    const confirming = body.querySelector("[data-confirm]");
    const open = confirming ? confirming.getAttribute("data-confirm") : null;
    body.replaceChildren(...keys.map((k) => {
      const used = k.usage_this_month || { calls: 0, spend: "0.00" };
      const tr = el("tr", { "data-key": k.id },
        el("th", { scope: "row" }, k.name, k.status && k.status !== "active" ? el("span", { class: "status-" + k.status, text: " (" + k.status + ")" }) : null),
        el("td", {}, el("code", { text: k.prefix + "…" + k.last4 })),
        el("td", { class: "opt", text: (k.scopes || []).join(", ") }),
        el("td", { class: "usage", text: count(used.calls) + " calls · " + money(used.spend) }),
        el("td", { text: quotaText(k.monthly_quota) }),
        el("td", { class: "opt", text: k.last_used_at ? when(k.last_used_at) : "never" }),
        el("td", { class: "actions" }));
      keyActions(tr.lastChild, k, open);
      return tr;
    }));
    $("keys-empty").hidden = keys.length > 0;
  }

  // keyActions renders Rotate and Revoke; both ask for a confirmation in
  // place (no modal dialog), reachable and cancellable by keyboard.
  function keyActions(cell, k, open) {
    const normal = () => {
      cell.removeAttribute("data-confirm");
      cell.replaceChildren(
        el("button", { type: "button", "aria-label": "Rotate key " + k.name, onclick: () => ask("rotate") }, "Rotate"),
        el("button", { type: "button", "aria-label": "Revoke key " + k.name, onclick: () => ask("revoke") }, "Revoke"));
    };
    const ask = (action) => {
      cell.setAttribute("data-confirm", k.id + ":" + action);
      const what = action === "revoke" ? "Revoke" : "Rotate";
      const yes = el("button", { type: "button", class: "danger", "aria-label": "Confirm: " + what.toLowerCase() + " key " + k.name,
        onclick: () => (action === "revoke" ? revoke(k) : rotate(k)) }, what + " now");
      const no = el("button", { type: "button", "aria-label": "Cancel", onclick: () => { normal(); cell.querySelector("button").focus(); } }, "Cancel");
      cell.replaceChildren(el("span", { class: "visually-hidden", text: action === "revoke" ? "Requests with this key will be refused at once." : "The current key stops working at once." }), yes, no);
      cell.onkeydown = (e) => { if (e.key === "Escape") { normal(); cell.querySelector("button").focus(); } };
      yes.focus();
    };
    if (open && open.startsWith(k.id + ":")) ask(open.split(":")[1]); else normal();
  }

  function showSecret(name, key) {
    $("new-key-name").textContent = name;
    $("new-key-value").textContent = key;
    $("copy-status").textContent = "";
    $("new-key").hidden = false;
    $("copy-key").focus();
  }

  $("copy-key").addEventListener("click", async () => {
    const text = $("new-key-value").textContent;
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      $("copy-status").textContent = "Copied to the clipboard.";
    } catch (_) {
      // Without clipboard access, select the key so it can be copied by hand.
      const range = document.createRange();
      range.selectNodeContents($("new-key-value"));
      const sel = window.getSelection();
      sel.removeAllRanges(); sel.addRange(range);
      $("copy-status").textContent = "Select-all done: press Ctrl+C (or ⌘C) to copy.";
    }
  });
  $("hide-key").addEventListener("click", () => {
    $("new-key").hidden = true; $("new-key-value").textContent = "";
    $("key-name").focus();
  });

  $("key-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const errBox = $("key-error");
    errBox.textContent = "";
    const name = $("key-name").value.trim();
    if (!name) { errBox.textContent = "Give the key a name."; $("key-name").focus(); return; }
    const body = { name };
    const calls = $("key-quota-calls").value.trim(), spend = $("key-quota-spend").value.trim();
    if (calls || spend) {
      body.monthly_quota = {};
      if (calls) body.monthly_quota.calls = Number(calls);
      if (spend) body.monthly_quota.spend = spend; // a decimal string, never a float
    }
    const btn = e.submitter || e.target.querySelector("button");
    btn.disabled = true;
    try {
      const { data } = await api("POST", "/api/users/me/api-keys", body);
      e.target.reset();
      showSecret(data.name || name, data.key);
      await loadKeys();
    } catch (err) {
      if (err instanceof SessionEnded) return;
      const d = err.data && err.data.error && err.data.error.details;
      errBox.textContent = err.message + (d ? ": " + d.map((x) => x.field + " " + x.message).join("; ") : "");
    } finally { btn.disabled = false; }
  });

  async function rotate(k) {
    $("key-error").textContent = "";
    try {
      const { data } = await api("POST", "/api/users/me/api-keys/" + encodeURIComponent(k.id) + "/rotate");
      showSecret(k.name, data.key);
      await loadKeys();
    } catch (err) { if (!(err instanceof SessionEnded)) $("key-error").textContent = err.message; }
  }

  async function revoke(k) {
    $("key-error").textContent = "";
    try {
      await api("DELETE", "/api/users/me/api-keys/" + encodeURIComponent(k.id));
      $("key-error").textContent = "";
      $("copy-status").textContent = "";
      await loadKeys();
      $("key-name").focus();
    } catch (err) { if (!(err instanceof SessionEnded)) $("key-error").textContent = err.message; }
  }

  // ----- statement -----

  function entryRow(x) {
    return el("tr", {},
      el("td", { text: when(x.created_at) }),
      el("td", { text: x.type.replace(/_/g, " ") }),
      el("td", { class: "num", text: money(x.amount) }),
      el("td", { class: "num", text: money(x.balance_after) }),
      el("td", { class: "opt" }, x.task_id ? el("code", { text: x.task_id }) : (x.reference || "")));
  }

  async function loadEntries() {
    const { data } = await api("GET", "/api/v1/wallet/entries?limit=20");
    $("entries").replaceChildren(...(data.entries || []).map(entryRow));
    entriesCursor = data.next_cursor || null;
    $("entries-more").hidden = !entriesCursor;
    $("entries-empty").hidden = (data.entries || []).length > 0;
  }

  $("entries-more").addEventListener("click", async () => {
    if (!entriesCursor) return;
    try {
      const { data } = await api("GET", "/api/v1/wallet/entries?limit=50&cursor=" + encodeURIComponent(entriesCursor));
      $("entries").append(...(data.entries || []).map(entryRow));
      entriesCursor = data.next_cursor || null;
      $("entries-more").hidden = !entriesCursor;
    } catch (e) { report(e); }
  });

  // ----- the chart: calls per minute by model -----
  //
  // The first view comes from GET /api/v1/usage (per model and minute);
  // the stream then sends, per call, the new totals of one key × model ×
  // minute bucket. Each bucket's total is the REST figure plus what each
  // key's bucket grew by since. A key's bucket first seen on the stream for
  // a minute the REST read already covered has an unknown starting point:
  // the REST figures are then read again (coalesced), which includes it.

  const chart = {
    base: new Map(),   // "model|minuteMs" -> calls, as read from REST
    keys: new Map(),   // "model|minuteMs" -> Map(keyId -> {at, last})
    readMinute: 0,     // the server's minute when REST was read
    offset: 0,         // server clock - local clock, from the Date header
    models: [],
    frame: 0,
  };
  const PALETTE = ["#0b57d0", "#e8710a", "#1a7f37", "#a142f4", "#d93025", "#007b83", "#9a6700", "#c5221f", "#5f6368", "#188038"];

  const minuteOf = (ms) => Math.floor(ms / 60000) * 60000;
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, "Z");

  async function loadChart() {
    const now = Date.now() + chart.offset;
    const from = minuteOf(now) - (CHART_MINUTES - 1) * 60000;
    const { data, serverNow } = await api("GET", "/api/v1/usage?granularity=minute&group_by=model&from=" + iso(from) + "&to=" + iso(minuteOf(now) + 120000));
    chart.offset = serverNow - Date.now();
    chart.readMinute = minuteOf(serverNow);
    chart.base = new Map();
    for (const p of data.series || []) {
      chart.base.set(p.model + "|" + Date.parse(p.bucket), p.calls);
      noteModel(p.model);
    }
    // The REST read includes everything the stream had said before it.
    for (const m of chart.keys.values()) for (const k of m.values()) k.at = k.last;
    drawChart();
  }

  function noteModel(m) {
    if (!chart.models.includes(m)) { chart.models.push(m); chart.models.sort(); renderLegend(); }
  }

  function chartUsage(d) {
    const minute = Date.parse(d.bucket);
    if (isNaN(minute)) return;
    noteModel(d.model);
    const id = d.model + "|" + minute;
    let m = chart.keys.get(id);
    if (!m) { m = new Map(); chart.keys.set(id, m); }
    const kid = String(d.key_id);
    const k = m.get(kid);
    if (k) k.last = Math.max(k.last, d.calls);
    else if (minute > chart.readMinute) m.set(kid, { at: 0, last: d.calls });
    else { m.set(kid, { at: d.calls, last: d.calls }); reloadChart(); }
    scheduleDraw();
    settleChartSoon();
  }

  // The REST figures can be a moment ahead of the stream (the usage read
  // model commits before the stream, which waits for every read model, says
  // so) or behind it, so a REST read taken while calls are flowing can be
  // one call off. Reading REST again once the stream has been quiet for a
  // moment makes the chart exact again.
  let settleTimer = 0;
  function settleChartSoon() {
    clearTimeout(settleTimer);
    settleTimer = setTimeout(reloadChart, 800);
  }

  function bucketCalls(model, minute) {
    const id = model + "|" + minute;
    let n = chart.base.get(id) || 0;
    const m = chart.keys.get(id);
    if (m) for (const k of m.values()) n += k.last - k.at;
    return n;
  }

  function renderLegend() {
    $("chart-legend").replaceChildren(...chart.models.map((m, i) =>
      el("li", {}, el("span", { class: "swatch" }), m)));
    // Colours are set through the CSSOM: the page's CSP forbids inline style attributes.
    $("chart-legend").querySelectorAll(".swatch").forEach((s, i) => { s.style.background = PALETTE[i % PALETTE.length]; });
  }

  function scheduleDraw() {
    if (chart.frame) return;
    chart.frame = requestAnimationFrame(() => { chart.frame = 0; drawChart(); });
  }

  function prepareCanvas(canvas) {
    const r = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(r.width * dpr)), h = Math.max(1, Math.round(r.height * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, r.width, r.height);
    return { ctx, w: r.width, h: r.height };
  }

  function niceMax(v) {
    if (v <= 4) return Math.max(1, Math.ceil(v));
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function axes(ctx, w, h, pad, max, fmt) {
    ctx.strokeStyle = "#d0d7de"; ctx.fillStyle = "#57606a"; ctx.lineWidth = 1;
    ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(pad.t + (h - pad.t - pad.b) * (1 - f)) + 0.5;
      ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
      ctx.fillText(fmt(max * f), pad.l - 4, y);
    }
  }

  function drawChart() {
    const canvas = $("chart");
    if ($("customer-view").hidden) return;
    const { ctx, w, h } = prepareCanvas(canvas);
    const now = minuteOf(Date.now() + chart.offset);
    const oldest = now - CHART_MINUTES * 60000;
    for (const m of [chart.base, chart.keys]) for (const id of m.keys()) if (Number(id.slice(id.lastIndexOf("|") + 1)) < oldest) m.delete(id);
    const minutes = [];
    for (let i = CHART_MINUTES - 1; i >= 0; i--) minutes.push(now - i * 60000);
    const stacks = minutes.map((m) => chart.models.map((model) => bucketCalls(model, m)));
    const totals = stacks.map((s) => s.reduce((a, b) => a + b, 0));
    const max = niceMax(Math.max(0, ...totals));
    const pad = { l: 34, r: 18, t: 8, b: 20 };
    axes(ctx, w, h, pad, max, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)));
    const plotW = w - pad.l - pad.r, plotH = h - pad.t - pad.b;
    const slot = plotW / minutes.length, bw = Math.max(1, slot * 0.7);
    const every = slot * 5 >= 48 ? 5 : slot * 10 >= 48 ? 10 : 15; // minutes between time labels
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    minutes.forEach((m, i) => {
      let y = pad.t + plotH;
      stacks[i].forEach((v, j) => {
        if (!v) return;
        const bh = (v / max) * plotH;
        ctx.fillStyle = PALETTE[j % PALETTE.length];
        ctx.fillRect(pad.l + i * slot + (slot - bw) / 2, y - bh, bw, bh);
        y -= bh;
      });
      if ((minutes.length - 1 - i) % every === 0) {
        ctx.fillStyle = "#57606a";
        ctx.fillText(new Date(m).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }), pad.l + i * slot + slot / 2, h - pad.b + 4);
      }
    });
    // A text equivalent for screen readers.
    const per = chart.models.map((model, j) => [model, stacks.reduce((a, s) => a + s[j], 0)]).filter(([, n]) => n > 0);
    const total = totals.reduce((a, b) => a + b, 0);
    const summary = total === 0 ? "No calls in the last 30 minutes." :
      count(total) + " calls in the last 30 minutes (" + per.map(([m, n]) => m + ": " + count(n)).join(", ") + "); " +
      count(totals[totals.length - 1]) + " in the current minute.";
    if ($("chart-summary").textContent !== summary) $("chart-summary").textContent = summary;
  }

  // ---------- staff view ----------

  const rate = [];

  function startStaff() {
    show("staff-view");
    renderFreshness();
    const gen = state.gen;
    const settle = (p) => p.catch((e) => { if (gen === state.gen) report(e); });
    settle(loadProjections()); settle(loadProviders());
    openStream("/api/admin/usage/stream", {
      platform(d) { renderPlatform(d); },
      lag(d) { setLag(d); },
    });
    // While the stream is down, the panels that have a REST source are
    // still refreshed, so projection lag stays visible in an outage.
    state.timers.push(setInterval(() => {
      if (state.conn !== "live") { settle(loadProjections()); settle(loadProviders()); }
    }, 5000));
  }

  async function loadProjections() {
    const { data } = await api("GET", "/api/admin/projections");
    renderProjections(data.projections || []);
  }

  async function loadProviders() {
    // /readyz answers 503 with the same body when not ready.
    const res = await fetch("/readyz", { cache: "no-store" });
    const data = await res.json().catch(() => null);
    if (data) renderProviders(data.providers || []);
  }

  function renderPlatform(d) {
    if (d.calls_per_second !== undefined) {
      const cps = Number(d.calls_per_second) || 0;
      flash($("calls-per-second"), cps.toLocaleString("en-US", { maximumFractionDigits: 1 }));
      rate.push({ t: Date.now(), v: cps });
      while (rate.length && rate[0].t < Date.now() - RATE_SECONDS * 1000) rate.shift();
      drawRate();
    }
    if (d.calls_today !== undefined) flash($("platform-calls-today"), count(d.calls_today));
    if (d.revenue_today !== undefined) flash($("revenue-today"), money(d.revenue_today));
    if (d.held_total !== undefined) flash($("held-total"), money(d.held_total));
    if (d.top_accounts) {
      $("top-accounts").replaceChildren(...d.top_accounts.map((a) => el("tr", {},
        el("th", { scope: "row", text: a.email || a.account_id }),
        el("td", { class: "opt" }, el("code", { text: a.account_id })),
        el("td", { class: "num", text: count(a.calls_today) }),
        el("td", { class: "num", text: money(a.spend_today) }))));
      $("top-empty").hidden = d.top_accounts.length > 0;
    }
    if (d.projections) {
      renderProjections(d.projections);
      let ev = 0, ms = 0;
      for (const p of d.projections) { ev = Math.max(ev, Number(p.lag_events) || 0); ms = Math.max(ms, Number(p.lag_ms) || 0); }
      setLag({ events: ev, ms });
    }
    if (d.providers) renderProviders(d.providers);
  }

  function renderProjections(list) {
    $("projections").replaceChildren(...list.map((p) => el("tr", {},
      el("th", { scope: "row", text: p.name }),
      el("td", { class: "status-" + (p.status === "running" ? "succeeded" : p.status === "failed" ? "failed" : "pending"), text: p.status }),
      el("td", { class: "num opt", text: count(p.position) }),
      el("td", { class: "num", text: count(p.lag_events) }),
      el("td", { class: "num", text: count(p.lag_ms) }))));
  }

  function renderProviders(list) {
    const label = { closed: "healthy", half_open: "probing", open: "failing (circuit open)" };
    $("providers").replaceChildren(...list.map((p) => el("li", { class: p.state },
      el("strong", { text: p.provider }), ": " + (label[p.state] || p.state))));
    $("providers-empty").hidden = list.length > 0;
  }

  function drawRate() {
    if ($("staff-view").hidden) return;
    const { ctx, w, h } = prepareCanvas($("rate-chart"));
    const pad = { l: 34, r: 6, t: 8, b: 8 };
    const max = niceMax(Math.max(0, ...rate.map((r) => r.v)));
    axes(ctx, w, h, pad, max, (v) => (Number.isInteger(v) ? String(v) : v.toFixed(1)));
    const end = Date.now(), start = end - RATE_SECONDS * 1000;
    const x = (t) => pad.l + ((t - start) / (end - start)) * (w - pad.l - pad.r);
    const y = (v) => pad.t + (1 - v / max) * (h - pad.t - pad.b);
    if (rate.length) {
      ctx.strokeStyle = PALETTE[0]; ctx.lineWidth = 2; ctx.beginPath();
      rate.forEach((r, i) => (i ? ctx.lineTo(x(r.t), y(r.v)) : ctx.moveTo(x(r.t), y(r.v))));
      ctx.stroke();
      const last = rate[rate.length - 1];
      ctx.fillStyle = PALETTE[0]; ctx.beginPath(); ctx.arc(x(last.t), y(last.v), 3, 0, 2 * Math.PI); ctx.fill();
    }
    const peak = Math.max(0, ...rate.map((r) => r.v));
    const summary = "Now " + (rate.length ? rate[rate.length - 1].v.toLocaleString("en-US", { maximumFractionDigits: 1 }) : "0") +
      " calls per second; peak over the last 2 minutes " + peak.toLocaleString("en-US", { maximumFractionDigits: 1 }) + ".";
    if ($("rate-summary").textContent !== summary) $("rate-summary").textContent = summary;
  }

  // ---------- reset and start ----------

  function resetViews() {
    for (const id of ["balance", "held", "available", "credits", "calls-today", "spend-today", "calls-month", "spend-month",
      "calls-per-second", "platform-calls-today", "revenue-today", "held-total"]) $(id).textContent = "–";
    for (const id of ["tasks", "keys", "entries", "top-accounts", "projections", "providers", "chart-legend"]) $(id).replaceChildren();
    for (const id of ["chart-summary", "rate-summary", "freshness", "staff-freshness", "key-error", "new-key-value", "copy-status"]) $(id).textContent = "";
    $("new-key").hidden = true; $("entries-more").hidden = true;
    tasks = new Map(); tasksListed = true; lastBalance = null; entriesCursor = null; snapshots = 0;
    chart.base = new Map(); chart.keys = new Map(); chart.models = []; chart.readMinute = 0;
    rate.length = 0;
    state.currency = "USD";
  }

  if (window.ResizeObserver) {
    new ResizeObserver(() => { drawChart(); drawRate(); }).observe($("main"));
  }

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) begin(saved); else { show("login-view"); }
})();

"use strict";
// The dashboard talks only to this server's own API; the session token
// lives in sessionStorage and never leaves this origin.
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("ledgerd.token");
let role = sessionStorage.getItem("ledgerd.role");

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: Object.assign({ "Authorization": "Bearer " + token }, body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status === 401) { logout(); throw new Error("Your session has expired; log in again."); }
  const text = await res.text();
  const data = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error((data && data.error && data.error.message) || res.statusText);
  return { data, stale: res.headers.get("X-Ledger-Stale") === "true" };
}

function show(view) {
  for (const id of ["login-view", "customer-view", "staff-view"]) $(id).hidden = id !== view;
  $("logout").hidden = view === "login-view";
}

function logout() {
  token = role = null;
  sessionStorage.clear();
  show("login-view");
}

$("logout").addEventListener("click", logout);

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const res = await fetch("/api/auth/login", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const data = await res.json();
  if (!res.ok) { $("login-error").textContent = data.error.message; return; }
  token = data.access_token; role = data.role;
  sessionStorage.setItem("ledgerd.token", token);
  sessionStorage.setItem("ledgerd.role", role);
  start();
});

async function loadWallet() {
  const { data, stale } = await api("GET", "/api/v1/wallet");
  $("balance").textContent = "$" + data.balance;
  $("held").textContent = "$" + data.held;
  $("available").textContent = "$" + data.available;
  $("wallet-note").textContent = stale ? "These figures may be a moment out of date." : "";
}

function cell(row, text) { const td = document.createElement("td"); td.textContent = text; row.appendChild(td); return td; }

async function loadKeys() {
  const { data } = await api("GET", "/api/users/me/api-keys");
  const body = $("keys");
  body.replaceChildren();
  for (const k of data) {
    const tr = document.createElement("tr");
    cell(tr, k.name);
    cell(tr, k.prefix + "…" + k.last4);
    cell(tr, k.scopes.join(", "));
    cell(tr, k.last_used_at ? new Date(k.last_used_at).toLocaleString() : "never");
    const actions = cell(tr, "");
    for (const [label, fn] of [["Rotate", () => rotate(k)], ["Revoke", () => revoke(k)]]) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = label; b.setAttribute("aria-label", label + " " + k.name);
      b.addEventListener("click", fn);
      actions.appendChild(b);
    }
    body.appendChild(tr);
  }
}

function showSecret(key) {
  $("new-key-value").textContent = key;
  $("new-key").hidden = false;
}

$("copy-key").addEventListener("click", () => navigator.clipboard.writeText($("new-key-value").textContent));

$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("key-error").textContent = "";
  try {
    const { data } = await api("POST", "/api/users/me/api-keys", { name: $("key-name").value });
    showSecret(data.key);
    $("key-name").value = "";
    await loadKeys();
  } catch (err) { $("key-error").textContent = err.message; }
});

async function rotate(k) {
  try { const { data } = await api("POST", "/api/users/me/api-keys/" + k.id + "/rotate"); showSecret(data.key); await loadKeys(); }
  catch (err) { $("key-error").textContent = err.message; }
}

async function revoke(k) {
  if (!confirm("Revoke " + k.name + "? Requests with it will be refused at once.")) return;
  try { await api("DELETE", "/api/users/me/api-keys/" + k.id); $("new-key").hidden = true; await loadKeys(); }
  catch (err) { $("key-error").textContent = err.message; }
}

async function loadProjections() {
  const { data } = await api("GET", "/api/admin/projections");
  const body = $("projections");
  body.replaceChildren();
  for (const p of data.projections) {
    const tr = document.createElement("tr");
    for (const v of [p.name, p.status, p.position, p.lag_events, p.lag_ms]) cell(tr, String(v));
    body.appendChild(tr);
  }
}

async function start() {
  if (!token) { show("login-view"); return; }
  try {
    if (role === "admin" || role === "finance") { show("staff-view"); await loadProjections(); }
    else { show("customer-view"); await Promise.all([loadWallet(), loadKeys()]); }
  } catch (err) { $("login-error").textContent = err.message; }
}

start();

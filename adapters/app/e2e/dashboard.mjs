// Browser test of the ledgerd dashboard, driven by
// adapters/app/dashboard_browser_test.go, which starts ledgerd, prepares
// the accounts and passes everything in the environment:
//
//   LEDGER_URL                       base URL of the running ledgerd
//   CUSTOMER_EMAIL, CUSTOMER_PASSWORD a customer with a funded wallet
//   ADMIN_EMAIL, ADMIN_PASSWORD      a staff user
//   EXPECT_BALANCE, EXPECT_BALANCE_AFTER   the balance before and after the calls
//   EXPECT_CALLS_AFTER, EXPECT_SPEND_AFTER today's usage after the calls
//   EXPECT_BALANCE_FINAL, EXPECT_CALLS_FINAL, EXPECT_SPEND_FINAL  after one more
//   LOAD_KEY_NAME                    the key the Go test makes its calls with
//   SCREENSHOT_DIR                   where screenshots go
//   CHROMIUM                         the browser (default /usr/bin/chromium)
//
// Protocol: the script prints "CALL <n>" on stdout when the page is open;
// the Go test makes n calls through the API and answers "DONE" on stdin;
// the page must show them without a reload. "CUT" and "RESTORE" drop and
// bring back the browser's connections (LEDGER_URL is a proxy the Go test
// controls). "PASS" at the end. Any page script error, console error or
// request to another host fails the run.
import { chromium } from "playwright-core";
import { join } from "node:path";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error("missing env " + k);
  return v;
};
const base = new URL(env("LEDGER_URL"));
const shots = env("SCREENSHOT_DIR");
const problems = [];
let offline = false;
const started = Date.now();
const log = (...a) => console.error(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);

function watch(page, who) {
  page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on("console", (m) => {
    // While the test itself takes the browser offline, failed connections are expected.
    if (offline && /net::ERR_|Failed to fetch/.test(m.text())) return;
    if (m.type() === "error") problems.push(`${who}: console error: ${m.text()}`);
  });
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.protocol === "data:") return; // the empty favicon: no request at all
    if (u.host !== base.host) problems.push(`${who}: request to another host: ${r.url()}`);
  });
}

function check() {
  if (problems.length) throw new Error(problems.join("\n"));
}

const textOf = (page, sel) => page.locator(sel).textContent();

async function waitText(page, sel, want, what, timeout = 5000) {
  try {
    await page.waitForFunction(
      ([s, w]) => { const e = document.querySelector(s); return e && e.textContent.trim() === w; },
      [sel, want], { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`${what}: ${sel} shows ${JSON.stringify(await textOf(page, sel))}, want ${JSON.stringify(want)}`);
  }
}

async function waitContains(page, sel, want, what, timeout = 5000) {
  try {
    await page.waitForFunction(
      ([s, w]) => { const e = document.querySelector(s); return e && e.textContent.includes(w); },
      [sel, want], { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`${what}: ${sel} shows ${JSON.stringify(await textOf(page, sel))}, want it to contain ${JSON.stringify(want)}`);
  }
}

// waitRow waits until the row of table body sel whose first cell is name
// contains want.
async function waitRow(page, sel, name, want, what, timeout = 5000) {
  const rowText = ([s, n]) => {
    for (const tr of document.querySelectorAll(s + " tr")) if (tr.firstElementChild && tr.firstElementChild.textContent.trim().startsWith(n)) return tr.textContent;
    return null;
  };
  try {
    await page.waitForFunction(([s, n, w]) => {
      for (const tr of document.querySelectorAll(s + " tr")) if (tr.firstElementChild && tr.firstElementChild.textContent.trim().startsWith(n)) return tr.textContent.includes(w);
      return false;
    }, [sel, name, want], { timeout, polling: 50 });
  } catch (e) {
    throw new Error(`${what}: the row ${name} of ${sel} shows ${JSON.stringify(await page.evaluate(rowText, [sel, name]))}, want it to contain ${JSON.stringify(want)}`);
  }
}

async function noHorizontalScroll(page, what) {
  const [sw, w] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  if (sw > w + 1) throw new Error(`${what}: the page is ${sw}px wide in a ${w}px viewport`);
}

// Every form control has a label, every button a name.
async function accessible(page, what) {
  const bad = await page.evaluate(() => {
    const out = [];
    for (const i of document.querySelectorAll("input, select, textarea")) {
      if (i.offsetParent !== null && (!i.labels || i.labels.length === 0) && !i.getAttribute("aria-label")) out.push("input#" + i.id);
    }
    for (const b of document.querySelectorAll("button")) {
      if (b.offsetParent !== null && !(b.getAttribute("aria-label") || b.textContent.trim())) out.push("button " + b.outerHTML);
    }
    for (const c of document.querySelectorAll("canvas")) {
      if (c.offsetParent !== null && !(c.getAttribute("aria-label") || c.getAttribute("aria-labelledby"))) out.push("canvas#" + c.id);
    }
    return out;
  });
  if (bad.length) throw new Error(`${what}: unlabelled controls: ${bad.join(", ")}`);
}

async function apiStatus(path, key) {
  const r = await fetch(new URL(path, base), { headers: { Authorization: "Bearer " + key } });
  return r.status;
}

// stdin lines from the Go test.
const lines = [];
let wake = null;
process.stdin.setEncoding("utf8");
let buf = "";
process.stdin.on("data", (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf("\n")) >= 0) { lines.push(buf.slice(0, i)); buf = buf.slice(i + 1); if (wake) wake(); }
});
async function nextLine(timeout) {
  const end = Date.now() + timeout;
  while (!lines.length) {
    if (Date.now() > end) throw new Error("no word from the Go test");
    await new Promise((r) => { wake = r; setTimeout(r, 100); });
  }
  return lines.shift();
}

// call asks the Go test to make n calls through the API and waits until
// they have been answered.
async function call(n) { await ask("CALL " + n); }

// ask has the Go test do something and waits until it is done.
async function ask(what) {
  console.log(what);
  const word = await nextLine(30000);
  if (word !== "DONE") throw new Error(`unexpected answer from the Go test to ${what}: ${word}`);
}

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
try {
  // ---------------- the customer ----------------
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  await ctx.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base.origin });
  const page = await ctx.newPage();
  watch(page, "customer");
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });

  await page.goto(new URL("/dashboard", base).href);
  await page.getByLabel("Email").fill(env("CUSTOMER_EMAIL"));
  await page.getByLabel("Password").fill(env("CUSTOMER_PASSWORD"));
  await page.getByLabel("Password").press("Enter"); // keyboard: submit with Enter
  await page.locator("#customer-view").waitFor({ state: "visible" });
  await waitText(page, "#balance", env("EXPECT_BALANCE"), "balance after login");
  await waitText(page, "#calls-today", "0", "calls today before any call");
  await waitText(page, "#live-text", "Live", "live indicator");
  await accessible(page, "customer view");
  log("logged in, balance", await textOf(page, "#balance"));

  // Create a key with the keyboard: the key is shown once, with a copy button.
  await page.getByLabel("Name").fill("browser key");
  await page.getByLabel("Monthly calls quota").fill("100");
  await page.getByLabel("Name").press("Enter");
  await page.locator("#new-key").waitFor({ state: "visible" });
  const secret = (await textOf(page, "#new-key-value")).trim();
  if (!/^[A-Za-z0-9_]+_[A-Za-z0-9_-]{32}$/.test(secret)) throw new Error(`shown key ${JSON.stringify(secret)} does not look like a key`);
  const copy = page.getByRole("button", { name: "Copy" });
  if (!(await copy.isVisible())) throw new Error("no copy button next to the new key");
  await copy.click();
  await waitContains(page, "#copy-status", "Cop", "copy feedback");
  if ((await textOf(page, "#copy-status")).startsWith("Copied")) {
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    if (clip !== secret) throw new Error(`clipboard holds ${JSON.stringify(clip)}, want the new key`);
  }
  const row = page.locator("#keys tr", { hasText: "browser key" });
  await row.waitFor();
  await waitRow(page, "#keys", "browser key", "100 calls a month", "the new key's quota");
  if ((await apiStatus("/api/v1/wallet", secret)) !== 200) throw new Error("the key shown on the page does not work");
  // "Done" hides it: shown only once.
  await page.getByRole("button", { name: "Done" }).click();
  if (await page.locator("#new-key").isVisible()) throw new Error("the key is still shown after Done");
  if ((await page.content()).includes(secret)) throw new Error("the key is still in the page after Done");

  // Revoke it (with the in-place confirmation), and it stops working.
  await row.getByRole("button", { name: "Revoke key browser key" }).click();
  await row.getByRole("button", { name: "Confirm: revoke key browser key" }).click();
  await page.locator("#keys tr", { hasText: "browser key" }).waitFor({ state: "detached" });
  if ((await apiStatus("/api/v1/wallet", secret)) !== 401) throw new Error("the revoked key still works");
  log("created, copied and revoked a key");

  // Live: the Go test now makes calls through the API.
  await page.evaluate(() => { window.__notReloaded = true; });
  const navBefore = navigations;
  check();
  await call(Number(env("EXPECT_CALLS_AFTER")));
  const t0 = Date.now();
  await waitText(page, "#balance", env("EXPECT_BALANCE_AFTER"), "balance after the calls");
  await waitText(page, "#calls-today", env("EXPECT_CALLS_AFTER"), "calls today after the calls");
  await waitText(page, "#spend-today", env("EXPECT_SPEND_AFTER"), "spend today after the calls");
  log("balance and usage changed", Date.now() - t0, "ms after the last call answered");
  await waitContains(page, "#chart-summary", env("EXPECT_CALLS_AFTER") + " calls in the last 30 minutes", "the chart");
  await waitRow(page, "#keys", env("LOAD_KEY_NAME"), env("EXPECT_CALLS_AFTER") + " calls", "usage of the key the calls were made with");
  await page.waitForFunction((n) => document.querySelectorAll("#tasks tr .status-succeeded").length >= n, Number(env("EXPECT_CALLS_AFTER")), { timeout: 5000 })
    .catch(async () => { throw new Error("recent tasks: " + (await textOf(page, "#tasks"))); });
  await waitContains(page, "#entries", env("EXPECT_BALANCE_AFTER"), "the statement's balance after");
  if (!(await page.evaluate(() => window.__notReloaded === true)) || navigations !== navBefore) throw new Error("the page reloaded");
  await page.screenshot({ path: join(shots, "customer.png"), fullPage: true });

  // Honest when cut off: with the connection gone the page says its figures
  // may be stale; a call made meanwhile shows once the stream is back (the
  // browser resumes with Last-Event-ID), still without a reload.
  offline = true;
  await ask("CUT");
  await waitText(page, "#live-text", "Reconnecting…", "indicator with the network down", 15000);
  await waitContains(page, "#freshness", "may be stale", "freshness line with the network down");
  if (!(await page.locator("#customer-view").evaluate((e) => e.classList.contains("stale")))) throw new Error("figures not marked stale");
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, "customer-offline.png") });
  log("the page says its figures may be stale");
  await call(1);
  await ask("RESTORE");
  log("connection restored");
  await waitText(page, "#live-text", "Live", "indicator after reconnecting", 15000);
  offline = false;
  await waitText(page, "#balance", env("EXPECT_BALANCE_FINAL"), "balance after reconnecting");
  await waitText(page, "#calls-today", env("EXPECT_CALLS_FINAL"), "calls today after reconnecting");
  log("caught up");
  if (!(await page.evaluate(() => window.__notReloaded === true)) || navigations !== navBefore) throw new Error("the page reloaded");
  log("showed staleness while offline and caught up after reconnecting");

  // Readable on a phone.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(0);
  await noHorizontalScroll(page, "customer view on a phone");
  await page.screenshot({ path: join(shots, "customer-phone.png"), fullPage: true });
  check();
  await ctx.close();

  // ---------------- staff ----------------
  const sctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const admin = await sctx.newPage();
  watch(admin, "admin");
  await admin.goto(new URL("/dashboard", base).href);
  await admin.getByLabel("Email").fill(env("ADMIN_EMAIL"));
  await admin.getByLabel("Password").fill(env("ADMIN_PASSWORD"));
  await admin.getByRole("button", { name: "Log in" }).click();
  await admin.locator("#staff-view").waitFor({ state: "visible" });
  if (await admin.locator("#customer-view").isVisible()) throw new Error("staff see the customer view");
  await admin.locator("#projections tr").first().waitFor();
  await waitContains(admin, "#projections", "usage", "projection lag table");
  await waitText(admin, "#platform-calls-today", env("EXPECT_CALLS_FINAL"), "platform calls today");
  await waitText(admin, "#revenue-today", env("EXPECT_SPEND_FINAL"), "revenue today");
  await waitContains(admin, "#top-accounts", env("CUSTOMER_EMAIL"), "top accounts");
  await waitContains(admin, "#providers", "local", "provider health");
  await waitText(admin, "#live-text", "Live", "staff live indicator");
  await accessible(admin, "staff view");
  await admin.screenshot({ path: join(shots, "admin.png"), fullPage: true });
  await admin.setViewportSize({ width: 390, height: 844 });
  await noHorizontalScroll(admin, "staff view on a phone");
  check();
  await sctx.close();
  log("staff view checked");
  console.log("PASS");
} finally {
  await browser.close();
}
process.exit(0);

// drive.js plays buyers on the buyer's page (runtime/seckill/page) in a real
// headless Chromium (Debian's /usr/bin/chromium) through playwright-core.
// browser_test.go runs it and serves the sales; the protocol is JSON lines:
//
//   stdin  {"count":N}                        how many scenarios will come
//   stdout {"event":"ready"}                  the browser is up with N blank
//                                             pages ready (the Go test then
//                                             creates the sales, so that their
//                                             countdowns are still on)
//   stdin  {"out":DIR,"scenarios":[...]}      one line: what to play
//   stdout {"event":"result","name":...,"ok":bool,"error":...,"orderNo":...,
//           "shown":{...},"screenshots":[...]}  one per scenario
//
// Every scenario plays in its own browser context. A scenario fails on any
// script error or Content-Security-Policy refusal in its pages. Exit code:
// 0 when every scenario passed.
"use strict";

const { chromium } = require("playwright-core");
const readline = require("node:readline");
const path = require("node:path");

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Long enough for a loaded 2-core machine; the assertions are about what the
// page shows, never about how fast.
const STEP_TIMEOUT = Number(process.env.STEP_TIMEOUT_MS || 60000);

function emit(obj) { process.stdout.write(JSON.stringify(obj) + "\n"); }

function fail(msg) { throw new Error(msg); }

// Play is one buyer's page with its checks and screenshots.
class Play {
  constructor(ctx, pool, sc, out, shots) {
    this.ctx = ctx; this.pool = pool; this.sc = sc; this.out = out; this.shots = shots; this.problems = [];
    // broken rejects at the first script error or CSP refusal, so that a
    // dead page fails the scenario at once instead of at a step's timeout.
    this.broken = new Promise((_, reject) => { this.breaks = reject; });
    this.broken.catch(() => {});
  }

  problem(text) {
    this.problems.push(text);
    this.breaks(new Error(text));
  }

  async open(user) {
    const t0 = Date.now();
    const page = this.pool.pop() || await this.ctx.newPage();
    page.on("pageerror", (e) => this.problem(`${user}: page error: ${e.message}`));
    page.on("console", (m) => {
      // A CSP refusal is logged as an error. "Failed to load resource" is
      // any answer >= 400, which the API gives on purpose (410 SOLD_OUT...).
      if (m.type() === "error" && !/Failed to load resource/.test(m.text())) {
        this.problem(`${user}: console error: ${m.text()}`);
      }
    });
    // The API calls each page made, for the log of a failing run.
    page.on("response", (r) => {
      const u = new URL(r.url());
      this.log(`${user} ${r.request().method()} ${u.pathname.replace(/^.*\/sales\/[^/]+\/[^/]+/, "…")} ${r.status()}`);
    });
    await page.setViewportSize({ width: 520, height: 760 });
    await page.goto(this.sc.url + "?user=" + encodeURIComponent(user));
    this.log(`${user}'s page open in ${Date.now() - t0} ms`);
    return page;
  }

  log(line) { process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${this.sc.name}: ${line}\n`); }

  async state(page, want) {
    try {
      await Promise.race([this.broken,
        page.waitForFunction((w) => w.includes(document.body.dataset.state), [].concat(want), { timeout: STEP_TIMEOUT, polling: 50 })]);
    } catch (e) {
      if (this.problems.length) { throw e; }
      const got = await page.evaluate(() => [document.body.dataset.state, document.getElementById("message").textContent]);
      fail(`page never reached state ${want} (state ${got[0]}, message ${JSON.stringify(got[1])})`);
    }
  }

  async text(page, id) { return (await page.textContent("#" + id)).trim(); }

  async shot(page, name) {
    const file = path.join(this.out, `${this.sc.name}-${name}.png`);
    await page.screenshot({ path: file, fullPage: true });
    this.shots.push(file);
  }

  // buy clicks Buy twice, as an impatient buyer does (a real double click
  // at the button), checks it is disabled at once, and waits for the order.
  async buy(page) {
    const box = await page.locator("#buy").boundingBox();
    await page.mouse.dblclick(box.x + box.width / 2, box.y + box.height / 2);
    if (!(await page.locator("#buy").isDisabled())) { fail("Buy is still enabled after the click"); }
    await this.state(page, "done");
    return { orderNo: await this.text(page, "order-no"), status: await this.text(page, "order-status") };
  }
}

// api calls the sale's API directly, as another buyer (a rival or a bot).
async function api(sc, user, method, sub, body) {
  const res = await fetch(sc.api + sub, {
    method,
    headers: { "X-User-ID": user, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
}

// rivalBuys buys the scenario's SKU for another user (through the queue
// when the sale has one) and returns the order number.
async function rivalBuys(sc, user, ticket) {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${sc.name}: ${user} buys through the API\n`);
  const tok = await api(sc, user, "POST", "/token", ticket ? { sku: sc.sku, ticket } : { sku: sc.sku });
  if (tok.status !== 200) { fail(`rival token: ${tok.status} ${JSON.stringify(tok.body)}`); }
  const p = await api(sc, user, "POST", "/purchase", { sku: sc.sku, token: tok.body.token });
  if (p.status !== 202) { fail(`rival purchase: ${p.status} ${JSON.stringify(p.body)}`); }
  return p.body.orderNo;
}

async function join(sc, user) {
  const r = await api(sc, user, "POST", "/queue", {});
  if (r.status !== 201) { fail(`${user} join: ${r.status} ${JSON.stringify(r.body)}`); }
  return r.body.ticket;
}

async function admitted(sc, user, ticket) {
  for (;;) {
    const r = await api(sc, user, "GET", "/queue/" + encodeURIComponent(ticket));
    if (r.status === 200 && r.body.status === "admitted") { return; }
    if (r.status !== 200) { fail(`${user} wait: ${r.status} ${JSON.stringify(r.body)}`); }
    await new Promise((res) => setTimeout(res, 200));
  }
}

// control changes the server side of the scenario's sale (browser_test.go).
async function control(sc, what, params) {
  const q = new URLSearchParams({ sale: sc.name, ...params });
  const res = await fetch(`${sc.control}/${what}?${q}`, { method: "POST" });
  if (res.status !== 204) { fail(`control ${what}: ${res.status} ${await res.text()}`); }
}

// setClock moves the sale's server clock (browser_test.go's saleClock) to
// at, frozen or running from there.
async function setClock(sc, at, frozen) {
  const iso = typeof at === "number" ? new Date(at).toISOString() : at;
  await control(sc, "clock", { at: iso, frozen: !!frozen });
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${sc.name}: the sale's clock is now ${iso}${frozen ? ", frozen" : ""}\n`);
}

const scenarios = {
  // A queued sale: a countdown to the queue's opening; an early buyer joins
  // before the start (no place yet: places are drawn at the start), bots
  // join too; a latecomer joins after the start (a place behind all of
  // them, shown while the clock stands still, so before anyone is admitted
  // past them); then both are admitted in turn, buy, and see their orders.
  async queued(p, sc, res) {
    const early = await p.open(sc.users[0]);
    await p.state(early, "countdown");
    if (!/queue opens/i.test(await p.text(early, "countdown-label"))) { fail("no countdown to the queue's opening"); }
    if (!(await early.locator("#join").isDisabled())) { fail("Join is enabled before the queue opens"); }
    res.shown.countdown = await p.text(early, "countdown");
    await p.shot(early, "1-countdown");
    const late = await p.open(sc.users[1]);

    await setClock(sc, sc.opensAt);
    await p.state(early, "joinable");
    await early.click("#join");
    await p.state(early, "waiting");
    res.shown.earlyPlace = await p.text(early, "place");
    for (const bot of sc.bots) { await join(sc, bot); }
    await p.shot(early, "2-joined-before-start");

    await p.state(late, "joinable");
    await setClock(sc, sc.startTime, true);
    await late.click("#join");
    await p.state(late, "waiting");
    res.shown.latePlace = await p.text(late, "place");
    res.shown.lateAhead = await p.text(late, "ahead");
    await p.shot(late, "3-waiting");

    await setClock(sc, sc.startTime, false);
    await p.state(early, "admitted");
    await p.shot(early, "4-admitted");
    res.orders = [await p.buy(early)];
    await p.shot(early, "5-order");
    await p.state(late, "admitted");
    res.orders.push(await p.buy(late));
    await p.shot(late, "6-order");
  },

  // A sale without a queue: a countdown to the start (Buy disabled), the
  // page's own clock opens it at the start, Buy, the order.
  async unqueued(p, sc, res) {
    const page = await p.open(sc.users[0]);
    await p.state(page, "countdown");
    if (!/sale starts/i.test(await p.text(page, "countdown-label"))) { fail("no countdown to the start"); }
    if (!(await page.locator("#buy").isDisabled())) { fail("Buy is enabled before the start"); }
    res.shown.countdown = await p.text(page, "countdown");
    await p.shot(page, "1-countdown");
    await setClock(sc, Date.parse(sc.startTime) - 2000);
    await p.state(page, "open");
    await p.shot(page, "2-open");
    res.orders = [await p.buy(page)];
    await p.shot(page, "3-order");
  },

  // The last unit goes to a rival while the buyer looks at the page, whose
  // view of the stock is still the old one (the page re-reads the sale only
  // every few seconds, and a CDN may answer it from its cache): Buy answers
  // sold out. A fresh page shows the sale sold out from the start.
  async soldout(p, sc, res) {
    const page = await p.open(sc.users[0]);
    await p.state(page, "open");
    // Keep the page's view stale, so that it learns of the sell-out from
    // the click, not from its next re-read of the sale.
    await page.route((u) => u.pathname === new URL(sc.api).pathname, (r) => r.abort());
    await rivalBuys(sc, sc.rivals[0]);
    await page.click("#buy");
    await p.state(page, "soldout");
    res.shown.message = await p.text(page, "message");
    res.shown.code = await page.getAttribute("#message", "data-code");
    await p.shot(page, "1-refused");
    const again = await p.open(sc.users[1]);
    await p.state(again, "soldout");
    res.shown.reloaded = await p.text(again, "message");
    await p.shot(again, "2-reloaded");
  },

  // The sale ends while the buyer looks at it: the page says so and Buy
  // stays disabled.
  async ended(p, sc, res) {
    const page = await p.open(sc.users[0]);
    await p.state(page, "open");
    await setClock(sc, Date.parse(sc.endTime) + 1000);
    await p.state(page, "ended");
    res.shown.code = await page.getAttribute("#message", "data-code");
    res.shown.status = await p.text(page, "status");
    res.shown.buyDisabled = String(await page.locator("#buy").isDisabled());
    await p.shot(page, "1-ended");
  },

  // The operator pauses the sale while the buyer looks at it: the page says
  // so with Buy disabled, and opens again when the sale resumes.
  async paused(p, sc, res) {
    const page = await p.open(sc.users[0]);
    await p.state(page, "open");
    await control(sc, "pause", { on: true });
    await p.state(page, "paused");
    res.shown.code = await page.getAttribute("#message", "data-code");
    res.shown.buyDisabled = String(await page.locator("#buy").isDisabled());
    await p.shot(page, "1-paused");
    await control(sc, "pause", { on: false });
    await p.state(page, "open");
    res.shown.buyEnabledAgain = String(await page.locator("#buy").isEnabled());
    res.shown.messageAfter = await p.text(page, "message");
    await p.shot(page, "2-resumed");
  },

  // A queued sale whose only unit is bought by the buyer ahead: the one
  // waiting behind is told sold out, not kept waiting.
  async "queued-soldout"(p, sc, res) {
    const rival = sc.rivals[0];
    await setClock(sc, sc.opensAt);
    const ticket = await join(sc, rival);
    await setClock(sc, sc.startTime);
    const page = await p.open(sc.users[0]);
    await p.state(page, "joinable");
    await page.click("#join");
    await p.state(page, "waiting");
    res.shown.place = await p.text(page, "place");
    await p.shot(page, "1-waiting");
    await admitted(sc, rival, ticket);
    await rivalBuys(sc, rival, ticket);
    await p.state(page, "soldout");
    res.shown.message = await p.text(page, "message");
    res.shown.code = await page.getAttribute("#message", "data-code");
    await p.shot(page, "2-sold-out");
  },

  // An admission is a session: the buyer is admitted but leaves the page
  // alone past admissionTTL (the sale's clock is moved past it). Buy is
  // refused NOT_ADMITTED; the page asks the wait endpoint once, is told
  // "done", says so, keeps Buy disabled and polls no more.
  async "queued-lapsed"(p, sc, res) {
    const page = await p.open(sc.users[0]);
    let waits = 0; // GET …/queue/{ticket} made by the page
    page.on("request", (r) => {
      if (r.method() === "GET" && /\/queue\/[^/]+$/.test(new URL(r.url()).pathname)) { waits++; }
    });
    await p.state(page, "countdown");
    // The sale's time is at most startTime + (Date.now() - t0) from here.
    const t0 = Date.now();
    await setClock(sc, sc.startTime);
    await p.state(page, "joinable");
    await page.click("#join");
    await p.state(page, "admitted");
    res.shown.admittedStatus = await p.text(page, "queue-status");
    res.shown.buyEnabled = String(await page.locator("#buy").isEnabled());
    await p.shot(page, "1-admitted");

    await setClock(sc, Date.parse(sc.startTime) + (Date.now() - t0) + sc.admissionTTLMs + 1000);
    const before = waits;
    const token = page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname.endsWith("/token"));
    await page.click("#buy");
    const answer = await token;
    res.shown.token = `${answer.status()} ${((await answer.json().catch(() => ({}))).error) || ""}`;
    await p.state(page, "done");
    res.shown.waitsToDone = String(waits - before);
    res.shown.code = await page.getAttribute("#message", "data-code");
    res.shown.message = await p.text(page, "message");
    res.shown.queueStatus = await p.text(page, "queue-status");
    await p.shot(page, "2-done");

    // A page that kept polling would ask again within its shortest poll
    // interval (1 s); five seconds of quiet says it stopped.
    await page.waitForTimeout(5000);
    res.shown.waitsAfterDone = String(waits - before - Number(res.shown.waitsToDone));
    res.shown.stateLater = await page.evaluate(() => document.body.dataset.state);
    res.shown.buyDisabled = String(await page.locator("#buy").isDisabled());
    await p.shot(page, "3-still-done");
  },
};

// PAGES is how many pages each scenario opens at most: they are opened
// (blank) before the sales exist, because a browser's first pages take
// seconds to come up on a busy machine and the countdowns would be over.
const PAGES = 2;

async function prepare(browser) {
  const ctx = await browser.newContext();
  const pool = [];
  for (let i = 0; i < PAGES; i++) {
    const page = await ctx.newPage();
    await page.goto("about:blank");
    pool.push(page);
  }
  return { ctx, pool };
}

async function play({ ctx, pool }, sc, out) {
  const res = { event: "result", name: sc.name, ok: false, shown: {}, orders: [], screenshots: [] };
  const p = new Play(ctx, pool, sc, out, res.screenshots);
  try {
    const fn = scenarios[sc.kind] || fail(`unknown scenario kind ${sc.kind}`);
    await fn(p, sc, res);
    if (p.problems.length) { fail(p.problems.join("; ")); }
    res.ok = true;
  } catch (e) {
    res.error = e.message + (p.problems.length ? " [" + p.problems.join("; ") + "]" : "");
    for (const [i, page] of ctx.pages().entries()) {
      if (page.url() !== "about:blank") { await p.shot(page, "failed-" + i).catch(() => {}); }
    }
  }
  await ctx.close();
  emit(res);
  return res.ok;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Root in a container: no sandbox. The rest keeps Chromium off the
    // network this machine does not have (it would retry and log).
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
  });
  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const count = JSON.parse((await lines.next()).value || fail("stdin closed before the scenario count came")).count;
  const ready = await Promise.all(Array.from({ length: count }, () => prepare(browser)));
  emit({ event: "ready", version: browser.version() });
  const cfg = JSON.parse((await lines.next()).value || fail("stdin closed before the scenarios came"));
  rl.close();
  const oks = await Promise.all(cfg.scenarios.map((sc, i) => play(ready[i], sc, cfg.out)));
  await browser.close();
  process.exit(oks.every(Boolean) ? 0 : 1);
}

main().catch((e) => {
  emit({ event: "fatal", error: String(e && e.stack || e) });
  process.exit(2);
});

// The dashboard of SPEC §19 in a real browser: headless Chromium (Debian's
// /usr/bin/chromium, never a downloaded one) loads the page from the real
// server binary while this test drives traffic over WebSockets, and checks
// what the page shows against that traffic: connections and clients by
// type, a channel's member count, the rate chart, recent errors, the
// agent feed, the degraded banner while Redis is down, and the credential
// prompt in token mode.
//
// Environment:
//   ARQONBUS_SERVER_BIN       server binary (default <repo>/target/debug/arqonbus-server)
//   ARQONBUS_CHROMIUM         browser (default /usr/bin/chromium)
//   ARQONBUS_REQUIRE_BROWSER=1  fail instead of skipping when Chromium is missing
//   ARQONBUS_REQUIRE_REDIS=1    fail instead of skipping when redis-server is missing
//   ARQONBUS_DASHBOARD_SCREENSHOT=path  write a screenshot of the page under load

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";
import WebSocket from "ws";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const SERVER_BIN = process.env.ARQONBUS_SERVER_BIN || resolve(repo, "target", "debug", "arqonbus-server");
const CHROMIUM = process.env.ARQONBUS_CHROMIUM || "/usr/bin/chromium";
const STEP = 15_000;

const browserMissing = !existsSync(CHROMIUM);
if (browserMissing && process.env.ARQONBUS_REQUIRE_BROWSER === "1") {
  throw new Error(`Chromium not found at ${CHROMIUM} and ARQONBUS_REQUIRE_BROWSER=1`);
}
if (browserMissing) console.log(`# skipping the dashboard browser tests: no Chromium at ${CHROMIUM}`);
if (!existsSync(SERVER_BIN)) {
  throw new Error(`server binary not found at ${SERVER_BIN}: build it or set ARQONBUS_SERVER_BIN`);
}
const redisMissing = spawnSync("redis-server", ["--version"]).status !== 0;
if (redisMissing && process.env.ARQONBUS_REQUIRE_REDIS === "1") {
  throw new Error("redis-server not found and ARQONBUS_REQUIRE_REDIS=1");
}

const children = [];
let browser;

before(async () => {
  if (browserMissing) return;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  if (browser) await browser.close();
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
});

/** Starts the server binary; resolves with its {bus, telemetry} addresses. */
async function startServer(env = {}, args = [], { telemetryPort = 0 } = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ARQONBUS_")));
  const child = spawn(
    SERVER_BIN,
    ["--port", "0", "--telemetry-port", String(telemetryPort), "--print-addrs", ...args],
    {
      env: { ...clean, ARQONBUS_TELEMETRY_STATS_INTERVAL_MS: "250", ARQONBUS_LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  children.push(child);
  const line = await new Promise((resolveLine, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.once("line", resolveLine);
    child.once("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { child, ...JSON.parse(line) };
}

async function stopServer(server, signal = "SIGTERM") {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((r) => server.child.once("exit", r));
  server.child.kill(signal);
  await exited;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

let nextId = 0;
const id = () => `arq_browser_${++nextId}`;
const envelope = (fields) => JSON.stringify({ version: "1.0", id: id(), timestamp: new Date().toISOString(), ...fields });

/** A bus client: resolves once the welcome frame arrived. */
async function busClient(bus, query = "") {
  const socket = new WebSocket(`ws://${bus}/${query ? "?" + query : ""}`);
  const pending = new Map();
  socket.on("message", (data) => {
    const frame = JSON.parse(data.toString());
    const waiter = frame.request_id && pending.get(frame.request_id);
    if (waiter) {
      pending.delete(frame.request_id);
      waiter(frame);
    }
  });
  await new Promise((ok, fail) => {
    socket.once("message", ok);
    socket.once("error", fail);
  });
  const client = {
    socket,
    command(command, args = {}) {
      const frame = { version: "1.0", id: id(), type: "command", timestamp: new Date().toISOString(), command, args };
      return new Promise((ok) => {
        pending.set(frame.id, ok);
        socket.send(JSON.stringify(frame));
      });
    },
    async join(room, channel) {
      const reply = await client.command("join_channel", { room, channel });
      assert.equal(reply.status, "success", JSON.stringify(reply));
      return reply;
    },
    publish(room, channel, payload) {
      socket.send(envelope({ type: "message", room, channel, payload }));
    },
    close() {
      socket.close(1000);
    },
  };
  return client;
}

async function openDashboard(server, viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  const problems = [];
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error" && !/WebSocket connection .* failed/.test(msg.text())) problems.push(msg.text());
  });
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (url.host !== server.telemetry) problems.push(`external request: ${request.url()}`);
  });
  await page.goto(`http://${server.telemetry}/`);
  return { page, problems };
}

const value = (page, selector) => page.locator(selector).getAttribute("data-value");

test("the dashboard shows the live traffic", { skip: browserMissing, timeout: 90_000 }, async () => {
  const server = await startServer();
  try {
    const { page, problems } = await openDashboard(server);
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    assert.equal(await page.locator("#auth-form").isHidden(), true, "no prompt without auth");

    const alice = await busClient(server.bus, "screen_name=alice");
    const bob = await busClient(server.bus, "screen_name=bob");
    const agent = await busClient(server.bus, "client_type=ai-agent&screen_name=scout&personality=curious");
    await alice.join("lobby", "general");
    await bob.join("lobby", "general");
    await agent.join("lobby", "general");
    await alice.join("lobby", "quiet");
    // A protocol error, for the recent-errors list.
    alice.socket.send("not json");

    let tick = 0;
    const load = setInterval(() => {
      // A varying load, so the chart has a shape.
      const burst = 10 + Math.round(10 * Math.sin(tick++ / 15));
      for (let i = 0; i < burst; i++) alice.publish("lobby", "general", { i });
      agent.publish("lobby", "general", { thought: "hello" });
    }, 50);
    try {
      await page.waitForFunction(() => document.getElementById("connections").dataset.value === "3", null, { timeout: STEP });
      const general = page.locator('#top-channels tr[data-channel="lobby:general"] .members');
      await page.waitForFunction(
        () => document.querySelector('#top-channels tr[data-channel="lobby:general"] .members')?.textContent === "3",
        null,
        { timeout: STEP },
      );
      assert.equal(await general.textContent(), "3");
      assert.equal(await page.locator('#top-channels tr[data-channel="lobby:quiet"] .members').textContent(), "1");
      assert.equal(await page.locator('#clients-by-type tr[data-client-type="human"] .count').textContent(), "2");
      assert.equal(await page.locator('#clients-by-type tr[data-client-type="ai-agent"] .count').textContent(), "1");
      // Messages flow: both rates become positive, and latency is measured.
      await page.waitForFunction(
        () => Number(document.getElementById("rate-in").dataset.value) > 0
          && Number(document.getElementById("rate-out").dataset.value) > 0,
        null,
        { timeout: STEP },
      );
      assert.ok(Number(await value(page, "#latency-p99")) >= Number(await value(page, "#latency-p50")));
      await page.waitForFunction(() => /VALIDATION_ERROR/.test(document.getElementById("errors").textContent), null, { timeout: STEP });
      await page.waitForFunction(() => /scout (join|message)/.test(document.getElementById("agent-feed").textContent), null, { timeout: STEP });
      assert.equal(await page.locator("#storage-state").getAttribute("data-degraded"), "false");
      assert.equal(await page.locator("#storage-banner").isHidden(), true);
      // Let the chart gather points, then keep a picture of it.
      await page.waitForTimeout(process.env.ARQONBUS_DASHBOARD_SCREENSHOT ? 30_000 : 2000);
      if (process.env.ARQONBUS_DASHBOARD_SCREENSHOT) {
        mkdirSync(dirname(process.env.ARQONBUS_DASHBOARD_SCREENSHOT), { recursive: true });
        await page.screenshot({ path: process.env.ARQONBUS_DASHBOARD_SCREENSHOT, fullPage: true });
      }
      // The chart has been drawn: its canvas is not blank.
      const drawn = await page.evaluate(() => {
        const canvas = document.getElementById("rate-chart");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
        return false;
      });
      assert.ok(drawn, "the chart is drawn");
    } finally {
      clearInterval(load);
    }

    // A client leaves: the page follows.
    bob.close();
    await page.waitForFunction(() => document.getElementById("connections").dataset.value === "2", null, { timeout: STEP });
    await page.waitForFunction(
      () => document.querySelector('#top-channels tr[data-channel="lobby:general"] .members')?.textContent === "2",
      null,
      { timeout: STEP },
    );

    // Readable at phone width: nothing wider than the screen.
    await page.setViewportSize({ width: 375, height: 812 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a phone screen`);

    alice.close();
    agent.close();
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    await stopServer(server);
  }
});

test("the dashboard reconnects after the server restarts on the same port", { skip: browserMissing, timeout: 60_000 }, async () => {
  const telemetryPort = await freePort();
  const first = await startServer({}, [], { telemetryPort });
  try {
    const { page } = await openDashboard(first);
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    await stopServer(first);
    await page.waitForSelector('#conn-state[data-state="retrying"]', { timeout: STEP });
    const second = await startServer({}, [], { telemetryPort });
    try {
      await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    } finally {
      await stopServer(second);
    }
    await page.close();
  } finally {
    await stopServer(first);
  }
});

test("a degraded banner shows while Redis is down", { skip: browserMissing || redisMissing, timeout: 90_000 }, async () => {
  if (redisMissing) console.log("# skipping the degraded-banner test: redis-server not found");
  const port = await freePort();
  const redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  children.push(redis);
  // Wait until Redis accepts connections.
  for (let i = 0; i < 50; i++) {
    const up = spawnSync("redis-cli", ["-p", String(port), "ping"], { encoding: "utf8" }).stdout?.trim() === "PONG";
    if (up) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const server = await startServer({}, ["--storage", "redis", "--redis-url", `redis://127.0.0.1:${port}`]);
  try {
    const { page } = await openDashboard(server);
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    await page.waitForFunction(() => document.getElementById("storage-state").dataset.backend === "redis", null, { timeout: STEP });
    assert.equal(await page.locator("#storage-banner").isHidden(), true);

    const exited = new Promise((r) => redis.once("exit", r));
    redis.kill("SIGKILL");
    await exited;
    // Traffic that needs storage makes the failure visible sooner.
    const writer = await busClient(server.bus);
    await writer.join("lobby", "stored");
    writer.publish("lobby", "stored", { n: 1 });
    await page.waitForSelector("#storage-banner:not([hidden])", { timeout: 30_000 });
    assert.match(await page.locator("#storage-banner").textContent(), /degraded/i);
    assert.equal(await page.locator("#storage-state").getAttribute("data-degraded"), "true");
    writer.close();
    await page.close();
  } finally {
    // Nothing to flush to: do not wait for the shutdown grace.
    await stopServer(server, "SIGKILL");
  }
});

test("in token mode the page asks for the admin token", { skip: browserMissing, timeout: 60_000 }, async () => {
  const server = await startServer({ ARQONBUS_AUTH: "token", ARQONBUS_ADMIN_TOKEN: "x" });
  try {
    const { page } = await openDashboard(server);
    await page.waitForSelector("#auth-form:not([hidden])", { timeout: STEP });
    assert.equal(await page.locator("#conn-state").getAttribute("data-state"), "refused");

    await page.fill("#token-input", "wrong");
    await page.click("#token-submit");
    await page.waitForFunction(() => /refused: check the admin token/.test(document.getElementById("auth-message").textContent), null, { timeout: STEP });
    assert.equal(await page.locator("#auth-form").isHidden(), false);

    await page.fill("#token-input", "x");
    await page.click("#token-submit");
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    assert.equal(await page.locator("#auth-form").isHidden(), true);
    // The token is kept for this tab: a reload connects without asking.
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="live"]', { timeout: STEP });
    assert.equal(await page.locator("#auth-form").isHidden(), true);
    await page.close();
  } finally {
    await stopServer(server);
  }
});

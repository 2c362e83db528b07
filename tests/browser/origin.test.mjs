// Browsers and the bus (SPEC §18, "Origin and browsers") in a real browser:
// headless Chromium (Debian's /usr/bin/chromium, never a downloaded one)
// opens WebSockets to the real server binary from pages on three origins:
//   - the bus's own origin (the page is served at the bus's host:port, by
//     Playwright's request interception): it connects, gets the welcome,
//     and `close(1000)` ends cleanly (wasClean true, code 1000);
//   - another origin that is not allowed: the upgrade is refused (the
//     browser sees the connection fail, never a welcome);
//   - the same other origin listed in ARQONBUS_ALLOWED_ORIGINS: it connects
//     and closes cleanly.
//
// Environment: ARQONBUS_SERVER_BIN, ARQONBUS_CHROMIUM, ARQONBUS_REQUIRE_BROWSER
// (as in dashboard.test.mjs).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const SERVER_BIN = process.env.ARQONBUS_SERVER_BIN || resolve(repo, "target", "debug", "arqonbus-server");
const CHROMIUM = process.env.ARQONBUS_CHROMIUM || "/usr/bin/chromium";

const browserMissing = !existsSync(CHROMIUM);
if (browserMissing && process.env.ARQONBUS_REQUIRE_BROWSER === "1") {
  throw new Error(`Chromium not found at ${CHROMIUM} and ARQONBUS_REQUIRE_BROWSER=1`);
}
if (browserMissing) console.log(`# skipping the origin browser tests: no Chromium at ${CHROMIUM}`);

const children = [];
const servers = [];
let browser;

before(async () => {
  if (browserMissing) return;
  // A page served by request interception has no network address of its
  // own, so Chromium's Local Network Access checks would treat it as public
  // and block its WebSocket to 127.0.0.1 before the server is even asked.
  // The checks are off here so that the server's own Origin rule is what
  // is tested.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--no-sandbox", "--disable-features=LocalNetworkAccessChecks"],
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
  for (const server of servers) server.close();
});

async function startBus(env = {}) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("ARQONBUS_")));
  const child = spawn(SERVER_BIN, ["--port", "0", "--telemetry-port", "0", "--print-addrs"], {
    env: { ...clean, ARQONBUS_LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  const line = await new Promise((ok, fail) => {
    createInterface({ input: child.stdout }).once("line", ok);
    child.once("exit", (code) => fail(new Error(`server exited with ${code}`)));
  });
  return JSON.parse(line).bus;
}

/** A static server for an empty page on another origin; resolves with its origin. */
async function otherOrigin() {
  const server = createServer((_, response) => {
    response.writeHead(200, { "content-type": "text/html" });
    response.end("<!doctype html><title>elsewhere</title>");
  });
  servers.push(server);
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return `http://127.0.0.1:${server.address().port}`;
}

/**
 * In the page: opens a WebSocket to `url`, waits for the welcome (or the
 * failure), closes with 1000 and reports what the browser saw.
 */
function tryBus(url) {
  return new Promise((done) => {
    const socket = new WebSocket(url);
    let welcome = null;
    const timer = setTimeout(() => done({ timeout: true, welcome }), 8000);
    socket.onmessage = (event) => {
      welcome = JSON.parse(event.data);
      socket.close(1000, "bye");
    };
    socket.onclose = (event) => {
      clearTimeout(timer);
      done({ welcome, code: event.code, wasClean: event.wasClean, reason: event.reason });
    };
  });
}

async function pageAt(url, route) {
  const page = await browser.newPage();
  if (route) {
    await page.route(url, (r) => r.fulfill({ status: 200, contentType: "text/html", body: "<!doctype html><title>bus origin</title>" }));
  }
  await page.goto(url);
  return page;
}

test("a page on the bus's own origin connects and closes cleanly", { skip: browserMissing }, async () => {
  const bus = await startBus();
  const page = await pageAt(`http://${bus}/page.html`, true);
  const seen = await page.evaluate(tryBus, `ws://${bus}/`);
  assert.equal(seen.timeout, undefined, JSON.stringify(seen));
  assert.equal(seen.welcome?.payload?.welcome, "Connected to ArqonBus");
  assert.equal(seen.code, 1000, JSON.stringify(seen));
  assert.equal(seen.wasClean, true, JSON.stringify(seen));
  await page.close();
});

test("a page on another origin is refused", { skip: browserMissing }, async () => {
  const bus = await startBus();
  const page = await pageAt(await otherOrigin());
  const seen = await page.evaluate(tryBus, `ws://${bus}/`);
  assert.equal(seen.welcome, null, "no welcome for a refused origin");
  assert.equal(seen.code, 1006, "the upgrade failed");
  await page.close();
});

test("a listed origin connects and closes cleanly", { skip: browserMissing }, async () => {
  const origin = await otherOrigin();
  const bus = await startBus({ ARQONBUS_ALLOWED_ORIGINS: origin });
  const page = await pageAt(origin);
  const seen = await page.evaluate(tryBus, `ws://${bus}/`);
  assert.equal(seen.welcome?.payload?.welcome, "Connected to ArqonBus");
  assert.equal(seen.code, 1000, JSON.stringify(seen));
  assert.equal(seen.wasClean, true, JSON.stringify(seen));
  await page.close();
});

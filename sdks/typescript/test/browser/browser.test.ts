/**
 * The built SDK in headless Chromium (Debian's `chromium`, driven by
 * playwright-core; nothing downloads a browser): a page served by a tiny
 * static server joins, publishes, receives and closes against the real
 * arqonbus-server. Skips when Chromium is missing, unless
 * ARQONBUS_REQUIRE_BROWSER=1.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';

import { ArqonBus } from 'arqonbus';
import type { Browser, Page } from 'playwright-core';

import { PACKAGE_ROOT, startServer, type ServerProcess } from '../helpers/processes.js';
import { required, until, withTimeout } from '../helpers/wait.js';

/** What the page's scenario reports (see fixtures/page.html). */
interface ScenarioResult {
  hasNativeWebSocket: boolean;
  clientIds: string[];
  protocol: string;
  pong: boolean;
  ack: { delivered: number; seq: number; stored: boolean };
  first: { text: string; sender: string; seq: number; replayed: boolean };
  fromNode: { text: string; seq: number };
  heard: string[];
  error: { name: string; errorCode: string; code: number };
  closed: { reason: string; code: number | null; wasClean: boolean | null }[];
  states: string[];
}

function chromiumPath(): string | null {
  const candidates = [process.env['ARQONBUS_CHROMIUM'], '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  return candidates.find((p): p is string => p !== undefined && p !== '' && existsSync(p)) ?? null;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
};

/** Serves /dist/* and /examples/* from the package, anything else from the fixtures. */
async function staticServer(): Promise<{ server: Server; origin: string; requests: string[] }> {
  const requests: string[] = [];
  const roots: Record<string, string> = {
    '/dist/': join(PACKAGE_ROOT, 'dist'),
    '/examples/': join(PACKAGE_ROOT, 'examples'),
    '/': join(PACKAGE_ROOT, 'test', 'browser', 'fixtures'),
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push(path);
    const prefix = ['/dist/', '/examples/'].find((p) => path.startsWith(p)) ?? '/';
    const root = roots[prefix]!;
    const file = normalize(join(root, path.slice(prefix.length)));
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    readFile(file).then(
      (body) => res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body),
      () => res.writeHead(404).end('not found'),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe('in headless Chromium', () => {
  let executable: string | null;
  let web: Awaited<ReturnType<typeof staticServer>> | undefined;
  let bus: ServerProcess | undefined;
  let browser: Browser | undefined;
  let page: Page | undefined;
  let result: ScenarioResult | undefined;
  const pageErrors: string[] = [];
  const node = { client: undefined as ArqonBus | undefined };

  before(async () => {
    executable = chromiumPath();
    if (executable === null) return;
    web = await staticServer();
    // SPEC §18: the page's origin differs from the bus's host:port.
    bus = await startServer({ env: { ARQONBUS_ALLOWED_ORIGINS: web.origin } });
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: executable, headless: true, args: ['--no-sandbox'] });
    page = await browser.newPage();
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    page.on('console', (message) => {
      if (message.type() === 'error') pageErrors.push(message.text());
    });
  });

  after(async () => {
    await node.client?.close();
    await browser?.close();
    await bus?.stop();
    await new Promise((resolve) => (web ? web.server.close(resolve) : resolve(undefined)));
  });

  function skipWithoutBrowser(t: TestContext): boolean {
    if (executable !== null) return false;
    if (required('ARQONBUS_REQUIRE_BROWSER')) assert.fail('Chromium not found (apt-get install chromium) but ARQONBUS_REQUIRE_BROWSER=1');
    t.skip('Chromium not found at /usr/bin/chromium (apt-get install chromium, or set ARQONBUS_CHROMIUM)');
    return true;
  }

  it('a page using the built SDK joins, publishes, receives and closes', async (t) => {
    if (skipWithoutBrowser(t)) return;
    assert.ok(web && bus && page);
    await withTimeout(page.goto(`${web.origin}/page.html`), 'the page to load', 15_000);
    await withTimeout(page.waitForFunction('window.pageReady === true', undefined, { timeout: 10_000 }), 'the SDK to load', 12_000);

    const room = 'browser';
    const channel = 'test';
    const running = page.evaluate(`runScenario(${JSON.stringify(bus.url)}, '${room}', '${channel}')`) as Promise<ScenarioResult>;
    // Meanwhile, a Node client publishes to the page once it is listening.
    node.client = new ArqonBus(bus.url);
    await node.client.connect();
    await node.client.join(room, channel);
    await withTimeout(page.waitForFunction('window.readyForNode === true', undefined, { timeout: 10_000 }), 'the page to be ready', 12_000);
    await node.client.publish(room, channel, { text: 'hello from node' }, { ack: true });
    result = await withTimeout(running, 'the page scenario', 20_000);

    assert.equal(result.hasNativeWebSocket, true);
    assert.equal(result.protocol, '1.0');
    assert.equal(result.pong, true);
    assert.equal(result.clientIds.length, 2);
    assert.ok(result.clientIds.every((id) => /^arq_client_[0-9a-f]{32}$/.test(id)));
    assert.equal(result.ack.seq, 1);
    assert.equal(result.ack.stored, true);
    assert.ok(result.ack.delivered >= 1, 'page client B at least');
    assert.deepEqual(result.first, { text: 'hello from the browser', sender: result.clientIds[0], seq: 1, replayed: false });
    assert.deepEqual(result.fromNode, { text: 'hello from node', seq: 2 });
    assert.deepEqual(result.heard, ['hello from the browser', 'hello from node']);
    assert.deepEqual(result.error, { name: 'ArqonError', errorCode: 'CHANNEL_NOT_FOUND', code: 404 });
    assert.deepEqual(result.states, ['closed', 'closed', 'ended', 'ended']);
    assert.deepEqual(result.closed.map((c) => c.reason), ['client', 'client']);
    assert.deepEqual(pageErrors, []);
    // The SDK used the browser's WebSocket: it never asked for `ws`.
    assert.ok(!web.requests.some((path) => /(^|\/)ws(\.|\/|$)|node_modules/.test(path)), web.requests.join(', '));
    // The server saw the page's clients go.
    let members = -1;
    const client = node.client;
    const poll = setInterval(() => {
      client.channelInfo(room, channel).then(
        (info) => (members = info.participant_count),
        () => undefined,
      );
    }, 50);
    try {
      await until(() => members === 1, 'the page clients to leave the channel');
    } finally {
      clearInterval(poll);
    }
  });

  it('examples/chat.html: two people chat', async (t) => {
    if (skipWithoutBrowser(t)) return;
    assert.ok(web && bus && browser);
    const pages = [await browser.newPage(), await browser.newPage()];
    const errors: string[] = [];
    try {
      for (const [i, chat] of pages.entries()) {
        chat.on('pageerror', (error) => errors.push(String(error)));
        await chat.goto(`${web.origin}/examples/chat.html`, { timeout: 10_000 });
        await chat.fill('input[name=url]', bus.url);
        await chat.fill('input[name=name]', i === 0 ? 'ada' : 'bob');
        await chat.fill('input[name=channel]', 'example');
        await chat.click('#connect button');
        await chat.waitForSelector('#send input:not([disabled])', { timeout: 10_000 });
      }
      const [ada, bob] = pages as [Page, Page];
      await ada.fill('#send input', 'hello bob');
      await ada.press('#send input', 'Enter');
      await bob.waitForFunction(`document.querySelector('#log').textContent.includes('ada: hello bob')`, undefined, { timeout: 5_000 });
      await bob.fill('#send input', 'hi ada');
      await bob.press('#send input', 'Enter');
      await ada.waitForFunction(`document.querySelector('#log').textContent.includes('bob: hi ada')`, undefined, { timeout: 5_000 });
      const lines = await ada.$$eval('#log li:not(.notice)', (items) => items.map((item) => item.textContent));
      assert.deepEqual(lines, ['ada: hello bob', 'bob: hi ada']);
      await bob.click('#leave');
      await bob.waitForFunction(`document.querySelector('#state').dataset.state === 'closed'`, undefined, { timeout: 5_000 });
      assert.deepEqual(errors, []);
    } finally {
      await Promise.all(pages.map((p) => p.close()));
    }
  });

  it('the close handshake completes (wasClean, code 1000)', async (t) => {
    if (skipWithoutBrowser(t)) return;
    assert.ok(result, 'the scenario ran');
    for (const closed of result.closed) {
      assert.ok(
        closed.wasClean === true && closed.code === 1000,
        `the browser saw wasClean=${String(closed.wasClean)} code=${String(closed.code)}: ` +
          `the server did not answer the client's Close frame with a Close frame (SPEC §18)`,
      );
    }
  });
});

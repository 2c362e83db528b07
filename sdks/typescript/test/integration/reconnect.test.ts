/**
 * Reconnection against the real server: a client cut off by a proxy, a
 * server restart with memory storage (history lost, new epoch), a restart
 * with Redis (history kept: every message exactly once), permanent
 * refusals.
 */
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, describe, it, type TestContext } from 'node:test';

import { ArqonBus, type ArqonBusOptions, type ChannelMessage, type GapEvent, type RecoveredEvent, type Subscription } from 'arqonbus';

import { startRedis, startServer, TcpProxy, type ServerProcess } from '../helpers/processes.js';
import { collectUntil, nextEvent, required, sleep, until, withTimeout } from '../helpers/wait.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

const FAST = { initialDelayMs: 20, maxDelayMs: 200 };

function client(url: string, options: ArqonBusOptions = {}): ArqonBus {
  const bus = new ArqonBus(url, { reconnect: FAST, requestTimeoutMs: 5_000, ...options });
  cleanups.push(() => bus.close());
  return bus;
}

async function server(options: Parameters<typeof startServer>[0] = {}): Promise<ServerProcess> {
  const s = await startServer(options);
  cleanups.push(() => s.stop());
  return s;
}

async function proxy(port: number): Promise<TcpProxy> {
  const p = await TcpProxy.start(port);
  cleanups.push(() => p.close());
  return p;
}

/** The next `recovered` or `gap` event of the subscription. */
function outcome(sub: Subscription<{ n: number }> | Subscription, ms = 10_000): Promise<RecoveredEvent | GapEvent> {
  const offs: (() => void)[] = [];
  const settled = new Promise<RecoveredEvent | GapEvent>((resolve) => {
    offs.push((sub as Subscription).on('recovered', resolve), (sub as Subscription).on('gap', resolve));
  });
  return withTimeout(settled, 'a recovered or gap event', ms).finally(() => offs.forEach((off) => off()));
}

function numbers(messages: ChannelMessage<{ n: number }>[]): number[] {
  return messages.map((m) => m.payload.n);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function publishRange(bus: ArqonBus, room: string, channel: string, from: number, to: number): Promise<void> {
  for (let n = from; n <= to; n++) {
    const ack = await bus.publish(room, channel, { n }, { ack: true });
    assert.equal(ack.stored, true, `message ${n} stored`);
  }
}

describe('reconnect and gap filling', () => {
  it('a client cut off for a while gets every message once, in order', async () => {
    const bus = await server();
    const gate = await proxy(bus.port);
    const subscriber = client(gate.url);
    const publisher = client(bus.url);
    await Promise.all([subscriber.connect(), publisher.connect()]);
    const sub = await subscriber.join<{ n: number }>('re', 'cut');
    await publisher.join('re', 'cut');
    const all = collectUntil(sub, (m) => m.length >= 60, '60 messages', 15_000);
    await publishRange(publisher, 're', 'cut', 1, 20);
    await until(() => all.messages.length === 20, 'the first 20 live');
    const epoch = sub.position?.epoch;

    const disconnected = nextEvent(subscriber, 'disconnected');
    gate.cut();
    assert.equal((await disconnected).willReconnect, true);
    await publishRange(publisher, 're', 'cut', 21, 50);
    const settled = outcome(sub);
    const reconnected = nextEvent(subscriber, 'connected');
    gate.restore();
    assert.equal((await reconnected).reconnected, true);
    // Publish while the re-join and gap fill are in progress.
    await publishRange(publisher, 're', 'cut', 51, 60);

    const event = await settled;
    assert.ok('via' in event, `expected recovered, got gap ${JSON.stringify(event)}`);
    assert.equal(event.fromSeq, 21);
    assert.ok(event.toSeq >= 50, `toSeq ${event.toSeq}`);
    assert.equal(event.count, event.toSeq - 20);
    assert.equal(event.epoch, epoch);
    const messages = await all.finished;
    assert.deepEqual(numbers(messages), range(1, 60));
    assert.deepEqual(messages.map((m) => m.seq), range(1, 60));
    assert.ok(messages.slice(20, 50).every((m) => m.replayed), 'messages 21-50 came from the catch-up');
    await sleep(100);
    assert.equal(messages.length, 60, 'nothing delivered twice');
  });

  it('a server restart with memory storage is reported as a gap with a new epoch', async () => {
    const first = await server();
    const gate = await proxy(first.port);
    const subscriber = client(gate.url);
    const publisher = client(first.url);
    await Promise.all([subscriber.connect(), publisher.connect()]);
    const sub = await subscriber.join<{ n: number }>('re', 'memory');
    const pubSub = await publisher.join('re', 'memory');
    const all = collectUntil(sub, (m) => m.length >= 9, '9 messages', 20_000);
    await publishRange(publisher, 're', 'memory', 1, 5);
    await until(() => all.messages.length === 5, 'the first five');
    const oldEpoch = sub.position!.epoch;

    gate.cut();
    await first.stop();
    const second = await server({ port: first.port });
    assert.equal(second.port, first.port);
    // The publisher reconnects by itself and re-joins; its own catch-up
    // sees the new epoch too.
    const publisherBack = outcome(pubSub, 15_000);
    await nextEvent(publisher, 'connected', { ms: 15_000, predicate: (e) => e.reconnected });
    const publisherOutcome = await publisherBack;
    assert.ok(!('via' in publisherOutcome) && publisherOutcome.epochChanged, JSON.stringify(publisherOutcome));
    await publishRange(publisher, 're', 'memory', 101, 103); // seq 1-3 of the new epoch

    const settled = outcome(sub);
    gate.restore();
    const event = await settled;
    assert.ok(!('via' in event), `expected a gap, got ${JSON.stringify(event)}`);
    assert.equal(event.reason, 'epoch-changed');
    assert.equal(event.epochChanged, true);
    assert.equal(event.oldEpoch, oldEpoch);
    assert.notEqual(event.newEpoch, oldEpoch);
    assert.equal(event.fromSeq, 6);
    assert.equal(event.toSeq, null);
    assert.equal(event.recovered, 3, 'the new epoch\'s messages were fetched');
    await publishRange(publisher, 're', 'memory', 104, 104);
    const messages = await all.finished;
    assert.deepEqual(numbers(messages), [1, 2, 3, 4, 5, 101, 102, 103, 104]);
    assert.deepEqual(
      messages.map((m) => [m.epoch === oldEpoch ? 'old' : 'new', m.seq]),
      [['old', 1], ['old', 2], ['old', 3], ['old', 4], ['old', 5], ['new', 1], ['new', 2], ['new', 3], ['new', 4]],
    );
    assert.deepEqual(sub.position, { seq: 4, epoch: event.newEpoch });
  });

  it('with Redis storage, every message arrives exactly once across a server restart', async (t: TestContext) => {
    const redis = await startRedis();
    if (redis === null) {
      if (required('ARQONBUS_REQUIRE_REDIS')) assert.fail('redis-server is not on PATH but ARQONBUS_REQUIRE_REDIS=1');
      t.skip('redis-server not on PATH: install it (apt-get install redis-server) to run this test');
      return;
    }
    cleanups.push(() => redis.stop());
    const args = ['--storage', 'redis', '--redis-url', redis.url];
    const first = await server({ args });
    const gate = await proxy(first.port);
    const subscriber = client(gate.url);
    const publisher = client(first.url);
    await Promise.all([subscriber.connect(), publisher.connect()]);
    const sub = await subscriber.join<{ n: number }>('re', 'redis');
    await publisher.join('re', 'redis');
    const all = collectUntil(sub, (m) => m.length >= 110, '110 messages', 30_000);
    await publishRange(publisher, 're', 'redis', 1, 50);
    await until(() => all.messages.length === 50, 'the first 50');
    const epoch = sub.position!.epoch;

    gate.cut();
    await first.stop();
    const second = await server({ port: first.port, args });
    await nextEvent(publisher, 'connected', { ms: 15_000, predicate: (e) => e.reconnected });
    await until(() => publisher.subscription('re', 'redis')?.joinReply?.seq === 50, 'the publisher re-joined');
    await publishRange(publisher, 're', 'redis', 51, 100);

    const settled = outcome(sub);
    const reconnected = nextEvent(subscriber, 'connected', { ms: 10_000 });
    gate.restore();
    await reconnected;
    await publishRange(publisher, 're', 'redis', 101, 110); // racing the catch-up
    const event = await settled;
    assert.ok('via' in event, `expected recovered, got ${JSON.stringify(event)}`);
    assert.equal(event.epoch, epoch, 'Redis kept the history: same epoch');
    assert.equal(event.fromSeq, 51);
    const messages = await all.finished;
    assert.deepEqual(numbers(messages), range(1, 110));
    assert.deepEqual(messages.map((m) => m.seq), range(1, 110));
    assert.ok(messages.every((m) => m.epoch === epoch));
    await sleep(100);
    assert.equal(messages.length, 110, 'nothing delivered twice');
    await second.stop();
  });
});

describe('permanent refusals', () => {
  it('stops when the token is refused (HTTP 401) at a reconnect, after asking getToken', async () => {
    const bus = await server({ env: { ARQONBUS_AUTH: 'token', ARQONBUS_ADMIN_TOKEN: 'admin-secret' } });
    const gate = await proxy(bus.port);
    const tokens = ['admin-secret', 'revoked'];
    let calls = 0;
    const subscriber = client(gate.url, { getToken: () => tokens[Math.min(calls++, 1)]! });
    await subscriber.connect();
    const sub = await subscriber.join('auth', 'gone');
    const closed = nextEvent(subscriber, 'closed', { ms: 10_000 });
    gate.cut();
    gate.restore();
    const event = await closed;
    assert.equal(event.reason, 'refused');
    assert.equal(event.httpStatus, 401);
    assert.match(event.message, /HTTP 401/);
    assert.equal(sub.state, 'ended');
    const callsAtClose = calls;
    assert.ok(callsAtClose >= 2);
    await sleep(300);
    assert.equal(calls, callsAtClose, 'no attempt after the refusal');
    assert.equal(subscriber.state, 'closed');
  });

  it('does not reconnect when replaced by a newer connection with the same identity (4000)', async () => {
    const secret = 'jwt-test-secret-0123456789abcdef';
    const bus = await server({ env: { ARQONBUS_AUTH: 'jwt', ARQONBUS_JWT_SECRET: secret } });
    const token = jwt({ sub: 'agent-7', exp: Math.floor(Date.now() / 1000) + 3600 }, secret);
    const first = client(bus.url, { token });
    await first.connect();
    assert.equal(first.clientId, 'agent-7');
    const closed = nextEvent(first, 'closed');
    const second = client(bus.url, { token });
    await second.connect();
    const event = await closed;
    assert.equal(event.reason, 'replaced');
    assert.equal(event.code, 4000);
    assert.equal(second.state, 'connected');
    await sleep(200);
    assert.equal(second.state, 'connected', 'the first client did not come back to replace it');
  });
});

/** An HS256 JWT. */
function jwt(claims: Record<string, unknown>, secret: string): string {
  const encode = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const head = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

/**
 * Reconnection and gap filling against the fake server, where every
 * interleaving is under the test's control: history fallback (the Rust
 * client's algorithm), §14 recovery, epoch changes, refusals, backoff.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, it } from 'node:test';

import { ArqonBus, type ArqonBusOptions, type ChannelMessage, type JsonObject, type ReconnectOptions } from 'arqonbus';

import { FakeServer } from '../helpers/fake-server.js';
import { collectUntil, nextEvent, record, until, withTimeout } from '../helpers/wait.js';

const clients: ArqonBus[] = [];
const httpServers: Server[] = [];

/** Reconnects almost at once, deterministically. */
const FAST: ReconnectOptions = { initialDelayMs: 2, maxDelayMs: 4, random: () => 0.5 };

function client(server: FakeServer, options: ArqonBusOptions = {}, url = 'ws://bus.test:9100/'): ArqonBus {
  const bus = new ArqonBus(url, { WebSocket: server.WebSocket, heartbeatIntervalMs: 0, reconnect: FAST, ...options });
  clients.push(bus);
  return bus;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((bus) => bus.close()));
  await Promise.all(httpServers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

function seqs(messages: ChannelMessage[]): number[] {
  return messages.map((m) => m.seq ?? -1);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

function commandsSent(server: FakeServer, command: string): JsonObject[] {
  return server.connections.flatMap((c) => c.received.filter((e) => e.command === command).map((e) => e.args ?? {}));
}

/** Publishes `n` messages numbered from `from` in their payload. */
function publishMany(server: FakeServer, from: number, n: number): void {
  for (let i = 0; i < n; i++) server.publish('chat', 'general', { n: from + i });
}

describe('re-join after a reconnect, server without §14 (history fallback)', () => {
  it('delivers every missed message once, in order, paging history, then live ones', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 2505, '2505 messages');
    publishMany(server, 1, 3);
    await until(() => all.messages.length === 3, 'the first three live messages');
    const epoch = sub.position?.epoch;
    assert.deepEqual(sub.position, { seq: 3, epoch });

    const recovered = nextEvent(sub, 'recovered');
    const gaps = record(sub, 'gap');
    const disconnected = nextEvent(bus, 'disconnected');
    server.last.drop(1001, 'restart');
    assert.equal((await disconnected).willReconnect, true);
    publishMany(server, 4, 2497); // seq 4..2500 while away: three history pages
    // Live messages arrive while the gap is being filled.
    const history = server.handlers.get('history');
    let first = true;
    server.handlers.set('history', (args, conn, envelope) => {
      if (first) {
        first = false;
        publishMany(server, 2501, 5);
      }
      return history!(args, conn, envelope);
    });

    await all.finished;
    assert.deepEqual(seqs(all.messages), range(1, 2505));
    assert.deepEqual(all.messages.map((m) => m.payload['n']), range(1, 2505));
    assert.ok(all.messages.slice(3, 2500).every((m) => m.replayed), 'the gap is marked replayed');
    assert.ok(all.messages.slice(2500).every((m) => !m.replayed), 'live messages are not');
    const event = await recovered;
    assert.deepEqual(event, { room: 'chat', channel: 'general', via: 'history', fromSeq: 4, toSeq: 2500, count: 2497, epoch });
    assert.equal(gaps.length, 0);

    const joins = commandsSent(server, 'join_channel');
    assert.deepEqual(joins[1], { room: 'chat', channel: 'general', recover: { seq: 3, epoch } });
    assert.deepEqual(commandsSent(server, 'history').map((a) => [a['after_seq'], a['limit']]), [
      [3, 1000],
      [1003, 1000],
      [2003, 497],
    ]);
    assert.deepEqual(sub.position, { seq: 2505, epoch });
  });

  it('does not replay the client\'s own messages, which it never received live', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const got = record(sub, 'message');
    publishMany(server, 1, 1); // seq 1 from another client
    await bus.publish('chat', 'general', { n: 2 }, { ack: true }); // seq 2, ours, not sent back
    await until(() => got.length === 1, 'the first message');
    const recovered = nextEvent(sub, 'recovered');
    server.last.drop();
    publishMany(server, 3, 2); // seq 3, 4 while away
    const event = await recovered;
    assert.equal(event.count, 2);
    assert.equal(event.fromSeq, 2);
    assert.deepEqual(seqs(got), [1, 3, 4]);
    assert.equal(sub.position?.seq, 4);
  });

  it('reports "recovered" with count 0 when nothing was missed', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    publishMany(server, 1, 2);
    await until(() => sub.position?.seq === 2, 'two messages');
    const recovered = nextEvent(sub, 'recovered');
    server.last.drop();
    const event = await recovered;
    assert.equal(event.count, 0);
    assert.equal(event.fromSeq, 3);
    assert.equal(event.toSeq, 2);
    assert.equal(commandsSent(server, 'history').length, 0);
  });

  it('reports a gap with the epoch change and fetches the new epoch\'s messages', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 7, '7 messages');
    publishMany(server, 1, 4);
    await until(() => all.messages.length === 4, 'four messages');
    const oldEpoch = server.channel('chat', 'general').epoch;
    const gap = nextEvent(sub, 'gap');
    server.last.drop(1001, 'restart');
    server.channel('chat', 'general').reset(); // memory storage: history lost
    publishMany(server, 100, 3); // new epoch, seq 1..3
    const event = await gap;
    const newEpoch = server.channel('chat', 'general').epoch;
    assert.deepEqual(event, {
      room: 'chat',
      channel: 'general',
      reason: 'epoch-changed',
      fromSeq: 5,
      toSeq: null,
      epochChanged: true,
      oldEpoch,
      newEpoch,
      recovered: 3,
    });
    await all.finished;
    assert.deepEqual(all.messages.map((m) => [m.epoch, m.seq, m.payload['n']]), [
      [oldEpoch, 1, 1],
      [oldEpoch, 2, 2],
      [oldEpoch, 3, 3],
      [oldEpoch, 4, 4],
      [newEpoch, 1, 100],
      [newEpoch, 2, 101],
      [newEpoch, 3, 102],
    ]);
    assert.deepEqual(sub.position, { seq: 3, epoch: newEpoch });
  });

  it('reports a gap when history no longer holds the oldest missed messages', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 8, 'two live and the six still in history');
    publishMany(server, 1, 2);
    await until(() => sub.position?.seq === 2, 'two messages');
    const gap = nextEvent(sub, 'gap');
    server.last.drop();
    publishMany(server, 3, 10); // seq 3..12
    const ch = server.channel('chat', 'general');
    ch.messages = ch.messages.filter((m) => (m.seq ?? 0) > 6); // 3..6 trimmed
    const event = await gap;
    assert.equal(event.reason, 'history-trimmed');
    assert.equal(event.epochChanged, false);
    assert.equal(event.fromSeq, 3);
    assert.equal(event.toSeq, 12);
    assert.equal(event.recovered, 6);
    assert.deepEqual(seqs(await all.finished), [1, 2, ...range(7, 12)]);
  });

  it('fetches from history the live messages that overflow the re-join buffer', async () => {
    const server = new FakeServer();
    const bus = client(server, { resyncBufferSize: 5 });
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 61, '61 messages');
    publishMany(server, 1, 1);
    await until(() => all.messages.length === 1, 'one message');
    server.last.drop();
    publishMany(server, 2, 10);
    const history = server.handlers.get('history');
    let first = true;
    server.handlers.set('history', (args, conn, envelope) => {
      if (first) {
        first = false;
        publishMany(server, 12, 50); // far more than the buffer holds
      }
      return history!(args, conn, envelope);
    });
    await all.finished;
    assert.deepEqual(seqs(all.messages), range(1, 61));
  });

  it('ends the subscription when the re-join is refused', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const iterator = sub.messages();
    const removed = nextEvent(sub, 'removed');
    server.handlers.set('join_channel', () => ({ error: 'FORBIDDEN', code: 403 }));
    server.last.drop();
    const event = await removed;
    assert.equal(event.reason, 'rejoin-failed');
    assert.match(event.message, /FORBIDDEN/);
    assert.equal(sub.state, 'ended');
    assert.equal(bus.subscription('chat', 'general'), undefined);
    assert.deepEqual(await withTimeout(iterator.next(), 'iterator end'), { value: undefined, done: true });
  });

  it('rejects a join whose connection drops before the reply, and forgets it', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    server.last.answering = false;
    const joining = bus.join('chat', 'general').then(
      () => 'joined',
      (e: unknown) => e,
    );
    await until(() => server.last.received.length === 1, 'the join was sent');
    server.last.drop();
    const error = await withTimeout(joining, 'join to fail');
    assert.ok(error instanceof Error && error.name === 'ArqonConnectionError', String(error));
    await nextEvent(bus, 'connected');
    assert.equal(bus.subscription('chat', 'general'), undefined);
    assert.equal(commandsSent(server, 'join_channel').length, 1, 'nothing re-joined');
  });
});

describe('re-join with §14 recovery', () => {
  it('takes the missed messages from the join reply', async () => {
    const server = new FakeServer();
    server.supportsRecover = true;
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 8, '8 messages');
    publishMany(server, 1, 2);
    await until(() => all.messages.length === 2, 'two messages');
    const recovered = nextEvent(sub, 'recovered');
    server.last.drop();
    publishMany(server, 3, 5);
    const join = server.handlers.get('join_channel');
    server.handlers.set('join_channel', (args, conn, envelope) => {
      const reply = join!(args, conn, envelope);
      publishMany(server, 8, 1); // live right behind the reply
      return reply;
    });
    const event = await recovered;
    assert.equal(event.via, 'server');
    assert.equal(event.count, 5);
    assert.equal(event.fromSeq, 3);
    assert.equal(event.toSeq, 7);
    await all.finished;
    assert.deepEqual(seqs(all.messages), range(1, 8));
    assert.equal(commandsSent(server, 'history').length, 0, 'no history needed');
  });

  it('falls back to history when the server answers recovered: false', async () => {
    const server = new FakeServer();
    server.supportsRecover = true;
    server.recoveryMax = 3;
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    const all = collectUntil(sub, (m) => m.length >= 11, '11 messages');
    publishMany(server, 1, 1);
    await until(() => all.messages.length === 1, 'one message');
    const recovered = nextEvent(sub, 'recovered');
    server.last.drop();
    publishMany(server, 2, 10); // more than recoveryMax
    const event = await recovered;
    assert.equal(event.via, 'history');
    assert.equal(event.count, 10);
    assert.deepEqual(seqs(await all.finished), range(1, 11));
  });

  it('recovers from a position given to join() (e.g. after a page reload)', async () => {
    const server = new FakeServer();
    publishMany(server, 1, 10);
    const epoch = server.channel('chat', 'general').epoch;
    for (const recover of [false, true]) {
      server.supportsRecover = recover;
      const bus = client(server);
      await bus.connect();
      const sub = await bus.join('chat', 'general', { recover: { seq: 4, epoch } });
      assert.deepEqual(sub.recovery, {
        room: 'chat',
        channel: 'general',
        via: recover ? 'server' : 'history',
        fromSeq: 5,
        toSeq: 10,
        count: 6,
        epoch,
      });
      // Delivered to the first consumer, although it attached after join() resolved.
      const got = collectUntil(sub, (m) => m.length >= 6, 'the recovered messages');
      assert.deepEqual(seqs(await got.finished), range(5, 10));
      assert.ok(got.messages.every((m) => m.replayed));
      await bus.close();
    }
  });
});

describe('connection lifecycle', () => {
  it('emits disconnected, reconnecting (with the backoff delay), connecting, connected', async () => {
    const server = new FakeServer();
    const bus = client(server, { reconnect: { initialDelayMs: 8, maxDelayMs: 100, random: () => 0.5 } });
    await bus.connect();
    const states = record(bus, 'state');
    const reconnecting = record(bus, 'reconnecting');
    const connected = nextEvent(bus, 'connected');
    server.admissions.push({ kind: 'fail' }, { kind: 'fail' });
    server.last.drop(1001, 'bye');
    const event = await connected;
    assert.equal(event.reconnected, true);
    assert.equal(event.attempts, 3);
    assert.deepEqual(reconnecting.map((r) => [r.attempt, r.delayMs]), [
      [1, 4],
      [2, 8],
      [3, 16],
    ]);
    assert.match(reconnecting[0]?.reason ?? '', /1001 bye/);
    assert.deepEqual(states.map((s) => s.state), ['reconnecting', 'connecting', 'reconnecting', 'connecting', 'reconnecting', 'connecting', 'connected']);
  });

  it('calls getToken before every attempt', async () => {
    const server = new FakeServer();
    let calls = 0;
    const bus = client(server, { getToken: () => `t${++calls}` });
    await bus.connect();
    server.admissions.push({ kind: 'fail' });
    const connected = nextEvent(bus, 'connected');
    server.last.drop();
    await connected;
    assert.deepEqual(server.attempts.map((u) => u.searchParams.get('token')), ['t1', 't2', 't3']);
  });

  it('keeps retrying when getToken throws', async () => {
    const server = new FakeServer();
    let calls = 0;
    const bus = client(server, {
      getToken: () => {
        calls += 1;
        if (calls === 2) throw new Error('token service down');
        return `t${calls}`;
      },
    });
    await bus.connect();
    const reconnecting = record(bus, 'reconnecting');
    const connected = nextEvent(bus, 'connected');
    server.last.drop();
    await connected;
    assert.match(reconnecting[1]?.reason ?? '', /token service down/);
    assert.equal(server.attempts.at(-1)?.searchParams.get('token'), 't3');
  });

  it('stops at once on HTTP 401/403 during a reconnect, saying why', async () => {
    for (const status of [401, 403]) {
      const server = new FakeServer();
      const bus = client(server);
      await bus.connect();
      const sub = await bus.join('chat', 'general');
      server.admissions.push({ kind: 'refuse', status });
      const closed = nextEvent(bus, 'closed');
      server.last.drop();
      const event = await closed;
      assert.equal(event.reason, 'refused');
      assert.equal(event.httpStatus, status);
      assert.match(event.message, new RegExp(`HTTP ${status}`));
      assert.equal(server.attempts.length, 2, 'no attempt after the refusal');
      assert.equal(sub.state, 'ended');
      assert.equal(sub.endReason?.reason, 'closed');
    }
  });

  it('keeps trying through HTTP 503', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    server.admissions.push({ kind: 'refuse', status: 503 }, { kind: 'refuse', status: 503 });
    const connected = nextEvent(bus, 'connected');
    server.last.drop();
    await connected;
    assert.equal(server.attempts.length, 4);
  });

  it('does not reconnect after close 4000 (replaced) or 4003 (operator)', async () => {
    for (const [code, reason] of [
      [4000, 'replaced'],
      [4003, 'operator'],
    ] as const) {
      const server = new FakeServer();
      const bus = client(server);
      await bus.connect();
      const closed = nextEvent(bus, 'closed');
      const disconnected = nextEvent(bus, 'disconnected');
      server.last.drop(code, 'bye');
      assert.equal((await disconnected).willReconnect, false);
      const event = await closed;
      assert.equal(event.reason, reason);
      assert.equal(event.code, code);
      assert.equal(server.attempts.length, 1);
    }
  });

  it('closes with "reconnect-disabled" when reconnect is off', async () => {
    const server = new FakeServer();
    const bus = client(server, { reconnect: false });
    await bus.connect();
    const closed = nextEvent(bus, 'closed');
    server.last.drop(1001, 'restart');
    assert.equal((await closed).reason, 'reconnect-disabled');
  });

  it('gives up after maxAttempts failed attempts in a row', async () => {
    const server = new FakeServer();
    const bus = client(server, { reconnect: { ...FAST, maxAttempts: 3 } });
    await bus.connect();
    server.admissions.push({ kind: 'fail' }, { kind: 'fail' }, { kind: 'fail' }, { kind: 'fail' });
    const closed = nextEvent(bus, 'closed');
    server.last.drop();
    const event = await closed;
    assert.equal(event.reason, 'gave-up');
    assert.match(event.message, /3 reconnection attempts/);
    assert.equal(server.attempts.length, 4);
  });

  it('connect() while reconnecting resolves at the next connection', async () => {
    const server = new FakeServer();
    const bus = client(server, { reconnect: { initialDelayMs: 20, maxDelayMs: 20, random: () => 1 } });
    await bus.connect();
    const reconnecting = nextEvent(bus, 'reconnecting');
    server.last.drop();
    await reconnecting;
    const welcome = await withTimeout(bus.connect(), 'connect during reconnect');
    assert.equal(welcome.client_id, server.last.clientId);
    assert.equal(server.connections.length, 2);
  });

  it('treats an unanswered heartbeat ping as a dead connection', async () => {
    const server = new FakeServer();
    const bus = client(server, { heartbeatIntervalMs: 20, requestTimeoutMs: 60 });
    await bus.connect();
    const sub = await bus.join('chat', 'general');
    server.last.answering = false;
    const disconnected = nextEvent(bus, 'disconnected', { ms: 2_000 });
    const recovered = nextEvent(sub, 'recovered', { ms: 2_000 });
    const event = await disconnected;
    assert.match(event.reason, /ping got no reply/);
    assert.equal(server.connections[0]?.socket.closedWith?.code, 4001);
    await recovered;
    assert.equal(server.connections.length, 2);
  });
});

describe('refusals a browser cannot see (no HTTP status)', () => {
  async function readyServer(status: number): Promise<string> {
    const http = createServer((req, res) => {
      res.writeHead(req.url === '/ready' ? status : 404, { 'access-control-allow-origin': '*' });
      res.end('{}');
    });
    httpServers.push(http);
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    return `ws://127.0.0.1:${(http.address() as AddressInfo).port}/`;
  }

  it('stops after refusalThreshold opaque failures while /ready answers 200', async () => {
    const url = await readyServer(200);
    const server = new FakeServer();
    const bus = client(server, { refusalThreshold: 3 }, url);
    await bus.connect();
    for (let i = 0; i < 10; i++) server.admissions.push({ kind: 'fail' });
    const closed = nextEvent(bus, 'closed');
    server.last.drop();
    const event = await closed;
    assert.equal(event.reason, 'refused');
    assert.match(event.message, /3 connection attempts in a row failed before the WebSocket opened/);
    assert.equal(server.attempts.length, 4);
  });

  it('keeps trying while /ready does not answer 200 (server down or draining)', async () => {
    for (const url of [await readyServer(503), 'ws://127.0.0.1:1/']) {
      const server = new FakeServer();
      const bus = client(server, { refusalThreshold: 2 }, url);
      await bus.connect();
      for (let i = 0; i < 5; i++) server.admissions.push({ kind: 'fail' });
      const connected = nextEvent(bus, 'connected');
      server.last.drop();
      await connected;
      assert.equal(server.attempts.length, 7);
      await bus.close();
    }
  });

  it('does not count failures after the socket opened (closed before welcome)', async () => {
    const url = await readyServer(200);
    const server = new FakeServer();
    const bus = client(server, { refusalThreshold: 1, connectTimeoutMs: 30 }, url);
    await bus.connect();
    server.admissions.push({ kind: 'silent' }, { kind: 'silent' });
    const connected = nextEvent(bus, 'connected');
    server.last.drop();
    await connected;
    assert.equal(server.attempts.length, 4);
  });
});

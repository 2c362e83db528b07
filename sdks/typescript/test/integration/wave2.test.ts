/**
 * Wave-2 protocol features (SPEC §14 recovery on join, §15 presence, §16
 * lagged notice) against the real server. Each test first detects whether
 * the server implements the feature and, if not, skips with
 * "server lacks §N" — so they run as soon as the server gains it. With
 * ARQONBUS_REQUIRE_WAVE2=1 a missing feature fails instead.
 */
import assert from 'node:assert/strict';
import { after, describe, it, type TestContext } from 'node:test';

import { ArqonBus, ArqonError, type ArqonBusOptions, type ChannelMessage } from 'arqonbus';

import { startServer, TcpProxy, type ServerProcess } from '../helpers/processes.js';
import { nextEvent, record, required, sleep, until } from '../helpers/wait.js';

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

function client(url: string, options: ArqonBusOptions = {}): ArqonBus {
  const bus = new ArqonBus(url, { reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, requestTimeoutMs: 5_000, ...options });
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

/** Skips (or, with ARQONBUS_REQUIRE_WAVE2=1, fails) a test whose feature the server lacks. */
function lacks(t: TestContext, section: string, evidence: string): void {
  const message = `server lacks ${section}: ${evidence}`;
  if (required('ARQONBUS_REQUIRE_WAVE2')) assert.fail(`${message} (ARQONBUS_REQUIRE_WAVE2=1)`);
  t.skip(message);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

describe('§14 recovery on join', () => {
  it('a re-join is answered with the missed publications', async (t) => {
    const bus = await server();
    const probe = client(bus.url);
    await probe.connect();
    const reply = await probe.joinChannel('w2', 'probe14', { recover: { seq: 0, epoch: 'no-such-epoch' } });
    if (!('recovered' in reply)) {
      lacks(t, '§14', 'join_channel with `recover` has no `recovered` field in its reply');
      return;
    }
    // A position in another epoch cannot be recovered.
    assert.equal(reply.recovered, false);
    assert.deepEqual(reply.publications, []);
    const malformed = await probe.command('join_channel', { room: 'w2', channel: 'probe14', recover: { seq: 'x' } }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(malformed instanceof ArqonError && malformed.errorCode === 'INVALID_ARGUMENT', String(malformed));

    const gate = await proxy(bus.port);
    const subscriber = client(gate.url);
    const publisher = client(bus.url);
    await Promise.all([subscriber.connect(), publisher.connect()]);
    const sub = await subscriber.join<{ n: number }>('w2', 'recover');
    await publisher.join('w2', 'recover');
    const got: ChannelMessage<{ n: number }>[] = [];
    sub.on('message', (m) => got.push(m));
    for (let n = 1; n <= 3; n++) await publisher.publish('w2', 'recover', { n }, { ack: true });
    await until(() => got.length === 3, 'three live messages');
    gate.cut();
    await nextEvent(subscriber, 'disconnected');
    for (let n = 4; n <= 8; n++) await publisher.publish('w2', 'recover', { n }, { ack: true });
    const recovered = nextEvent(sub, 'recovered', { ms: 10_000 });
    gate.restore();
    const event = await recovered;
    assert.equal(event.via, 'server', 'the join reply carried the messages');
    assert.equal(event.fromSeq, 4);
    assert.equal(event.toSeq, 8);
    assert.equal(event.count, 5);
    await until(() => got.length === 8, 'all eight');
    assert.deepEqual(got.map((m) => m.payload.n), range(1, 8));
    assert.deepEqual(got.map((m) => m.replayed), [false, false, false, true, true, true, true, true]);

    // A join from a saved position (e.g. after a reload) recovers too.
    const later = client(bus.url);
    await later.connect();
    const resumed = await later.join('w2', 'recover', { recover: { seq: 6, epoch: event.epoch } });
    assert.deepEqual(resumed.recovery, { room: 'w2', channel: 'recover', via: 'server', fromSeq: 7, toSeq: 8, count: 2, epoch: event.epoch });
  });
});

describe('§15 presence', () => {
  it('members joined with presence see others join and leave; the presence command pages members', async (t) => {
    const bus = await server();
    const watcher = client(bus.url, { screenName: 'watcher' });
    await watcher.connect();
    const probe = await watcher.presence('w2', 'nothing-here').then(
      () => null,
      (e: unknown) => e,
    );
    if (probe instanceof ArqonError && probe.errorCode === 'UNKNOWN_COMMAND') {
      lacks(t, '§15', 'the presence command is UNKNOWN_COMMAND');
      return;
    }
    assert.ok(probe instanceof ArqonError && probe.errorCode === 'CHANNEL_NOT_FOUND', `presence on a missing channel: ${String(probe)}`);

    const sub = await watcher.join('w2', 'lobby', { presence: true });
    const events = record(sub, 'presence');
    const bob = client(bus.url, { screenName: 'bob', clientType: 'service' });
    await bob.connect();
    await bob.join('w2', 'lobby');
    await until(() => events.length === 1, 'bob joined');
    const joined = events[0]!;
    assert.equal(joined.event, 'join');
    assert.equal(joined.client.client_id, bob.clientId);
    assert.equal(joined.client.screen_name, 'bob');
    assert.equal(joined.client.client_type, 'service');
    assert.equal(joined.participantCount, 2);
    assert.equal(joined.envelope.seq, undefined, 'presence events carry no seq');

    const carol = client(bus.url, { screenName: 'carol' });
    await carol.connect();
    await carol.join('w2', 'lobby');
    await until(() => events.length === 2, 'carol joined');

    const all = await watcher.presence('w2', 'lobby');
    assert.equal(all.count, 3);
    assert.deepEqual(all.members.map((m) => m.screen_name).sort(), ['bob', 'carol', 'watcher']);
    assert.equal(all.next_cursor, null);
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 5; page++) {
      const reply: Awaited<ReturnType<ArqonBus['presence']>> = await watcher.presence('w2', 'lobby', cursor === null ? { limit: 1 } : { limit: 1, cursor });
      assert.equal(reply.members.length, 1);
      seen.push(reply.members[0]!.client_id);
      cursor = reply.next_cursor;
      if (cursor === null) break;
    }
    assert.deepEqual([...seen].sort(), all.members.map((m) => m.client_id).sort(), 'paging visits every member once');
    const invalid = await watcher.presence('w2', 'lobby', { limit: 0 }).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(invalid instanceof ArqonError && invalid.errorCode === 'INVALID_ARGUMENT', String(invalid));

    await bob.leaveChannel('w2', 'lobby');
    await until(() => events.length === 3, 'bob left');
    assert.deepEqual([events[2]!.event, events[2]!.client.client_id, events[2]!.participantCount], ['leave', bob.clientId, 2]);
    const carolId = carol.clientId;
    await carol.close(); // a disconnect is a leave too
    await until(() => events.length === 4, 'carol disconnected');
    assert.deepEqual([events[3]!.event, events[3]!.client.client_id, events[3]!.participantCount], ['leave', carolId, 1]);

    // Joining again without presence turns the events off.
    await watcher.join('w2', 'lobby', { presence: false });
    const dave = client(bus.url);
    await dave.connect();
    await dave.join('w2', 'lobby');
    await sleep(300);
    assert.equal(events.length, 4, 'no presence event after turning it off');
  });
});

describe('§16 lagged notice', () => {
  it('a slow subscriber is told what it lost, and the SDK refills it from history', async (t) => {
    const bus = await server({
      env: {
        ARQONBUS_SLOW_CONSUMER: 'drop',
        ARQONBUS_CLIENT_QUEUE_BYTES: '32768',
        // History must keep everything so the refill can find it.
        ARQONBUS_HISTORY_SIZE: '5000',
        ARQONBUS_HISTORY_MAX_BYTES: '134217728',
      },
    });
    const gate = await proxy(bus.port);
    const slow = client(gate.url, { refillOnLag: true, heartbeatIntervalMs: 0 });
    const publisher = client(bus.url);
    await Promise.all([slow.connect(), publisher.connect()]);
    const sub = await slow.join<{ n: number }>('w2', 'lag');
    await publisher.join('w2', 'lag');
    const seqs: number[] = [];
    sub.on('message', (m) => seqs.push(m.seq ?? -1));
    const lagged = record(sub, 'lagged');
    const notices = record(slow, 'lagged');

    gate.pause();
    const total = 2_000;
    const filler = 'x'.repeat(10_000);
    for (let from = 1; from <= total; from += 100) {
      const batch = [];
      for (let n = from; n < from + 100; n++) batch.push(publisher.publish('w2', 'lag', { n, filler }, { ack: true }));
      await Promise.all(batch);
    }
    const status = await publisher.status();
    assert.ok(status.messages.dropped > 0, `the test did not make the server drop anything (status: ${JSON.stringify(status.messages)})`);
    gate.resume();

    const deadline = Date.now() + 5_000;
    while (lagged.length === 0 && Date.now() < deadline) await sleep(50);
    if (lagged.length === 0) {
      lacks(t, '§16', `${status.messages.dropped} messages were dropped for a slow consumer and no lagged notice arrived within 5 s`);
      return;
    }
    const event = lagged[0]!;
    assert.equal(event.source, 'server');
    assert.ok(event.dropped > 0);
    assert.ok(event.firstDroppedSeq !== null && event.firstDroppedSeq >= 1);
    assert.equal(event.refilling, true);
    assert.ok(notices[0]?.channels.some((c) => c.room === 'w2' && c.channel === 'lag' && c.dropped > 0));
    const reported = lagged.filter((e) => e.source === 'server').reduce((sum, e) => sum + e.dropped, 0);
    assert.ok(reported <= status.messages.dropped + total, 'dropped counts are plausible');

    await until(() => new Set(seqs).size === total, `all ${total} messages after the refill`, 15_000);
    assert.equal(seqs.length, total, 'none twice');
    assert.deepEqual([...seqs].sort((a, b) => a - b), range(1, total));
  });
});

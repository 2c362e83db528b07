/** Subscriptions against the fake server: delivery, iteration, bounded buffers, presence, lag. */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';

import { ArqonBus, type ArqonBusOptions, type ChannelMessage, type LaggedEvent } from 'arqonbus';

import { FakeServer } from '../helpers/fake-server.js';
import { nextEvent, record, take, until, withTimeout } from '../helpers/wait.js';

const clients: ArqonBus[] = [];

async function connected(server: FakeServer, options: ArqonBusOptions = {}): Promise<ArqonBus> {
  const bus = new ArqonBus('ws://bus.test:9100/', { WebSocket: server.WebSocket, heartbeatIntervalMs: 0, ...options });
  clients.push(bus);
  await bus.connect();
  return bus;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((bus) => bus.close()));
});

function dropped(events: LaggedEvent[]): number {
  return events.reduce((sum, e) => sum + e.dropped, 0);
}

function seqs(messages: ChannelMessage[]): number[] {
  return messages.map((m) => m.seq ?? -1);
}

describe('delivery', () => {
  it('builds messages from channel envelopes', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join<{ text: string }>('chat', 'general');
    const next = nextEvent(sub, 'message');
    const sent = server.publish('chat', 'general', { text: 'hello' }, { sender: 'arq_client_ada' });
    const message = await next;
    assert.equal(message.id, sent.id);
    assert.equal(message.type, 'message');
    assert.equal(message.room, 'chat');
    assert.equal(message.channel, 'general');
    assert.equal(message.sender, 'arq_client_ada');
    assert.equal(message.payload.text, 'hello');
    assert.equal(message.seq, 1);
    assert.equal(message.epoch, sent.epoch);
    assert.equal(message.replayed, false);
    assert.deepEqual(message.envelope, sent);
  });

  it('drops a live message whose seq was already delivered', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    const got = record(sub, 'message');
    const first = server.publish('chat', 'general', { n: 1 });
    server.last.deliver(first); // a duplicate
    server.publish('chat', 'general', { n: 2 });
    await until(() => got.length >= 2, 'two messages');
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seqs(got), [1, 2]);
  });

  it('keeps messages that arrive before any consumer and hands them to the first', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    server.publish('chat', 'general', { n: 1 });
    server.publish('chat', 'general', { n: 2 });
    await until(() => sub.position?.seq === 2, 'two messages arrived');
    const iterator = sub.messages();
    server.publish('chat', 'general', { n: 3 });
    assert.deepEqual(seqs(await take(iterator, 3)), [1, 2, 3]);
  });

  it('bounds that backlog and reports what it dropped', async () => {
    const server = new FakeServer();
    const bus = await connected(server, { subscriptionBufferSize: 3 });
    const sub = await bus.join('chat', 'general');
    const lagged = record(sub, 'lagged');
    for (let i = 1; i <= 5; i++) server.publish('chat', 'general', { n: i });
    await until(() => dropped(lagged) === 2, 'two drops reported');
    assert.ok(lagged.every((e) => e.source === 'client' && !e.refilling));
    assert.equal(lagged[0]?.firstDroppedSeq, 1);
    assert.deepEqual(seqs(await take(sub.messages(), 3)), [3, 4, 5]);
  });

  it('returns the same subscription for a repeated join; a presence change re-sends the join', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const [a, b] = await Promise.all([bus.join('chat', 'general'), bus.join('chat', 'general')]);
    assert.equal(a, b);
    assert.equal(server.last.received.filter((e) => e.command === 'join_channel').length, 1);
    const c = await bus.join('chat', 'general', { presence: true });
    assert.equal(c, a);
    assert.equal(c.presence, true);
    const joins = server.last.received.filter((e) => e.command === 'join_channel');
    assert.deepEqual(joins.at(-1)?.args, { room: 'chat', channel: 'general', presence: true });
    assert.deepEqual(bus.subscriptions(), [a]);
  });
});

describe('async iteration', () => {
  it('yields messages in order and finishes when the subscription is left', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    for (let i = 1; i <= 3; i++) server.publish('chat', 'general', { n: i });
    const seen: number[] = [];
    const loop = (async () => {
      for await (const message of sub) {
        seen.push(message.seq ?? -1);
        if (seen.length === 3) void sub.leave();
      }
      return 'finished';
    })();
    assert.equal(await withTimeout(loop, 'the loop to finish'), 'finished');
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(sub.state, 'ended');
    assert.equal(sub.endReason?.reason, 'left');
    assert.deepEqual(server.last.received.at(-1)?.command, 'leave_channel');
  });

  it('gives every iterator every message; breaking out detaches only that one', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    const one = sub.messages();
    const two = sub.messages();
    server.publish('chat', 'general', { n: 1 });
    assert.deepEqual(seqs(await take(one, 1)), [1]);
    assert.deepEqual(seqs(await take(two, 1)), [1]);
    await one.return?.();
    server.publish('chat', 'general', { n: 2 });
    assert.deepEqual(seqs(await take(two, 1)), [2]);
    assert.deepEqual(await one.next(), { value: undefined, done: true });
  });

  it('drops the oldest messages of a slow iterator and says so', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    const iterator = sub.messages({ bufferSize: 2 });
    const lagged = record(sub, 'lagged');
    for (let i = 1; i <= 6; i++) server.publish('chat', 'general', { n: i });
    await until(() => dropped(lagged) === 4, 'four drops reported');
    assert.ok(lagged.every((e) => e.source === 'client'));
    assert.equal(lagged[0]?.firstDroppedSeq, 1);
    assert.deepEqual(seqs(await take(iterator, 2)), [5, 6]);
    assert.throws(() => sub.messages({ bufferSize: 0 }), RangeError);
  });

  it('finishes when the client closes', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general');
    const iterator = sub.messages();
    const pending = iterator.next();
    await bus.close();
    assert.deepEqual(await withTimeout(pending, 'the iterator to finish'), { value: undefined, done: true });
  });
});

describe('server notices', () => {
  it('emits §15 presence events', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('chat', 'general', { presence: true });
    assert.deepEqual(server.last.received.at(-1)?.args, { room: 'chat', channel: 'general', presence: true });
    const messages = record(sub, 'message'); // presence must not be a message
    const presence = record(sub, 'presence');
    for (const event of ['join', 'leave'] as const) {
      server.last.deliver({
        id: `arq_p_${event}`,
        type: 'system',
        sender: 'arqonbus',
        room: 'chat',
        channel: 'general',
        payload: { event, client: { client_id: 'arq_client_bob', client_type: 'human', screen_name: 'Bob' }, participant_count: event === 'join' ? 2 : 1 },
      });
    }
    await until(() => presence.length === 2, 'two presence events');
    assert.deepEqual(
      presence.map((p) => [p.event, p.client.client_id, p.client.screen_name, p.participantCount, p.room, p.channel]),
      [
        ['join', 'arq_client_bob', 'Bob', 2, 'chat', 'general'],
        ['leave', 'arq_client_bob', 'Bob', 1, 'chat', 'general'],
      ],
    );
    assert.equal(messages.length, 0);
  });

  it('emits §16 lagged on each affected subscription and on the client', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const a = await bus.join('chat', 'a');
    const b = await bus.join('chat', 'b');
    const lagged = nextEvent(a, 'lagged');
    const notice = nextEvent(bus, 'lagged');
    const bLagged = record(b, 'lagged');
    server.last.deliver({
      id: 'arq_lag',
      type: 'system',
      sender: 'arqonbus',
      payload: { event: 'lagged', dropped: 7, channels: [{ room: 'chat', channel: 'a', dropped: 7, first_dropped_seq: 3 }] },
    });
    const event = await lagged;
    assert.deepEqual(event, { room: 'chat', channel: 'a', source: 'server', dropped: 7, firstDroppedSeq: 3, refilling: false });
    const whole = await notice;
    assert.equal(whole.dropped, 7);
    assert.deepEqual(whole.channels, [{ room: 'chat', channel: 'a', dropped: 7, first_dropped_seq: 3 }]);
    assert.equal(bLagged.length, 0);
  });

  it('with refillOnLag, fetches the dropped messages and delivers each once', async () => {
    const server = new FakeServer();
    const bus = await connected(server, { refillOnLag: true });
    const sub = await bus.join('chat', 'general');
    const got = record(sub, 'message');
    // seq 1-2 delivered, 3-5 dropped for this client, 6 delivered, then the notice.
    const conn = server.last;
    for (let i = 1; i <= 6; i++) server.publish('chat', 'general', { n: i }, { deliverTo: () => i <= 2 || i === 6 });
    conn.deliver({
      id: 'arq_lag',
      type: 'system',
      sender: 'arqonbus',
      payload: { event: 'lagged', dropped: 3, channels: [{ room: 'chat', channel: 'general', dropped: 3, first_dropped_seq: 3 }] },
    });
    const lagged = await nextEvent(sub, 'lagged');
    assert.equal(lagged.refilling, true);
    await until(() => got.length === 6, 'six messages');
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seqs(got), [1, 2, 6, 3, 4, 5]);
    assert.deepEqual(got.map((m) => m.replayed), [false, false, false, true, true, true]);
    const history = conn.received.filter((e) => e.command === 'history');
    // Pages of up to 1000, until the channel's last seq (dropped tail messages
    // were never seen live).
    assert.deepEqual(history.map((e) => [e.args?.['after_seq'], e.args?.['limit']]), [[2, 1000]]);
  });

  it('a notice that arrives during a refill gets its own refill pass', async () => {
    const server = new FakeServer();
    const bus = await connected(server, { refillOnLag: true });
    const sub = await bus.join('chat', 'general');
    const got = record(sub, 'message');
    const conn = server.last;
    const notice = (first: number): void =>
      conn.deliver({
        id: `arq_lag_${first}`,
        type: 'system',
        sender: 'arqonbus',
        payload: { event: 'lagged', dropped: 2, channels: [{ room: 'chat', channel: 'general', dropped: 2, first_dropped_seq: first }] },
      });
    // Delivered: 1 and 4; dropped: 2-3. The first refill aims at seq 4.
    for (let i = 1; i <= 4; i++) server.publish('chat', 'general', { n: i }, { deliverTo: () => i === 1 || i === 4 });
    // While it runs, 5-6 are dropped too, 7 is delivered, and a second notice comes.
    const history = server.handlers.get('history')!;
    let calls = 0;
    server.handlers.set('history', (args, c, envelope) => {
      calls += 1;
      if (calls === 1) {
        for (let i = 5; i <= 7; i++) server.publish('chat', 'general', { n: i }, { deliverTo: () => i === 7 });
        notice(5);
      }
      return history(args, c, envelope);
    });
    notice(2);
    await until(() => got.length === 7, 'all seven');
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual([...seqs(got)].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(got.length, 7, 'none twice');
    const refills = conn.received.filter((e) => e.command === 'history').map((e) => [e.args?.['after_seq'], e.args?.['limit']]);
    assert.deepEqual(refills, [
      [1, 1000],
      [4, 1000],
    ]);
  });

  it('ends the subscription when its channel is deleted', async () => {
    const server = new FakeServer();
    const bus = await connected(server);
    const sub = await bus.join('lab', 'one');
    const removed = nextEvent(sub, 'removed');
    const iterator = sub.messages();
    server.last.deliver({
      id: 'arq_del',
      type: 'system',
      sender: 'arqonbus',
      room: 'lab',
      channel: 'one',
      payload: { event: 'channel_deleted', room: 'lab', channel: 'one', message: 'channel lab:one was deleted; you are no longer subscribed' },
    });
    const event = await removed;
    assert.equal(event.reason, 'channel-deleted');
    assert.match(event.message, /was deleted/);
    assert.deepEqual(await withTimeout(iterator.next(), 'iterator end'), { value: undefined, done: true });
    assert.equal(bus.subscription('lab', 'one'), undefined);
  });
});

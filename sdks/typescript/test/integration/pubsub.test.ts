/** Publish/subscribe between SDK clients through the real server. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { ArqonBus, type ArqonBusOptions } from 'arqonbus';

import { startServer, type ServerProcess } from '../helpers/processes.js';
import { collectUntil, nextEvent, take } from '../helpers/wait.js';

let server: ServerProcess;
const clients: ArqonBus[] = [];

async function connect(options: ArqonBusOptions = {}): Promise<ArqonBus> {
  const bus = new ArqonBus(server.url, options);
  clients.push(bus);
  await bus.connect();
  return bus;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  await Promise.all(clients.map((bus) => bus.close()));
  await server?.stop();
});

describe('publish / subscribe', () => {
  it('every subscriber gets every message once, in seq order; the sender does not', async () => {
    const publisher = await connect({ screenName: 'pub' });
    const subscribers = await Promise.all([connect(), connect(), connect()]);
    const subs = await Promise.all(subscribers.map((bus) => bus.join<{ n: number }>('pubsub', 'fanout')));
    const own = await publisher.join<{ n: number }>('pubsub', 'fanout');
    const ownMessages: unknown[] = [];
    own.on('message', (m) => ownMessages.push(m));
    const collectors = subs.map((sub) => collectUntil(sub, (m) => m.length >= 200, '200 messages'));
    const acks = [];
    for (let n = 1; n <= 200; n++) acks.push(publisher.publish('pubsub', 'fanout', { n }, { ack: n % 50 === 0 }));
    const settled = await Promise.all(acks);
    assert.deepEqual(settled[49], { delivered: 3, seq: 50, stored: true });
    for (const collector of collectors) {
      const messages = await collector.finished;
      assert.deepEqual(messages.map((m) => m.payload.n), Array.from({ length: 200 }, (_, i) => i + 1));
      assert.deepEqual(messages.map((m) => m.seq), Array.from({ length: 200 }, (_, i) => i + 1));
      assert.ok(messages.every((m) => m.sender === publisher.clientId && m.replayed === false));
      assert.equal(new Set(messages.map((m) => m.epoch)).size, 1);
    }
    assert.equal(ownMessages.length, 0);
    assert.deepEqual(own.position, { seq: 0, epoch: own.joinReply?.epoch }, 'the sender saw nothing of its own');
  });

  it('echo delivers the message to its sender too; metadata is relayed', async () => {
    const bus = await connect();
    const sub = await bus.join('pubsub', 'echo');
    const next = nextEvent(sub, 'message');
    await bus.publish('pubsub', 'echo', { text: 'me' }, { echo: true, metadata: { trace: 'abc' } });
    const message = await next;
    assert.equal(message.sender, bus.clientId);
    assert.deepEqual(message.payload, { text: 'me' });
    assert.deepEqual(message.metadata, { trace: 'abc', echo: true });
  });

  it('async iteration with for await', async () => {
    const a = await connect();
    const b = await connect();
    const sub = await b.join<{ word: string }>('pubsub', 'iterate');
    await a.join('pubsub', 'iterate');
    for (const word of ['one', 'two', 'three']) await a.publish('pubsub', 'iterate', { word });
    const words: string[] = [];
    const iterator = sub[Symbol.asyncIterator]();
    for (const message of await take(iterator, 3)) words.push(message.payload.word);
    await iterator.return?.();
    assert.deepEqual(words, ['one', 'two', 'three']);
  });

  it('leave() ends the subscription and stops delivery', async () => {
    const a = await connect();
    const b = await connect();
    const sub = await b.join('pubsub', 'leaving');
    await a.join('pubsub', 'leaving');
    const removed = nextEvent(sub, 'removed');
    await sub.leave();
    assert.equal((await removed).reason, 'left');
    const ack = await a.publish('pubsub', 'leaving', {}, { ack: true });
    assert.equal(ack.delivered, 0);
    const info = await a.channelInfo('pubsub', 'leaving');
    assert.equal(info.participant_count, 1);
  });

  it('close() completes the closing handshake (Close 1000 answered)', async () => {
    const bus = await connect();
    await bus.join('pubsub', 'closing');
    const closed = nextEvent(bus, 'closed');
    await bus.close();
    const event = await closed;
    assert.deepEqual([event.reason, event.code, event.wasClean], ['client', 1000, true]);
    assert.equal(bus.state, 'closed');
  });

  it('a position from one session recovers the messages missed before the next', async () => {
    const a = await connect();
    const first = await connect();
    const sub = await first.join('pubsub', 'resume');
    await a.join('pubsub', 'resume');
    await a.publish('pubsub', 'resume', { n: 1 }, { ack: true });
    await nextEvent(sub, 'message', { predicate: (m) => m.seq === 1 });
    const position = sub.position!;
    await first.close();
    for (let n = 2; n <= 4; n++) await a.publish('pubsub', 'resume', { n }, { ack: true });
    const second = await connect();
    const resumed = await second.join('pubsub', 'resume', { recover: position });
    assert.equal(resumed.recovery && 'via' in resumed.recovery, true, JSON.stringify(resumed.recovery));
    const got = collectUntil(resumed, (m) => m.length >= 3, 'the three missed messages');
    assert.deepEqual((await got.finished).map((m) => [m.seq, m.replayed]), [
      [2, true],
      [3, true],
      [4, true],
    ]);
  });
});

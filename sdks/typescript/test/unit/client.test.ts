/** The client against the in-process fake server: requests, replies, errors, connection states. */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';

import { ArqonBus, ArqonConnectionError, ArqonError, ArqonTimeoutError, type ArqonBusOptions } from 'arqonbus';

import { FakeServer } from '../helpers/fake-server.js';
import { nextEvent, record, until, withTimeout } from '../helpers/wait.js';

const clients: ArqonBus[] = [];

function client(server: FakeServer, options: ArqonBusOptions = {}): ArqonBus {
  const bus = new ArqonBus('ws://bus.test:9100/', { WebSocket: server.WebSocket, heartbeatIntervalMs: 0, ...options });
  clients.push(bus);
  return bus;
}

afterEach(async () => {
  await Promise.all(clients.splice(0).map((bus) => bus.close()));
});

describe('connecting', () => {
  it('sends identity and token as query parameters and resolves with the welcome', async () => {
    const server = new FakeServer();
    const bus = client(server, { clientType: 'ai-agent', screenName: 'Ada Lovelace', avatar: 'a.png', personality: 'curious', token: 't0k&n' });
    const states = record(bus, 'state');
    const welcome = await withTimeout(bus.connect(), 'connect');
    assert.equal(welcome.client_id, server.last.clientId);
    assert.equal(welcome.limits.max_message_size, 65536);
    assert.equal(bus.clientId, server.last.clientId);
    assert.equal(bus.state, 'connected');
    const query = server.attempts[0]?.searchParams;
    assert.equal(query?.get('client_type'), 'ai-agent');
    assert.equal(query?.get('screen_name'), 'Ada Lovelace');
    assert.equal(query?.get('avatar'), 'a.png');
    assert.equal(query?.get('personality'), 'curious');
    assert.equal(query?.get('token'), 't0k&n');
    assert.deepEqual(states.map((s) => s.state), ['connecting', 'connected']);
    // connect() again while connected resolves at once with the same welcome.
    assert.equal(await bus.connect(), welcome);
  });

  it('handles frames that arrive in the same read as the welcome', async () => {
    const server = new FakeServer();
    server.afterWelcome.push({ id: 'arq_early', type: 'message', sender: 'arq_client_peer', payload: { early: true } });
    const bus = client(server);
    const direct = nextEvent(bus, 'direct');
    await bus.connect();
    assert.deepEqual((await direct).payload, { early: true });
  });

  it('asks getToken for the token before connecting', async () => {
    const server = new FakeServer();
    let calls = 0;
    const bus = client(server, { token: 'static', getToken: async () => `fresh-${++calls}` });
    await withTimeout(bus.connect(), 'connect');
    assert.equal(calls, 1);
    assert.equal(server.attempts[0]?.searchParams.get('token'), 'fresh-1');
  });

  it('rejects with kind "refused" and the HTTP status on 401, and is closed', async () => {
    const server = new FakeServer();
    server.admissions.push({ kind: 'refuse', status: 401 });
    const bus = client(server);
    const closed = nextEvent(bus, 'closed');
    const error = await bus.connect().then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ArqonConnectionError);
    assert.equal(error.kind, 'refused');
    assert.equal(error.httpStatus, 401);
    const event = await closed;
    assert.equal(event.reason, 'refused');
    assert.equal(event.httpStatus, 401);
    assert.equal(bus.state, 'closed');
  });

  it('rejects with kind "connect-failed" when the first attempt fails, without retrying', async () => {
    const server = new FakeServer();
    server.admissions.push({ kind: 'refuse', status: 503 });
    const bus = client(server);
    await assert.rejects(bus.connect(), (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'connect-failed' && e.httpStatus === 503);
    assert.equal(server.attempts.length, 1);
    // And it can be connected again afterwards.
    await withTimeout(bus.connect(), 'second connect');
    assert.equal(bus.state, 'connected');
  });

  it('fails an attempt that gets no welcome within connectTimeoutMs', async () => {
    const server = new FakeServer();
    server.admissions.push({ kind: 'silent' });
    const bus = client(server, { connectTimeoutMs: 50 });
    await assert.rejects(bus.connect(), /no welcome frame within 50 ms/);
  });

  it('refuses requests while not connected', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await assert.rejects(bus.ping(), (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'not-connected');
    await assert.rejects(bus.join('a', 'b'), (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'not-connected');
    await assert.rejects(bus.publish('a', 'b', {}), (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'not-connected');
  });

  it('close() during connect() rejects the connect with kind "closed"', async () => {
    const server = new FakeServer();
    server.admissions.push({ kind: 'silent' });
    const bus = client(server, { connectTimeoutMs: 5_000 });
    const connecting = bus.connect();
    await new Promise((r) => setTimeout(r, 10));
    const closed = nextEvent(bus, 'closed');
    await bus.close();
    await assert.rejects(connecting, (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'closed');
    assert.equal((await closed).reason, 'client');
  });
});

describe('requests', () => {
  it('matches replies to requests by id and types the payload', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const [pong, joined] = await Promise.all([bus.ping(), bus.joinChannel('lab', 'one')]);
    assert.equal(pong.pong, true);
    assert.equal(joined.room, 'lab');
    assert.equal(joined.seq, 0);
    const sent = server.last.received.filter((e) => e.type === 'command');
    assert.deepEqual(sent.map((e) => e.command), ['ping', 'join_channel']);
    for (const e of sent) {
      assert.match(e.id, /^arq_[A-Za-z0-9_.:-]{1,124}$/);
      assert.equal(e.version, '1.0');
      assert.ok(!Number.isNaN(Date.parse(e.timestamp)));
    }
    assert.notEqual(sent[0]?.id, sent[1]?.id);
  });

  it('rejects with ArqonError carrying code, errorCode, details and requestId', async () => {
    const server = new FakeServer();
    server.handlers.set('channel_info', () => ({ error: 'CHANNEL_NOT_FOUND', code: 404 }));
    const bus = client(server);
    await bus.connect();
    const error = await bus.channelInfo('no', 'such').then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ArqonError);
    assert.equal(error.errorCode, 'CHANNEL_NOT_FOUND');
    assert.equal(error.code, 404);
    assert.deepEqual(error.details, []);
    assert.equal(error.command, 'channel_info');
    assert.equal(error.requestId, server.last.received.at(-1)?.id);
  });

  it('reads details and retry_after_ms from the error payload', () => {
    const error = new ArqonError({
      version: '1.0',
      id: 'arq_x',
      type: 'error',
      timestamp: '2026-01-01T00:00:00.000Z',
      request_id: 'arq_y',
      error_code: 'RATE_LIMITED',
      error: 'slow down',
      payload: { code: 429, retry_after_ms: 250, details: [{ field: 'rate', message: 'too fast' }, 'junk'] },
    });
    assert.equal(error.message, 'RATE_LIMITED: slow down');
    assert.equal(error.retryAfterMs, 250);
    assert.deepEqual(error.details, [{ field: 'rate', message: 'too fast' }]);
    assert.equal(error.requestId, 'arq_y');
    assert.equal(error.name, 'ArqonError');
  });

  it('times out with ArqonTimeoutError and ignores the late reply', async () => {
    const server = new FakeServer();
    const bus = client(server, { requestTimeoutMs: 5_000 });
    await bus.connect();
    server.last.answering = false;
    const error = await bus.status({ timeoutMs: 30 }).then(
      () => assert.fail('resolved'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ArqonTimeoutError);
    assert.equal(error.operation, 'status');
    assert.equal(error.timeoutMs, 30);
    // The connection is still usable.
    server.last.answering = true;
    assert.equal((await bus.ping()).pong, true);
  });

  it('stops waiting when the AbortSignal fires', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    server.last.answering = false;
    const controller = new AbortController();
    const pending = bus.ping({ signal: controller.signal });
    controller.abort(new Error('user gave up'));
    await assert.rejects(pending, /user gave up/);
    await assert.rejects(bus.ping({ signal: controller.signal }), /user gave up/);
  });

  it('rejects pending requests with "connection-lost" when the connection drops', async () => {
    const server = new FakeServer();
    const bus = client(server, { reconnect: false });
    await bus.connect();
    server.last.answering = false;
    const pending = bus.status();
    await new Promise((r) => setTimeout(r, 5));
    server.last.drop(1011, 'internal error');
    await assert.rejects(pending, (e: unknown) => e instanceof ArqonConnectionError && e.kind === 'connection-lost' && e.closeCode === 1011);
  });

  it('refuses a frame larger than the announced max_message_size', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await bus.join('lab', 'big');
    await assert.rejects(bus.publish('lab', 'big', { blob: 'x'.repeat(70_000) }), RangeError);
    // Multi-byte characters count as bytes, not UTF-16 units.
    await assert.rejects(bus.publish('lab', 'big', { blob: '€'.repeat(22_000) }), RangeError);
  });

  it('validates names and payloads before sending', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await assert.rejects(bus.history('bad room', 'x'), TypeError);
    await assert.rejects(bus.join('r', 'c'.repeat(65)), TypeError);
    await assert.rejects(bus.publish('r', 'c', [] as unknown as object), TypeError);
    await assert.rejects(bus.send('', {}), TypeError);
    await assert.rejects(bus.join('r', 'c', { recover: { seq: -1, epoch: 'e' } }), TypeError);
    assert.equal(server.last.received.length, 0);
  });

  it('passes command arguments as documented', async () => {
    const server = new FakeServer();
    const seen: Record<string, unknown>[] = [];
    for (const name of ['history', 'create_channel', 'delete_channel', 'list_channels', 'presence', 'identify', 'custom']) {
      server.handlers.set(name, (args) => {
        seen.push({ name, ...args });
        return {};
      });
    }
    const bus = client(server);
    await bus.connect();
    await bus.history('r', 'c', { limit: 10, afterSeq: 5, since: 's', until: 'u' });
    await bus.createChannel('r', 'c', { description: 'd', metadata: { team: 'x' } });
    await bus.deleteChannel('r', 'c', { force: true });
    await bus.listChannels({ room: 'r', limit: 2, cursor: 'k' });
    await bus.presence('r', 'c', { limit: 3, cursor: 'p' });
    await bus.identify({ screenName: 'new name', clientType: 'service' });
    await bus.command('custom', { any: 1 });
    assert.deepEqual(seen, [
      { name: 'history', room: 'r', channel: 'c', limit: 10, after_seq: 5, since: 's', until: 'u' },
      { name: 'create_channel', room: 'r', channel: 'c', description: 'd', metadata: { team: 'x' } },
      { name: 'delete_channel', room: 'r', channel: 'c', force: true },
      { name: 'list_channels', room: 'r', limit: 2, cursor: 'k' },
      { name: 'presence', room: 'r', channel: 'c', limit: 3, cursor: 'p' },
      { name: 'identify', screen_name: 'new name', client_type: 'service' },
      { name: 'custom', any: 1 },
    ]);
  });

  it('keeps the identity set by identify() for reconnections', async () => {
    const server = new FakeServer();
    server.handlers.set('identify', () => ({}));
    const bus = client(server, { screenName: 'old', reconnect: { initialDelayMs: 1, maxDelayMs: 1 } });
    await bus.connect();
    await bus.identify({ screenName: 'new' });
    const reconnected = nextEvent(bus, 'connected');
    server.last.drop();
    await reconnected;
    assert.equal(server.attempts[1]?.searchParams.get('screen_name'), 'new');
  });
});

describe('messages', () => {
  it('publishes with ack and resolves with the acknowledgement', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await bus.join('chat', 'general');
    const ack = await bus.publish('chat', 'general', { text: 'hi' }, { ack: true, metadata: { tag: 1 } });
    assert.deepEqual(ack, { delivered: 1, seq: 1, stored: true });
    const sent = server.last.received.at(-1);
    assert.equal(sent?.type, 'message');
    assert.equal(sent?.ack, true);
    assert.deepEqual(sent?.metadata, { tag: 1 });
    assert.deepEqual(sent?.payload, { text: 'hi' });
  });

  it('publishes without ack; a refusal arrives as serverError', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const errors = nextEvent(bus, 'serverError');
    const result = await bus.publish('chat', 'notjoined', { text: 'hi' });
    assert.equal(result, undefined);
    const error = await errors;
    assert.equal(error.errorCode, 'NOT_SUBSCRIBED');
    assert.equal(error.code, 403);
    assert.equal(error.requestId, server.last.received.at(-1)?.id);
  });

  it('rejects an acked publish with the server error', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await assert.rejects(bus.publish('chat', 'notjoined', {}, { ack: true }), (e: unknown) => e instanceof ArqonError && e.errorCode === 'NOT_SUBSCRIBED');
  });

  it('echo sets metadata.echo', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await bus.join('chat', 'echo');
    await bus.publish('chat', 'echo', {}, { echo: true, ack: true });
    assert.deepEqual(server.last.received.at(-1)?.metadata, { echo: true });
  });

  it('sends direct messages and emits received ones as "direct"', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const direct = nextEvent(bus, 'direct');
    server.last.deliver({ id: 'arq_d1', type: 'message', sender: 'arq_client_peer', to_client: server.last.clientId, payload: { text: 'psst' } });
    const message = await direct;
    assert.equal(message.sender, 'arq_client_peer');
    assert.deepEqual(message.payload, { text: 'psst' });
    await bus.send('arq_client_peer', { text: 'back' });
    await until(() => server.last.received.length > 0, 'the server got the direct message');
    const sent = server.last.received.at(-1);
    assert.equal(sent?.to_client, 'arq_client_peer');
    assert.equal(sent?.room, undefined);
  });

  it('routes another client\'s response to us as a direct message, not a reply', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const direct = nextEvent(bus, 'direct');
    server.last.deliver({ id: 'arq_a1', type: 'response', sender: 'arq_client_peer', request_id: 'arq_q1', payload: { answer: 42 } });
    const message = await direct;
    assert.equal(message.type, 'response');
    assert.equal(message.requestId, 'arq_q1');
  });

  it('emits messages of raw joinChannel channels as "message"', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    await bus.joinChannel('raw', 'one');
    const message = nextEvent(bus, 'message');
    server.publish('raw', 'one', { n: 1 });
    const m = await message;
    assert.equal(m.room, 'raw');
    assert.equal(m.seq, 1);
    assert.equal(m.replayed, false);
  });

  it('emits system envelopes and ignores frames that are not envelopes', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const system = nextEvent(bus, 'system');
    server.last.socket.serverSend('not json');
    server.last.socket.serverSend('[1,2]');
    server.last.deliver({ id: 'arq_s', type: 'system', sender: 'arqonbus', payload: { event: 'maintenance' } });
    assert.deepEqual((await system).payload, { event: 'maintenance' });
  });
});

describe('close()', () => {
  it('sends Close 1000, ends subscriptions, rejects pending requests, emits closed', async () => {
    const server = new FakeServer();
    const bus = client(server);
    await bus.connect();
    const sub = await bus.join('a', 'b');
    const removed = nextEvent(sub, 'removed');
    server.last.answering = false;
    const pending = bus.status().then(
      () => 'resolved',
      (e: unknown) => e,
    );
    const closed = nextEvent(bus, 'closed');
    await bus.close();
    const error = await pending;
    assert.ok(error instanceof ArqonConnectionError && error.kind === 'closed', String(error));
    const event = await closed;
    assert.equal(event.reason, 'client');
    assert.equal(event.code, 1000);
    assert.equal(event.wasClean, true);
    assert.equal((await removed).reason, 'closed');
    assert.equal(sub.state, 'ended');
    assert.deepEqual(server.last.socket.closedWith, { code: 1000, reason: 'client closed' });
    assert.equal(bus.state, 'closed');
    // Idempotent.
    await bus.close();
  });
});

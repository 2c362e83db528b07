/** Every command, typed replies and errors, against the real arqonbus-server. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { ArqonBus, ArqonConnectionError, ArqonError, type ArqonBusOptions } from 'arqonbus';

import { startServer, type ServerProcess } from '../helpers/processes.js';
import { nextEvent, until } from '../helpers/wait.js';

let server: ServerProcess;
const clients: ArqonBus[] = [];

async function connect(options: ArqonBusOptions = {}, url = server.url): Promise<ArqonBus> {
  const bus = new ArqonBus(url, { requestTimeoutMs: 5_000, ...options });
  clients.push(bus);
  await bus.connect();
  return bus;
}

async function rejection(promise: Promise<unknown>): Promise<ArqonError> {
  const error = await promise.then(
    () => assert.fail('expected a server error'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ArqonError, `expected ArqonError, got ${String(error)}`);
  return error;
}

before(async () => {
  server = await startServer();
});

after(async () => {
  await Promise.all(clients.map((bus) => bus.close()));
  await server?.stop();
});

describe('commands (SPEC §5)', () => {
  it('ping', async () => {
    const bus = await connect();
    const pong = await bus.ping();
    assert.equal(pong.pong, true);
    assert.match(pong.server_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('welcome: client id and limits', async () => {
    const bus = await connect();
    assert.match(bus.clientId ?? '', /^arq_client_[0-9a-f]{32}$/);
    assert.equal(bus.welcome?.protocol, '1.0');
    assert.ok((bus.welcome?.limits.max_message_size ?? 0) > 0);
  });

  it('status', async () => {
    const bus = await connect({ clientType: 'service' });
    const status = await bus.status();
    assert.equal(status.server.protocol, '1.0');
    assert.equal(typeof status.server.uptime_seconds, 'number');
    assert.ok(status.clients.active >= 1);
    assert.ok((status.clients.by_type['service'] ?? 0) >= 1);
    assert.equal(status.storage.backend, 'memory');
    assert.equal(typeof status.messages.received, 'number');
    assert.equal(typeof status.participants.truncated, 'boolean');
  });

  it('identify, and the identity query parameters', async () => {
    const bus = await connect({ clientType: 'ai-agent', screenName: 'Ada', personality: 'curious' });
    await bus.joinChannel('ident', 'check');
    const info = await bus.channelInfo('ident', 'check');
    const me = info.participants.find((p) => p.client_id === bus.clientId);
    assert.equal(me?.client_type, 'ai-agent');
    assert.equal(me?.screen_name, 'Ada');
    const record = await bus.identify({ screenName: 'Ada L.', avatar: 'https://example.invalid/a.png' });
    assert.equal(record.client_id, bus.clientId);
    assert.equal(record.screen_name, 'Ada L.');
    assert.equal(record.avatar, 'https://example.invalid/a.png');
    assert.equal(record.personality, 'curious');
    assert.equal(record.client_type, 'ai-agent');
    const error = await rejection(bus.identify({ screenName: 'x'.repeat(65) }));
    assert.equal(error.errorCode, 'INVALID_ARGUMENT');
    assert.equal(error.code, 400);
    assert.ok(error.details.some((d) => d.field === 'screen_name'), JSON.stringify(error.details));
  });

  it('joinChannel / leaveChannel (raw)', async () => {
    const bus = await connect();
    const joined = await bus.joinChannel('raw', 'one');
    assert.deepEqual([joined.room, joined.channel, joined.participant_count, joined.seq], ['raw', 'one', 1, 0]);
    assert.equal(typeof joined.epoch, 'string');
    const left = await bus.leaveChannel('raw', 'one');
    assert.deepEqual(left, { room: 'raw', channel: 'one', was_member: true });
    assert.equal((await bus.leaveChannel('raw', 'one')).was_member, false);
    assert.equal((await rejection(bus.leaveChannel('raw', 'never'))).errorCode, 'CHANNEL_NOT_FOUND');
  });

  it('listChannels', async () => {
    const bus = await connect();
    await bus.joinChannel('listing', 'b');
    await bus.joinChannel('listing', 'a');
    const list = await bus.listChannels({ room: 'listing' });
    assert.equal(list.total, 2);
    assert.deepEqual(list.channels.map((c) => c.channel), ['a', 'b']);
    const record = list.channels[0]!;
    assert.equal(record.type, 'general');
    assert.equal(record.auto_created, true);
    assert.equal(record.created_by, bus.clientId);
    assert.equal(record.participant_count, 1);
    const all = await bus.listChannels();
    assert.ok(all.channels.some((c) => c.room === 'integriguard' && c.type === 'system'));
    const error = await rejection(bus.listChannels({ room: 'nosuchroom' }));
    assert.equal(error.errorCode, 'ROOM_NOT_FOUND');
    assert.equal(error.code, 404);
  });

  it('channelInfo', async () => {
    const a = await connect({ screenName: 'a' });
    const b = await connect({ screenName: 'b' });
    await a.join('info', 'room1');
    await b.join('info', 'room1');
    await a.publish('info', 'room1', { n: 1 }, { ack: true });
    const info = await a.channelInfo('info', 'room1');
    assert.equal(info.participant_count, 2);
    assert.deepEqual(info.participants.map((p) => p.screen_name).sort(), ['a', 'b']);
    assert.equal(info.last_seq, 1);
    assert.equal(info.messages_stored, 1);
    assert.equal(typeof info.epoch, 'string');
    assert.equal((await rejection(a.channelInfo('info', 'nope'))).errorCode, 'CHANNEL_NOT_FOUND');
  });

  it('history: newest, after_seq, limits', async () => {
    const bus = await connect();
    await bus.join('hist', 'one');
    for (let i = 1; i <= 5; i++) await bus.publish('hist', 'one', { n: i }, { ack: true });
    const newest = await bus.history('hist', 'one', { limit: 2 });
    assert.deepEqual(newest.messages.map((m) => m.seq), [4, 5]);
    assert.equal(newest.count, 2);
    assert.equal(newest.last_seq, 5);
    assert.equal(newest.backend, 'memory');
    const after = await bus.history('hist', 'one', { afterSeq: 1, limit: 2 });
    assert.deepEqual(after.messages.map((m) => [m.seq, m.payload?.['n']]), [
      [2, 2],
      [3, 3],
    ]);
    assert.equal(after.epoch, newest.epoch);
    const error = await rejection(bus.history('hist', 'one', { limit: 1001 }));
    assert.equal(error.errorCode, 'INVALID_ARGUMENT');
    assert.ok(error.details.some((d) => d.field === 'limit'), JSON.stringify(error.details));
    assert.equal((await rejection(bus.history('hist', 'none'))).errorCode, 'CHANNEL_NOT_FOUND');
  });

  it('createChannel / deleteChannel (admin from loopback)', async () => {
    const admin = await connect();
    const member = await connect();
    const record = await admin.createChannel('ops', 'alerts', { description: 'pager', metadata: { team: 'sre' } });
    assert.deepEqual(
      [record.room, record.channel, record.type, record.auto_created, record.description, record.metadata, record.participant_count],
      ['ops', 'alerts', 'general', false, 'pager', { team: 'sre' }, 0],
    );
    assert.equal((await rejection(admin.createChannel('ops', 'alerts'))).errorCode, 'CHANNEL_EXISTS');
    const forbidden = await rejection(admin.createChannel('integriguard', 'telemetry-stream'));
    assert.equal(forbidden.errorCode, 'FORBIDDEN');
    assert.equal(forbidden.code, 403);

    const sub = await member.join('ops', 'alerts');
    const notEmpty = await rejection(admin.deleteChannel('ops', 'alerts'));
    assert.equal(notEmpty.errorCode, 'CHANNEL_NOT_EMPTY');
    assert.equal(notEmpty.code, 409);
    const removed = nextEvent(sub, 'removed');
    const deleted = await admin.deleteChannel('ops', 'alerts', { force: true });
    assert.deepEqual(deleted, { room: 'ops', channel: 'alerts', deleted: true, removed_members: 1 });
    const event = await removed;
    assert.equal(event.reason, 'channel-deleted');
    assert.equal(sub.state, 'ended');
    assert.equal(member.subscription('ops', 'alerts'), undefined);
    assert.equal((await rejection(admin.deleteChannel('ops', 'alerts'))).errorCode, 'CHANNEL_NOT_FOUND');
    assert.equal((await rejection(admin.deleteChannel('integriguard', 'telemetry-stream', { force: true }))).errorCode, 'FORBIDDEN');
  });

  it('an unknown command is UNKNOWN_COMMAND (404)', async () => {
    const bus = await connect();
    const error = await rejection(bus.command('no_such_command'));
    assert.equal(error.errorCode, 'UNKNOWN_COMMAND');
    assert.equal(error.code, 404);
    assert.equal(error.command, 'no_such_command');
  });

  it('the generic command() returns the payload', async () => {
    const bus = await connect();
    const pong = await bus.command<{ pong: boolean }>('ping');
    assert.equal(pong.pong, true);
  });
});

describe('message errors and direct messages', () => {
  it('NOT_SUBSCRIBED, CHANNEL_NOT_FOUND and TARGET_NOT_FOUND reject acked sends', async () => {
    const bus = await connect();
    await bus.joinChannel('errs', 'exists');
    await bus.leaveChannel('errs', 'exists');
    const notSubscribed = await rejection(bus.publish('errs', 'exists', {}, { ack: true }));
    assert.equal(notSubscribed.errorCode, 'NOT_SUBSCRIBED');
    assert.equal(notSubscribed.code, 403);
    assert.equal((await rejection(bus.publish('errs', 'missing', {}, { ack: true }))).errorCode, 'CHANNEL_NOT_FOUND');
    const target = await rejection(bus.send('arq_client_00000000000000000000000000000000', {}, { ack: true }));
    assert.equal(target.errorCode, 'TARGET_NOT_FOUND');
    assert.equal(target.code, 404);
  });

  it('a refused publish without ack arrives as serverError', async () => {
    const bus = await connect();
    const error = nextEvent(bus, 'serverError');
    await bus.publish('errs', 'nowhere', { n: 1 });
    const e = await error;
    assert.equal(e.errorCode, 'CHANNEL_NOT_FOUND');
    assert.match(e.requestId ?? '', /^arq_/);
  });

  it('send() reaches exactly one client, with an ack', async () => {
    const a = await connect({ screenName: 'alice' });
    const b = await connect({ screenName: 'bob' });
    const direct = nextEvent(b, 'direct');
    const ack = await a.send(b.clientId!, { text: 'psst' }, { ack: true, metadata: { k: 'v' } });
    assert.deepEqual(ack, { delivered: 1, seq: null, stored: false });
    const message = await direct;
    assert.equal(message.sender, a.clientId);
    assert.deepEqual(message.payload, { text: 'psst' });
    assert.deepEqual(message.metadata, { k: 'v' });
  });
});

describe('authentication (SPEC §9, token mode)', () => {
  let tokenServer: ServerProcess;
  before(async () => {
    tokenServer = await startServer({ env: { ARQONBUS_AUTH: 'token', ARQONBUS_ADMIN_TOKEN: 'admin-secret' } });
  });
  after(async () => {
    await tokenServer?.stop();
  });

  it('a wrong token is refused with HTTP 401, and the client says so', async () => {
    const bus = new ArqonBus(tokenServer.url, { token: 'wrong' });
    clients.push(bus);
    const closed = nextEvent(bus, 'closed');
    const error = await bus.connect().then(
      () => assert.fail('connected'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof ArqonConnectionError);
    assert.equal(error.kind, 'refused');
    assert.equal(error.httpStatus, 401);
    assert.equal((await closed).reason, 'refused');
  });

  it('the admin token makes an admin; no token makes a user', async () => {
    const admin = await connect({ getToken: () => 'admin-secret' }, tokenServer.url);
    const user = await connect({}, tokenServer.url);
    const record = await admin.createChannel('auth', 'admins-only');
    assert.equal(record.channel, 'admins-only');
    const error = await rejection(user.createChannel('auth', 'nope'));
    assert.equal(error.errorCode, 'FORBIDDEN');
    await until(() => user.state === 'connected', 'user still connected');
  });
});

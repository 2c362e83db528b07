/**
 * An in-process stand-in for arqonbus-server, reached through a fake
 * WebSocket class injected with the `WebSocket` option. It implements the
 * parts of the protocol the SDK relies on (welcome, commands, channel
 * messages with seq/epoch, history paging) and, on request, the wave-2
 * features the real server may not have yet (§14 recover, §15 presence,
 * §16 lagged), so the SDK's handling of them is tested now.
 */
import type { Envelope, JsonObject, WebSocketConstructor, WebSocketLike } from 'arqonbus';

type Handler<E> = ((event: E) => void) | null;

/** How the server answers the next connection attempts. */
export type Admission =
  | { kind: 'accept' }
  /** Upgrade refused with an HTTP status, as `ws` reports it. */
  | { kind: 'refuse'; status: number }
  /** The attempt fails without a visible status (like a browser, or a connection refused). */
  | { kind: 'fail' }
  /** The socket opens but no welcome ever comes. */
  | { kind: 'silent' };

let epochCounter = 0;

export class FakeChannel {
  epoch: string;
  seq = 0;
  messages: Envelope[] = [];
  constructor(
    readonly room: string,
    readonly channel: string,
  ) {
    this.epoch = FakeChannel.newEpoch();
  }

  static newEpoch(): string {
    epochCounter += 1;
    return `epoch${epochCounter.toString().padStart(4, '0')}`;
  }

  /** Forget the history (like a restart with memory storage). */
  reset(): void {
    this.epoch = FakeChannel.newEpoch();
    this.seq = 0;
    this.messages = [];
  }
}

export class FakeConnection {
  readonly clientId: string;
  readonly memberOf = new Set<string>();
  readonly presenceIn = new Set<string>();
  /** Every frame the client sent, parsed. */
  readonly received: Envelope[] = [];
  /** When false, commands are not answered (a hung server). */
  answering = true;
  constructor(
    readonly socket: FakeWebSocket,
    readonly url: URL,
    index: number,
  ) {
    this.clientId = `arq_client_${index.toString(16).padStart(32, '0')}`;
  }

  /** Sends an envelope to the client (asynchronously, in order). */
  deliver(envelope: Partial<Envelope>): void {
    this.socket.serverSend(JSON.stringify({ version: '1.0', timestamp: new Date().toISOString(), ...envelope }));
  }

  /** The server closes the connection. */
  drop(code = 1001, reason = 'going away'): void {
    this.socket.serverClose(code, reason, true);
  }
}

type CommandHandler = (args: JsonObject, conn: FakeConnection, envelope: Envelope) => JsonObject | { error: string; code: number };

export class FakeServer {
  readonly channels = new Map<string, FakeChannel>();
  readonly connections: FakeConnection[] = [];
  /** URLs of every attempt, including refused ones. */
  readonly attempts: URL[] = [];
  /** Admissions for the next attempts, in order; then `accept`. */
  readonly admissions: Admission[] = [];
  /** §14: answer `recover` with `recovered` and `publications`. */
  supportsRecover = false;
  /** §14: the most messages recovered with the join reply. */
  recoveryMax = 1000;
  /** Frames sent in the same task as the welcome (as one TCP read can carry them). */
  afterWelcome: Partial<Envelope>[] = [];
  /** At most this many messages per history page (the server caps at 1000). */
  historyPageMax = 1000;
  readonly handlers = new Map<string, CommandHandler>();
  #ids = 0;

  constructor() {
    this.handlers.set('ping', () => ({ pong: true, server_time: new Date().toISOString() }));
    this.handlers.set('join_channel', (args, conn) => this.#join(args, conn));
    this.handlers.set('leave_channel', (args, conn) => {
      const ch = this.#channelOf(args);
      if (ch === null) return { error: 'CHANNEL_NOT_FOUND', code: 404 };
      const key = `${ch.room}:${ch.channel}`;
      const was = conn.memberOf.delete(key);
      conn.presenceIn.delete(key);
      return { room: ch.room, channel: ch.channel, was_member: was };
    });
    this.handlers.set('history', (args) => this.#history(args));
  }

  /** The `WebSocket` constructor to pass to the client. */
  get WebSocket(): WebSocketConstructor {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    return class extends FakeWebSocket {
      constructor(url: string) {
        super(url, server);
      }
    };
  }

  channel(room: string, channel: string): FakeChannel {
    const key = `${room}:${channel}`;
    let ch = this.channels.get(key);
    if (ch === undefined) {
      ch = new FakeChannel(room, channel);
      this.channels.set(key, ch);
    }
    return ch;
  }

  /** Publishes as another client: stored, then delivered to members. */
  publish(room: string, channel: string, payload: JsonObject, options: { sender?: string; deliverTo?: (c: FakeConnection) => boolean } = {}): Envelope {
    const ch = this.channel(room, channel);
    ch.seq += 1;
    const envelope: Envelope = {
      version: '1.0',
      id: `arq_pub_${ch.seq}_${++this.#ids}`,
      type: 'message',
      timestamp: new Date().toISOString(),
      room,
      channel,
      sender: options.sender ?? 'arq_client_other',
      payload,
      metadata: {},
      seq: ch.seq,
      epoch: ch.epoch,
    };
    ch.messages.push(envelope);
    for (const conn of this.live()) {
      if (conn.memberOf.has(`${room}:${channel}`) && (options.deliverTo?.(conn) ?? true)) conn.deliver(envelope);
    }
    return envelope;
  }

  /** Open connections. */
  live(): FakeConnection[] {
    return this.connections.filter((c) => c.socket.readyState === 1);
  }

  /** The latest connection. */
  get last(): FakeConnection {
    const conn = this.connections[this.connections.length - 1];
    if (conn === undefined) throw new Error('no connection yet');
    return conn;
  }

  /** Closes every open connection (like a server going away). */
  dropAll(code = 1001, reason = 'server shutting down'): void {
    for (const conn of this.live()) conn.drop(code, reason);
  }

  // ---- called by FakeWebSocket ----

  admit(socket: FakeWebSocket, url: URL): void {
    this.attempts.push(url);
    const admission = this.admissions.shift() ?? { kind: 'accept' };
    switch (admission.kind) {
      case 'refuse':
        socket.serverFail(`Unexpected server response: ${admission.status}`);
        return;
      case 'fail':
        socket.serverFail('');
        return;
      case 'silent':
        socket.serverOpen();
        return;
      case 'accept': {
        const conn = new FakeConnection(socket, url, this.connections.length + 1);
        this.connections.push(conn);
        socket.connection = conn;
        socket.serverOpen();
        const welcome: Partial<Envelope> = {
          id: `arq_welcome_${++this.#ids}`,
          type: 'message',
          sender: 'arqonbus',
          payload: {
            welcome: 'Connected to ArqonBus',
            client_id: conn.clientId,
            server_version: 'fake',
            protocol: '1.0',
            limits: { max_message_size: 65536, rate_limit_per_sec: 1000, max_subscriptions: 1000 },
          },
        };
        const frames = [welcome, ...this.afterWelcome.splice(0)];
        socket.serverSendBatch(frames.map((f) => JSON.stringify({ version: '1.0', timestamp: new Date().toISOString(), ...f })));
      }
    }
  }

  receive(conn: FakeConnection, text: string): void {
    const envelope = JSON.parse(text) as Envelope;
    conn.received.push(envelope);
    if (envelope.type === 'command') {
      if (!conn.answering) return;
      const handler = this.handlers.get(envelope.command ?? '');
      const result: JsonObject | { error: string; code: number } = handler
        ? handler(envelope.args ?? {}, conn, envelope)
        : { error: 'UNKNOWN_COMMAND', code: 404 };
      if ('error' in result && typeof result['error'] === 'string' && typeof result['code'] === 'number') {
        conn.deliver(this.errorFor(envelope, result['error'], result['code']));
      } else {
        conn.deliver({
          id: `arq_r_${++this.#ids}`,
          type: 'response',
          sender: 'arqonbus',
          command: envelope.command ?? '',
          request_id: envelope.id,
          status: 'success',
          payload: result as JsonObject,
        });
      }
      return;
    }
    if (envelope.type === 'message' && typeof envelope.room === 'string' && typeof envelope.channel === 'string') {
      const ch = this.channel(envelope.room, envelope.channel);
      if (!conn.memberOf.has(`${ch.room}:${ch.channel}`)) {
        conn.deliver(this.errorFor(envelope, 'NOT_SUBSCRIBED', 403));
        return;
      }
      const sent = this.publish(ch.room, ch.channel, envelope.payload ?? {}, {
        sender: conn.clientId,
        deliverTo: (c) => c !== conn || envelope.metadata?.['echo'] === true,
      });
      if (envelope.ack === true) {
        conn.deliver({
          id: `arq_r_${++this.#ids}`,
          type: 'response',
          sender: 'arqonbus',
          request_id: envelope.id,
          status: 'success',
          payload: { delivered: 1, seq: sent.seq ?? null, stored: true },
        });
      }
    }
  }

  errorFor(envelope: Envelope, code: string, status: number): Partial<Envelope> {
    const reply: Partial<Envelope> = {
      id: `arq_e_${++this.#ids}`,
      type: 'error',
      sender: 'arqonbus',
      request_id: envelope.id,
      status: 'error',
      error_code: code,
      error: `${code} (fake)`,
      payload: { code: status, details: [] },
    };
    if (envelope.command !== undefined) reply.command = envelope.command;
    return reply;
  }

  #channelOf(args: JsonObject): FakeChannel | null {
    const key = `${String(args['room'])}:${String(args['channel'])}`;
    return this.channels.get(key) ?? null;
  }

  #join(args: JsonObject, conn: FakeConnection): JsonObject {
    const ch = this.channel(String(args['room']), String(args['channel']));
    const key = `${ch.room}:${ch.channel}`;
    const reply: JsonObject = { room: ch.room, channel: ch.channel, participant_count: 1, seq: ch.seq, epoch: ch.epoch };
    conn.memberOf.add(key);
    if (args['presence'] === true) conn.presenceIn.add(key);
    else conn.presenceIn.delete(key);
    const recover = args['recover'];
    if (this.supportsRecover && typeof recover === 'object' && recover !== null) {
      const { seq, epoch } = recover as { seq: number; epoch: string };
      const missed = ch.messages.filter((m) => (m.seq ?? 0) > seq);
      const complete =
        epoch === ch.epoch &&
        seq <= ch.seq &&
        missed.length === ch.seq - seq &&
        missed.length <= this.recoveryMax;
      reply['recovered'] = complete;
      reply['publications'] = complete ? missed : [];
    }
    return reply;
  }

  #history(args: JsonObject): JsonObject | { error: string; code: number } {
    const ch = this.#channelOf(args);
    if (ch === null) return { error: 'CHANNEL_NOT_FOUND', code: 404 };
    const limit = Math.min(typeof args['limit'] === 'number' ? args['limit'] : 50, this.historyPageMax);
    let messages: Envelope[];
    if (typeof args['after_seq'] === 'number') {
      const after = args['after_seq'];
      messages = ch.messages.filter((m) => (m.seq ?? 0) > after).slice(0, limit);
    } else {
      messages = ch.messages.slice(-limit);
    }
    return {
      room: ch.room,
      channel: ch.channel,
      messages,
      count: messages.length,
      backend: 'memory',
      epoch: ch.epoch,
      last_seq: ch.seq,
    };
  }
}

/** The fake socket; the client sees only the {@link WebSocketLike} part. */
export class FakeWebSocket implements WebSocketLike {
  readyState = 0;
  bufferedAmount = 0;
  onopen: Handler<unknown> = null;
  onmessage: Handler<{ data: unknown }> = null;
  onerror: Handler<unknown> = null;
  onclose: Handler<{ code: number; reason: string; wasClean: boolean }> = null;
  connection: FakeConnection | undefined;
  /** What the client passed to close(), if it did. */
  closedWith: { code: number | undefined; reason: string | undefined } | undefined;
  readonly #server: FakeServer;

  constructor(url: string, server: FakeServer) {
    this.#server = server;
    const parsed = new URL(url);
    later(() => server.admit(this, parsed));
  }

  send(data: string): void {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    const conn = this.connection;
    if (conn !== undefined) later(() => this.#server.receive(conn, data));
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedWith = { code, reason };
    const wasOpen = this.readyState === 1;
    this.readyState = 2;
    later(() => {
      this.readyState = 3;
      this.onclose?.({ code: wasOpen ? (code ?? 1005) : 1006, reason: reason ?? '', wasClean: wasOpen });
    });
  }

  serverOpen(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  serverSend(text: string): void {
    later(() => {
      if (this.readyState === 1) this.onmessage?.({ data: text });
    });
  }

  /** Several frames in one task, like `ws` emitting one TCP read's frames. */
  serverSendBatch(texts: string[]): void {
    later(() => {
      for (const text of texts) if (this.readyState === 1) this.onmessage?.({ data: text });
    });
  }

  serverClose(code: number, reason: string, wasClean: boolean): void {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    later(() => {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean });
    });
  }

  serverFail(message: string): void {
    this.readyState = 3;
    this.onerror?.({ message });
    this.onclose?.({ code: 1006, reason: '', wasClean: false });
  }
}

/** Runs `fn` after the current task, keeping the order of calls. */
function later(fn: () => void): void {
  setTimeout(fn, 0);
}

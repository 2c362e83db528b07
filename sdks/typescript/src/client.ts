import { backoffDelay, reconnectPolicy, type ReconnectOptions, type ReconnectPolicy } from './backoff.js';
import { Emitter, type Listener } from './emitter.js';
import { ArqonConnectionError, ArqonError, ArqonTimeoutError } from './errors.js';
import {
  channelKey,
  checkName,
  checkObject,
  commandEnvelope,
  IdGenerator,
  isObject,
  messageEnvelope,
  num,
  parseEnvelope,
  SERVER_SENDER,
  str,
  utf8Length,
} from './protocol.js';
import {
  ManagedSubscription,
  toChannelMessage,
  type Subscription,
  type SubscriptionHost,
  type SubscriptionSettings,
} from './subscription.js';
import {
  describeError,
  OPEN,
  probeReady,
  resolveWebSocket,
  upgradeStatus,
  type WebSocketConstructor,
  type WebSocketLike,
} from './transport.js';
import type {
  ChannelInfoReply,
  ChannelListReply,
  ChannelMessage,
  ChannelRecord,
  ClientRecord,
  ClientType,
  ClosedEvent,
  CloseReason,
  ConnectedEvent,
  ConnectionState,
  DeleteChannelReply,
  DirectMessage,
  DisconnectedEvent,
  Envelope,
  HistoryReply,
  JoinReply,
  JsonObject,
  LaggedNotice,
  LeaveReply,
  PongReply,
  PresenceReply,
  PublishAck,
  ReconnectingEvent,
  StateChangeEvent,
  StatusReply,
  StreamPosition,
  Welcome,
} from './types.js';

/** The part of `AbortSignal` the SDK uses (the real one satisfies it). */
export interface AbortSignalLike {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: 'abort', listener: () => void): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/** Options every request takes. */
export interface CallOptions {
  /** Reject with {@link ArqonTimeoutError} after this long (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number;
  /** Stop waiting when this signal aborts (the promise rejects with its reason). */
  signal?: AbortSignalLike;
}

/** What a client says about itself (SPEC §2 query parameters, `identify`). */
export interface Identity {
  clientType?: ClientType;
  /** At most 64 characters. */
  screenName?: string;
  /** At most 512 characters. */
  avatar?: string;
  /** At most 256 characters. */
  personality?: string;
}

/** Options of {@link ArqonBus}. */
export interface ArqonBusOptions extends Identity {
  /** Auth token (SPEC §9), sent as the `token` query parameter. */
  token?: string;
  /**
   * Called before every connection attempt, the first and each reconnect,
   * for a fresh token (takes precedence over `token`). If it throws, that
   * attempt fails (and is retried with backoff when reconnecting).
   */
  getToken?: () => string | Promise<string>;
  /**
   * The WebSocket implementation. Default: the global `WebSocket`, or the
   * `ws` package when there is none (Node 20).
   */
  WebSocket?: WebSocketConstructor;
  /** Default per-request timeout (10 000 ms). */
  requestTimeoutMs?: number;
  /** Time allowed to open the socket and receive the welcome frame (10 000 ms). */
  connectTimeoutMs?: number;
  /** How long `close()` waits for the server's Close frame (2 000 ms). */
  closeTimeoutMs?: number;
  /** Automatic reconnection (default on; `false` disables). */
  reconnect?: boolean | ReconnectOptions;
  /**
   * When nothing was received for this long, send a `ping`; if it is not
   * answered within `requestTimeoutMs` the connection is treated as dead
   * and reconnected (default 30 000 ms; 0 disables). Browsers cannot see
   * the server's WebSocket pings, so this is how a half-open connection
   * is noticed.
   */
  heartbeatIntervalMs?: number;
  /**
   * When the HTTP status of a failed upgrade cannot be seen (browsers):
   * stop reconnecting after this many attempts in a row that failed before
   * the socket opened while the server's `GET /ready` answered 200 — the
   * server is up but refusing this client (default 3; `Infinity` never
   * stops). Where the status is visible (Node with `ws`), HTTP 400/401/403
   * stop at once.
   */
  refusalThreshold?: number;
  /** On a §16 lagged notice, fetch the dropped messages from history and deliver them (marked `replayed`, possibly out of order). Default `false`. */
  refillOnLag?: boolean;
  /** Messages held per subscription for a slow iterator or before the first consumer (1 000). */
  subscriptionBufferSize?: number;
  /** Live messages held per subscription while a gap is filled after a reconnect (10 000); beyond it they are fetched from history too. */
  resyncBufferSize?: number;
  /** Refuse to send while the socket has more than this many bytes queued (8 MiB). */
  maxBufferedBytes?: number;
}

/** Options of {@link ArqonBus.join}. */
export interface JoinOptions {
  /** Receive §15 presence events (`presence` on the subscription). */
  presence?: boolean;
  /**
   * Catch up from this position (a previous {@link Subscription.position},
   * e.g. persisted across a page reload): the missed messages are
   * delivered first; {@link Subscription.recovery} tells how it went.
   */
  recover?: StreamPosition;
  /** Timeout of each request the join makes. */
  timeoutMs?: number;
}

/** Options of {@link ArqonBus.publish} and {@link ArqonBus.send}. */
export interface PublishOptions extends CallOptions {
  /** Ask for an acknowledgement (SPEC §4.3): the promise resolves with it, or rejects with the server's error. */
  ack?: boolean;
  /** Relayed unchanged to the recipients. */
  metadata?: object;
  /** Also deliver a channel message to its sender (`metadata.echo`). */
  echo?: boolean;
}

/** Arguments of {@link ArqonBus.history}. */
export interface HistoryOptions extends CallOptions {
  /** How many messages (server default 50, at most 1000). */
  limit?: number;
  /** Only messages after this time (exclusive, ISO 8601). */
  since?: string;
  /** Only messages before this time (exclusive, ISO 8601). */
  until?: string;
  /** The oldest `limit` messages with a greater `seq`. */
  afterSeq?: number;
}

/** Events of an {@link ArqonBus}. */
export interface ArqonBusEvents {
  /** Every change of {@link ArqonBus.state}. */
  state: StateChangeEvent;
  /** A connection attempt starts. */
  connecting: { attempt: number };
  /** Connected (the welcome frame arrived). */
  connected: ConnectedEvent;
  /** The connection dropped. */
  disconnected: DisconnectedEvent;
  /** Waiting `delayMs` before reconnection attempt `attempt`. */
  reconnecting: ReconnectingEvent;
  /** The client stopped: `close()`, a permanent refusal, or giving up. */
  closed: ClosedEvent;
  /** A direct message to this client (SPEC §4.2). */
  direct: DirectMessage;
  /** A message on a channel joined with the raw {@link ArqonBus.joinChannel} (no subscription). */
  message: ChannelMessage;
  /** Every `system` envelope (after the SDK handled presence, lag and deletions). */
  system: Envelope;
  /** A §16 lagged notice (also reported on each affected subscription). */
  lagged: LaggedNotice;
  /** An error the server sent that answers no pending request (e.g. for a publish without `ack`). */
  serverError: ArqonError;
}

/** A request waiting for its reply. */
interface Pending {
  resolve(envelope: Envelope): void;
  reject(error: unknown): void;
}

/** Why a connection attempt failed. */
class AttemptFailure extends Error {
  constructor(
    message: string,
    readonly httpStatus: number | undefined,
    readonly opened: boolean,
    readonly code: number | undefined,
    /** Failed before opening with no status and no error text: all a browser shows, whatever the cause. */
    readonly opaque = false,
  ) {
    super(message);
  }
}

/** A socket that sent its welcome frame, with what arrived before the client took it over. */
interface Opened {
  socket: WebSocketLike;
  welcome: Welcome;
  early: unknown[];
  closed: { code: number; reason: string; wasClean: boolean } | null;
}

/** HTTP statuses of an upgrade that retrying will not change. */
const PERMANENT_STATUSES = new Set([400, 401, 403]);
/** Close codes after which reconnecting would be wrong (SPEC §11, §17). */
const TERMINAL_CLOSE_CODES: ReadonlyMap<number, CloseReason> = new Map([
  [4000, 'replaced'],
  [4003, 'operator'],
]);
/** Client ids of past connections remembered to recognise this client's own messages. */
const OWN_IDS_KEPT = 64;
/** Close code the client uses when it abandons an unresponsive connection. */
const CLOSE_ABANDONED = 4001;

/**
 * An ArqonBus client: one WebSocket connection, typed commands, managed
 * subscriptions, and reconnection with gap filling.
 *
 * ```ts
 * const bus = new ArqonBus('ws://127.0.0.1:9100/', { screenName: 'ada' });
 * await bus.connect();
 * const sub = await bus.join('chat', 'general');
 * sub.on('message', (m) => console.log(m.sender, m.payload));
 * await bus.publish('chat', 'general', { text: 'hello' }, { ack: true });
 * await bus.close();
 * ```
 */
export class ArqonBus {
  /** The server URL (`ws://` or `wss://`), without identity or token parameters. */
  readonly url: string;

  readonly #events = new Emitter<ArqonBusEvents>();
  readonly #ids = new IdGenerator();
  readonly #identity: Identity;
  readonly #token: string | undefined;
  readonly #getToken: (() => string | Promise<string>) | undefined;
  readonly #WebSocket: WebSocketConstructor | undefined;
  readonly #policy: ReconnectPolicy;
  readonly #requestTimeoutMs: number;
  readonly #connectTimeoutMs: number;
  readonly #closeTimeoutMs: number;
  readonly #heartbeatIntervalMs: number;
  readonly #refusalThreshold: number;
  readonly #maxBufferedBytes: number;
  readonly #settings: SubscriptionSettings;

  #state: ConnectionState = 'idle';
  #socket: WebSocketLike | null = null;
  #attemptSocket: WebSocketLike | null = null;
  #welcome: Welcome | undefined;
  #generation = 0;
  #closing = false;
  #connectPromise: Promise<Welcome> | null = null;
  #attempt = 0;
  #refusals = 0;
  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  #heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  #heartbeatInFlight = false;
  #lastReceived = 0;
  /** This client's ids on its recent connections (its own messages are not replayed to it). */
  readonly #ownIds = new Set<string>();
  readonly #pending = new Map<string, Pending>();
  readonly #subs = new Map<string, ManagedSubscription<JsonObject>>();
  readonly #joins = new Map<string, Promise<ManagedSubscription<JsonObject>>>();

  readonly #host: SubscriptionHost = {
    generation: () => this.#generation,
    request: (command, args, internal, timeoutMs) =>
      this.#command<JsonObject>(command, args, timeoutMs === undefined ? {} : { timeoutMs }, internal),
    leave: (sub) => this.#leaveSubscription(sub),
    ended: (sub) => {
      if (this.#subs.get(sub.key) === sub) this.#subs.delete(sub.key);
    },
    isOwn: (sender) => sender !== undefined && this.#ownIds.has(sender),
  };

  /**
   * @param url - `ws://host:port/` (or `/ws`); `wss://` behind TLS. Any query is kept.
   * @param options - identity, token, timeouts, reconnection: see {@link ArqonBusOptions}.
   */
  constructor(url: string, options: ArqonBusOptions = {}) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new TypeError(`invalid URL: ${url}`);
    }
    if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
      throw new TypeError(`the URL must start with ws:// or wss://, got ${url}`);
    }
    this.url = parsed.href;
    this.#identity = {};
    this.#setIdentity(options);
    this.#token = options.token;
    this.#getToken = options.getToken;
    this.#WebSocket = options.WebSocket;
    this.#policy = reconnectPolicy(options.reconnect);
    this.#requestTimeoutMs = positive('requestTimeoutMs', options.requestTimeoutMs, 10_000);
    this.#connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs, 10_000);
    this.#closeTimeoutMs = positive('closeTimeoutMs', options.closeTimeoutMs, 2_000);
    this.#heartbeatIntervalMs = options.heartbeatIntervalMs ?? 30_000;
    if (!(this.#heartbeatIntervalMs >= 0)) throw new RangeError('heartbeatIntervalMs must be >= 0');
    this.#refusalThreshold = positive('refusalThreshold', options.refusalThreshold, 3);
    this.#maxBufferedBytes = positive('maxBufferedBytes', options.maxBufferedBytes, 8 * 1024 * 1024);
    this.#settings = {
      bufferSize: positive('subscriptionBufferSize', options.subscriptionBufferSize, 1_000),
      resyncBufferSize: positive('resyncBufferSize', options.resyncBufferSize, 10_000),
      refillOnLag: options.refillOnLag === true,
    };
  }

  // ---- state ---------------------------------------------------------------

  /** Where the connection stands. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** This connection's client id (changes with every reconnection); `undefined` when not connected. */
  get clientId(): string | undefined {
    return this.#state === 'connected' ? this.#welcome?.client_id : undefined;
  }

  /** The latest welcome frame's payload (server version, limits). */
  get welcome(): Welcome | undefined {
    return this.#welcome;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof ArqonBusEvents>(event: K, listener: Listener<ArqonBusEvents[K]>): () => void {
    return this.#events.on(event, listener);
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof ArqonBusEvents>(event: K, listener: Listener<ArqonBusEvents[K]>): () => void {
    return this.#events.once(event, listener);
  }

  /** Removes a listener added with `on`. */
  off<K extends keyof ArqonBusEvents>(event: K, listener: Listener<ArqonBusEvents[K]>): void {
    this.#events.off(event, listener);
  }

  // ---- connection ------------------------------------------------------------

  /**
   * Connects and resolves with the welcome frame's payload.
   *
   * The first attempt is not retried: if it fails the promise rejects with
   * an {@link ArqonConnectionError} (`kind` `refused` for HTTP 400/401/403,
   * else `connect-failed`) and the client is `closed`. Once connected, a
   * dropped connection is re-established automatically (see `reconnect`).
   * While reconnecting, `connect()` resolves at the next connection.
   * Calling it when connected resolves at once.
   */
  connect(): Promise<Welcome> {
    if (this.#state === 'connected' && this.#welcome !== undefined) return Promise.resolve(this.#welcome);
    if (this.#connectPromise !== null) return this.#connectPromise;
    if (this.#state === 'reconnecting' || this.#state === 'connecting') return this.#nextConnection();
    this.#closing = false;
    const promise = this.#firstConnect().finally(() => {
      this.#connectPromise = null;
    });
    this.#connectPromise = promise;
    return promise;
  }

  /**
   * Closes the connection (Close frame 1000) and stops reconnecting.
   * Pending requests reject, subscriptions end (`removed` with reason
   * `closed`), and `closed` is emitted with reason `client`. Resolves once
   * the server answered the Close frame, or after `closeTimeoutMs`.
   * `connect()` may be called again afterwards.
   */
  async close(): Promise<void> {
    if (this.#state === 'closed' || this.#state === 'idle') return;
    this.#closing = true;
    this.#clearReconnectTimer();
    if (this.#attemptSocket !== null) safeClose(this.#attemptSocket, 1000, 'client closed');
    const socket = this.#socket;
    let code: number | undefined;
    let wasClean: boolean | undefined;
    if (socket !== null) {
      this.#socket = null;
      this.#stopHeartbeat();
      this.#failPending(new ArqonConnectionError('closed', 'the client was closed'));
      const closed = new Promise<{ code: number; wasClean: boolean } | null>((resolve) => {
        const timer = setTimeout(() => resolve(null), this.#closeTimeoutMs);
        socket.onmessage = null;
        socket.onerror = null;
        socket.onclose = (event) => {
          clearTimeout(timer);
          resolve({ code: event.code, wasClean: event.wasClean });
        };
      });
      safeClose(socket, 1000, 'client closed');
      const event = await closed;
      code = event?.code;
      wasClean = event?.wasClean ?? false;
    }
    this.#finish('client', 'closed by the client', { code, wasClean });
  }

  // ---- commands --------------------------------------------------------------

  /** `ping`: checks the connection; the server's time. */
  async ping(options: CallOptions = {}): Promise<PongReply> {
    return this.#command('ping', {}, options);
  }

  /** `status`: server, clients, channels, messages, storage. */
  async status(options: CallOptions = {}): Promise<StatusReply> {
    return this.#command('status', {}, options);
  }

  /**
   * `identify`: updates what the server knows about this client and
   * returns its record. The new identity is also used for reconnections.
   */
  async identify(identity: Identity, options: CallOptions = {}): Promise<ClientRecord> {
    const args: JsonObject = {};
    if (identity.clientType !== undefined) args['client_type'] = identity.clientType;
    if (identity.screenName !== undefined) args['screen_name'] = identity.screenName;
    if (identity.avatar !== undefined) args['avatar'] = identity.avatar;
    if (identity.personality !== undefined) args['personality'] = identity.personality;
    const record = await this.#command<ClientRecord>('identify', args, options);
    this.#setIdentity(identity);
    return record;
  }

  /**
   * The raw `join_channel` command. The channel's messages then arrive as
   * the client's `message` events; the channel is not re-joined after a
   * reconnect. Prefer {@link ArqonBus.join}, which manages all that.
   */
  async joinChannel(
    room: string,
    channel: string,
    options: CallOptions & { presence?: boolean; recover?: StreamPosition } = {},
  ): Promise<JoinReply> {
    checkName('room', room);
    checkName('channel', channel);
    const args: JsonObject = { room, channel };
    if (options.presence === true) args['presence'] = true;
    if (options.recover !== undefined) args['recover'] = checkPosition(options.recover);
    return this.#command('join_channel', args, options);
  }

  /** `leave_channel`; also ends the channel's subscription, if any. */
  async leaveChannel(room: string, channel: string, options: CallOptions = {}): Promise<LeaveReply> {
    checkName('room', room);
    checkName('channel', channel);
    const reply = await this.#command<LeaveReply>('leave_channel', { room, channel }, options);
    this.#endSubscription(channelKey(room, channel), 'left', 'left the channel');
    return reply;
  }

  /** `list_channels`: every channel, or those of `room` (paged with `limit`/`cursor` on servers with §18). */
  async listChannels(options: CallOptions & { room?: string; limit?: number; cursor?: string } = {}): Promise<ChannelListReply> {
    const args: JsonObject = {};
    if (options.room !== undefined) {
      checkName('room', options.room);
      args['room'] = options.room;
    }
    if (options.limit !== undefined) args['limit'] = options.limit;
    if (options.cursor !== undefined) args['cursor'] = options.cursor;
    return this.#command('list_channels', args, options);
  }

  /** `channel_info`: the channel record, its members, its history position. */
  async channelInfo(room: string, channel: string, options: CallOptions = {}): Promise<ChannelInfoReply> {
    checkName('room', room);
    checkName('channel', channel);
    return this.#command('channel_info', { room, channel }, options);
  }

  /** `history`: stored messages, oldest first (see {@link HistoryOptions}). */
  async history(room: string, channel: string, options: HistoryOptions = {}): Promise<HistoryReply> {
    checkName('room', room);
    checkName('channel', channel);
    const args: JsonObject = { room, channel };
    if (options.limit !== undefined) args['limit'] = options.limit;
    if (options.since !== undefined) args['since'] = options.since;
    if (options.until !== undefined) args['until'] = options.until;
    if (options.afterSeq !== undefined) args['after_seq'] = options.afterSeq;
    return this.#command('history', args, options);
  }

  /** `create_channel` (admin). */
  async createChannel(
    room: string,
    channel: string,
    options: CallOptions & { description?: string; metadata?: object } = {},
  ): Promise<ChannelRecord> {
    checkName('room', room);
    checkName('channel', channel);
    const args: JsonObject = { room, channel };
    if (options.description !== undefined) args['description'] = options.description;
    if (options.metadata !== undefined) {
      checkObject('metadata', options.metadata);
      args['metadata'] = options.metadata;
    }
    return this.#command('create_channel', args, options);
  }

  /** `delete_channel` (admin); with `force`, members are removed. */
  async deleteChannel(room: string, channel: string, options: CallOptions & { force?: boolean } = {}): Promise<DeleteChannelReply> {
    checkName('room', room);
    checkName('channel', channel);
    const args: JsonObject = { room, channel };
    if (options.force !== undefined) args['force'] = options.force;
    return this.#command('delete_channel', args, options);
  }

  /** `presence` (§15): one page of a channel's members; pass `next_cursor` back as `cursor` for the next. */
  async presence(
    room: string,
    channel: string,
    options: CallOptions & { limit?: number; cursor?: string } = {},
  ): Promise<PresenceReply> {
    checkName('room', room);
    checkName('channel', channel);
    const args: JsonObject = { room, channel };
    if (options.limit !== undefined) args['limit'] = options.limit;
    if (options.cursor !== undefined) args['cursor'] = options.cursor;
    return this.#command('presence', args, options);
  }

  /**
   * Any command by name, for commands this SDK does not wrap. Resolves with
   * the reply's payload (typed as `T`, unchecked).
   */
  async command<T extends object = JsonObject>(name: string, args: object = {}, options: CallOptions = {}): Promise<T> {
    checkObject('args', args);
    return this.#command<T>(name, args as JsonObject, options);
  }

  // ---- messages ----------------------------------------------------------------

  /**
   * Publishes `payload` to `room:channel` (you must have joined it, unless
   * the server says otherwise). With `ack: true` resolves with the
   * acknowledgement or rejects with the server's error; without it,
   * resolves once the frame is handed to the socket, and a refusal arrives
   * as a `serverError` event.
   */
  publish(room: string, channel: string, payload: object, options: PublishOptions & { ack: true }): Promise<PublishAck>;
  publish(room: string, channel: string, payload: object, options?: PublishOptions & { ack?: false }): Promise<void>;
  publish(room: string, channel: string, payload: object, options?: PublishOptions): Promise<PublishAck | void>;
  async publish(room: string, channel: string, payload: object, options: PublishOptions = {}): Promise<PublishAck | void> {
    checkName('room', room);
    checkName('channel', channel);
    checkObject('payload', payload);
    return this.#message({ room, channel }, payload, options, 'publish');
  }

  /**
   * Sends `payload` to one client (SPEC §4.2). With `ack: true` resolves
   * with `{delivered: 1, seq: null, stored: false}` or rejects (e.g.
   * `TARGET_NOT_FOUND`).
   */
  send(clientId: string, payload: object, options: PublishOptions & { ack: true }): Promise<PublishAck>;
  send(clientId: string, payload: object, options?: PublishOptions & { ack?: false }): Promise<void>;
  send(clientId: string, payload: object, options?: PublishOptions): Promise<PublishAck | void>;
  async send(clientId: string, payload: object, options: PublishOptions = {}): Promise<PublishAck | void> {
    if (typeof clientId !== 'string' || clientId === '') throw new TypeError('clientId must be a non-empty string');
    checkObject('payload', payload);
    return this.#message({ toClient: clientId }, payload, options, 'send');
  }

  // ---- subscriptions -------------------------------------------------------------

  /**
   * Joins `room:channel` and returns its {@link Subscription}, which is
   * re-joined after every reconnect with what was missed delivered first.
   * Joining a channel that already has a subscription returns that one
   * (re-sending the join if `presence` changed).
   *
   * @typeParam P - the payload type of the channel's messages (not checked at run time)
   */
  async join<P = JsonObject>(room: string, channel: string, options: JoinOptions = {}): Promise<Subscription<P>> {
    checkName('room', room);
    checkName('channel', channel);
    const recover = options.recover === undefined ? undefined : checkPosition(options.recover);
    const key = channelKey(room, channel);
    const inFlight = this.#joins.get(key);
    if (inFlight !== undefined) await inFlight.catch(() => undefined);
    const existing = this.#subs.get(key);
    if (existing !== undefined && existing.state !== 'ended') {
      const presence = options.presence ?? existing.presence;
      if (presence !== existing.presence) {
        const args: JsonObject = { room, channel };
        if (presence) args['presence'] = true;
        await this.#command('join_channel', args, options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs });
        existing._setPresence(presence);
      }
      return existing as unknown as Subscription<P>;
    }
    this.#requireConnected();
    const sub = new ManagedSubscription<JsonObject>(this.#host, room, channel, options.presence === true, this.#settings);
    this.#subs.set(key, sub);
    const joining = sub._start('initial', recover, options.timeoutMs).then(
      () => sub,
      (error: unknown) => {
        if (this.#subs.get(key) === sub) this.#subs.delete(key);
        throw error;
      },
    );
    this.#joins.set(key, joining);
    try {
      return (await joining) as unknown as Subscription<P>;
    } finally {
      if (this.#joins.get(key) === joining) this.#joins.delete(key);
    }
  }

  /** The live subscription of `room:channel`, if any. */
  subscription<P = JsonObject>(room: string, channel: string): Subscription<P> | undefined {
    return this.#subs.get(channelKey(room, channel)) as unknown as Subscription<P> | undefined;
  }

  /** Every live subscription. */
  subscriptions(): Subscription[] {
    return [...this.#subs.values()];
  }

  // ---- internals: requests ----------------------------------------------------------

  async #command<T>(command: string, args: JsonObject, options: CallOptions, internal = false): Promise<T> {
    const envelope = commandEnvelope(this.#ids.next(), command, args);
    const reply = await this.#call(envelope, command, options, internal);
    return (reply.payload ?? {}) as T;
  }

  async #message(
    target: { room: string; channel: string } | { toClient: string },
    payload: object,
    options: PublishOptions,
    operation: string,
  ): Promise<PublishAck | void> {
    let metadata = options.metadata;
    if (metadata !== undefined) checkObject('metadata', metadata);
    if (options.echo === true) metadata = { ...metadata, echo: true };
    const ack = options.ack === true;
    const envelope = messageEnvelope(this.#ids.next(), target, payload, metadata, ack);
    if (!ack) {
      this.#write(JSON.stringify(envelope));
      return;
    }
    const reply = await this.#call(envelope, operation, options, false);
    const body = reply.payload ?? {};
    return {
      delivered: num(body['delivered']) ?? 0,
      seq: num(body['seq']) ?? null,
      stored: body['stored'] === true,
    };
  }

  /** Sends `envelope` and waits for the response or error that answers it. */
  #call(envelope: Envelope, operation: string, options: CallOptions, internal: boolean): Promise<Envelope> {
    return new Promise<Envelope>((resolve, reject) => {
      const signal = options.signal;
      if (signal?.aborted === true) {
        reject(abortReason(signal));
        return;
      }
      const text = JSON.stringify(envelope);
      const timeoutMs = options.timeoutMs ?? this.#requestTimeoutMs;
      const id = envelope.id;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => pending.reject(abortReason(signal));
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.#pending.delete(id);
      };
      const pending: Pending = {
        resolve: (reply) => {
          settle();
          resolve(reply);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      };
      try {
        this.#write(text);
      } catch (error) {
        reject(error);
        return;
      }
      this.#pending.set(id, pending);
      timer = setTimeout(() => {
        pending.reject(new ArqonTimeoutError(operation, timeoutMs));
        // An internal request (re-join, gap fill, heartbeat) that gets no
        // answer means the connection is not working: start over.
        if (internal) this.#abandon(`${operation} got no reply within ${timeoutMs} ms`);
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort);
    });
  }

  /** Writes one frame; throws when it cannot be sent. */
  #write(text: string): void {
    const socket = this.#socket;
    if (this.#state !== 'connected' || socket === null || socket.readyState !== OPEN) {
      throw new ArqonConnectionError('not-connected', `not connected (state: ${this.#state})`);
    }
    const max = this.#welcome?.limits.max_message_size;
    if (max !== undefined && max > 0) {
      const size = utf8Length(text);
      if (size > max) throw new RangeError(`the frame is ${size} bytes; the server accepts at most ${max}`);
    }
    if (socket.bufferedAmount > this.#maxBufferedBytes) {
      throw new ArqonConnectionError(
        'backpressure',
        `the socket has ${socket.bufferedAmount} bytes waiting to be sent (limit ${this.#maxBufferedBytes})`,
      );
    }
    socket.send(text);
  }

  #requireConnected(): void {
    if (this.#state !== 'connected') {
      throw new ArqonConnectionError('not-connected', `not connected (state: ${this.#state})`);
    }
  }

  #failPending(error: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(error);
  }

  // ---- internals: frames ----------------------------------------------------------

  #onFrame(data: unknown): void {
    this.#lastReceived = Date.now();
    const envelope = parseEnvelope(data);
    if (envelope === null) return;
    switch (envelope.type) {
      case 'response':
      case 'error':
        if (envelope.sender === SERVER_SENDER) {
          this.#onReply(envelope);
          return;
        }
        break; // another client's answer: routed like a message
      case 'system':
        this.#onSystem(envelope);
        return;
      case 'command':
        return;
      default:
        break;
    }
    const { room, channel } = envelope;
    if (typeof room === 'string' && typeof channel === 'string') {
      const sub = this.#subs.get(channelKey(room, channel));
      if (sub !== undefined) sub._onEnvelope(envelope);
      else this.#events.emit('message', toChannelMessage(envelope, room, channel, false));
      return;
    }
    this.#events.emit('direct', toDirectMessage(envelope));
  }

  #onReply(envelope: Envelope): void {
    const id = envelope.request_id;
    const pending = typeof id === 'string' ? this.#pending.get(id) : undefined;
    if (pending !== undefined) {
      if (envelope.type === 'error') pending.reject(new ArqonError(envelope));
      else pending.resolve(envelope);
      return;
    }
    if (envelope.type === 'error') this.#events.emit('serverError', new ArqonError(envelope));
  }

  #onSystem(envelope: Envelope): void {
    const payload = envelope.payload ?? {};
    const event = payload['event'];
    const { room, channel } = envelope;
    const sub = typeof room === 'string' && typeof channel === 'string' ? this.#subs.get(channelKey(room, channel)) : undefined;
    if (event === 'lagged') {
      const channels: LaggedNotice['channels'] = [];
      for (const entry of Array.isArray(payload['channels']) ? payload['channels'] : []) {
        if (!isObject(entry)) continue;
        const r = str(entry['room']);
        const c = str(entry['channel']);
        if (r === undefined || c === undefined) continue;
        const item = {
          room: r,
          channel: c,
          dropped: num(entry['dropped']) ?? 0,
          first_dropped_seq: num(entry['first_dropped_seq']) ?? null,
        };
        channels.push(item);
        this.#subs.get(channelKey(r, c))?._onLagged(item.dropped, item.first_dropped_seq);
      }
      this.#events.emit('lagged', { dropped: num(payload['dropped']) ?? 0, channels, envelope });
    } else if ((event === 'join' || event === 'leave') && sub !== undefined) {
      sub._onPresence(envelope);
    } else if (event === 'channel_deleted' && sub !== undefined) {
      this.#endSubscription(sub.key, 'channel-deleted', str(payload['message']) ?? 'the channel was deleted');
    }
    this.#events.emit('system', envelope);
  }

  // ---- internals: connection lifecycle ------------------------------------------------

  async #firstConnect(): Promise<Welcome> {
    this.#attempt = 0;
    this.#setState('connecting');
    this.#events.emit('connecting', { attempt: 1 });
    let opened: Opened;
    try {
      opened = await this.#open();
    } catch (error) {
      const failure = toFailure(error);
      if (this.#closing) throw new ArqonConnectionError('closed', 'the client was closed while connecting');
      const refused = failure.httpStatus !== undefined && PERMANENT_STATUSES.has(failure.httpStatus);
      const message = refused
        ? `the server refused the connection (HTTP ${failure.httpStatus}): ${failure.message}`
        : `could not connect to ${this.url}: ${failure.message}`;
      this.#finish(refused ? 'refused' : 'connect-failed', message, { httpStatus: failure.httpStatus, code: failure.code });
      throw new ArqonConnectionError(refused ? 'refused' : 'connect-failed', message, {
        httpStatus: failure.httpStatus,
        closeCode: failure.code,
      });
    }
    if (this.#closing) {
      detach(opened.socket);
      safeClose(opened.socket, 1000, 'client closed');
      throw new ArqonConnectionError('closed', 'the client was closed while connecting');
    }
    this.#adopt(opened, false, 1);
    return opened.welcome;
  }

  /** Resolves at the next `connected`, rejects at `closed`. */
  #nextConnection(): Promise<Welcome> {
    return new Promise((resolve, reject) => {
      const offConnected = this.#events.once('connected', (event) => {
        offClosed();
        resolve(event.welcome);
      });
      const offClosed = this.#events.once('closed', (event) => {
        offConnected();
        reject(new ArqonConnectionError(event.reason === 'refused' ? 'refused' : 'closed', event.message, {
          httpStatus: event.httpStatus,
          closeCode: event.code,
        }));
      });
    });
  }

  /** One connection attempt: token, socket, welcome frame. Rejects with an {@link AttemptFailure}. */
  async #open(): Promise<Opened> {
    let token: string | undefined;
    let Ctor: WebSocketConstructor;
    try {
      token = this.#getToken !== undefined ? await this.#getToken() : this.#token;
    } catch (error) {
      throw new AttemptFailure(`getToken failed: ${errorText(error)}`, undefined, false, undefined);
    }
    try {
      Ctor = await resolveWebSocket(this.#WebSocket);
    } catch (error) {
      throw new AttemptFailure(errorText(error), undefined, false, undefined);
    }
    if (this.#closing) throw new AttemptFailure('closed', undefined, false, undefined);
    const url = this.#connectUrl(token);
    return new Promise((resolve, reject) => {
      let socket: WebSocketLike;
      try {
        socket = new Ctor(url);
      } catch (error) {
        reject(new AttemptFailure(errorText(error), undefined, false, undefined));
        return;
      }
      this.#attemptSocket = socket;
      let opened = false;
      let status: number | undefined;
      let errorMessage: string | undefined;
      const done = (): void => {
        clearTimeout(timer);
        if (this.#attemptSocket === socket) this.#attemptSocket = null;
      };
      const timer = setTimeout(() => {
        done();
        detach(socket);
        safeClose(socket, 1000, 'no welcome frame');
        reject(new AttemptFailure(`no welcome frame within ${this.#connectTimeoutMs} ms`, undefined, opened, undefined));
      }, this.#connectTimeoutMs);
      socket.onopen = () => {
        opened = true;
      };
      socket.onerror = (event) => {
        status ??= upgradeStatus(event);
        errorMessage ??= describeError(event);
      };
      socket.onmessage = (event) => {
        done();
        const welcome = parseWelcome(parseEnvelope(event.data));
        if (welcome === null) {
          detach(socket);
          safeClose(socket, 1002, 'expected the welcome frame');
          reject(new AttemptFailure('the first frame was not a welcome frame', undefined, true, undefined));
          return;
        }
        // Until #adopt takes over (a microtask later), keep what arrives:
        // `ws` may deliver several frames of one TCP read synchronously.
        const opened: Opened = { socket, welcome, early: [], closed: null };
        socket.onopen = null;
        socket.onerror = null;
        socket.onmessage = (e) => opened.early.push(e.data);
        socket.onclose = (e) => {
          opened.closed = { code: e.code, reason: e.reason, wasClean: e.wasClean };
        };
        resolve(opened);
      };
      socket.onclose = (event) => {
        done();
        detach(socket);
        const detail = errorMessage ?? (status !== undefined ? `HTTP ${status}` : `closed with ${event.code}`);
        reject(new AttemptFailure(
          opened ? `closed before the welcome frame (${event.code} ${event.reason})` : detail,
          status,
          opened,
          event.code,
          !opened && status === undefined && errorMessage === undefined,
        ));
      };
    });
  }

  /** Makes `socket` the live connection. */
  #adopt(opened: Opened, reconnected: boolean, attempts: number): void {
    const { socket, welcome } = opened;
    this.#generation += 1;
    this.#socket = socket;
    this.#welcome = welcome;
    this.#ownIds.add(welcome.client_id);
    if (this.#ownIds.size > OWN_IDS_KEPT) {
      const oldest = this.#ownIds.values().next();
      if (oldest.done !== true) this.#ownIds.delete(oldest.value);
    }
    this.#lastReceived = Date.now();
    this.#attempt = 0;
    this.#refusals = 0;
    socket.onmessage = (event) => {
      if (this.#socket === socket) this.#onFrame(event.data);
    };
    socket.onclose = (event) => {
      if (this.#socket === socket) this.#onLost(event.code, event.reason, event.wasClean);
    };
    socket.onerror = () => {
      // The close event that follows says what happened.
    };
    this.#setState('connected');
    this.#startHeartbeat();
    this.#events.emit('connected', { welcome, clientId: welcome.client_id, reconnected, attempts });
    for (const data of opened.early) {
      if (this.#socket === socket) this.#onFrame(data);
    }
    if (reconnected && this.#socket === socket) {
      for (const sub of this.#subs.values()) {
        if (sub.state === 'active') void sub._start('rejoin').catch(() => undefined);
      }
    }
    if (opened.closed !== null && this.#socket === socket) {
      this.#onLost(opened.closed.code, opened.closed.reason, opened.closed.wasClean);
    }
  }

  /** The live connection closed. */
  #onLost(code: number, reason: string, wasClean: boolean): void {
    const socket = this.#socket;
    this.#socket = null;
    if (socket !== null) detach(socket);
    this.#stopHeartbeat();
    this.#generation += 1;
    this.#failPending(new ArqonConnectionError('connection-lost', `the connection was lost (${code}${reason ? ` ${reason}` : ''})`, { closeCode: code }));
    for (const sub of this.#subs.values()) sub._onDisconnect();
    const terminal = TERMINAL_CLOSE_CODES.get(code) ?? (this.#policy.enabled ? null : 'reconnect-disabled');
    this.#events.emit('disconnected', { code, reason, wasClean, willReconnect: terminal === null });
    const description = `closed by the server: ${code}${reason ? ` ${reason}` : ''}`;
    if (terminal !== null) {
      this.#finish(terminal, description, { code });
      return;
    }
    this.#scheduleReconnect(description);
  }

  /** Gives up on an unresponsive connection and reconnects. */
  #abandon(reason: string): void {
    const socket = this.#socket;
    if (socket === null) return;
    this.#onLost(1006, reason, false);
    safeClose(socket, CLOSE_ABANDONED, 'unresponsive');
  }

  #scheduleReconnect(reason: string): void {
    this.#attempt += 1;
    if (this.#attempt > this.#policy.maxAttempts) {
      this.#finish('gave-up', `gave up after ${this.#policy.maxAttempts} reconnection attempts: ${reason}`, {});
      return;
    }
    const delayMs = backoffDelay(this.#attempt, this.#policy);
    this.#setState('reconnecting');
    this.#events.emit('reconnecting', { attempt: this.#attempt, delayMs, reason });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      void this.#reconnectAttempt();
    }, delayMs);
  }

  async #reconnectAttempt(): Promise<void> {
    if (this.#closing) return;
    this.#setState('connecting');
    this.#events.emit('connecting', { attempt: this.#attempt });
    let opened: Opened;
    try {
      opened = await this.#open();
    } catch (error) {
      if (this.#closing) return;
      const failure = toFailure(error);
      if (failure.httpStatus !== undefined && PERMANENT_STATUSES.has(failure.httpStatus)) {
        this.#finish('refused', `the server refused the connection (HTTP ${failure.httpStatus})`, {
          httpStatus: failure.httpStatus,
        });
        return;
      }
      if (failure.opaque && Number.isFinite(this.#refusalThreshold)) {
        // Browsers hide why an upgrade failed. If the server says it is
        // ready yet our upgrade keeps failing, it is refusing us.
        const ready = await probeReady(this.url, Math.min(this.#connectTimeoutMs, 2_000));
        if (this.#closing) return;
        this.#refusals = ready ? this.#refusals + 1 : 0;
        if (this.#refusals >= this.#refusalThreshold) {
          this.#finish(
            'refused',
            `${this.#refusals} connection attempts in a row failed before the WebSocket opened while the ` +
              `server's /ready answered 200: the server is refusing this client (the HTTP status, ` +
              `e.g. 401/403, is not visible here)`,
            {},
          );
          return;
        }
      }
      this.#scheduleReconnect(failure.message);
      return;
    }
    if (this.#closing) {
      detach(opened.socket);
      safeClose(opened.socket, 1000, 'client closed');
      return;
    }
    this.#adopt(opened, true, this.#attempt);
  }

  /** Stops for good (until `connect()`): no socket, no timers, no subscriptions. */
  #finish(reason: CloseReason, message: string, extra: { code?: number | undefined; httpStatus?: number | undefined; wasClean?: boolean | undefined }): void {
    this.#clearReconnectTimer();
    this.#stopHeartbeat();
    const socket = this.#socket;
    this.#socket = null;
    if (socket !== null) {
      detach(socket);
      safeClose(socket, 1000, 'client closed');
    }
    this.#generation += 1;
    this.#failPending(
      new ArqonConnectionError(reason === 'refused' ? 'refused' : 'closed', message, {
        httpStatus: extra.httpStatus,
        closeCode: extra.code,
      }),
    );
    const subs = [...this.#subs.values()];
    this.#subs.clear();
    for (const sub of subs) sub._end('closed', message);
    this.#setState('closed');
    const event: ClosedEvent = { reason, message };
    if (extra.code !== undefined) event.code = extra.code;
    if (extra.httpStatus !== undefined) event.httpStatus = extra.httpStatus;
    if (extra.wasClean !== undefined) event.wasClean = extra.wasClean;
    this.#events.emit('closed', event);
  }

  #setState(state: ConnectionState): void {
    const previous = this.#state;
    if (previous === state) return;
    this.#state = state;
    this.#events.emit('state', { state, previous });
  }

  #clearReconnectTimer(): void {
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
  }

  #startHeartbeat(): void {
    this.#stopHeartbeat();
    const interval = this.#heartbeatIntervalMs;
    if (interval <= 0) return;
    this.#heartbeatTimer = setInterval(() => {
      if (this.#heartbeatInFlight || Date.now() - this.#lastReceived < interval) return;
      this.#heartbeatInFlight = true;
      this.#command('ping', {}, {}, true)
        .catch(() => undefined)
        .finally(() => {
          this.#heartbeatInFlight = false;
        });
    }, interval);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer !== null) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
  }

  #connectUrl(token: string | undefined): string {
    const url = new URL(this.url);
    const params: [string, string | undefined][] = [
      ['client_type', this.#identity.clientType],
      ['screen_name', this.#identity.screenName],
      ['avatar', this.#identity.avatar],
      ['personality', this.#identity.personality],
      ['token', token === '' ? undefined : token],
    ];
    for (const [name, value] of params) if (value !== undefined) url.searchParams.set(name, value);
    return url.href;
  }

  #setIdentity(identity: Identity): void {
    if (identity.clientType !== undefined) this.#identity.clientType = identity.clientType;
    if (identity.screenName !== undefined) this.#identity.screenName = identity.screenName;
    if (identity.avatar !== undefined) this.#identity.avatar = identity.avatar;
    if (identity.personality !== undefined) this.#identity.personality = identity.personality;
  }

  async #leaveSubscription(sub: ManagedSubscription<JsonObject>): Promise<void> {
    if (this.#state !== 'connected') {
      // The server forgot the membership with the connection.
      this.#endSubscription(sub.key, 'left', 'left the channel');
      return;
    }
    try {
      await this.leaveChannel(sub.room, sub.channel);
    } catch (error) {
      if (error instanceof ArqonError && error.errorCode === 'CHANNEL_NOT_FOUND') {
        this.#endSubscription(sub.key, 'left', 'the channel no longer exists');
        return;
      }
      throw error;
    }
  }

  #endSubscription(key: string, reason: 'left' | 'channel-deleted', message: string): void {
    const sub = this.#subs.get(key);
    if (sub === undefined) return;
    this.#subs.delete(key);
    sub._end(reason, message);
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!(value > 0)) throw new RangeError(`${name} must be > 0`);
  return value;
}

function checkPosition(position: StreamPosition): StreamPosition {
  if (
    !isObject(position) ||
    !Number.isSafeInteger(position.seq) ||
    position.seq < 0 ||
    typeof position.epoch !== 'string' ||
    position.epoch === ''
  ) {
    throw new TypeError('recover must be {seq: integer >= 0, epoch: non-empty string}');
  }
  return { seq: position.seq, epoch: position.epoch };
}

function parseWelcome(envelope: Envelope | null): Welcome | null {
  const payload = envelope?.payload;
  if (payload === undefined || typeof payload['client_id'] !== 'string') return null;
  const limits = isObject(payload['limits']) ? payload['limits'] : {};
  return {
    welcome: str(payload['welcome']) ?? '',
    client_id: payload['client_id'],
    server_version: str(payload['server_version']) ?? '',
    protocol: str(payload['protocol']) ?? '',
    limits: {
      max_message_size: num(limits['max_message_size']) ?? 0,
      rate_limit_per_sec: num(limits['rate_limit_per_sec']) ?? 0,
      max_subscriptions: num(limits['max_subscriptions']) ?? 0,
    },
  };
}

function toDirectMessage(envelope: Envelope): DirectMessage {
  const message: DirectMessage = {
    id: envelope.id,
    type: envelope.type,
    sender: envelope.sender ?? '',
    payload: envelope.payload ?? {},
    metadata: envelope.metadata ?? {},
    timestamp: envelope.timestamp,
    envelope,
  };
  if (typeof envelope.request_id === 'string') message.requestId = envelope.request_id;
  return message;
}

function toFailure(error: unknown): AttemptFailure {
  return error instanceof AttemptFailure ? error : new AttemptFailure(errorText(error), undefined, false, undefined);
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function abortReason(signal: AbortSignalLike | undefined): unknown {
  return signal?.reason ?? new Error('aborted');
}

/** Removes the SDK's handlers from a socket it no longer uses. */
function detach(socket: WebSocketLike): void {
  socket.onopen = null;
  socket.onmessage = null;
  socket.onerror = null;
  socket.onclose = null;
}

/** Closes a socket, ignoring the errors some implementations throw while connecting. */
function safeClose(socket: WebSocketLike, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    // Already closed or never opened.
  }
}

import { Emitter, type Listener } from './emitter.js';
import { ArqonError } from './errors.js';
import { isObject, num, str } from './protocol.js';
import type {
  ChannelMessage,
  Envelope,
  GapEvent,
  GapReason,
  HistoryReply,
  JoinReply,
  JsonObject,
  PresenceEvent,
  RecoveredEvent,
  RemovedEvent,
  RemovedReason,
  StreamPosition,
  SubscriptionEvents,
} from './types.js';

/** Where a subscription stands. */
export type SubscriptionState =
  /** The join was sent; no reply yet. */
  | 'joining'
  /** Joined: messages flow (after a reconnect, possibly while a gap is being filled). */
  | 'active'
  /** Left, removed by the server, or the client closed. Final. */
  | 'ended';

/** Options of {@link Subscription.messages}. */
export interface IteratorOptions {
  /**
   * Messages held for this iterator while the loop body is busy (default:
   * the client's `subscriptionBufferSize`, 1000). When full, the oldest is
   * dropped and a `lagged` event with `source: "client"` is emitted.
   */
  bufferSize?: number;
}

/**
 * A joined channel, returned by {@link ArqonBus.join}.
 *
 * Messages are delivered in `seq` order, each once, to `on('message')`
 * listeners and to every async iterator:
 *
 * ```ts
 * const sub = await bus.join<{ text: string }>('chat', 'general');
 * sub.on('presence', (p) => console.log(p.event, p.client.screen_name));
 * for await (const msg of sub) console.log(msg.sender, msg.payload.text);
 * ```
 *
 * Messages that arrive before any listener or iterator is attached are
 * kept (up to `subscriptionBufferSize`) and handed to the first one. After
 * a reconnect the subscription is re-joined by itself: what was missed is
 * delivered first (marked `replayed`), then a `recovered` or `gap` event,
 * then live messages.
 */
export interface Subscription<P = JsonObject> extends AsyncIterable<ChannelMessage<P>> {
  readonly room: string;
  readonly channel: string;
  /** `room:channel`. */
  readonly key: string;
  readonly state: SubscriptionState;
  /** Whether §15 presence events were requested. */
  readonly presence: boolean;
  /**
   * The last delivered position (`seq` and `epoch`), to persist and pass
   * as `recover` to a later `join` — for example after a page reload.
   * `undefined` before the first join reply.
   */
  readonly position: StreamPosition | undefined;
  /** The latest `join_channel` reply (updated by every re-join). */
  readonly joinReply: JoinReply | undefined;
  /**
   * For a `join` with `recover`: how the initial catch-up went (later
   * re-joins report through the `recovered`/`gap` events).
   */
  readonly recovery: RecoveredEvent | GapEvent | undefined;
  /** Why the subscription ended, once `state` is `ended`. */
  readonly endReason: RemovedEvent | undefined;

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): () => void;
  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): () => void;
  /** Removes a listener added with `on`. */
  off<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): void;
  /**
   * An async iterator over the messages from now on (plus any not yet
   * handed to a consumer). It finishes when the subscription ends. Each
   * iterator receives every message; leaving the loop early (`break`)
   * detaches it.
   */
  messages(options?: IteratorOptions): AsyncIterableIterator<ChannelMessage<P>>;
  /** Leaves the channel (`leave_channel`) and ends the subscription. */
  leave(): Promise<void>;
}

/** What a subscription needs from its client. @internal */
export interface SubscriptionHost {
  /** Changes with every new connection: flows started on an older one stop. */
  generation(): number;
  /**
   * Sends a command; resolves with the reply payload, rejects with the
   * error. An `internal` request that times out drops the connection.
   */
  request(command: string, args: JsonObject, internal: boolean, timeoutMs?: number): Promise<JsonObject>;
  /** Sends `leave_channel` for `sub` and ends it. */
  leave(sub: ManagedSubscription<JsonObject>): Promise<void>;
  /** `sub` ended: forget it. */
  ended(sub: ManagedSubscription<JsonObject>): void;
  /** Whether `sender` is this client (on this or an earlier connection). */
  isOwn(sender: string | undefined): boolean;
}

/** Settings of a subscription, from the client options. @internal */
export interface SubscriptionSettings {
  bufferSize: number;
  resyncBufferSize: number;
  refillOnLag: boolean;
}

/** The largest `history` page the server allows (SPEC §5). */
const HISTORY_PAGE = 1000;
/** Drops by the SDK's own buffers are reported at most this often per subscription. */
const CLIENT_LAG_WINDOW_MS = 100;
/** Seqs remembered for de-duplicating a lag refill. */
const RECENT_WINDOW = 10_000;

/** Sends one command of a join's flow. */
type Request = (command: string, args: JsonObject) => Promise<JsonObject>;

/** Live messages held while a gap is being filled. */
interface Resync {
  buffer: Envelope[];
  /** Highest `seq` among live messages dropped because `buffer` was full. */
  overflowSeq: number;
  overflowEpoch: string | undefined;
}

/**
 * The implementation of {@link Subscription}.
 * @internal
 */
export class ManagedSubscription<P = JsonObject> implements Subscription<P> {
  readonly room: string;
  readonly channel: string;
  readonly key: string;
  joinReply: JoinReply | undefined;
  recovery: RecoveredEvent | GapEvent | undefined;
  endReason: RemovedEvent | undefined;

  readonly #host: SubscriptionHost;
  readonly #settings: SubscriptionSettings;
  readonly #events = new Emitter<SubscriptionEvents<P>>();
  #state: SubscriptionState = 'joining';
  #presence: boolean;
  #lastSeq = 0;
  #epoch: string | undefined;
  #resync: Resync | null = null;
  /** Messages not yet handed to a consumer. */
  #backlog: ChannelMessage<P>[] = [];
  readonly #iterators = new Set<MessageQueue<ChannelMessage<P>>>();
  readonly #recent: RecentSeqs | null;
  #refilling = false;
  /** The first dropped seq of notices not yet refilled. */
  #refillFrom: number | null = null;
  #clientDrops: { count: number; first: number | null } | null = null;

  constructor(host: SubscriptionHost, room: string, channel: string, presence: boolean, settings: SubscriptionSettings) {
    this.#host = host;
    this.room = room;
    this.channel = channel;
    this.key = `${room}:${channel}`;
    this.#presence = presence;
    this.#settings = settings;
    this.#recent = settings.refillOnLag ? new RecentSeqs(RECENT_WINDOW) : null;
  }

  get state(): SubscriptionState {
    return this.#state;
  }

  /** A method, so that TypeScript does not narrow the state across awaits. */
  #isEnded(): boolean {
    return this.#state === 'ended';
  }

  get presence(): boolean {
    return this.#presence;
  }

  get position(): StreamPosition | undefined {
    return this.#epoch === undefined ? undefined : { seq: this.#lastSeq, epoch: this.#epoch };
  }

  on<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): () => void {
    const off = this.#events.on(event, listener);
    if (event === 'message') this.#scheduleDrain();
    return off;
  }

  once<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): () => void {
    const off = this.#events.once(event, listener);
    if (event === 'message') this.#scheduleDrain();
    return off;
  }

  off<K extends keyof SubscriptionEvents<P>>(event: K, listener: Listener<SubscriptionEvents<P>[K]>): void {
    this.#events.off(event, listener);
  }

  messages(options: IteratorOptions = {}): AsyncIterableIterator<ChannelMessage<P>> {
    const size = options.bufferSize ?? this.#settings.bufferSize;
    if (!(size >= 1)) throw new RangeError('bufferSize must be >= 1');
    const queue: MessageQueue<ChannelMessage<P>> = new MessageQueue(
      size,
      (dropped) => this.#noteClientDrop(dropped.seq ?? null),
      () => this.#iterators.delete(queue),
    );
    if (this.#state === 'ended') {
      for (const message of this.#backlog.splice(0)) queue.push(message);
      queue.end();
      return queue;
    }
    this.#iterators.add(queue);
    this.#scheduleDrain();
    return queue;
  }

  [Symbol.asyncIterator](): AsyncIterator<ChannelMessage<P>> {
    return this.messages();
  }

  leave(): Promise<void> {
    if (this.#state === 'ended') return Promise.resolve();
    return this.#host.leave(this as unknown as ManagedSubscription<JsonObject>);
  }

  // ---- driven by the client ------------------------------------------------

  /** Updates the presence flag after a repeated join. */
  _setPresence(presence: boolean): void {
    this.#presence = presence;
  }

  /**
   * Joins (`initial`) or re-joins after a reconnect (`rejoin`), then
   * catches up from `recover` (initial) or the last delivered position
   * (rejoin). An initial join rejects when the server refuses it; a
   * re-join never rejects (a refusal ends the subscription).
   */
  async _start(mode: 'initial' | 'rejoin', recover?: StreamPosition, timeoutMs?: number): Promise<void> {
    const generation = this.#host.generation();
    const request = (command: string, args: JsonObject): Promise<JsonObject> =>
      this.#host.request(command, args, mode === 'rejoin', timeoutMs);
    this.#resync = { buffer: [], overflowSeq: 0, overflowEpoch: undefined };
    const position = mode === 'rejoin' ? this.position : recover;
    const args: JsonObject = { room: this.room, channel: this.channel };
    if (this.#presence) args['presence'] = true;
    if (position !== undefined) args['recover'] = { seq: position.seq, epoch: position.epoch };

    let reply: JoinReply;
    try {
      reply = parseJoinReply(await request('join_channel', args));
    } catch (error) {
      this.#resync = null;
      if (mode === 'initial') throw error;
      if (error instanceof ArqonError && generation === this.#host.generation()) {
        this._end('rejoin-failed', `re-joining after a reconnect failed: ${error.message}`, error);
      }
      // Otherwise the connection dropped again: the next reconnect re-joins.
      return;
    }
    if (this.#state === 'ended') return;
    this.joinReply = reply;
    this.#state = 'active';

    if (position === undefined) {
      this.#epoch = reply.epoch;
      this.#lastSeq = 0;
      this.#flushResync();
      this.#lastSeq = Math.max(this.#lastSeq, reply.seq);
      return;
    }
    const outcome = await this.#recover(position, reply, generation, request);
    if (outcome === null || this.#isEnded()) return;
    if (mode === 'initial') this.recovery = outcome;
    if ('via' in outcome) this.#events.emit('recovered', outcome);
    else this.#events.emit('gap', outcome);
    this.#flushResync();
  }

  /** A channel message (or other envelope routed to the channel) arrived. */
  _onEnvelope(envelope: Envelope): void {
    if (this.#state === 'ended') return;
    const resync = this.#resync;
    if (resync !== null) {
      if (resync.buffer.length < this.#settings.resyncBufferSize) {
        resync.buffer.push(envelope);
      } else if (typeof envelope.seq === 'number' && envelope.seq > resync.overflowSeq) {
        // Too many to hold: fetch these from history too.
        resync.overflowSeq = envelope.seq;
        resync.overflowEpoch = envelope.epoch;
      }
      return;
    }
    this.#deliverLive(envelope);
  }

  /** A §15 presence notice for this channel. */
  _onPresence(envelope: Envelope): void {
    if (this.#state === 'ended') return;
    const payload = envelope.payload ?? {};
    const event = payload['event'];
    if (event !== 'join' && event !== 'leave') return;
    const client = isObject(payload['client']) ? payload['client'] : {};
    const presence: PresenceEvent = {
      room: this.room,
      channel: this.channel,
      event,
      client: {
        client_id: str(client['client_id']) ?? '',
        client_type: str(client['client_type']) ?? '',
        screen_name: str(client['screen_name']) ?? null,
      },
      participantCount: num(payload['participant_count']) ?? 0,
      envelope,
    };
    this.#events.emit('presence', presence);
  }

  /** The server dropped `dropped` messages of this channel (§16). */
  _onLagged(dropped: number, firstDroppedSeq: number | null): void {
    if (this.#state === 'ended') return;
    const refilling =
      this.#settings.refillOnLag && firstDroppedSeq !== null && this.#resync === null && this.#epoch !== undefined;
    this.#events.emit('lagged', {
      room: this.room,
      channel: this.channel,
      source: 'server',
      dropped,
      firstDroppedSeq,
      refilling,
    });
    if (!refilling || firstDroppedSeq === null) return;
    this.#refillFrom = Math.min(this.#refillFrom ?? Number.POSITIVE_INFINITY, firstDroppedSeq);
    if (!this.#refilling) void this.#runRefills();
  }

  /** The connection dropped: a gap fill in progress starts over after the re-join. */
  _onDisconnect(): void {
    this.#resync = null;
    this.#refillFrom = null;
  }

  /** Ends the subscription: listeners get `removed`, iterators finish. */
  _end(reason: RemovedReason, message: string, error?: Error): void {
    if (this.#state === 'ended') return;
    this.#state = 'ended';
    this.#resync = null;
    const event: RemovedEvent = { room: this.room, channel: this.channel, reason, message };
    if (error !== undefined) event.error = error;
    this.endReason = event;
    this.#host.ended(this as unknown as ManagedSubscription<JsonObject>);
    this.#events.emit('removed', event);
    for (const queue of this.#iterators) {
      for (const pending of this.#backlog.splice(0)) queue.push(pending);
      queue.end();
    }
    this.#iterators.clear();
  }

  // ---- recovery ------------------------------------------------------------

  async #recover(
    position: StreamPosition,
    reply: JoinReply,
    generation: number,
    request: Request,
  ): Promise<RecoveredEvent | GapEvent | null> {
    this.#epoch = position.epoch;
    this.#lastSeq = position.seq;
    if (reply.recovered === true) {
      // §14: the server sent what was missed with the reply.
      let count = 0;
      for (const envelope of reply.publications ?? []) {
        if (typeof envelope.seq !== 'number' || envelope.seq <= this.#lastSeq) continue;
        if (this.#replay(envelope)) count += 1;
      }
      this.#epoch = reply.epoch;
      this.#lastSeq = Math.max(this.#lastSeq, reply.seq);
      return {
        room: this.room,
        channel: this.channel,
        via: 'server',
        fromSeq: position.seq + 1,
        toSeq: reply.seq,
        count,
        epoch: reply.epoch,
      };
    }
    // No §14 support (no `recovered` field), or the server could not
    // recover (`recovered: false`, e.g. more than its limit): history.
    return this.#fillFromHistory(position, reply, generation, request);
  }

  /**
   * Fetches what was missed with `history after_seq`, page by page, exactly
   * like the Rust client's driver. With a changed epoch the old epoch's
   * tail is lost, but the new epoch's messages so far are fetched (from
   * seq 1), since they were published while this client was away.
   */
  async #fillFromHistory(
    position: StreamPosition,
    reply: JoinReply,
    generation: number,
    request: Request,
  ): Promise<RecoveredEvent | GapEvent | null> {
    let reason: GapReason | null = null;
    const epochChanged = reply.epoch !== position.epoch;
    if (epochChanged) {
      reason = 'epoch-changed';
      this.#epoch = reply.epoch;
      this.#lastSeq = 0;
    } else if (reply.seq < position.seq) {
      reason = 'position-ahead';
      this.#lastSeq = reply.seq;
    }
    const target = reply.seq;
    let count = 0;
    for (;;) {
      const goal = this.#resyncGoal(target);
      if (this.#lastSeq >= goal) break;
      let page: HistoryReply;
      try {
        page = parseHistoryReply(
          await request('history', {
            room: this.room,
            channel: this.channel,
            after_seq: this.#lastSeq,
            limit: Math.min(Math.max(goal - this.#lastSeq, 1), HISTORY_PAGE),
          }),
        );
      } catch (error) {
        if (generation !== this.#host.generation()) return null;
        if (error instanceof ArqonError) {
          reason ??= 'history-unavailable';
          break;
        }
        return null;
      }
      if (generation !== this.#host.generation() || this.#state === 'ended') return null;
      if (page.epoch !== this.#epoch) {
        // The history restarted between the join and this read.
        reason = 'epoch-changed';
        this.#epoch = page.epoch;
        this.#lastSeq = page.last_seq;
        break;
      }
      let progressed = false;
      for (const envelope of page.messages) {
        const seq = envelope.seq;
        if (typeof seq !== 'number' || seq <= this.#lastSeq || seq > goal) continue;
        if (seq !== this.#lastSeq + 1) reason ??= 'history-trimmed';
        if (this.#replay(envelope)) count += 1;
        progressed = true;
      }
      if (!progressed) break;
    }
    const goal = this.#resyncGoal(target);
    if (this.#lastSeq < goal) {
      reason ??= 'history-trimmed';
      this.#lastSeq = goal;
    }
    const epoch = this.#epoch ?? reply.epoch;
    if (reason === null) {
      return {
        room: this.room,
        channel: this.channel,
        via: 'history',
        fromSeq: position.seq + 1,
        toSeq: target,
        count,
        epoch,
      };
    }
    const changed = reason === 'epoch-changed';
    return {
      room: this.room,
      channel: this.channel,
      reason,
      fromSeq: position.seq + 1,
      toSeq: changed ? null : target,
      epochChanged: changed,
      oldEpoch: position.epoch,
      newEpoch: epoch,
      recovered: count,
    };
  }

  /** How far to fetch: the join's `seq`, or further if live messages overflowed the buffer. */
  #resyncGoal(target: number): number {
    const resync = this.#resync;
    if (resync !== null && resync.overflowSeq > target && resync.overflowEpoch === this.#epoch) {
      return resync.overflowSeq;
    }
    return target;
  }

  /** Delivers the live messages held during the catch-up, skipping those already delivered. */
  #flushResync(): void {
    const resync = this.#resync;
    this.#resync = null;
    if (resync === null) return;
    for (const envelope of resync.buffer) this.#deliverLive(envelope);
  }

  /** Runs refills until no notice is waiting (a notice during a refill queues another pass). */
  async #runRefills(): Promise<void> {
    this.#refilling = true;
    try {
      while (this.#refillFrom !== null && !this.#isEnded()) {
        const from = this.#refillFrom;
        this.#refillFrom = null;
        await this.#refill(from, this.#lastSeq, this.#host.generation());
      }
    } finally {
      this.#refilling = false;
    }
  }

  /** After a §16 notice: fetches the dropped messages, delivering those not seen. */
  async #refill(firstDroppedSeq: number, lastSeen: number, generation: number): Promise<void> {
    let goal = lastSeen;
    let after = firstDroppedSeq - 1;
    const epoch = this.#epoch;
    try {
      for (;;) {
        const page = parseHistoryReply(
          await this.#host.request('history', {
            room: this.room,
            channel: this.channel,
            after_seq: after,
            limit: HISTORY_PAGE,
          }, false),
        );
        if (generation !== this.#host.generation() || page.epoch !== epoch || this.#state === 'ended') return;
        // Messages dropped at the tail were never seen live: the channel's
        // last seq, not ours, is how far the refill goes.
        goal = Math.max(goal, page.last_seq);
        let progressed = false;
        for (const envelope of page.messages) {
          const seq = envelope.seq;
          if (typeof seq !== 'number' || seq <= after || seq > goal) continue;
          after = seq;
          progressed = true;
          if (this.#recent?.has(seq) !== true) this.#replay(envelope);
        }
        if (!progressed || after >= goal) return;
      }
    } catch {
      // The lagged event was emitted; a failed refill leaves it at that.
    }
  }

  // ---- delivery ------------------------------------------------------------

  /** Delivers a live message unless its `seq` was already delivered in this epoch. */
  #deliverLive(envelope: Envelope): void {
    const seq = envelope.seq;
    if (typeof seq === 'number') {
      if (envelope.epoch === undefined || envelope.epoch === this.#epoch) {
        if (seq <= this.#lastSeq) return;
      } else {
        this.#epoch = envelope.epoch;
        this.#lastSeq = seq;
      }
    }
    this.#deliver(envelope, false);
  }

  /**
   * Delivers a message fetched after the fact, marked `replayed` — except
   * this client's own messages, which it was never sent live (unless it
   * published them with `echo`). Returns whether it was delivered.
   */
  #replay(envelope: Envelope): boolean {
    if (this.#host.isOwn(envelope.sender) && envelope.metadata?.['echo'] !== true) {
      if (typeof envelope.seq === 'number' && envelope.seq > this.#lastSeq) this.#lastSeq = envelope.seq;
      return false;
    }
    this.#deliver(envelope, true);
    return true;
  }

  #deliver(envelope: Envelope, replayed: boolean): void {
    const seq = envelope.seq;
    if (typeof seq === 'number') {
      if (seq > this.#lastSeq) this.#lastSeq = seq;
      this.#recent?.add(seq);
    }
    const message = toChannelMessage<P>(envelope, this.room, this.channel, replayed);
    if (this.#backlog.length > 0 || !this.#hasConsumers()) {
      this.#backlog.push(message);
      if (this.#backlog.length > this.#settings.bufferSize) {
        const dropped = this.#backlog.shift();
        this.#noteClientDrop(dropped?.seq ?? null);
      }
      this.#scheduleDrain();
      return;
    }
    this.#fanOut(message);
  }

  #hasConsumers(): boolean {
    return this.#iterators.size > 0 || this.#events.count('message') > 0;
  }

  #fanOut(message: ChannelMessage<P>): void {
    this.#events.emit('message', message);
    for (const queue of this.#iterators) queue.push(message);
  }

  #drainScheduled = false;

  #scheduleDrain(): void {
    if (this.#drainScheduled || this.#backlog.length === 0) return;
    this.#drainScheduled = true;
    queueMicrotask(() => {
      this.#drainScheduled = false;
      while (this.#backlog.length > 0 && this.#hasConsumers()) {
        const message = this.#backlog.shift();
        if (message !== undefined) this.#fanOut(message);
      }
    });
  }

  /** Reports messages the SDK dropped, coalesced over {@link CLIENT_LAG_WINDOW_MS}. */
  #noteClientDrop(seq: number | null): void {
    if (this.#clientDrops !== null) {
      this.#clientDrops.count += 1;
      return;
    }
    this.#clientDrops = { count: 1, first: seq };
    setTimeout(() => {
      const drops = this.#clientDrops;
      this.#clientDrops = null;
      if (drops === null) return;
      this.#events.emit('lagged', {
        room: this.room,
        channel: this.channel,
        source: 'client',
        dropped: drops.count,
        firstDroppedSeq: drops.first,
        refilling: false,
      });
    }, CLIENT_LAG_WINDOW_MS);
  }
}

/** Builds the SDK's view of a channel envelope. @internal */
export function toChannelMessage<P>(
  envelope: Envelope,
  room: string,
  channel: string,
  replayed: boolean,
): ChannelMessage<P> {
  const message: ChannelMessage<P> = {
    id: envelope.id,
    type: envelope.type,
    room,
    channel,
    sender: envelope.sender ?? '',
    payload: (envelope.payload ?? {}) as P,
    metadata: envelope.metadata ?? {},
    timestamp: envelope.timestamp,
    replayed,
    envelope,
  };
  if (typeof envelope.seq === 'number') message.seq = envelope.seq;
  if (typeof envelope.epoch === 'string') message.epoch = envelope.epoch;
  return message;
}

function parseJoinReply(payload: JsonObject): JoinReply {
  const reply = payload as unknown as JoinReply;
  if (typeof reply.seq !== 'number' || typeof reply.epoch !== 'string') {
    throw new TypeError('join_channel reply without seq/epoch');
  }
  return reply;
}

function parseHistoryReply(payload: JsonObject): HistoryReply {
  const reply = payload as unknown as HistoryReply;
  if (!Array.isArray(reply.messages) || typeof reply.epoch !== 'string') {
    throw new TypeError('history reply without messages/epoch');
  }
  return reply;
}

/**
 * A bounded FIFO read by one async iterator.
 * @internal
 */
export class MessageQueue<T> implements AsyncIterableIterator<T> {
  #items: T[] = [];
  #waiter: ((result: IteratorResult<T>) => void) | null = null;
  #done = false;
  readonly #limit: number;
  readonly #onDrop: (item: T) => void;
  readonly #onReturn: () => void;

  constructor(limit: number, onDrop: (item: T) => void, onReturn: () => void) {
    this.#limit = limit;
    this.#onDrop = onDrop;
    this.#onReturn = onReturn;
  }

  push(item: T): void {
    if (this.#done) return;
    const waiter = this.#waiter;
    if (waiter !== null) {
      this.#waiter = null;
      waiter({ value: item, done: false });
      return;
    }
    this.#items.push(item);
    if (this.#items.length > this.#limit) {
      const dropped = this.#items.shift();
      if (dropped !== undefined) this.#onDrop(dropped);
    }
  }

  /** No more items: `next()` returns what is buffered, then `done`. */
  end(): void {
    this.#done = true;
    const waiter = this.#waiter;
    this.#waiter = null;
    waiter?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    const item = this.#items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter !== null) return Promise.reject(new Error('next() called again before the previous call settled'));
    return new Promise((resolve) => {
      this.#waiter = resolve;
    });
  }

  return(): Promise<IteratorResult<T>> {
    this.#items = [];
    this.end();
    this.#onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

/** The seqs delivered recently (a bounded window below the highest). */
class RecentSeqs {
  readonly #seqs = new Set<number>();
  readonly #window: number;
  #highest = 0;

  constructor(window: number) {
    this.#window = window;
  }

  add(seq: number): void {
    this.#seqs.add(seq);
    if (seq > this.#highest) this.#highest = seq;
    if (this.#seqs.size > 2 * this.#window) {
      const floor = this.#highest - this.#window;
      for (const s of this.#seqs) if (s < floor) this.#seqs.delete(s);
    }
  }

  has(seq: number): boolean {
    return this.#seqs.has(seq);
  }
}

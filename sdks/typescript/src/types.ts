/**
 * Wire types (what the server sends, SPEC §2–§6, §14–§16) and the objects
 * the SDK builds from them.
 *
 * Naming rule: command replies are the server's JSON payloads, typed and
 * returned as they are, so their fields are snake_case exactly as on the
 * wire (`participant_count`, `last_seq`). Objects the SDK creates itself
 * (messages, events, options) are camelCase.
 *
 * @packageDocumentation
 */

/** A JSON object as it comes off the wire. */
export type JsonObject = { [key: string]: unknown };

/** The four kinds of client (SPEC §2). */
export type ClientType = 'human' | 'ai-agent' | 'dashboard' | 'service';

/**
 * One envelope as the server sends it (SPEC §3). Every field but `version`,
 * `id`, `type` and `timestamp` is optional; which ones are present depends
 * on `type`.
 */
export interface Envelope {
  version: string;
  id: string;
  /** `message`, `command`, `response`, `error`, `telemetry` or `system`. */
  type: string;
  timestamp: string;
  room?: string;
  channel?: string;
  /** The sending client's id, or `"arqonbus"` for the server. */
  sender?: string;
  payload?: JsonObject;
  command?: string;
  args?: JsonObject;
  request_id?: string | null;
  status?: string;
  error?: string;
  error_code?: string;
  to_client?: string;
  ack?: boolean;
  /** Per-channel sequence number of a stored channel message (SPEC §7). */
  seq?: number;
  /** History epoch of the channel the message belongs to (SPEC §7). */
  epoch?: string;
  metadata?: JsonObject;
}

/** Limits announced in the welcome frame (SPEC §2). */
export interface ServerLimits {
  max_message_size: number;
  rate_limit_per_sec: number;
  max_subscriptions: number;
}

/** Payload of the welcome frame, the first frame of every connection. */
export interface Welcome {
  welcome: string;
  /** This connection's id: the `sender` of what it sends. */
  client_id: string;
  server_version: string;
  protocol: string;
  limits: ServerLimits;
}

/** `ping` reply. */
export interface PongReply {
  pong: boolean;
  server_time: string;
}

/** `status` reply (SPEC §5). */
export interface StatusReply {
  server: {
    name: string;
    version: string;
    protocol: string;
    node_id: string;
    started_at: string;
    uptime_seconds: number;
  };
  clients: { active: number; by_type: Record<string, number> };
  rooms: number;
  channels: number;
  subscriptions: number;
  participants: { channels: Record<string, number>; truncated: boolean };
  messages: { received: number; delivered: number; dropped: number };
  storage: {
    backend: string;
    degraded: boolean;
    memory_bytes?: number;
    persistence?: string;
  };
}

/** A channel record (SPEC §5). */
export interface ChannelRecord {
  room: string;
  channel: string;
  /** `"general"` or `"system"`. */
  type: string;
  created_at: string;
  /** The creator's client id; `null` for system channels. */
  created_by: string | null;
  hardcoded: boolean;
  auto_created: boolean;
  description: string | null;
  metadata: JsonObject;
  participant_count: number;
}

/** A client record (SPEC §5), as `identify` and `presence` return it. */
export interface ClientRecord {
  client_id: string;
  client_type: ClientType | string;
  screen_name: string | null;
  avatar: string | null;
  personality: string | null;
  connected_at: string;
  last_activity: string;
}

/** One member listed by `channel_info`. */
export interface Participant {
  client_id: string;
  client_type: ClientType | string;
  screen_name: string | null;
  connected_at: string;
  last_activity: string;
}

/** `join_channel` reply (SPEC §5, with the §14 recovery fields). */
export interface JoinReply {
  room: string;
  channel: string;
  participant_count: number;
  /** The channel's last assigned `seq` (0 if none): live messages start after it. */
  seq: number;
  epoch: string;
  /** §14: present when `recover` was sent to a server that implements it. */
  recovered?: boolean;
  /** §14: the missed messages, oldest first, when `recovered` is true. */
  publications?: Envelope[];
}

/** `leave_channel` reply. */
export interface LeaveReply {
  room: string;
  channel: string;
  was_member: boolean;
}

/** `list_channels` reply. */
export interface ChannelListReply {
  channels: ChannelRecord[];
  total: number;
  /** §18: the cursor of the next page, `null` on the last one. */
  next_cursor?: string | null;
}

/** `channel_info` reply: the record plus members and history position. */
export interface ChannelInfoReply extends ChannelRecord {
  participants: Participant[];
  messages_stored: number;
  last_seq: number;
  epoch: string;
}

/** `history` reply. */
export interface HistoryReply {
  room: string;
  channel: string;
  /** Stored channel messages, oldest first, as they were delivered. */
  messages: Envelope[];
  count: number;
  backend: string;
  epoch: string;
  last_seq: number;
  /** §18: the reply was cut short to stay under the size limit. */
  truncated?: boolean;
}

/** `delete_channel` reply. */
export interface DeleteChannelReply {
  room: string;
  channel: string;
  deleted: boolean;
  removed_members: number;
}

/** `presence` reply (SPEC §15). */
export interface PresenceReply {
  room: string;
  channel: string;
  members: ClientRecord[];
  /** How many members the channel has in all. */
  count: number;
  /** The cursor of the next page, `null` on the last one. */
  next_cursor: string | null;
}

/** Acknowledgement of a publish or direct message sent with `ack: true` (SPEC §4.3). */
export interface PublishAck {
  /** Recipients whose queue took the message. */
  delivered: number;
  /** The message's `seq`; `null` for a direct message. */
  seq: number | null;
  /** Whether the message is in history. */
  stored: boolean;
}

/** A position in a channel's stream: the last `seq` seen in `epoch`. */
export interface StreamPosition {
  seq: number;
  epoch: string;
}

/** A channel message, as delivered to a {@link Subscription}. */
export interface ChannelMessage<P = JsonObject> {
  /** The sender's envelope id. */
  id: string;
  /** Usually `"message"`; `"telemetry"`, `"response"` or `"error"` when another client sent one of those to the channel. */
  type: string;
  room: string;
  channel: string;
  /** The sending client's id (`"arqonbus"` for server-originated messages). */
  sender: string;
  /** The message body. Its type `P` is what you declared, not checked at run time. */
  payload: P;
  metadata: JsonObject;
  /** Per-channel sequence number; absent on messages that are not stored. */
  seq?: number;
  epoch?: string;
  /** Server time of routing (RFC 3339). */
  timestamp: string;
  /** True when the message was fetched after a reconnect or a lag rather than received live. */
  replayed: boolean;
  /** The envelope as received. */
  envelope: Envelope;
}

/** A message addressed to this client alone (SPEC §4.2). */
export interface DirectMessage<P = JsonObject> {
  id: string;
  /** `"message"`, or `"response"`/`"error"` when another client answered you. */
  type: string;
  sender: string;
  payload: P;
  metadata: JsonObject;
  timestamp: string;
  /** For a `response`/`error` from another client: the id it answers. */
  requestId?: string;
  envelope: Envelope;
}

/** A member joined or left a channel joined with `presence: true` (SPEC §15). */
export interface PresenceEvent {
  room: string;
  channel: string;
  event: 'join' | 'leave';
  client: { client_id: string; client_type: string; screen_name: string | null };
  /** Members after the change. */
  participantCount: number;
  envelope: Envelope;
}

/**
 * Messages were lost for this subscription.
 *
 * `source: "server"`: the server dropped them because this connection read
 * too slowly (SPEC §16). `source: "client"`: the SDK dropped them because a
 * subscription buffer (async iterator or not-yet-consumed backlog) was full.
 */
export interface LaggedEvent {
  room: string;
  channel: string;
  source: 'server' | 'client';
  /** How many messages were dropped. */
  dropped: number;
  /** The first dropped `seq`, when known. */
  firstDroppedSeq: number | null;
  /** Whether the SDK is fetching the dropped messages from history (`refillOnLag`). */
  refilling: boolean;
}

/** How a re-join caught up with what was missed. */
export type RecoveryVia = 'server' | 'history';

/**
 * After a (re-)join from a known position: every message missed since
 * `fromSeq - 1` was delivered (marked `replayed`), in order, before any
 * newer live message.
 */
export interface RecoveredEvent {
  room: string;
  channel: string;
  /** `server`: the join reply carried them (§14); `history`: fetched with `history after_seq`. */
  via: RecoveryVia;
  /** First missed `seq` (the position's `seq + 1`). */
  fromSeq: number;
  /** Last missed `seq`: the channel's `seq` at the join. `toSeq < fromSeq` means nothing was missed. */
  toSeq: number;
  /** Messages delivered by the recovery. */
  count: number;
  epoch: string;
}

/** Why a gap could not be filled. */
export type GapReason =
  /** The channel's history restarted (server restart with memory storage, channel recreated, expired Redis keys). */
  | 'epoch-changed'
  /** Some missed messages are no longer in history (trimmed). */
  | 'history-trimmed'
  /** The `history` command failed (for example `FORBIDDEN`). */
  | 'history-unavailable'
  /** The known position is ahead of the channel's `seq` in the same epoch. */
  | 'position-ahead';

/**
 * After a (re-)join from a known position: some missed messages could not
 * be delivered. What could be recovered was delivered first (`recovered`
 * of them, marked `replayed`).
 */
export interface GapEvent {
  room: string;
  channel: string;
  reason: GapReason;
  /** First missed `seq` in `oldEpoch`. */
  fromSeq: number;
  /** Last missed `seq` when the epoch did not change; `null` when it did (unknowable). */
  toSeq: number | null;
  epochChanged: boolean;
  oldEpoch: string;
  newEpoch: string;
  /** Messages that were recovered anyway (with a changed epoch: the new epoch's messages so far). */
  recovered: number;
}

/** Why a subscription ended. */
export type RemovedReason =
  /** `leave()` or `leaveChannel()` succeeded. */
  | 'left'
  /** The channel was deleted with `force` (SPEC §5). */
  | 'channel-deleted'
  /** Re-joining after a reconnect was refused (the error is attached). */
  | 'rejoin-failed'
  /** The client closed (`close()`, a permanent refusal, or giving up reconnecting). */
  | 'closed';

/** A subscription ended; its async iterators finish. */
export interface RemovedEvent {
  room: string;
  channel: string;
  reason: RemovedReason;
  message: string;
  /** For `rejoin-failed`: the server's refusal. */
  error?: Error;
}

/** Events of a {@link Subscription}. */
export interface SubscriptionEvents<P = JsonObject> {
  /** A channel message, live or replayed. */
  message: ChannelMessage<P>;
  /** §15 presence change (joined with `presence: true`). */
  presence: PresenceEvent;
  /** A re-join caught up completely. */
  recovered: RecoveredEvent;
  /** A re-join could not recover everything. */
  gap: GapEvent;
  /** Messages were dropped (§16 or a full SDK buffer). */
  lagged: LaggedEvent;
  /** The subscription ended. */
  removed: RemovedEvent;
}

/** Where a client's connection stands. */
export type ConnectionState =
  /** Created, `connect()` not called yet. */
  | 'idle'
  /** A connection attempt is in progress. */
  | 'connecting'
  /** Connected: the welcome frame was received. */
  | 'connected'
  /** Waiting before the next reconnection attempt. */
  | 'reconnecting'
  /** Not connected and not trying; `connect()` starts again. */
  | 'closed';

/** Why a client stopped (its `closed` event). */
export type CloseReason =
  /** `close()` was called. */
  | 'client'
  /** The server refused the connection (HTTP 400/401/403, or the browser heuristic, see README). */
  | 'refused'
  /** A newer connection with the same identity replaced this one (close 4000). */
  | 'replaced'
  /** An operator disconnected this client (close 4003). */
  | 'operator'
  /** `reconnect.maxAttempts` attempts in a row failed. */
  | 'gave-up'
  /** The connection dropped and reconnection is disabled. */
  | 'reconnect-disabled'
  /** The first connection attempt (`connect()`) failed. */
  | 'connect-failed';

/** Payload of the client's `closed` event. */
export interface ClosedEvent {
  reason: CloseReason;
  /** Human-readable explanation. */
  message: string;
  /** WebSocket close code, when there was one. */
  code?: number;
  /** HTTP status of a refused upgrade, when visible (Node with `ws`). */
  httpStatus?: number;
  /** Whether the WebSocket closing handshake completed (for `client`). */
  wasClean?: boolean;
}

/** Payload of the client's `connected` event. */
export interface ConnectedEvent {
  welcome: Welcome;
  clientId: string;
  /** True for a reconnection (subscriptions are being re-joined). */
  reconnected: boolean;
  /** Attempts this connection took (1 = first try). */
  attempts: number;
}

/** Payload of the client's `disconnected` event. */
export interface DisconnectedEvent {
  code: number;
  reason: string;
  wasClean: boolean;
  /** Whether a reconnection will be attempted. */
  willReconnect: boolean;
}

/** Payload of the client's `reconnecting` event. */
export interface ReconnectingEvent {
  /** 1 for the first reconnection attempt after a drop. */
  attempt: number;
  /** Delay before this attempt. */
  delayMs: number;
  /** Why the previous connection or attempt ended. */
  reason: string;
}

/** Payload of the client's `state` event. */
export interface StateChangeEvent {
  state: ConnectionState;
  previous: ConnectionState;
}

/** §16 lagged notice as a whole (also reported per subscription). */
export interface LaggedNotice {
  dropped: number;
  channels: { room: string; channel: string; dropped: number; first_dropped_seq: number | null }[];
  envelope: Envelope;
}

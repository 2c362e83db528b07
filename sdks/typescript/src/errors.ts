import type { Envelope, JsonObject } from './types.js';

/** One entry of an error's `payload.details` (SPEC §6), usually naming a field. */
export interface ErrorDetail {
  field?: string;
  message?: string;
  [key: string]: unknown;
}

/**
 * An `error` envelope from the server (SPEC §6): a command, a publish with
 * `ack`, or a direct message was refused.
 *
 * ```ts
 * try {
 *   await bus.channelInfo('no', 'such');
 * } catch (e) {
 *   if (e instanceof ArqonError && e.errorCode === 'CHANNEL_NOT_FOUND') { … }
 * }
 * ```
 */
export class ArqonError extends Error {
  override readonly name = 'ArqonError';
  /** Stable error code, e.g. `CHANNEL_NOT_FOUND`, `FORBIDDEN`, `RATE_LIMITED`. */
  readonly errorCode: string;
  /** HTTP-like status from `payload.code` (400, 403, 404, 409, 429, 503, 500…). */
  readonly code: number;
  /** `payload.details`: each problem found, usually with the field it concerns. */
  readonly details: ErrorDetail[];
  /** The id of the envelope that was refused, or `null`. */
  readonly requestId: string | null;
  /** The refused command's name, for command errors. */
  readonly command: string | undefined;
  /** For `RATE_LIMITED`: when to retry, from `payload.retry_after_ms`. */
  readonly retryAfterMs: number | undefined;
  /** The error envelope as received. */
  readonly envelope: Envelope;

  /** @param envelope - an envelope of type `error` */
  constructor(envelope: Envelope) {
    const errorCode = typeof envelope.error_code === 'string' ? envelope.error_code : 'UNKNOWN_ERROR';
    const text = typeof envelope.error === 'string' ? envelope.error : errorCode;
    super(`${errorCode}: ${text}`);
    const payload: JsonObject = envelope.payload ?? {};
    this.errorCode = errorCode;
    this.code = typeof payload['code'] === 'number' ? payload['code'] : 0;
    this.details = Array.isArray(payload['details'])
      ? payload['details'].filter(isObject).map((d) => ({ ...d }))
      : [];
    this.requestId = typeof envelope.request_id === 'string' ? envelope.request_id : null;
    this.command = typeof envelope.command === 'string' ? envelope.command : undefined;
    this.retryAfterMs =
      typeof payload['retry_after_ms'] === 'number' ? payload['retry_after_ms'] : undefined;
    this.envelope = envelope;
  }
}

/** A request got no reply within its timeout. */
export class ArqonTimeoutError extends Error {
  override readonly name = 'ArqonTimeoutError';
  /** What timed out: a command name, `publish`, `send`, or `connect`. */
  readonly operation: string;
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number) {
    super(`${operation}: no reply within ${timeoutMs} ms`);
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

/** Why a request could not be made or completed for lack of a connection. */
export type ConnectionErrorKind =
  /** The client is not connected (never connected, reconnecting, or closed). */
  | 'not-connected'
  /** The connection dropped while the request was waiting for its reply. */
  | 'connection-lost'
  /** `close()` was called. */
  | 'closed'
  /** A connection attempt failed. */
  | 'connect-failed'
  /** The server refused the connection (HTTP 400/401/403). */
  | 'refused'
  /** The socket's send buffer is over `maxBufferedBytes`: the connection cannot keep up. */
  | 'backpressure';

/** A connection problem: see {@link ConnectionErrorKind}. */
export class ArqonConnectionError extends Error {
  override readonly name = 'ArqonConnectionError';
  readonly kind: ConnectionErrorKind;
  /** HTTP status of a refused upgrade, when it could be seen. */
  readonly httpStatus: number | undefined;
  /** WebSocket close code, when the connection was closed with one. */
  readonly closeCode: number | undefined;

  constructor(
    kind: ConnectionErrorKind,
    message: string,
    extra: { httpStatus?: number | undefined; closeCode?: number | undefined } = {},
  ) {
    super(message);
    this.kind = kind;
    this.httpStatus = extra.httpStatus;
    this.closeCode = extra.closeCode;
  }
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

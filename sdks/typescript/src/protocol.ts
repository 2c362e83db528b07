/**
 * Envelope construction and the checks the SDK makes before sending.
 * @internal
 */
import type { Envelope, JsonObject } from './types.js';

/** The protocol version every envelope carries. */
export const PROTOCOL_VERSION = '1.0';
/** The `sender` of everything the server itself sends. */
export const SERVER_SENDER = 'arqonbus';

const NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** Throws a `TypeError` unless `value` is a valid room or channel name (SPEC §3). */
export function checkName(what: 'room' | 'channel', value: unknown): asserts value is string {
  if (typeof value !== 'string' || !NAME.test(value)) {
    throw new TypeError(`${what} must be 1-64 characters of [A-Za-z0-9_.-], got ${JSON.stringify(value)}`);
  }
}

/** Throws a `TypeError` unless `value` is a plain object (a JSON object payload). */
export function checkObject(what: string, value: unknown): asserts value is object {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TypeError(`${what} must be a JSON object`);
  }
}

/** `room:channel`, the key of a channel. */
export function channelKey(room: string, channel: string): string {
  return `${room}:${channel}`;
}

function randomHex(bytes: number): string {
  const buffer = new Uint8Array(bytes);
  const crypto = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (crypto?.getRandomValues) {
    crypto.getRandomValues(buffer);
  } else {
    for (let i = 0; i < bytes; i++) buffer[i] = Math.floor(Math.random() * 256);
  }
  return Array.from(buffer, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Makes envelope ids unique per client: `arq_<random>_<counter>`. */
export class IdGenerator {
  readonly #prefix = `arq_${randomHex(6)}_`;
  #next = 0;

  next(): string {
    this.#next += 1;
    return this.#prefix + this.#next.toString(36);
  }
}

/** A `command` envelope (SPEC §5). */
export function commandEnvelope(id: string, command: string, args: JsonObject): Envelope {
  return {
    version: PROTOCOL_VERSION,
    id,
    type: 'command',
    timestamp: new Date().toISOString(),
    command,
    args,
  };
}

/** A `message` envelope to a channel or a client (SPEC §4). */
export function messageEnvelope(
  id: string,
  target: { room: string; channel: string } | { toClient: string },
  payload: object,
  metadata: object | undefined,
  ack: boolean,
): Envelope {
  const envelope: Envelope = {
    version: PROTOCOL_VERSION,
    id,
    type: 'message',
    timestamp: new Date().toISOString(),
    payload: payload as JsonObject,
  };
  if ('toClient' in target) {
    envelope.to_client = target.toClient;
  } else {
    envelope.room = target.room;
    envelope.channel = target.channel;
  }
  if (metadata !== undefined) envelope.metadata = metadata as JsonObject;
  if (ack) envelope.ack = true;
  return envelope;
}

/** Size in bytes of `text` encoded as UTF-8. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i += 1;
      } else {
        bytes += 3;
      }
    } else bytes += 3;
  }
  return bytes;
}

/** Parses one frame; `null` unless it is a JSON object with a string `type`. */
export function parseEnvelope(data: unknown): Envelope | null {
  let text: string;
  if (typeof data === 'string') {
    text = data;
  } else if (data !== null && typeof data === 'object' && 'toString' in data && isBufferLike(data)) {
    text = String(data);
  } else {
    return null;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObject(value) || typeof value['type'] !== 'string') return null;
  return value as unknown as Envelope;
}

function isBufferLike(value: object): boolean {
  // A Node Buffer from a transport that does not decode text frames.
  return typeof (value as { byteLength?: unknown }).byteLength === 'number' && !(value instanceof ArrayBuffer);
}

/** Whether `value` is a non-array object. */
export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `value` if it is a finite number, else `undefined`. */
export function num(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** `value` if it is a string, else `undefined`. */
export function str(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/**
 * The WebSocket the SDK talks through: the browser's native one, Node's
 * global one (Node >= 22), the `ws` package, or one passed in.
 */

/** A function type whose parameter is checked bivariantly (like a method's). */
type Handler<E> = { bivarianceHack(event: E): void }['bivarianceHack'];

/**
 * The part of the WHATWG `WebSocket` API the SDK uses. The browser's
 * `WebSocket`, Node's global one and the `ws` package's all satisfy it.
 */
export interface WebSocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  /** Bytes queued by `send` and not yet written. */
  readonly bufferedAmount: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: Handler<unknown> | null;
  onmessage: Handler<{ data: unknown }> | null;
  onerror: Handler<unknown> | null;
  onclose: Handler<{ code: number; reason: string; wasClean: boolean }> | null;
}

/** A `WebSocket` constructor: `globalThis.WebSocket`, `ws`'s `WebSocket`, or your own. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** `WebSocket.OPEN`. */
export const OPEN = 1;

let wsModule: Promise<WebSocketConstructor> | undefined;

/**
 * The constructor to use: the injected one, else the global `WebSocket`,
 * else the `ws` package, imported on first use (Node 20 has no stable
 * global `WebSocket`).
 * @internal
 */
export async function resolveWebSocket(
  injected: WebSocketConstructor | undefined,
): Promise<WebSocketConstructor> {
  if (injected !== undefined) return injected;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return global;
  wsModule ??= importWs();
  return wsModule;
}

async function importWs(): Promise<WebSocketConstructor> {
  // A computed specifier keeps bundlers from resolving `ws` for the browser,
  // where the global `WebSocket` is always used.
  const specifier = 'ws';
  let mod: { default?: unknown; WebSocket?: unknown };
  try {
    mod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ specifier)) as typeof mod;
  } catch (error) {
    wsModule = undefined;
    throw new Error(
      'arqonbus: no global WebSocket and the "ws" package could not be loaded; ' +
        'install it (npm install ws) or pass the WebSocket option',
      { cause: error },
    );
  }
  const ctor = mod.WebSocket ?? mod.default;
  if (typeof ctor !== 'function') throw new Error('arqonbus: the "ws" package exports no WebSocket');
  return ctor as WebSocketConstructor;
}

/**
 * The HTTP status of a refused upgrade, when the WebSocket implementation
 * reveals it. `ws` reports "Unexpected server response: 401"; browsers
 * never reveal it.
 * @internal
 */
export function upgradeStatus(errorEvent: unknown): number | undefined {
  const texts: unknown[] = [];
  if (typeof errorEvent === 'object' && errorEvent !== null) {
    const e = errorEvent as { message?: unknown; error?: { message?: unknown } };
    texts.push(e.message, e.error?.message);
  }
  for (const text of texts) {
    if (typeof text !== 'string') continue;
    const match = /Unexpected server response: (\d{3})/.exec(text);
    if (match?.[1] !== undefined) return Number(match[1]);
  }
  return undefined;
}

/** A short description of an `error` event. @internal */
export function describeError(errorEvent: unknown): string | undefined {
  if (typeof errorEvent === 'object' && errorEvent !== null) {
    const e = errorEvent as { message?: unknown; error?: { message?: unknown } };
    if (typeof e.message === 'string' && e.message !== '') return e.message;
    if (typeof e.error?.message === 'string') return e.error.message;
  }
  return undefined;
}

/**
 * Asks the server's `GET /ready` (SPEC §12, served with
 * `Access-Control-Allow-Origin: *`) whether it accepts connections.
 * `true` only for a 200 answer; `false` when it answers otherwise or
 * cannot be reached, or when `fetch` is unavailable.
 * @internal
 */
export async function probeReady(wsUrl: string, timeoutMs: number): Promise<boolean> {
  const fetchFn = (globalThis as { fetch?: typeof fetch }).fetch;
  if (typeof fetchFn !== 'function') return false;
  let url: URL;
  try {
    url = new URL(wsUrl);
  } catch {
    return false;
  }
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = '/ready';
  url.search = '';
  url.hash = '';
  url.username = '';
  url.password = '';
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetchFn(url.href, { signal: controller.signal, cache: 'no-store' });
    // Drain the body so the connection is released.
    await response.arrayBuffer().catch(() => undefined);
    return response.status === 200;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Bounded waiting: every receive in the tests goes through one of these,
 * so a hang fails fast with a message saying what was awaited.
 */
import type { ArqonBus, ArqonBusEvents, ChannelMessage, JsonObject, Subscription, SubscriptionEvents } from 'arqonbus';

/** Default bound for one receive. */
export const RECEIVE_TIMEOUT_MS = 5_000;

/** Resolves with `promise`, or rejects after `ms` naming `what`. */
export async function withTimeout<T>(promise: Promise<T>, what: string, ms = RECEIVE_TIMEOUT_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type Emitting = { on(event: string, listener: (value: unknown) => void): () => void };

/** The next `event` (matching `predicate`) of a client, within `ms`. */
export function nextEvent<K extends keyof ArqonBusEvents>(
  emitter: ArqonBus,
  event: K,
  options?: { ms?: number; predicate?: (value: ArqonBusEvents[K]) => boolean },
): Promise<ArqonBusEvents[K]>;
/** The next `event` (matching `predicate`) of a subscription, within `ms`. */
export function nextEvent<P, K extends keyof SubscriptionEvents<P>>(
  emitter: Subscription<P>,
  event: K,
  options?: { ms?: number; predicate?: (value: SubscriptionEvents<P>[K]) => boolean },
): Promise<SubscriptionEvents<P>[K]>;
export function nextEvent(
  emitter: ArqonBus | Subscription<unknown>,
  event: string,
  options: { ms?: number; predicate?: (value: never) => boolean } = {},
): Promise<unknown> {
  let off: (() => void) | undefined;
  const predicate = options.predicate as ((value: unknown) => boolean) | undefined;
  const promise = new Promise<unknown>((resolve) => {
    off = (emitter as unknown as Emitting).on(event, (value) => {
      if (predicate === undefined || predicate(value)) resolve(value);
    });
  });
  return withTimeout(promise, `event ${event}`, options.ms).finally(() => off?.());
}

/** Records every `event` of a client from now on. */
export function record<K extends keyof ArqonBusEvents>(emitter: ArqonBus, event: K): ArqonBusEvents[K][];
/** Records every `event` of a subscription from now on. */
export function record<P, K extends keyof SubscriptionEvents<P>>(emitter: Subscription<P>, event: K): SubscriptionEvents<P>[K][];
export function record(emitter: ArqonBus | Subscription<unknown>, event: string): unknown[] {
  const seen: unknown[] = [];
  (emitter as unknown as Emitting).on(event, (value) => seen.push(value));
  return seen;
}

/** Waits until `condition()` holds, polling, within `ms`. */
export async function until(condition: () => boolean, what: string, ms = RECEIVE_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting until ${what}`);
    await sleep(10);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Collects messages of `sub` with an `on('message')` listener until `done(all)`, within `ms`. */
export function collectUntil<P = JsonObject>(
  sub: Subscription<P>,
  done: (messages: ChannelMessage<P>[]) => boolean,
  what: string,
  ms = RECEIVE_TIMEOUT_MS,
): { messages: ChannelMessage<P>[]; finished: Promise<ChannelMessage<P>[]> } {
  const messages: ChannelMessage<P>[] = [];
  let off: (() => void) | undefined;
  const finished = new Promise<ChannelMessage<P>[]>((resolve) => {
    off = sub.on('message', (m) => {
      messages.push(m);
      if (done(messages)) resolve(messages);
    });
    if (done(messages)) resolve(messages);
  });
  return {
    messages,
    finished: withTimeout(finished, what, ms).finally(() => off?.()),
  };
}

/** The next `n` messages from an async iterator, each within `ms`. */
export async function take<T>(iterator: AsyncIterator<T>, n: number, ms = RECEIVE_TIMEOUT_MS): Promise<T[]> {
  const out: T[] = [];
  while (out.length < n) {
    const result = await withTimeout(iterator.next(), `message ${out.length + 1} of ${n}`, ms);
    if (result.done === true) throw new Error(`the iterator finished after ${out.length} of ${n} messages`);
    out.push(result.value);
  }
  return out;
}

/** Whether the env var asks for a feature's tests to run rather than skip. */
export function required(name: string): boolean {
  return process.env[name] === '1' || process.env[name] === 'true';
}

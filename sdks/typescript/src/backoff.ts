/** Automatic reconnection after a connection drops. */
export interface ReconnectOptions {
  /** Reconnect at all (default `true`). */
  enabled?: boolean;
  /** Base delay before the first attempt (default 250 ms). */
  initialDelayMs?: number;
  /** Cap of the exponential delay (default 10 000 ms). */
  maxDelayMs?: number;
  /** Give up after this many failed attempts in a row (default `Infinity`). */
  maxAttempts?: number;
  /**
   * Source of randomness in [0, 1) for the jitter (default `Math.random`).
   * Tests pass a fixed function to make delays deterministic.
   */
  random?: () => number;
}

/** {@link ReconnectOptions} with every default filled in. */
export type ReconnectPolicy = Required<ReconnectOptions>;

/** The defaults of {@link ReconnectOptions}. */
export const DEFAULT_RECONNECT: Readonly<ReconnectPolicy> = Object.freeze({
  enabled: true,
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  maxAttempts: Number.POSITIVE_INFINITY,
  random: Math.random,
});

/** Fills in the defaults; `false` disables reconnection. */
export function reconnectPolicy(options: boolean | ReconnectOptions | undefined): ReconnectPolicy {
  if (options === false) return { ...DEFAULT_RECONNECT, enabled: false };
  if (options === true || options === undefined) return { ...DEFAULT_RECONNECT };
  const policy: ReconnectPolicy = { ...DEFAULT_RECONNECT };
  for (const key of Object.keys(options) as (keyof ReconnectOptions)[]) {
    if (options[key] !== undefined) Object.assign(policy, { [key]: options[key] });
  }
  if (!(policy.initialDelayMs >= 0) || !(policy.maxDelayMs >= policy.initialDelayMs)) {
    throw new RangeError('reconnect: need 0 <= initialDelayMs <= maxDelayMs');
  }
  if (!(policy.maxAttempts >= 1)) throw new RangeError('reconnect.maxAttempts must be >= 1');
  return policy;
}

/**
 * Exponential backoff with full jitter: the delay before reconnection
 * attempt `attempt` (1 for the first) is uniform in
 * `[0, min(maxDelayMs, initialDelayMs * 2^(attempt-1))]`.
 *
 * Full jitter spreads the reconnections of many clients dropped at once
 * (a server restart) over the whole window instead of synchronised waves.
 */
export function backoffDelay(
  attempt: number,
  policy: Pick<ReconnectPolicy, 'initialDelayMs' | 'maxDelayMs' | 'random'>,
): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 30);
  const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** exponent);
  const r = Math.min(Math.max(policy.random(), 0), 1);
  return Math.floor(ceiling * r);
}

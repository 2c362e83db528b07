/** A listener for events whose payload is `T`. */
export type Listener<T> = (event: T) => void;

/**
 * A small typed event emitter that works the same in browsers and Node.
 *
 * A listener that throws does not stop the others nor the SDK: its error
 * is re-thrown from a microtask, where the host reports it (as an uncaught
 * exception, like Node's `EventEmitter` would).
 *
 * @internal
 */
export class Emitter<Events extends object> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds `listener`; returns a function that removes it. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(event);
    if (set === undefined) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once; returns a function that removes it. */
  once<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(event, (value) => {
      off();
      listener(value);
    });
    return off;
  }

  /** Removes `listener` (one added with `on`; for `once`, use the returned function). */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    set.delete(listener as Listener<never>);
    if (set.size === 0) this.#listeners.delete(event);
  }

  /** Number of listeners of `event`. */
  count(event: keyof Events): number {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Calls every listener of `event` with `value`. */
  emit<K extends keyof Events>(event: K, value: Events[K]): void {
    const set = this.#listeners.get(event);
    if (set === undefined) return;
    for (const listener of [...set] as Listener<Events[K]>[]) {
      try {
        listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** Removes every listener. */
  clear(): void {
    this.#listeners.clear();
  }
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ArqonBus, backoffDelay, DEFAULT_RECONNECT } from 'arqonbus';

describe('backoffDelay (exponential, full jitter)', () => {
  const policy = { initialDelayMs: 100, maxDelayMs: 1_000 };

  it('is uniform in [0, initial * 2^(attempt-1)]', () => {
    assert.equal(backoffDelay(1, { ...policy, random: () => 0 }), 0);
    assert.equal(backoffDelay(1, { ...policy, random: () => 0.999999 }), 99);
    assert.equal(backoffDelay(2, { ...policy, random: () => 0.5 }), 100);
    assert.equal(backoffDelay(3, { ...policy, random: () => 0.5 }), 200);
    assert.equal(backoffDelay(4, { ...policy, random: () => 0.999999 }), 799);
  });

  it('is capped at maxDelayMs however many attempts', () => {
    for (const attempt of [5, 10, 31, 1_000, Number.MAX_SAFE_INTEGER]) {
      const delay = backoffDelay(attempt, { ...policy, random: () => 0.999999 });
      assert.ok(delay <= 1_000 && delay >= 999, `attempt ${attempt}: ${delay}`);
    }
  });

  it('stays in range with real randomness', () => {
    for (let attempt = 1; attempt < 20; attempt++) {
      const ceiling = Math.min(1_000, 100 * 2 ** (attempt - 1));
      for (let i = 0; i < 50; i++) {
        const delay = backoffDelay(attempt, { ...policy, random: Math.random });
        assert.ok(delay >= 0 && delay <= ceiling, `attempt ${attempt}: ${delay} > ${ceiling}`);
      }
    }
  });

  it('clamps a misbehaving random source', () => {
    assert.equal(backoffDelay(1, { ...policy, random: () => -5 }), 0);
    assert.equal(backoffDelay(1, { ...policy, random: () => 7 }), 100);
  });

  it('has documented defaults', () => {
    assert.equal(DEFAULT_RECONNECT.enabled, true);
    assert.equal(DEFAULT_RECONNECT.initialDelayMs, 250);
    assert.equal(DEFAULT_RECONNECT.maxDelayMs, 10_000);
    assert.equal(DEFAULT_RECONNECT.maxAttempts, Number.POSITIVE_INFINITY);
  });

  it('rejects an inconsistent policy at construction', () => {
    assert.throws(() => new ArqonBus('ws://127.0.0.1:1/', { reconnect: { initialDelayMs: 10, maxDelayMs: 5 } }), RangeError);
    assert.throws(() => new ArqonBus('ws://127.0.0.1:1/', { reconnect: { maxAttempts: 0 } }), RangeError);
    assert.throws(() => new ArqonBus('http://127.0.0.1:1/'), TypeError);
    assert.throws(() => new ArqonBus('not a url'), TypeError);
    assert.throws(() => new ArqonBus('ws://127.0.0.1:1/', { requestTimeoutMs: 0 }), RangeError);
  });
});

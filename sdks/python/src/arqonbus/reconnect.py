"""The reconnect policy: exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """When and how often to reconnect after the connection drops.

    Attempt ``n`` (from 0) waits a uniformly random time in ``[0, d]``
    where ``d = min(max_delay, initial_delay * multiplier ** n)`` ("full
    jitter"), so that many clients dropped at once by a restart do not
    come back in lockstep.

    Attributes:
        enabled: reconnect at all; when false a dropped connection closes
            the client.
        initial_delay: the cap of the first attempt's delay, in seconds.
        max_delay: the largest cap, in seconds.
        multiplier: growth of the cap per attempt.
        max_attempts: give up (closing the client with
            :class:`~arqonbus.errors.ReconnectFailed`) after this many
            failed attempts in a row; ``None`` never gives up.
    """

    enabled: bool = True
    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("max_attempts must not be negative")

    @classmethod
    def disabled(cls) -> ReconnectPolicy:
        """No reconnection."""
        return cls(enabled=False)

    def cap(self, attempt: int) -> float:
        """The upper bound of attempt ``attempt``'s delay."""
        # Bounded exponent: no overflow however long the outage lasts.
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** min(attempt, 64)))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """A jittered delay before attempt ``attempt`` (0-based), in seconds."""
        return (rng or random).uniform(0.0, self.cap(attempt))

"""A bounded single-loop queue that can be ended, with or without an error."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class Ended(Exception):
    """Raised by :meth:`Mailbox.get` once the mailbox is ended and empty."""


class Mailbox(Generic[T]):
    """A bounded FIFO between the connection task and a consumer.

    Unlike :class:`asyncio.Queue` it can be *ended*: items already queued
    are still handed out, then :meth:`get` raises the end's error (or
    :class:`Ended`), and a producer waiting for room is released at once.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: BaseException | None = None
        #: Items discarded by :meth:`offer` because the mailbox was full.
        self.dropped = 0

    @property
    def ended(self) -> bool:
        return self._ended

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> bool:
        """Waits for room, then queues ``item``. ``False`` if ended."""
        while len(self._items) >= self._maxsize and not self._ended:
            self._writable.clear()
            await self._writable.wait()
        if self._ended:
            return False
        self._items.append(item)
        self._readable.set()
        return True

    def offer(self, item: T) -> bool:
        """Queues ``item`` without waiting, dropping the oldest when full.
        ``False`` if an item had to be dropped (or the mailbox is ended)."""
        if self._ended:
            return False
        dropped = len(self._items) >= self._maxsize
        if dropped:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._readable.set()
        return not dropped

    async def get(self) -> T:
        """The next item; raises the end's error (or :class:`Ended`) once
        the mailbox is ended and drained."""
        while not self._items:
            if self._ended:
                raise self._error if self._error is not None else Ended()
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def end(self, error: BaseException | None = None, *, discard: bool = False) -> None:
        """Ends the mailbox; ``discard`` drops what is still queued."""
        if self._ended:
            return
        self._ended = True
        self._error = error
        if discard:
            self._items.clear()
        self._readable.set()
        self._writable.set()

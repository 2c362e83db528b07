"""Fixtures: real servers, unique channel names, and a guard that fails a
test when asyncio or the client logs an error (a task destroyed while
pending, an exception nobody retrieved, a failing callback...)."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack

import pytest

import arqonbus
from arqonbus import ArqonBus, ReconnectPolicy

from .servers import BusServer, RedisServer, server_binary

#: Bound of every wait for something from the server.
WAIT = 5.0
#: A reconnect policy for tests: quick attempts.
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.5)


class _ErrorLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_error_logs = _ErrorLogs()


def pytest_configure(config: pytest.Config) -> None:
    for name in ("asyncio", "arqonbus"):
        logging.getLogger(name).addHandler(_error_logs)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Stragglers logged after their test ended (e.g. at garbage collection).
    if _error_logs.records and exitstatus == 0:
        for record in _error_logs.records:
            print(f"\nerror logged outside a test: {_error_logs.format(record)}")
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def no_error_logs() -> Iterator[None]:
    start = len(_error_logs.records)
    yield
    new = _error_logs.records[start:]
    if new:
        del _error_logs.records[start:]
        text = "\n".join(_error_logs.format(r) for r in new)
        pytest.fail(f"errors were logged during the test:\n{text}", pytrace=False)


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_bin() -> str:
    path = server_binary()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"arqonbus-server not found at {path}: run `cargo build -p arqonbus-server` "
            "in the repository root, or set ARQONBUS_SERVER_BIN to a built binary",
            pytrace=False,
        )
    return str(path)


@pytest.fixture(scope="session")
def server(server_bin: str) -> Iterator[BusServer]:
    """A server with the default configuration, shared by the tests that
    only need one (each uses its own channel names)."""
    srv = BusServer(server_bin).start()
    yield srv
    srv.close()


StartServer = Callable[..., BusServer]


@pytest.fixture
def start_server(server_bin: str) -> Iterator[StartServer]:
    """Starts a dedicated server: ``start_server(env={...}, args=[...])``.
    Every server it started is stopped at the end of the test."""
    started: list[BusServer] = []

    def start(
        env: Mapping[str, str] | None = None, args: Sequence[str] = (), port: int = 0
    ) -> BusServer:
        srv = BusServer(server_bin, env, args)
        started.append(srv)
        return srv.start(port)

    yield start
    for srv in started:
        srv.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis started for this test run; skipped (with a notice) when
    ``redis-server`` is not installed, unless ``ARQONBUS_REQUIRE_REDIS=1``."""
    binary = RedisServer.binary()
    if binary is None:
        if os.environ.get("ARQONBUS_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not on PATH and ARQONBUS_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip("redis-server is not on PATH (set ARQONBUS_REQUIRE_REDIS=1 to fail instead)")
    redis = RedisServer(binary)
    yield redis.url
    redis.close()


# --------------------------------------------------------------------------
# Clients and names
# --------------------------------------------------------------------------


@pytest.fixture
def room() -> str:
    """A room name no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


Connect = Callable[..., Awaitable[ArqonBus]]


@pytest.fixture
async def clients() -> AsyncIterator[Connect]:
    """``await connect(url, **options)`` gives a connected client, closed at
    the end of the test."""
    async with AsyncExitStack() as stack:

        async def connect(url: str, **options: object) -> ArqonBus:
            options.setdefault("request_timeout", WAIT)
            bus = ArqonBus(url, **options)  # type: ignore[arg-type]
            return await stack.enter_async_context(bus)

        yield connect


async def messages(sub: arqonbus.Subscription, count: int, timeout: float = WAIT) -> list[arqonbus.Message]:
    """The next ``count`` events of ``sub``, which must all be messages."""
    out: list[arqonbus.Message] = []
    for _ in range(count):
        event = await sub.get(timeout)
        assert isinstance(event, arqonbus.Message), f"expected a message, got {event!r}"
        out.append(event)
    return out


async def nothing_more(sub: arqonbus.Subscription, wait: float = 0.3) -> None:
    """Asserts that no event arrives within ``wait`` seconds."""
    with pytest.raises(TimeoutError):
        event = await sub.get(wait)
        pytest.fail(f"unexpected event {event!r}")


async def wait_for_event(events: list[arqonbus.BusEvent], kind: type, count: int = 1) -> None:
    """Waits until ``events`` (filled by an ``on_event`` callback) holds
    ``count`` events of type ``kind``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while sum(isinstance(e, kind) for e in events) < count:
        if loop.time() > deadline:
            pytest.fail(f"no {kind.__name__} event (count {count}) in {WAIT} s: {events}")
        await asyncio.sleep(0.02)

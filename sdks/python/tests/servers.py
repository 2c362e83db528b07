"""Real ``arqonbus-server`` and ``redis-server`` processes for the tests."""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_SERVER_BIN = REPO_ROOT / "target" / "debug" / "arqonbus-server"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def server_binary() -> Path:
    """The server binary: ``$ARQONBUS_SERVER_BIN`` or the workspace's debug build."""
    return Path(os.environ.get("ARQONBUS_SERVER_BIN") or DEFAULT_SERVER_BIN)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class BusServer:
    """One ``arqonbus-server`` process, started on port 0 (or a given port)
    with ``--print-addrs``. Environment variables ``ARQONBUS_*`` of the
    test run are not passed on: only ``env``."""

    def __init__(
        self, binary: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.binary = binary
        self.env = dict(env or {})
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.bus_addr = ""
        self.telemetry_addr = ""
        self._log = tempfile.NamedTemporaryFile(prefix="arqonbus-server-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"ws://{self.bus_addr}/"

    @property
    def port(self) -> int:
        return int(self.bus_addr.rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, port: int = 0) -> BusServer:
        assert self.proc is None, "already running"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARQONBUS_")}
        env.update(self.env)
        cmd = [
            str(self.binary),
            "--port", str(port),
            "--telemetry-port", "0",
            "--print-addrs",
            *self.args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, env=env)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        line = b""
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, remaining))
            if not ready:
                self.kill()
                raise RuntimeError(f"server printed no addresses in {STARTUP_TIMEOUT} s\n{self.log_tail()}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                code = self.proc.wait(5)
                self._reap()
                raise RuntimeError(f"server exited with {code} at startup\n{self.log_tail()}")
            line += chunk
        addrs = json.loads(line.decode())
        self.bus_addr = addrs["bus"]
        self.telemetry_addr = addrs.get("telemetry") or ""
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stops the process (SIGTERM: graceful) and returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self._reap()
        return code

    async def stop_async(self, sig: int = signal.SIGTERM) -> int | None:
        """:meth:`stop` without blocking the event loop (the clients of the
        server must be able to see it go)."""
        return await asyncio.to_thread(self.stop, sig)

    async def restart_async(self) -> None:
        """Stops, then starts again on the same port."""
        port = self.port
        await self.stop_async()
        await asyncio.to_thread(self.start, port)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """Freezes the process (SIGSTOP) and waits until every thread is stopped."""
        os.kill(self.pid, signal.SIGSTOP)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._all_threads_stopped():
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not stop")
            time.sleep(0.005)

    def _all_threads_stopped(self) -> bool:
        tasks = Path(f"/proc/{self.pid}/task")
        states = []
        for task in tasks.iterdir():
            stat = (task / "stat").read_text()
            states.append(stat.rsplit(")", 1)[1].split()[0])
        return all(state in ("T", "t") for state in states)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def _reap(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stops the process and removes its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.resume()  # a paused process ignores SIGTERM until resumed
        self.stop()
        self._log.close()
        os.unlink(self._log.name)


class RedisServer:
    """A throwaway ``redis-server`` without persistence, on a free port."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._pong():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

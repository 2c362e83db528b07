"""Building and reading envelopes (SPEC §3)."""

from __future__ import annotations

import itertools
import json
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

PROTOCOL_VERSION = "1.0"
#: The ``sender`` of everything the server itself writes.
SERVER_SENDER = "arqonbus"


def timestamp() -> str:
    """Now, as RFC 3339 UTC with milliseconds and ``Z``."""
    now = datetime.now(timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IdGenerator:
    """Envelope ids unique per client: ``arq_py<random>_<counter>``."""

    def __init__(self) -> None:
        self._prefix = f"arq_py{secrets.token_hex(6)}_"
        self._counter = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter)}"


def encode(envelope: Mapping[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes) -> dict[str, Any] | None:
    """The envelope in a text frame, or ``None`` if it is not a JSON object."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def command_envelope(envelope_id: str, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "version": PROTOCOL_VERSION,
        "id": envelope_id,
        "type": "command",
        "timestamp": timestamp(),
        "command": command,
        "args": dict(args),
    }


def message_envelope(
    envelope_id: str,
    payload: Mapping[str, Any],
    *,
    room: str | None = None,
    channel: str | None = None,
    to_client: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    ack: bool = False,
) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise TypeError(f"payload must be a mapping (a JSON object), not {type(payload).__name__}")
    envelope: dict[str, Any] = {
        "version": PROTOCOL_VERSION,
        "id": envelope_id,
        "type": "message",
        "timestamp": timestamp(),
        "payload": dict(payload),
    }
    if room is not None:
        envelope["room"] = room
        envelope["channel"] = channel
    if to_client is not None:
        envelope["to_client"] = to_client
    if metadata is not None:
        envelope["metadata"] = dict(metadata)
    if ack:
        envelope["ack"] = True
    return envelope

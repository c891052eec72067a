"""Watching a session without I/O: the Server-Sent Events of ``GET /sessions/{id}/events``.

:class:`EventReader` turns the lines of the stream into :class:`SessionEvent` s; the transports'
``lines()`` carry them and the clients' ``watch()`` iterates them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from guidance_client.errors import ProtocolError

__all__ = ["EventReader", "SessionEvent", "watch_headers", "watch_path"]


@dataclass(frozen=True)
class SessionEvent:
    """One event of a watched session (``GET /sessions/{id}/events``).

    Attributes:
        id: the event's id (give it as ``last_event_id`` to resume after it).
        event: ``snapshot``, ``accept``, ``rollback`` or ``end``.
        data: its JSON payload: ``accept`` has ``text`` (new text), ``variables`` (the captures
            whose partial value changed, ``{name: {"value", "complete", ...}}``), ``tokens``,
            ``accepted``, ``terminated``, ``accepting``; ``snapshot`` and ``rollback`` the whole
            state; ``end`` the ``reason``.
    """

    id: str
    event: str
    data: dict[str, Any]


class EventReader:
    """Turns the lines of an event stream into :class:`SessionEvent` s (no I/O).

    ``feed(line)`` for each line (without its line break) returns an event when a blank line ends
    one; comments (heartbeats) and unknown fields are skipped.
    """

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}
        self._data: list[str] = []
        self.last_event_id: str | None = None

    def feed(self, line: str) -> SessionEvent | None:
        """Take one line; the event it completes, if any."""
        if not line:
            if not self._data:
                self._fields.clear()
                return None
            data, fields = "\n".join(self._data), self._fields
            self._data, self._fields = [], {}
            event_id = fields.get("id", self.last_event_id or "")
            self.last_event_id = event_id
            try:
                payload = json.loads(data)
            except ValueError as e:
                raise ProtocolError(f"event data is not JSON: {data[:80]!r}") from e
            return SessionEvent(event_id, fields.get("event", "message"), payload)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name in ("id", "event"):
            self._fields[name] = value
        return None


def watch_path(session_id: str) -> str:
    """The path of a session's event stream."""
    return "/sessions/" + quote(session_id, safe="") + "/events"


def watch_headers(last_event_id: str | None) -> dict[str, str]:
    """Headers of an event stream request (``Last-Event-ID`` to resume)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return headers

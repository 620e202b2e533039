"""Live events of approval workflows, for WatchEvents streams (in-process fan-out)."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # pending | approved | rejected | signed | expired
    approval_id: str
    request_id: str
    requester: str
    at_ms: int


class EventBus:
    """Every subscriber gets every event published after it subscribed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[Event]] = []

    def publish(self, kind: str, approval_id: str, request_id: str, requester: str) -> None:
        event = Event(kind, approval_id, request_id, requester, time.time_ns() // 1_000_000)
        with self._lock:
            for subscriber in self._subscribers:
                # A watcher too slow to keep 10,000 events loses the newest, never blocks us.
                with contextlib.suppress(queue.Full):
                    subscriber.put_nowait(event)

    def subscribe(self) -> queue.Queue[Event]:
        inbox: queue.Queue[Event] = queue.Queue(maxsize=10_000)
        with self._lock:
            self._subscribers.append(inbox)
        return inbox

    def unsubscribe(self, inbox: queue.Queue[Event]) -> None:
        with self._lock:
            self._subscribers.remove(inbox)

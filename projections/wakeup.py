"""Waking followers of the log when new events are recorded (PostgreSQL LISTEN/NOTIFY)."""

from __future__ import annotations

import logging
import threading

import psycopg

logger = logging.getLogger(__name__)

NOTIFY_WAIT_SECONDS = 0.5
RECONNECT_SECONDS = 1.0


def listen_for_events(url: str, channel: str, wake: threading.Event, stop: threading.Event) -> None:
    """Set ``wake`` on every NOTIFY on ``channel`` until ``stop`` is set; reconnect when the server goes away.

    ``wake`` is also set on every (re)connection, so a follower catches up on what was recorded meanwhile.
    """
    while not stop.is_set():
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'LISTEN "{channel}"')
                wake.set()
                while not stop.is_set():
                    for _ in conn.notifies(timeout=NOTIFY_WAIT_SECONDS, stop_after=1):
                        wake.set()
        except psycopg.Error as error:
            logger.info("event listener: %s; reconnecting", error)
            stop.wait(RECONNECT_SECONDS)


def start_listener(url: str, channel: str, wake: threading.Event, stop: threading.Event, name: str) -> threading.Thread:
    thread = threading.Thread(target=listen_for_events, args=(url, channel, wake, stop), daemon=True, name=name)
    thread.start()
    return thread

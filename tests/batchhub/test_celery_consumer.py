"""The worker's consumer retries a lost broker at most a second apart (kombu's defaults: 2, 4, 6 …
up to 30 s), so a broker back after a short outage is used within a second, not several."""

from __future__ import annotations

import socket
import time

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from batchhub.celery import app
from batchhub.celery_consumer import Consumer


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


def test_the_worker_uses_this_consumer():
    assert app.conf.worker_consumer == "batchhub.celery_consumer:Consumer"


def test_a_lost_broker_is_retried_within_a_second(monkeypatch):
    consumer = Consumer.__new__(Consumer)  # only what ensure_connected reads
    consumer.app = app
    consumer.broker_connection_retry_attempt = 0
    consumer.first_connection_attempt = False
    # Celery's settings object has no attribute to restore, only a key.
    monkeypatch.setitem(app.conf, "broker_connection_max_retries", 4)
    conn = Connection(refused_url(), connect_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(OperationalError):
        consumer.ensure_connected(conn)
    took = time.monotonic() - started
    # Kombu's defaults would sleep 2 + 4 + 6 + 8 = 20 s over four retries.
    assert took < 6, took
    assert consumer.broker_connection_retry_attempt >= 3

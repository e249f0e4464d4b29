"""The embedded broker's messages are whole when a worker takes them: kombu's filesystem
transport created a message file and then wrote it, and a worker that took the empty file in
between stopped with an "Unrecoverable error" (JSON it could not read), and `make run` with it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from celery.worker import state
from kombu import Connection

from tests.batchhub.test_settings_env import load_settings  # noqa: F401 (a fixture)

MESSAGES = 60
BODY = "x" * 2_000_000  # large enough that writing it takes a while


def _embedded_broker(load) -> dict:
    """The settings of `make run`'s broker, its folders made as the worker's start makes them."""
    settings = load(CELERY_BROKER_URL="filesystem://")
    for folder in ("data_folder_out", "processed_folder", "control_folder"):
        Path(settings["CELERY_BROKER_TRANSPORT_OPTIONS"][folder]).mkdir(parents=True, exist_ok=True)
    return settings


def _connection(settings: dict) -> Connection:
    return Connection(
        settings["CELERY_BROKER_URL"],
        transport=settings["CELERY_BROKER_TRANSPORT"],
        transport_options=settings["CELERY_BROKER_TRANSPORT_OPTIONS"],
    )


def test_a_reader_never_takes_a_message_being_written(load_settings):  # noqa: F811
    settings = _embedded_broker(load_settings)
    received: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        with _connection(settings) as conn:
            queue = conn.SimpleQueue("q")
            while len(received) < MESSAGES and not stop.is_set():
                try:
                    message = queue.get(block=True, timeout=0.001)
                except queue.Empty:
                    continue
                except BaseException as exc:  # what stopped the worker
                    errors.append(exc)
                    return
                received.append(message.payload["n"])
                assert message.payload["body"] == BODY
                message.ack()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with _connection(settings) as conn:
            queue = conn.SimpleQueue("q")
            for n in range(MESSAGES):
                queue.put({"n": n, "body": BODY})
        reader.join(timeout=60)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert sorted(received) == list(range(MESSAGES))


def test_messages_leave_in_the_order_sent_when_the_uptime_gains_a_digit(
    load_settings,  # noqa: F811
    monkeypatch,
):
    # kombu takes the files in the order of their names: once the stamp gained a digit, newer
    # messages sorted ahead of older ones, and older steps waited behind them.
    from batchhub import fsbroker

    settings = _embedded_broker(load_settings)
    clock = iter([999_999.998, 999_999.999, 1_000_000.0, 1_000_000.001])
    monkeypatch.setattr(fsbroker, "monotonic", lambda: next(clock))
    with _connection(settings) as conn:
        queue = conn.SimpleQueue("order")
        for n in range(4):
            queue.put({"n": n})
        taken = []
        for _ in range(4):
            message = queue.get(timeout=1)
            taken.append(message.payload["n"])
            message.ack()
    assert taken == [0, 1, 2, 3]


def test_a_wait_for_a_message_ends_soon_after_the_worker_is_asked_to_stop(
    load_settings,  # noqa: F811
    monkeypatch,
):
    # Celery's loop for this transport looks for a stop between waits of 2 s: Ctrl-C on an idle
    # `make run` sat out the wait before the worker began to stop.
    settings = _embedded_broker(load_settings)
    with _connection(settings) as conn:
        conn.SimpleQueue("idle")  # declared, empty
        threading.Timer(0.3, lambda: monkeypatch.setattr(state, "should_stop", 0)).start()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=2.0)  # what Celery's loop asks for
        waited = time.monotonic() - started
    assert waited < 1.2, waited

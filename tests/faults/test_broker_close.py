"""A worker survives closing the broker connection it lost (kombu's double close)."""

from __future__ import annotations

import uuid

import kombu
import pytest
from celery.worker import consumer as celery_consumer
from django.conf import settings

from batchhub.celery_consumer import Consumer
from tests.support.worker import require_real_services

pytestmark = pytest.mark.e2e


def test_closing_a_connection_whose_transport_the_collect_took_apart_is_quiet(db, monkeypatch):
    # Celery collects a lost connection, then closes it. When closing its channel failed during
    # the collect, the close tries to give the unacknowledged messages back through a transport
    # with no client: kombu's AttributeError ended the whole worker ("Unrecoverable error").
    require_real_services()
    connection = kombu.Connection(settings.CELERY_BROKER_URL)
    name = f"close-test-{uuid.uuid4().hex}"
    queue = kombu.Queue(name, exchange=kombu.Exchange(name), routing_key=name)
    channel = connection.default_channel
    kombu.Producer(channel).publish(
        {"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue]
    )
    received = []
    kombu.Consumer(
        channel, queues=[queue], callbacks=[lambda body, m: received.append(m)]
    ).consume()
    connection.drain_events(timeout=5)
    assert len(received) == 1  # delivered, not acknowledged

    connection._do_close_transport()  # where a collect that failed to close the channel leaves it

    def celerys_own(self, exc):  # what Celery's handler does with the connection, in the end
        connection, self.connection = self.connection, None
        connection.close()

    monkeypatch.setattr(
        celery_consumer.Consumer, "on_connection_error_after_connected", celerys_own
    )
    consumer = object.__new__(Consumer)
    consumer.connection = connection
    Consumer.on_connection_error_after_connected(consumer, ConnectionError("lost"))
    assert consumer.connection is None

"""The Redis cache backend keeps one client per connection pool instead of one per operation."""

from __future__ import annotations

from redis._parsers import _HiredisParser

from batchhub.cache import RedisCache


def test_the_client_is_built_once_and_shared():
    # redis-py connects lazily: no server is needed to build clients.
    cache = RedisCache("redis://127.0.0.1:6399/1", {})
    client = cache._cache.get_client()
    assert cache._cache.get_client(write=True) is client
    assert cache._cache.get_client("some-key") is client
    assert client.connection_pool is cache._cache._get_connection_pool(write=True)


def test_replies_are_parsed_by_hiredis():
    # A dependency (pyproject): without it redis-py falls back to its pure-Python parser
    # silently, and every status poll's trip costs more CPU.
    cache = RedisCache("redis://127.0.0.1:6399/1", {})
    connection = cache._cache.get_client().connection_pool.make_connection()
    assert isinstance(connection._parser, _HiredisParser)

"""`make run`'s check that nothing listens on its address yet, for any address family."""

from __future__ import annotations

import socket

import pytest

from batchhub.runall import check_free


@pytest.mark.parametrize(
    ("host", "family"), [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)]
)
def test_a_listening_address_is_not_free(host, family):
    # HOST=:: or an IPv6 address answered a gaierror traceback from an IPv4-only probe.
    try:
        server = socket.create_server((host, 0), family=family)
    except OSError:
        pytest.skip(f"no {host} on this machine")
    with server:
        port = server.getsockname()[1]
        assert check_free(host, port) is False
    assert check_free(host, port) is True

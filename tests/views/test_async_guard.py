"""Django's guard against ORM calls under a running event loop stays on outside the browser tests.

The browser tests turn it off for themselves (Playwright's sync API runs a loop in the test's
thread); run in the same process before these, they must not have turned it off for everyone.
"""

from __future__ import annotations

import asyncio

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import SynchronousOnlyOperation

pytestmark = pytest.mark.django_db


def test_an_orm_call_under_a_running_event_loop_is_refused():
    async def count_users() -> int:
        return get_user_model().objects.count()

    with pytest.raises(SynchronousOnlyOperation):
        asyncio.run(count_users())

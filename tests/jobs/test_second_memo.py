"""The per-process memo of poll answers (jobs/second_memo.py): an entry lives for its second."""

from __future__ import annotations

import pytest

from jobs import second_memo
from jobs.second_memo import SecondMemo


@pytest.fixture
def clock(monkeypatch):
    now = [1_000]
    monkeypatch.setattr(second_memo, "current_second", lambda: now[0])
    return now


def test_an_entry_is_returned_within_its_second_only(clock):
    memo = SecondMemo(8)
    memo.put("k", "v", 1_000)
    assert memo.get("k", 1_000) == "v"
    clock[0] = 1_001
    assert memo.get("k", 1_000) is None  # asked late, with the old second
    assert memo.get("k", 1_001) is None
    memo.put("other", "w", 1_001)
    assert memo.get("k", 1_001) is None and memo.get("other", 1_001) == "w"


def test_an_answer_made_in_a_second_already_gone_is_not_kept(clock):
    memo = SecondMemo(8)
    clock[0] = 1_001
    memo.put("late", "v", 1_000)  # rendered across a second's turn
    assert memo.get("late", 1_000) is None and memo.get("late", 1_001) is None


def test_it_is_bounded_and_drops_the_oldest_first(clock):
    memo = SecondMemo(3)
    for n in range(5):
        memo.put(n, n, 1_000)
    assert [memo.get(n, 1_000) for n in range(5)] == [None, None, 2, 3, 4]


def test_clear_forgets_everything(clock):
    memo = SecondMemo(3)
    memo.put("k", "v", 1_000)
    memo.clear()
    assert memo.get("k", 1_000) is None

"""ScrapeRead: one database read per window, shared by concurrent scrapes, None on error."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from server.tasks._scrape_read import ScrapeRead


def test_scrapes_within_the_window_share_one_read() -> None:
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(calls)

    cached = ScrapeRead(read, "figures", max_age_seconds=60)
    assert [cached.get() for _ in range(5)] == [1] * 5
    assert len(calls) == 1
    fresh = ScrapeRead(read, "figures", max_age_seconds=0)
    assert fresh.get() == 2
    assert fresh.get() == 3  # a window of 0: every scrape reads


def test_concurrent_scrapes_wait_for_the_read_in_flight() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def slow_read() -> str:
        calls.append(1)
        started.set()
        assert release.wait(10), "the test never released the read"
        return "answer"

    cached = ScrapeRead(slow_read, "figures", max_age_seconds=60)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(cached.get)
        assert started.wait(10), "the first scrape never started its read"
        others = [pool.submit(cached.get) for _ in range(3)]
        release.set()
        answers = [first.result(10), *(f.result(10) for f in others)]
    assert answers == ["answer"] * 4
    assert len(calls) == 1


def test_a_failed_read_is_none_and_the_next_scrape_tries_again() -> None:
    outcomes: list[Exception | int] = [RuntimeError("database down"), 7]

    def read() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cached = ScrapeRead(read, "figures", max_age_seconds=60)
    assert cached.get() is None
    assert cached.get() == 7
    assert outcomes == []

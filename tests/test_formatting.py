"""The one set of text forms the CLI, the window and the reports share."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta, timezone

import pytest

from leukgui.core.formatting import clock, duration, local_minute, local_time, percent, utc_time


def test_percent() -> None:
    assert percent(0.1234) == "12.3%"
    assert percent(1.0, digits=0) == "100%"
    assert percent(math.nan) == "n/a" and percent(None, missing="") == ""


def test_clock_and_duration() -> None:
    assert clock(None) == "--:--" and clock(math.inf) == "--:--"
    assert clock(65.4) == "1:05" and clock(3725) == "1:02:05" and clock(-3) == "0:00"
    assert duration(125.0) == "0:02:05 (125.0 s)"
    assert duration(None) == "n/a" and duration(math.nan) == "n/a"


def test_times() -> None:
    moment = datetime(2026, 11, 30, 9, 5, 7, 123456, tzinfo=timezone(timedelta(hours=1)))
    assert local_time(moment) == "2026-11-30 09:05:07+01:00" and local_time(None) == ""
    assert utc_time("2026-11-30T08:05:07+00:00") == "2026-11-30 08:05:07"
    assert utc_time("2026-11-30T09:05:07+01:00") == "2026-11-30T09:05:07+01:00"  # not UTC
    assert utc_time("garbage") == "garbage" and local_minute("garbage") == "garbage"


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset is POSIX-only")
def test_local_minute_is_in_this_computers_time_zone(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30, no daylight saving
    time.tzset()
    try:
        assert local_minute("2026-11-30T08:05:07+00:00") == "2026-11-30 13:35"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_percent_range_says_n_a_for_an_undefined_interval() -> None:
    from leukgui.core.formatting import percent_range

    assert percent_range((0.123, 0.9)) == "12.3% – 90.0%"
    assert percent_range((float("nan"), 0.9)) == "n/a"
    assert percent_range(None, missing="") == ""
    assert percent_range((0.1,)) == "n/a"


def test_edges_text_never_shows_two_edges_as_one_number() -> None:
    from leukgui.core.formatting import edges_text

    assert edges_text(0.4, 0.6) == "0.400–0.600"
    assert edges_text(0.49551, 0.49552) == "0.49551–0.49552"
    assert edges_text(0.5, 0.5) == "0.500–0.500"
    assert edges_text(0.1, 0.9, sep=" < P(ALL) < ") == "0.100 < P(ALL) < 0.900"

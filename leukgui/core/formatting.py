"""Text forms of numbers and times, shared by the CLI, the window and the reports.

One place for these so a percentage or a duration reads the same on screen, in the
terminal and in a signed report.
"""

from __future__ import annotations

import math
from datetime import datetime

__all__ = ["clock", "duration", "local_minute", "local_time", "percent", "utc_time"]


def percent(fraction: float | None, digits: int = 1, missing: str = "n/a") -> str:
    """A 0..1 fraction as '12.3%'; `missing` for None or NaN (nothing to divide)."""
    if fraction is None or (isinstance(fraction, float) and math.isnan(fraction)):
        return missing
    return f"{100 * fraction:.{digits}f}%"


def percent_range(interval: object, missing: str = "n/a") -> str:
    """A (low, high) pair of fractions as '12.3% – 45.6%'; `missing` when undefined (NaN, or
    not a pair), e.g. an interval over too few subjects."""
    if not isinstance(interval, (tuple, list)) or len(interval) != 2:
        return missing
    low, high = interval
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (low, high)):
        return missing
    return f"{percent(low)} – {percent(high)}"


def edges_text(low: float, high: float, digits: int = 3, sep: str = "–") -> str:
    """Two band edges as '0.412–0.588', with more decimals when 3 would show two different
    edges as one number (a band 1e-8 wide must not read '0.496–0.496')."""
    for places in range(digits, 10):
        a, b = f"{low:.{places}f}", f"{high:.{places}f}"
        if a != b or low == high:
            return f"{a}{sep}{b}"
    return f"{low:.3g}{sep}{high:.3g}"


def clock(seconds: float | None) -> str:
    """A countdown or elapsed time as m:ss (h:mm:ss past an hour); '--:--' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    whole = max(0, int(round(seconds)))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration(seconds: float | None) -> str:
    """A measured duration for a report: h:mm:ss with the raw seconds, e.g. '0:02:05 (125.0 s)'."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d} ({seconds:.1f} s)"


def local_time(moment: datetime | None) -> str:
    """A timestamp with its UTC offset, to the second: '2026-11-30 10:45:34+00:00'.

    The offset stays in the text so a report read in another time zone is unambiguous.
    """
    if moment is None:
        return ""
    return moment.isoformat(sep=" ", timespec="seconds")


def utc_time(iso: str) -> str:
    """An audit-trail time (ISO 8601, UTC) as 'YYYY-MM-DD HH:MM:SS'; anything else unchanged."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return iso
    offset = moment.utcoffset()
    if offset is not None and offset.total_seconds() == 0:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return iso


def local_minute(iso: str) -> str:
    """An ISO 8601 time (an audit entry's UTC time) in this computer's time zone, to the
    minute: '2026-11-30 13:03'. What a person reads in a message; unparsable text as is."""
    try:
        moment = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return str(iso)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")

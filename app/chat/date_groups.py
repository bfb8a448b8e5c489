"""Sidebar sections by age: Today, Yesterday, Previous 7 Days, Previous 30 Days, then months.

Calendar days in local time, as Finder and Mail count them: "Yesterday" is the calendar day
before today, not the last 24 hours.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional


def date_group(timestamp: float, now: Optional[float] = None) -> str:
    today = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now().timestamp()).date()
    day = dt.datetime.fromtimestamp(timestamp).date()
    age = (today - day).days
    if age <= 0:  # today, or a clock that ran ahead
        return "Today"
    if age == 1:
        return "Yesterday"
    if age <= 7:
        return "Previous 7 Days"
    if age <= 30:
        return "Previous 30 Days"
    return day.strftime("%B") if day.year == today.year else day.strftime("%B %Y")

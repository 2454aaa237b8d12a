"""Public holidays of the regions whose counters the crowd detector reads, as local day numbers.

On a weekday public holiday a city centre moves like on a Sunday (offices shut, parks and the river busy),
so the same weekday of earlier weeks is the wrong expectation for it, and its own hours are the wrong
expectation for the same weekday of later weeks. Holiday dates are public calendar facts; the lists are
fixed here and end with their last year (outside it the detector sees ordinary weekdays). The detector's
option `CrowdParams.holidays`, off by default: on the 2021 tuning period it found no more gatherings
(BENCHMARKS.md, crowd section).
"""

from __future__ import annotations

from datetime import date
from functools import cache

EPOCH_DATE = date(1970, 1, 1)  # day 0 of the detector's local day numbers

# Victoria's public holidays (Public Holidays Act 1993 and the days declared under it, e.g. the
# National Day of Mourning of 22 September 2022), 2021-2024.
VICTORIA = (
    "2021-01-01 2021-01-26 2021-03-08 2021-04-02 2021-04-03 2021-04-04 2021-04-05 2021-04-25 2021-06-14 "
    "2021-09-24 2021-11-02 2021-12-25 2021-12-26 2021-12-27 2021-12-28 "
    "2022-01-01 2022-01-03 2022-01-26 2022-03-14 2022-04-15 2022-04-16 2022-04-17 2022-04-18 2022-04-25 "
    "2022-06-13 2022-09-22 2022-09-23 2022-11-01 2022-12-25 2022-12-26 2022-12-27 "
    "2023-01-01 2023-01-02 2023-01-26 2023-03-13 2023-04-07 2023-04-08 2023-04-09 2023-04-10 2023-04-25 "
    "2023-06-12 2023-09-29 2023-11-07 2023-12-25 2023-12-26 "
    "2024-01-01 2024-01-26 2024-03-11 2024-03-29 2024-03-30 2024-03-31 2024-04-01 2024-04-25 2024-06-10 "
    "2024-09-27 2024-11-05 2024-12-25 2024-12-26"
)
CALENDARS = {"AU-VIC": VICTORIA}


@cache
def weekday_holidays(region: str) -> frozenset[int]:
    """Local day numbers (days since 1970-01-01) of the region's public holidays that fall Monday to Friday
    (a holiday on a weekend is a weekend day already)."""
    if not region:
        return frozenset()
    days = [date.fromisoformat(text) for text in CALENDARS[region].split()]
    return frozenset((day - EPOCH_DATE).days for day in days if day.weekday() < 5)

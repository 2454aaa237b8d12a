"""Where an alert about people's events says it is, and when: coarse, and fixed for the alert's life.

An alert about a fixed sensor is placed at the sensor (a public place, not a person). An alert about people's
events (a burst of 911 calls) must not be: the mean of the events in the window moves with every event, and two
published means give back the one event between them exactly, (n+1)·m(n+1) − n·m(n). Two defences, both needed:

- the place is the centre of the H3 cell (resolution `PLACE_H3_RESOLUTION`) that holds the events' mean, and the
  alert's circle covers that whole cell. Each published place is then known only to about a cell's edge, and
  solving for one of n >= k events multiplies that error by n: kilometres, never a doorstep, however two places
  (two alerts, or a first raise an attacker padded with events of their own) are combined;
- the place is fixed when the alert is raised (AlertEngine._apply): updates never move it, so successive messages
  cannot be differenced at all.

Times are coarsened the same way (`PERSON_TIME_STEP_S`): an alert's onset and effective times would otherwise be the
exact time of the newest call. The lifecycle (minimum duration, cooldown, update interval) runs on the floored times;
the burst counter keeps the exact ones, so counts are unchanged. And a person-related alert's count reaches the JSON
view only with a message (AlertEngine._apply), at most once per updateIntervalS, not with every event.

Which subjects are about people: every burst (a burst counts created events, and the events bursts are made for
are people's: calls, trips), and any other rule's entity whose dataset is held at the raw-pseudonymous tier
(polis.access.datasets: one record per call or trip). Everything else is a sensor or an aggregate and keeps its
exact place.
"""

from __future__ import annotations

from datetime import UTC, datetime

import h3

from polis.access.datasets import dataset_of, entity_tier
from polis.alerts.model import distance_m

# Resolution 7: cells of about 5 km² (edge about 1.4 km), finer than a township and much coarser than a street;
# the same resolution the hub releases origin-destination matrices at (Settings.od_h3_resolution's default).
PLACE_H3_RESOLUTION = 7
PERSON_TIERS = frozenset({"raw-pseudonymous"})
PERSON_TIME_STEP_S = 300  # person-related alert times are floored to 5 minutes (the default update interval)


def coarse_place(point: tuple[float, float]) -> tuple[tuple[float, float], float]:
    """(the centre of the H3 cell holding `point`, the distance from it to the cell's farthest vertex in metres).
    Points are (longitude, latitude), as everywhere in polis.alerts."""
    lon, lat = point
    cell = h3.latlng_to_cell(lat, lon, PLACE_H3_RESOLUTION)
    clat, clon = h3.cell_to_latlng(cell)
    centre = (float(clon), float(clat))
    radius = max(distance_m(centre, (vlon, vlat)) for vlat, vlon in h3.cell_to_boundary(cell))
    return centre, radius


def person_entity(entity_id: str) -> bool:
    """Whether an entity is one person's record (a call, a trip): its dataset is held at a raw tier."""
    return entity_tier(dataset_of(entity_id)) in PERSON_TIERS


def coarse_time(at: datetime) -> datetime:
    """`at` floored to PERSON_TIME_STEP_S (the floor keeps the order of times, which the lifecycle needs)."""
    seconds = at.timestamp()
    return datetime.fromtimestamp(seconds - seconds % PERSON_TIME_STEP_S, UTC)

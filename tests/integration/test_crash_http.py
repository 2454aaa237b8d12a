"""SIGKILL the real server while two clients write over HTTP: nothing it acknowledged is lost, nothing is
stored twice, and what the store keeps beside its rows (the id directory, attribute path numbers, the
geo index, entity versions) comes back consistent with the file after each restart.

Each client owns half of the entities and writes rounds to them, one request at a time: an upsert of all
its entities (a new `reading` with its own `observedAt`, an `extra<r % 4>` attribute that comes and goes,
so attribute paths are numbered mid-run, and a location that moves), and every fifth round a batch delete
of half of them. A request cut off by a kill is "in flight": its round may or may not have committed.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from polis.localserver import Server, start_server, stop_server

PER_CLIENT = 60
CLIENTS = 2
KILLS = 4
T0 = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
BATCH = "/ngsi-ld/v1/entityOperations"
ENTITIES = "/ngsi-ld/v1/entities"


def eid(i: int) -> str:
    return f"urn:ngsi-ld:Gauge:crash-{i:03d}"


def is_delete_round(r: int) -> bool:
    return r % 5 == 4


def deletable(i: int) -> bool:
    return (i // CLIENTS) % 2 == 0


def reading(r: int, i: int) -> int:
    return r * 1000 + i


def when(r: int) -> str:
    return (T0 + timedelta(minutes=r)).strftime("%Y-%m-%dT%H:%M:%SZ")


def lon_lat(r: int, i: int) -> tuple[float, float]:
    return (-118.2 + i * 0.001 + r * 0.00001, 34.05)


def upsert_body(r: int, ids: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "id": eid(i),
            "type": "Gauge",
            "reading": {"type": "Property", "value": reading(r, i), "observedAt": when(r)},
            f"extra{r % 4}": {"type": "Property", "value": r},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": list(lon_lat(r, i))}},
        }
        for i in ids
    ]


@dataclass
class Hub:
    """The server now running; writers wait on `up` while it is being restarted."""

    server: Server
    up: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class Writer:
    k: int
    acked: list[int] = field(default_factory=list)  # rounds acknowledged, in order
    in_flight: list[int] = field(default_factory=list)  # rounds cut off by a kill (unknown outcome)
    errors: list[str] = field(default_factory=list)
    next_round: int = 0

    @property
    def ids(self) -> list[int]:
        return [i for i in range(PER_CLIENT * CLIENTS) if i % CLIENTS == self.k]

    def send(self, http: httpx.Client, r: int) -> httpx.Response:
        if is_delete_round(r):
            return http.post(f"{BATCH}/delete", json=[eid(i) for i in self.ids if deletable(i)])
        return http.post(f"{BATCH}/upsert", json=upsert_body(r, self.ids))

    def run(self, hub: Hub) -> None:
        while not hub.stop.is_set():
            hub.up.wait()
            server = hub.server
            r = self.next_round
            self.next_round += 1
            try:
                with httpx.Client(base_url=server.url, timeout=30, headers=server.headers) as http:
                    answer = self.send(http, r)
            except httpx.TransportError:  # the server was killed mid-request
                self.in_flight.append(r)
                continue
            if answer.status_code not in (201, 204):
                self.errors.append(f"round {r}: {answer.status_code} {answer.text[:300]}")
                return
            self.acked.append(r)


def expected_round(i: int, rounds: list[int]) -> int | None:
    """The entity's reading round after `rounds` applied in order (None: absent)."""
    state: int | None = None
    for r in rounds:
        if not is_delete_round(r):
            state = r
        elif deletable(i):
            state = None
    return state


def current(http: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = http.get(ENTITIES, params={"type": "Gauge", "options": "keyValues", "limit": 1000})
    assert answer.status_code == 200, answer.text
    return {e["id"]: e for e in answer.json()}


def check_state(http: httpx.Client, writers: list[Writer]) -> None:
    """Each entity is as its writer's acknowledged rounds left it, or as a round cut off in flight left it."""
    seen = current(http)
    for w in writers:
        for i in w.ids:
            allowed = {expected_round(i, w.acked)}
            for r in w.in_flight:  # a cut-off round committed or not; later acked rounds then ran on top
                allowed.add(expected_round(i, sorted([*w.acked, r])))
            got = seen.get(eid(i))
            got_round = None if got is None else (got["reading"] - i) // 1000
            assert got_round in allowed, (eid(i), got_round, allowed, w.acked[-3:], w.in_flight)


def ids_of(answer: httpx.Response) -> set[str]:
    assert answer.status_code == 200, answer.text
    return {e["id"] for e in answer.json()}


def test_sigkill_while_writing_over_http_loses_nothing_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    rng = random.Random(27)
    hub = Hub(start_server(data_dir))
    writers = [Writer(k) for k in range(CLIENTS)]
    threads = [threading.Thread(target=w.run, args=(hub,), daemon=True) for w in writers]
    hub.up.set()
    for t in threads:
        t.start()
    try:
        for _ in range(KILLS):
            threading.Event().wait(rng.uniform(0.4, 1.2))
            hub.up.clear()
            hub.server.process.kill()
            hub.server.process.wait(timeout=15)
            for t in threads:  # let each writer finish the request the kill cut off
                t.join(timeout=0.5)
            hub.server = start_server(data_dir)
            with httpx.Client(base_url=hub.server.url, timeout=30, headers=hub.server.headers) as http:
                check_state(http, writers)
            hub.up.set()
        threading.Event().wait(0.5)
        hub.stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert all(not w.errors for w in writers), [w.errors for w in writers]
        assert all(len(w.acked) > KILLS for w in writers), [w.acked for w in writers]

        # The last acknowledged state, read before a kill with nothing in flight, must come back as it was.
        with httpx.Client(base_url=hub.server.url, timeout=30, headers=hub.server.headers) as http:
            check_state(http, writers)
            before = current(http)
        hub.server.process.kill()
        hub.server.process.wait(timeout=15)
        hub.server = start_server(data_dir)
        with httpx.Client(base_url=hub.server.url, timeout=30, headers=hub.server.headers) as http:
            after = current(http)
            assert after == before
            check_history(http, writers, set(after))
            check_indexes(http, after)
    finally:
        hub.stop.set()
        hub.up.set()
        stop_server(hub.server.process)


def check_history(http: httpx.Client, writers: list[Writer], present: set[str]) -> None:
    """Every acknowledged reading is in history exactly once; a cut-off round's at most once; nothing else."""
    answer = http.get(
        "/ngsi-ld/v1/temporal/entities",
        params={"type": "Gauge", "attrs": "reading", "options": "temporalValues", "limit": 1000,
                "timerel": "after", "timeAt": "2026-11-26T00:00:00Z"},
    )
    assert answer.status_code == 200, answer.text
    history = {e["id"]: [value for value, _ in e.get("reading", {}).get("values", [])] for e in answer.json()}
    assert set(history) == present
    for w in writers:
        upserts = [r for r in w.acked if not is_delete_round(r)]
        maybe = {r for r in w.in_flight if not is_delete_round(r)}
        for i in w.ids:
            if eid(i) not in present:
                continue
            values = history[eid(i)]
            assert len(values) == len(set(values)), (eid(i), "a reading stored twice")
            rounds = {(v - i) // 1000 for v in values}
            assert set(upserts) <= rounds, (eid(i), sorted(set(upserts) - rounds))
            assert rounds <= set(upserts) | maybe, (eid(i), sorted(rounds - set(upserts) - maybe))


def check_indexes(http: httpx.Client, entities: dict[str, dict[str, Any]]) -> None:
    """`q` and `near` (the attribute index, its path numbers, the geo index) agree with the documents after
    the replay, and a path first written after the restart gets a number of its own."""
    everyone = set(entities)
    assert ids_of(http.get(ENTITIES, params={"type": "Gauge", "q": "reading>=0", "limit": 1000})) == everyone
    for k in range(4):
        having = {e for e, doc in entities.items() if f"extra{k}" in doc}
        got = ids_of(http.get(ENTITIES, params={"type": "Gauge", "q": f"extra{k}>=0", "limit": 1000}))
        assert got == having, k
    for entity_id in sorted(everyone)[::7]:
        doc = entities[entity_id]
        exact = ids_of(http.get(ENTITIES, params={"type": "Gauge", "q": f"reading=={doc['reading']}"}))
        assert exact == {entity_id}
        lon, lat = doc["location"]["coordinates"]
        near = ids_of(http.get(ENTITIES, params={
            "type": "Gauge", "georel": "near;maxDistance==20", "geometry": "Point",
            "coordinates": f"[{lon},{lat}]"}))
        assert near == {entity_id}, (entity_id, near)
    fresh = [{"id": e, "type": "Gauge", "freshAfterCrash": {"type": "Property", "value": 1}} for e in sorted(everyone)]
    assert http.post(f"{BATCH}/update", json=fresh).status_code in (201, 204)
    assert ids_of(http.get(ENTITIES, params={"type": "Gauge", "q": "freshAfterCrash==1", "limit": 1000})) == everyone
    for k in range(4):  # the new path's number collided with no replayed one
        having = {e for e, doc in entities.items() if f"extra{k}" in doc}
        assert ids_of(http.get(ENTITIES, params={"type": "Gauge", "q": f"extra{k}>=0", "limit": 1000})) == having

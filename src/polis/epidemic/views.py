"""The epidemic views (risk, forecast, scenario) as the API's JSON bodies, for `polis epidemic ...`: from a
running hub over HTTP (`RemoteViews`), or from the hub's database directly when no server holds it
(`LocalViews`). Both read what the hub holds for a tenant, never the published files, and give the same
bodies: the local side builds them with the API's own functions.

DuckDB lets one process open a database file for writing, and a reader cannot open it while a writer
holds it, so with `polis serve` running the file is locked and only `--url` works; the error says so, with
the address the holder listens on where Linux's /proc tells it (the server writes its address nowhere), and
says it could not be found otherwise, rather than guess the settings' default port.
The local side opens the file read-only through the hub's store, only for the time it takes to read the
country, and never creates a database.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from polis.epidemic.data import CountryData
from polis.epidemic.hub import NAME
from polis.settings import Settings

__all__ = ["HubError", "LocalViews", "RemoteViews"]

FORECAST_WAIT_S = 600.0  # how long the CLI waits for a server that is fitting the forecast


class HubError(Exception):
    """Why a view could not be had from the hub, worded for the user; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _not_ingested(country: str, tenant: str, where: str) -> HubError:
    held_by = f"tenant '{tenant}'" if tenant else "the default tenant"
    return HubError(f"{country} was never ingested into {held_by} of {where}: run `polis ingest {NAME}` first")


def open_store_read_only(settings: Settings, *, hint: str) -> Any:
    """The hub's database opened to read: none there is a HubError naming the path and `hint` (opening would
    create an empty hub), and one a running server holds (DuckDB lets one process open it) says to ask it."""
    import duckdb

    from polis.store.duckdb_ import DuckDBStore

    path = settings.database_path
    if not path.is_file():
        raise HubError(f"no hub database at {path}: {hint}")
    try:
        return DuckDBStore(path, threads=settings.duckdb_threads, memory_limit=settings.memory_limit, read_only=True)
    except duckdb.IOException as error:
        locked = locked_hub(settings, error)
        if locked is None:
            raise
        pid = re.search(r"PID (\d+)", str(error))
        url = listening_url(int(pid.group(1))) if pid else None
        if url is not None:
            raise HubError(f"{locked}: ask that server instead, with --url {url}") from None
        raise HubError(
            f"{locked}: ask that server instead, with --url and the address it listens on (which could not be "
            "found from here: it is in the server's first lines of output)"
        ) from None


def listening_url(pid: int) -> str | None:
    """http://host:port of the one TCP port process `pid` listens on, from Linux's /proc (its socket inodes
    against the kernel's TCP tables); None where that cannot be known: not Linux, another user's process,
    no listening socket, or several ports."""
    try:
        fds = Path(f"/proc/{pid}/fd")
        inodes = {link[8:-1] for link in (os.readlink(fd) for fd in fds.iterdir()) if link.startswith("socket:[")}
    except OSError:
        return None
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, _, hex_port = fields[1].partition(":")
            found.setdefault(int(hex_port, 16), _host(address))
    if len(found) != 1:
        return None
    port, host = next(iter(found.items()))
    return f"http://{host}:{port}"


def _host(hexed: str) -> str:
    """A /proc/net/tcp(6) address (32-bit words in host byte order) as a host to connect to: the loopback one
    for a server listening on every address."""
    raw = b"".join(bytes.fromhex(hexed[k : k + 8])[::-1] for k in range(0, len(hexed), 8))
    address = ipaddress.ip_address(raw)
    if address.is_unspecified:
        return "127.0.0.1" if address.version == 4 else "[::1]"
    return str(address) if address.version == 4 else f"[{address}]"


def locked_hub(settings: Settings, error: Exception) -> str | None:
    """What to tell the user when opening the hub's database failed because another process holds it (DuckDB
    lets one process open a file), or None for any other failure."""
    if "lock" not in str(error).lower():
        return None
    pid = re.search(r"PID (\d+)", str(error))
    holder = f"process {pid.group(1)}" if pid else "another process"
    return f"{settings.database_path} is locked by {holder}, most likely a running `polis serve` on this data directory"


@contextmanager
def _refusals() -> Iterator[None]:
    """A problem the API would answer (data the models cannot take, a bad request) as a HubError: exit 2 for
    a bad request, as the CLI's own argument errors, else 1."""
    from polis.domain.errors import NgsiError

    try:
        yield
    except NgsiError as error:
        raise HubError(error.detail, code=2 if error.status == 400 else 1) from None


@dataclass(frozen=True, slots=True)
class LocalViews:
    """The views from the hub database under `settings.data_dir` (no server running on it)."""

    settings: Settings
    tenant: str = ""

    def country(self, country: str) -> CountryData:
        from polis.epidemic.hub import country_from_store

        store = self._open()
        try:
            with _refusals():
                data = country_from_store(store, self.tenant, country)
        finally:
            store.close()
        if data is None:
            raise _not_ingested(country, self.tenant, f"the hub in {self.settings.data_dir}")
        return data

    def _open(self) -> Any:
        ingest = f"polis ingest {NAME} --data-dir {self.settings.data_dir}"
        hint = f"load the data with `{ingest}` (or ask a running hub with --url)"
        return open_store_read_only(self.settings, hint=hint)

    def risk(self, country: str) -> dict[str, Any]:
        from polis.api.routes_epidemic import risk_body

        return risk_body(self.country(country))

    def forecast(self, country: str, horizons: int, on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Fitted here (the learned model saved to the registry under the data directory, where a server
        started later finds it), or restored from that registry when the hub's data has not changed."""
        from polis.api.routes_epidemic import forecast_body
        from polis.epidemic.serving import fit_served, registry_dataset
        from polis.forecast.registry import ModelRegistry

        data = self.country(country)
        registry = ModelRegistry(self.settings.data_dir / "models")
        progress = None if on_wait is None else (lambda stage, done: on_wait(f"{stage} ({done:.0%})"))
        with _refusals():
            served = fit_served(data, registry, registry_dataset(self.tenant, country), progress)
            return forecast_body(data, served, horizons)

    def scenario(
        self, country: str, regions: list[str], reduction: float, start: date, mode: str, days: int
    ) -> dict[str, Any]:
        from polis.api.routes_epidemic import scenario_body
        from polis.epidemic.scenario import run_scenario, validate

        data = self.country(country)
        with _refusals():
            intervention = validate(data, regions, reduction, start, mode, days)
        return scenario_body(run_scenario(data, intervention, days))


@dataclass(frozen=True, slots=True)
class RemoteViews:
    """The views from a running hub's API (the key from POLIS_API_KEY or the data directory's admin key)."""

    url: str
    settings: Settings
    tenant: str = ""

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        from polis.access.control import client_headers

        headers = client_headers(self.settings)
        if self.tenant:
            headers["NGSILD-Tenant"] = self.tenant
        try:
            return httpx.request(method, self.url.rstrip("/") + path, headers=headers, timeout=60.0, **kwargs)
        except httpx.HTTPError as error:
            raise HubError(f"no hub answers at {self.url}: {error}") from None

    def _body(self, answer: Any, country: str) -> dict[str, Any]:
        if answer.status_code in (200, 202):
            body: dict[str, Any] = answer.json()
            return body
        try:
            problem = answer.json()
            detail, kind = str(problem.get("detail", answer.text)), str(problem.get("type", ""))
        except (ValueError, AttributeError):
            detail, kind = answer.text, ""
        if answer.status_code == 404 and ("polis ingest" in detail or kind.endswith("NonexistentTenant")):
            raise _not_ingested(country, self.tenant, f"the hub at {self.url}")
        raise HubError(
            f"{self.url} answered {answer.status_code}: {detail}", code=2 if answer.status_code == 400 else 1
        )

    def risk(self, country: str) -> dict[str, Any]:
        return self._body(self.call("GET", f"/polis/v1/epidemic/{country}/risk"), country)

    def forecast(self, country: str, horizons: int, on_wait: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Asks until the server's fit is done (it answers 202 with Retry-After meanwhile)."""
        deadline = time.monotonic() + FORECAST_WAIT_S
        while True:
            answer = self.call("GET", f"/polis/v1/epidemic/{country}/forecast", params={"horizons": horizons})
            body = self._body(answer, country)
            if answer.status_code == 200:
                return body
            if time.monotonic() > deadline:
                raise HubError(f"{self.url} was still fitting {country}'s forecast after {FORECAST_WAIT_S:.0f} s")
            if on_wait is not None:
                on_wait(f"{body.get('stage', 'fitting')} ({float(body.get('progress', 0.0)):.0%})")
            time.sleep(float(answer.headers.get("Retry-After", "2")))

    def scenario(
        self, country: str, regions: list[str], reduction: float, start: date, mode: str, days: int
    ) -> dict[str, Any]:
        request = {
            "regions": regions,
            "reductionPercent": reduction,
            "start": start.isoformat(),
            "mode": mode,
            "days": days,
        }
        return self._body(self.call("POST", f"/polis/v1/epidemic/{country}/scenario", json=request), country)

"""A real uvicorn server on loopback: the hub works over real HTTP and keeps its data across restarts."""

from __future__ import annotations

import httpx

from tests.conftest import Server, start_server, stop_server

ENTITY = {
    "id": "urn:ngsi-ld:CrowdFlowObserved:server-1",
    "type": "CrowdFlowObserved",
    "peopleCount": {"type": "Property", "value": 120, "observedAt": "2026-11-26T08:00:00Z"},
}


def test_entities_survive_a_restart(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as http:
        created = http.post("/ngsi-ld/v1/entities", json=ENTITY)
        assert created.status_code == 201
        assert created.headers["location"] == "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:server-1"
        patched = http.patch(
            "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:server-1/attrs/peopleCount",
            json={"value": 140, "observedAt": "2026-11-26T08:15:00Z"},
        )
        assert patched.status_code == 204
        docs = http.get("/openapi.json")
        assert docs.status_code == 200 and "/ngsi-ld/v1/entities" in docs.json()["paths"]
    stop_server(server.process)

    restarted = start_server(server.data_dir)
    try:
        with httpx.Client(base_url=restarted.url, timeout=10, headers=restarted.headers) as http:
            entity = http.get(
                "/ngsi-ld/v1/entities/urn:ngsi-ld:CrowdFlowObserved:server-1", params={"options": "keyValues"}
            ).json()
            assert entity["peopleCount"] == 140
            history = http.get(
                "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:CrowdFlowObserved:server-1",
                params={"options": "temporalValues"},
            ).json()
            assert history["peopleCount"]["values"] == [[120, "2026-11-26T08:00:00Z"], [140, "2026-11-26T08:15:00Z"]]
    finally:
        stop_server(restarted.process)
        server.process = restarted.process  # the fixture's teardown stops an already-stopped process: harmless


def test_problem_details_over_real_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as http:
        missing = http.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Nothing:1")
        assert missing.status_code == 404
        assert missing.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
        bad = http.post("/ngsi-ld/v1/entities", content=b"[1,", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["type"].endswith("/InvalidRequest")


def test_api_docs_are_served_without_a_cdn(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10, headers=server.headers) as http:
        page = http.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "/docs-assets/swagger-ui-bundle.js" in page.text
        script = http.get("/docs-assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and len(script.content) > 100_000

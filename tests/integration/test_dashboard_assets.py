"""The dashboard's page, code and base maps as the hub serves them (the page itself: tests/browser)."""

from __future__ import annotations

import re

import orjson
from fastapi.testclient import TestClient

from polis.api.app import create_app
from polis.api.routes_dashboard import WEB_DIR
from polis.platform import Platform


def test_the_page_is_served_at_the_root_to_anyone(platform: Platform) -> None:
    with TestClient(create_app(platform)) as anonymous:  # no key: the page holds no data
        response = anonymous.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/dashboard/main.js">' in response.text


def test_every_script_and_style_comes_from_the_project() -> None:
    files = sorted(p for p in WEB_DIR.iterdir() if p.suffix in (".html", ".js", ".css"))
    assert {"index.html", "main.js", "dashboard.css"} <= {p.name for p in files}
    for path in files:
        text = path.read_text()
        for target in re.findall(r"""(?:src|href)=["']([^"']+)""", text) + re.findall(r"""from\s+["']([^"']+)""", text):
            assert target.startswith(("/dashboard/", "./", "data:", "#")), f"{path.name} loads {target}"
        assert "url(http" not in text and "@import" not in text


def test_the_assets_are_served(client: TestClient) -> None:
    for name in ("main.js", "map.js", "live.js", "dashboard.css"):
        response = client.get(f"/dashboard/{name}")
        assert response.status_code == 200, name
    assert "javascript" in client.get("/dashboard/main.js").headers["content-type"]


def test_base_maps_come_from_the_datasets_dir_slimmed(client: TestClient) -> None:
    for city, neighbourhoods in (("los-angeles", 114), ("melbourne", 122)):
        response = client.get(f"/dashboard/maps/{city}.geojson")
        assert response.status_code == 200
        body = orjson.loads(response.content)
        assert body["type"] == "FeatureCollection" and len(body["features"]) == neighbourhoods
        feature = body["features"][0]
        assert set(feature["properties"]) == {"name"} and feature["properties"]["name"]
        ring = feature["geometry"]["coordinates"][0][0] if feature["geometry"]["type"] == "MultiPolygon" else []
        assert all(len(str(c).split(".")[-1]) <= 5 for point in ring for c in point)
    assert len(client.get("/dashboard/maps/los-angeles.geojson").content) < 600_000  # the file is 884 kB


def test_an_unknown_city_is_a_problem_not_a_file(client: TestClient) -> None:
    response = client.get("/dashboard/maps/atlantis.geojson")
    assert response.status_code == 404
    assert response.json()["detail"] == "no base map for 'atlantis'; there are: los-angeles, melbourne"
    assert client.get("/dashboard/maps/..%2F..%2Fsettings.geojson").status_code == 404

"""The /subscriptions endpoints: where a notification may be sent (the SSRF guard, at create/update and at every
delivery), Accept negotiation for a resource without a GeoJSON form, and a Link header whose scheme is in
capitals. No test makes a network call other than to 127.0.0.1: host names are resolved by a stand-in."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from polis.ingest.broker import Broker
from polis.platform import Platform
from polis.settings import Settings
from polis.subscriptions.endpoints import EndpointPolicy
from polis.subscriptions.model import DeliveryStatus
from polis.subscriptions.transports import DeliveryFailed, MqttPublisher
from tests.conftest import LINK_SDM, hub_client, problem
from tests.integration.webhook import Receiver, wait_until

SUBS = "/ngsi-ld/v1/subscriptions"
ENTITIES = "/ngsi-ld/v1/entities"
FAST = {"notify_retry_initial_s": 0.05, "notify_retry_max_s": 0.2}


@pytest.fixture
def hub() -> Iterator[tuple[TestClient, Platform]]:
    yield from hub_client(**FAST)


def body(uri: str, etype: str = "Meter") -> dict[str, Any]:
    return {"type": "Subscription", "entities": [{"type": etype}], "notification": {"endpoint": {"uri": uri}}}


def count(client: TestClient) -> int:
    return len(client.get(SUBS, params={"limit": 1000}).json())


# -- refused at create ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "fragments"), [
    pytest.param("http://127.0.0.1:0/notify", ("port 0", "out of range"), id="port-0"),
    pytest.param("http://127.0.0.1:65536/notify", ("port 65536", "out of range"), id="port-65536"),
    pytest.param("http://127.0.0.1:99999999999/notify", ("out of range",), id="port-huge"),
    pytest.param("http://127.0.0.1:+80/notify", ("port '+80'",), id="port-signed"),
    pytest.param("http://127.0.0.1:８０/notify", ("port",), id="port-fullwidth-digits"),
    pytest.param("mqtt://127.0.0.1:0/topic", ("port 0",), id="mqtt-port-0"),
    pytest.param("http://user:secret@127.0.0.1:9/notify", ("credentials", "receiverInfo"), id="userinfo"),
    pytest.param("https://token@127.0.0.1:8443/notify", ("credentials",), id="user-only"),
    pytest.param("http://@127.0.0.1:9/notify", ("credentials",), id="empty-userinfo"),
    pytest.param("http://169.254.169.254/latest/meta-data/", ("169.254.0.0/16", "denied"), id="metadata"),
    pytest.param("http://169.254.10.1:8080/x", ("169.254.0.0/16",), id="link-local-v4"),
    pytest.param("http://[fe80::1]:8080/x", ("fe80::/10",), id="link-local-v6"),
    pytest.param("http://[fe80::1%25eth0]:8080/x", ("fe80::/10",), id="link-local-v6-zone"),
    pytest.param("http://[::ffff:169.254.169.254]/", ("169.254.0.0/16",), id="v4-mapped-metadata"),
    pytest.param("http://[::ffff:a9fe:a9fe]/", ("169.254.0.0/16",), id="v4-mapped-hex"),
    pytest.param("http://2852039166/", ("169.254.169.254",), id="metadata-as-integer"),
    pytest.param("http://0xa9.0xfe.0xa9.0xfe/", ("169.254.169.254",), id="metadata-as-hex"),
    pytest.param("http://0251.0376.0251.0376/", ("169.254.169.254",), id="metadata-as-octal"),
    pytest.param("http://100.100.100.200/latest/meta-data/", ("100.100.100.200/32",), id="alibaba-metadata"),
    pytest.param("http://[fd00:ec2::254]/latest/", ("fd00:ec2::254",), id="aws-metadata-v6"),
    pytest.param("http://0.0.0.0:8080/notify", ("unspecified",), id="unspecified-v4"),
    pytest.param("http://0/notify", ("unspecified",), id="unspecified-as-integer"),
    pytest.param("http://[::]:8080/notify", ("unspecified",), id="unspecified-v6"),
    pytest.param("http://[::ffff:0.0.0.0]:8080/notify", ("unspecified",), id="unspecified-v4-mapped"),
    pytest.param("http://224.0.0.1:8080/notify", ("multicast",), id="multicast-v4"),
    pytest.param("http://[ff02::1]:8080/notify", ("multicast",), id="multicast-v6"),
    pytest.param("http://255.255.255.255:8080/notify", ("broadcast",), id="broadcast"),
    pytest.param("mqtt://169.254.169.254:1883/topic", ("169.254.0.0/16",), id="mqtt-metadata"),
    pytest.param("gopher://127.0.0.1:70/x", ("scheme", "not supported"), id="gopher"),
    pytest.param("file:///etc/passwd", ("scheme", "not supported"), id="file"),
])
def test_an_unsafe_endpoint_is_refused_naming_the_problem(
    hub: tuple[TestClient, Platform], uri: str, fragments: tuple[str, ...]
) -> None:
    client, _ = hub
    before = count(client)
    problem(client.post(SUBS, json=body(uri)), 400, "BadRequestData", "notification.endpoint.uri", *fragments)
    assert count(client) == before


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:9/notify",  # tests and local demos use loopback webhooks
    "http://[::1]:9/notify",
    "http://localhost:9/notify",
    "http://10.1.2.3:8080/notify",
    "http://192.168.1.20/notify",
    "https://hooks.example.org:8443/notify",  # a host name is resolved at delivery, not now
    "http://2130706433:9/notify",  # 127.0.0.1
    "mqtt://user:secret@127.0.0.1:1883/city/alerts",  # MQTT logs in with user:password@ (documented)
    "urn:polis:sse",
])
def test_loopback_private_and_named_endpoints_are_allowed_by_default(
    hub: tuple[TestClient, Platform], uri: str
) -> None:
    client, _ = hub
    r = client.post(SUBS, json={**body(uri), "isActive": False})
    assert r.status_code == 201, r.text


def test_a_patch_to_a_denied_endpoint_is_refused_and_changes_nothing(hub: tuple[TestClient, Platform]) -> None:
    client, _ = hub
    r = client.post(SUBS, json=body("http://127.0.0.1:9/notify"))
    assert r.status_code == 201, r.text
    location = r.headers["location"]
    fragment = {"notification": {"endpoint": {"uri": "http://169.254.169.254/latest/meta-data/"}}}
    problem(client.patch(location, json=fragment), 400, "BadRequestData", "169.254.0.0/16")
    fragment = {"notification": {"endpoint": {"uri": "http://admin:pw@127.0.0.1:9/notify"}}}
    problem(client.patch(location, json=fragment), 400, "BadRequestData", "credentials")
    assert client.get(location).json()["notification"]["endpoint"]["uri"] == "http://127.0.0.1:9/notify"


def test_an_operator_can_deny_loopback_and_private_ranges_and_allow_exceptions() -> None:
    deny = "127.0.0.0/8,::1/128,10.0.0.0/8,169.254.0.0/16"
    for client, _ in hub_client(subscription_endpoint_deny=deny, subscription_endpoint_allow="10.9.0.0/16"):
        problem(client.post(SUBS, json=body("http://127.0.0.1:9/n")), 400, "BadRequestData", "127.0.0.0/8")
        problem(client.post(SUBS, json=body("http://[::1]:9/n")), 400, "BadRequestData", "::1/128")
        problem(client.post(SUBS, json=body("http://[::ffff:127.0.0.1]:9/n")), 400, "BadRequestData", "127.0.0.0/8")
        problem(client.post(SUBS, json=body("http://10.1.2.3/n")), 400, "BadRequestData", "10.0.0.0/8")
        assert client.post(SUBS, json=body("http://10.9.1.1/n")).status_code == 201  # the exception
        assert client.post(SUBS, json=body("http://192.168.1.1/n")).status_code == 201  # not listed


def test_unspecified_and_multicast_stay_refused_whatever_the_lists_say() -> None:
    # 0.0.0.0 connects to the hub itself on Linux: an operator list that forgets it must not open that door.
    for client, _ in hub_client(subscription_endpoint_deny="", subscription_endpoint_allow="0.0.0.0/0,::/0"):
        problem(client.post(SUBS, json=body("http://0.0.0.0:9/n")), 400, "BadRequestData", "unspecified")
        problem(client.post(SUBS, json=body("http://224.0.0.1:9/n")), 400, "BadRequestData", "multicast")
        assert client.post(SUBS, json=body("http://169.254.169.254/")).status_code == 201  # deny list emptied


def test_the_endpoint_networks_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "169.254.0.0/16" in Settings().subscription_endpoint_deny
    monkeypatch.setenv("POLIS_SUBSCRIPTION_ENDPOINT_DENY", " 10.0.0.0/8, 169.254.0.0/16 ,fe80::/10")
    monkeypatch.setenv("POLIS_SUBSCRIPTION_ENDPOINT_ALLOW", "10.1.0.0/16")
    settings = Settings()
    assert settings.subscription_endpoint_deny == "10.0.0.0/8,169.254.0.0/16,fe80::/10"
    assert settings.subscription_endpoint_allow == "10.1.0.0/16"
    monkeypatch.setenv("POLIS_SUBSCRIPTION_ENDPOINT_DENY", "10.0.0.0/8,10.0.0.0/33")
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        Settings()


# -- checked again at every delivery ----------------------------------------------------------------------------


def status(platform: Platform, location: str) -> DeliveryStatus:
    return platform.subscriptions.get("", location.rsplit("/", 1)[1])[1]


def failed(platform: Platform, location: str) -> DeliveryStatus:
    return wait_until(  # type: ignore[no-any-return]
        lambda: s if (s := status(platform, location)).times_failed else None, 10, "a failed notification"
    )


def write(client: TestClient, etype: str, n: int) -> None:
    entity = {"id": f"urn:ngsi-ld:{etype}:1", "type": etype, "count": {"type": "Property", "value": n}}
    r = client.post("/ngsi-ld/v1/entityOperations/upsert", json=[entity])
    assert r.status_code in (201, 204), r.text


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, list[str]], None]:
    """`resolver(host, [address, ...])`: each lookup of `host` answers the next address (the last one again
    when they run out); every other host is resolved as usual. Nothing goes to a DNS server, and a connection
    anywhere but loopback is refused here, so a guard that let one through fails the test without reaching
    the address."""
    real = socket.getaddrinfo
    real_connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else ""
        if not (host.startswith("127.") or host == "::1"):
            raise ConnectionRefusedError(f"test: no connection to {host} outside loopback")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    answers: dict[str, list[str]] = {}

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[host]
        address = queue.pop(0) if len(queue) > 1 else queue[0]
        return real(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers.__setitem__


def test_a_host_name_resolving_into_a_denied_network_is_a_failed_notification(
    hub: tuple[TestClient, Platform], resolver: Callable[[str, list[str]], None]
) -> None:
    client, platform = hub
    resolver("metadata.hooks.test", ["169.254.169.254"])
    r = client.post(SUBS, json=body("http://metadata.hooks.test/latest/meta-data/", "Probe"))
    assert r.status_code == 201, r.text  # a name is not resolved at create: what counts is delivery time
    write(client, "Probe", 1)
    reason = failed(platform, r.headers["location"]).last_failure_reason or ""
    assert "metadata.hooks.test resolves to 169.254.169.254" in reason and "169.254.0.0/16" in reason, reason
    assert client.get(r.headers["location"]).json()["notification"]["status"] == "failed"
    assert client.get(ENTITIES + "/urn:ngsi-ld:Probe:1").status_code == 200  # the write itself was fine


def test_each_delivery_resolves_again_so_a_rebinding_name_is_caught(
    hub: tuple[TestClient, Platform], resolver: Callable[[str, list[str]], None]
) -> None:
    """The name first resolves to the receiver (loopback, allowed) and is delivered there, with the name as
    Host; then it resolves to the metadata address, and that notification fails instead of going there."""
    client, platform = hub
    receiver = Receiver().start()
    try:
        resolver("rebind.hooks.test", ["127.0.0.1", "169.254.169.254"])
        uri = f"http://rebind.hooks.test:{receiver.port}/notify"
        r = client.post(SUBS, json={**body(uri, "Rebind"), "notification": {
            "format": "keyValues", "endpoint": {"uri": uri}}})
        assert r.status_code == 201, r.text
        write(client, "Rebind", 1)
        receiver.wait_for(1)
        _, headers, _ = receiver.received[0]
        assert headers["Host"] == f"rebind.hooks.test:{receiver.port}"
        write(client, "Rebind", 2)
        reason = failed(platform, r.headers["location"]).last_failure_reason or ""
        assert "rebind.hooks.test resolves to 169.254.169.254" in reason, reason
        time.sleep(0.3)
        assert receiver.values("count") == [1]
    finally:
        receiver.stop()


def test_an_operator_deny_applies_to_names_at_delivery() -> None:
    """localhost is a name (allowed at create); with loopback denied, delivery to it fails, not a crash."""
    receiver = Receiver().start()
    try:
        for client, platform in hub_client(subscription_endpoint_deny="127.0.0.0/8,::1/128", **FAST):
            r = client.post(SUBS, json=body(f"http://localhost:{receiver.port}/notify", "Local"))
            assert r.status_code == 201, r.text
            write(client, "Local", 1)
            reason = failed(platform, r.headers["location"]).last_failure_reason or ""
            assert "localhost resolves to" in reason and "denied network" in reason, reason
            assert receiver.bodies() == []
    finally:
        receiver.stop()


def test_delivery_to_a_name_goes_to_an_allowed_address(hub: tuple[TestClient, Platform]) -> None:
    """localhost may resolve to ::1 first, where nothing listens: the next address is tried."""
    client, _ = hub
    receiver = Receiver().start()
    try:
        r = client.post(SUBS, json=body(f"http://localhost:{receiver.port}/notify", "Named"))
        assert r.status_code == 201, r.text
        write(client, "Named", 1)
        receiver.wait_for(1)
    finally:
        receiver.stop()


# -- Accept: a subscription has no GeoJSON form -----------------------------------------------------------------


@pytest.mark.parametrize(("accept", "media"), [
    ("application/geo+json, application/json", "application/json"),
    ("application/geo+json, application/ld+json;q=0.5", "application/ld+json"),
    ("application/geo+json;q=1, */*;q=0.1", "application/json"),
    ("application/*", "application/json"),
    ("application/geo+json;q=0.9, application/ld+json;q=0.8", "application/ld+json"),
])
def test_an_accept_that_also_allows_json_gets_json(hub: tuple[TestClient, Platform], accept: str, media: str) -> None:
    client, _ = hub
    r = client.post(SUBS, json=body("http://127.0.0.1:9/notify"))
    assert r.status_code == 201, r.text
    for path in (SUBS, r.headers["location"]):
        got = client.get(path, headers={"Accept": accept})
        assert got.status_code == 200, (path, got.text)
        assert got.headers["content-type"].startswith(media), (path, got.headers["content-type"])


@pytest.mark.parametrize("accept", [
    "application/geo+json",
    "application/geo+json, application/json;q=0",
    "application/geo+json, application/*;q=0",
    "text/html",
])
def test_an_accept_allowing_nothing_but_geojson_is_406(hub: tuple[TestClient, Platform], accept: str) -> None:
    client, _ = hub
    r = client.post(SUBS, json=body("http://127.0.0.1:9/notify"))
    assert r.status_code == 201, r.text
    for path in (SUBS, r.headers["location"]):
        problem(client.get(path, headers={"Accept": accept}), 406, None,
                "application/json or application/ld+json")


# -- Link: the scheme is case-insensitive -----------------------------------------------------------------------


def test_a_link_header_with_a_capitalised_scheme_is_the_same_context(hub: tuple[TestClient, Platform]) -> None:
    """`<HTTPS://...>` is the same URL as `<https://...>` (RFC 3986 §3.1): it was refused as not http(s)."""
    client, _ = hub
    for link in (LINK_SDM.replace("<https://", "<HTTPS://"), LINK_SDM.replace("<https://", "<HttpS://")):
        sub = {"type": "Subscription", "watchedAttributes": ["averageVehicleSpeed"],
               "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}}}
        r = client.post(SUBS, json=sub, headers={"Link": link})
        assert r.status_code == 201, r.text
        got = client.get(r.headers["location"], headers={"Link": link})
        assert got.status_code == 200, got.text
        assert got.json()["watchedAttributes"] == ["averageVehicleSpeed"]
        plain = client.get(r.headers["location"]).json()  # the core context alone: the term's full IRI
        assert plain["watchedAttributes"] == ["https://smartdatamodels.org/dataModel.Transportation/averageVehicleSpeed"]
        # the answer's Link names the context in its usual spelling
        assert "<https://raw.githubusercontent.com/" in got.headers["link"]
        assert client.get(ENTITIES, params={"type": "TrafficFlowObserved"}, headers={"Link": link}).status_code == 200


# -- MQTT: the connection paho makes (and remakes) is checked too ---------------------------------------------


def _connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hosts every socket of the test tried to connect to (on top of `resolver`'s loopback-only guard)."""
    tried: list[str] = []
    guarded = socket.socket.connect

    def record(sock: socket.socket, address: Any) -> None:
        tried.append(address[0] if isinstance(address, tuple) else str(address))
        guarded(sock, address)

    monkeypatch.setattr(socket.socket, "connect", record)
    return tried


def test_an_mqtt_broker_name_is_checked_when_paho_connects_not_only_before(
    resolver: Callable[[str, list[str]], None], broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """paho resolves the broker's name itself whenever it (re)connects: a name that answers loopback to the
    delivery's check and the metadata address a moment later must not be connected to."""
    tried = _connections(monkeypatch)
    publisher = MqttPublisher(EndpointPolicy.from_text(Settings().subscription_endpoint_deny))
    try:
        resolver("fine.hooks.test", ["127.0.0.1"])
        publisher.send(f"mqtt://fine.hooks.test:{broker.port}/city/alerts", b"{}", {}, 5.0)  # PUBACK: delivered
        assert set(tried) == {"127.0.0.1"}  # (paho also connects a socket pair of its own on loopback)
        resolver("rebind.hooks.test", ["127.0.0.1", "169.254.169.254"])  # the check, then paho's own lookup
        with pytest.raises(DeliveryFailed, match="not reachable"):
            publisher.send(f"mqtt://rebind.hooks.test:{broker.port}/city/alerts", b"{}", {}, 1.5)
        assert "169.254.169.254" not in tried, tried
    finally:
        publisher.close()


# -- a stream nobody reads is waiting, not failing ----------------------------------------------------------------


def test_a_stream_subscription_without_a_reader_waits_without_a_warning(
    hub: tuple[TestClient, Platform], caplog: pytest.LogCaptureFixture
) -> None:
    """A dashboard tab closed leaves its stream subscription with no reader: its notifications wait for the next
    stream (README), which the log must not report as a failing endpoint; a real endpoint that fails still warns."""
    client, platform = hub
    caplog.set_level(logging.INFO, logger="polis.subscriptions.delivery")
    r = client.post(SUBS, json=body("urn:polis:sse", "Quiet"))
    assert r.status_code == 201, r.text
    write(client, "Quiet", 1)
    assert "no stream client" in (failed(platform, r.headers["location"]).last_failure_reason or "")
    records = [rec for rec in caplog.records if rec.name == "polis.subscriptions.delivery"]
    assert records and all(rec.levelno < logging.WARNING for rec in records), [rec.getMessage() for rec in records]
    caplog.clear()
    down = client.post(SUBS, json=body("http://127.0.0.1:9/notify", "Loud"))  # discard port: nothing listens
    assert down.status_code == 201, down.text
    write(client, "Loud", 1)
    failed(platform, down.headers["location"])
    assert any(rec.levelno == logging.WARNING for rec in caplog.records if rec.name == "polis.subscriptions.delivery")

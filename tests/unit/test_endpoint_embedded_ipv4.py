"""The endpoint guard and the IPv6 forms that carry an IPv4 address: a packet to one of them ends up at that
IPv4 address (through the hub's own kernel, a NAT64 gateway, a 6to4 or Teredo relay), so a denied IPv4
must stay denied however it is written, and an allowed one stays allowed."""

from __future__ import annotations

import pytest

from polis.settings import Settings
from polis.subscriptions.endpoints import EndpointPolicy, literal_address

DEFAULT = EndpointPolicy.from_text(Settings().subscription_endpoint_deny)


def refusal(policy: EndpointPolicy, text: str) -> str | None:
    address = literal_address(text)
    assert address is not None, text
    return policy.refusal(address)


@pytest.mark.parametrize(("address", "reached", "network"), [
    pytest.param("64:ff9b::a9fe:a9fe", "169.254.169.254", "169.254.0.0/16", id="nat64"),
    pytest.param("64:ff9b::169.254.169.254", "169.254.169.254", "169.254.0.0/16", id="nat64-dotted"),
    pytest.param("64:ff9b::6464:64c8", "100.100.100.200", "100.100.100.200/32", id="nat64-alibaba-metadata"),
    pytest.param("64:ff9b:1::a9fe:a9fe", "169.254.169.254", "169.254.0.0/16", id="nat64-local-use"),
    pytest.param("2002:a9fe:a9fe::1", "169.254.169.254", "169.254.0.0/16", id="6to4"),
    pytest.param("::a9fe:a9fe", "169.254.169.254", "169.254.0.0/16", id="ipv4-compatible"),
    pytest.param("::169.254.169.254", "169.254.169.254", "169.254.0.0/16", id="ipv4-compatible-dotted"),
    # Teredo: 2001:0:SERVER:flags:port:~CLIENT (the client's bits inverted); the other half is a harmless 1.2.3.4
    pytest.param("2001:0:a9fe:a9fe::fefd:fcfb", "169.254.169.254", "169.254.0.0/16", id="teredo-server"),
    pytest.param("2001:0:102:304::5601:5601", "169.254.169.254", "169.254.0.0/16", id="teredo-client"),
])
def test_a_denied_ipv4_inside_an_ipv6_address_is_refused_naming_the_network(
    address: str, reached: str, network: str
) -> None:
    reason = refusal(DEFAULT, address) or ""
    assert network in reason and reached in reason and "denied network" in reason, reason
    assert DEFAULT.check_host(address) == reason  # a literal host at create/update


@pytest.mark.parametrize("address", [
    "64:ff9b::808:808",  # 8.8.8.8 through NAT64
    "64:ff9b:1::808:808",
    "2002:808:808::1",  # 8.8.8.8's 6to4 network
    "2001:0:102:304::f7f7:f7f7",  # Teredo server 1.2.3.4, client 8.8.8.8
    "2606:4700:4700::1111",  # a plain global IPv6 address
    "::1",  # loopback, not an IPv4-compatible 0.0.0.1
    "::ffff:10.1.2.3",
])
def test_an_ipv6_address_reaching_an_allowed_ipv4_is_allowed(address: str) -> None:
    assert refusal(DEFAULT, address) is None


def test_unspecified_multicast_and_broadcast_stay_refused_through_every_form() -> None:
    open_lists = EndpointPolicy.from_text("", "0.0.0.0/0,::/0")
    for address in ("64:ff9b::e000:1", "2002:e000:1::1", "64:ff9b::ffff:ffff"):
        assert "multicast or broadcast" in (refusal(open_lists, address) or ""), address


def test_an_operators_lists_apply_to_every_form_of_an_address() -> None:
    """Refused when ANY address it reaches is denied and not allowed: an exception for an IPv4 network covers
    all its forms, but an exception for one IPv6 form does not open the IPv4 address behind it."""
    policy = EndpointPolicy.from_text("127.0.0.0/8,10.0.0.0/8", "10.9.0.0/16,64:ff9b::a01:203/128")
    for address in ("::127.0.0.1", "2002:7f00:1::1", "64:ff9b::7f00:1", "::ffff:127.0.0.1"):
        assert "127.0.0.0/8" in (refusal(policy, address) or ""), address
    for address in ("64:ff9b::a09:101", "2002:a09:101::1", "::ffff:10.9.1.1", "10.9.1.1"):
        assert refusal(policy, address) is None, address  # inside the 10.9.0.0/16 exception
    assert "10.0.0.0/8" in (refusal(policy, "64:ff9b::a01:203") or "")  # only its NAT64 form was allowed
    assert refusal(EndpointPolicy.from_text("2002::/16", "8.8.8.0/24"), "2002:808:808::1") is not None  # 6to4 denied

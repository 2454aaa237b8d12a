"""Which addresses a notification may go to: the guard against server-side request forgery.

A subscription's `notification.endpoint.uri` is a request the hub makes, from inside the operator's network,
to wherever a client said: without a guard a client could have the hub POST to a cloud metadata service
(http://169.254.169.254/) or to anything else only the hub can reach. The policy is a list of denied networks
(`POLIS_SUBSCRIPTION_ENDPOINT_DENY`) with exceptions (`POLIS_SUBSCRIPTION_ENDPOINT_ALLOW`). It is applied
twice: to a literal IP at create/update (400 naming the network), and at every delivery to every address the
host resolves to then (a failed notification). The delivery connects to the addresses it checked, so a name
that resolves elsewhere a moment later (DNS rebinding) cannot slip past the check.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# Never a unicast endpoint, whatever the settings say: a list written without them must not open a hole
# (connecting to 0.0.0.0 reaches the hub itself on Linux, behind a loopback deny).
_NEVER = (ip_network("0.0.0.0/8"), ip_network("::/128"), ip_network("224.0.0.0/4"), ip_network("ff00::/8"),
          ip_network("255.255.255.255/32"))
# What the system resolver reads as an IPv4 address besides the dotted quad: 2852039166, 0xa9.0xfe.0xa9.0xfe,
# 169.254.43518, 0251.0376.0251.0376 (inet_aton forms).
_LEGACY_IPV4 = re.compile(r"[0-9][0-9a-fA-FxX.]*")


class EndpointRefused(Exception):
    """The endpoint's host is, or resolves to, an address the policy denies; `reason` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_networks(text: str) -> tuple[Network, ...]:
    """A comma-separated CIDR list (the settings' form); ValueError on a part that is not one."""
    return tuple(ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def literal_address(host: str) -> IPAddress | None:
    """The address `host` names without any lookup: an IP literal (IPv6 without brackets, maybe with a
    zone), or a legacy IPv4 spelling that the resolver would turn into one; None for a host name."""
    try:
        return ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    deny: tuple[Network, ...]
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_text(cls, deny: str, allow: str = "") -> EndpointPolicy:
        return cls(parse_networks(deny), parse_networks(allow))

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be notified, else None. An IPv4-mapped IPv6 address (::ffff:169.254.169.254)
        is judged as the IPv4 address it reaches as well as itself."""
        forms: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        for form in forms:
            for network in _NEVER:
                if form in network:
                    return f"{address} is an unspecified, multicast or broadcast address, not an endpoint"
        if any(form in network for form in forms for network in self.allow):
            return None
        for form in forms:
            for network in self.deny:
                if form in network:
                    return f"{address} is in the denied network {network} (POLIS_SUBSCRIPTION_ENDPOINT_DENY)"
        return None

    def check_host(self, host: str) -> str | None:
        """At create/update: why a host given as an IP literal is refused, else None. A host name is not
        resolved here (what it resolves to now says nothing about delivery time); delivery checks it."""
        address = literal_address(host)
        return self.refusal(address) if address is not None else None

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """At delivery: the addresses to connect to, resolved once and each one checked; EndpointRefused when
        the host cannot be resolved or any address is denied (a name that also resolves into a denied network
        is not trusted with the others)."""
        literal = literal_address(host)
        if literal is not None:
            found: Sequence[IPAddress] = [literal]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError) as error:
                raise EndpointRefused(f"cannot resolve {host}: {error}") from None
            found = list(dict.fromkeys(ip_address(info[4][0]) for info in infos))
        for address in found:
            reason = self.refusal(address)
            if reason is not None:
                where = "" if literal is not None else f"{host} resolves to {address}: "
                raise EndpointRefused(f"endpoint refused: {where}{reason}")
        if not found:
            raise EndpointRefused(f"cannot resolve {host}: no address")
        return list(found)

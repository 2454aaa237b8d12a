"""Which addresses a notification may go to: the guard against server-side request forgery.

A subscription's `notification.endpoint.uri` is a request the hub makes, from inside the operator's network,
to wherever a client said: without a guard a client could have the hub POST to a cloud metadata service
(http://169.254.169.254/) or to anything else only the hub can reach. The policy is a list of denied networks
(`POLIS_SUBSCRIPTION_ENDPOINT_DENY`) with exceptions (`POLIS_SUBSCRIPTION_ENDPOINT_ALLOW`). It is applied
twice: to a literal IP at create/update (400 naming the network), and at every delivery to every address the
host resolves to then (a failed notification). The delivery connects to the addresses it checked, so a name
that resolves elsewhere a moment later (DNS rebinding) cannot slip past the check. An IPv6 address that leads
to an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo, IPv4-compatible) is judged as that IPv4 address too.
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
# IPv6 prefixes whose last 32 bits are an IPv4 address a NAT64 gateway forwards to (RFC 6052, RFC 8215). The
# local-use /48 may be used with the IPv4 address elsewhere (a /64 puts it in bits 72..104): an operator
# whose NAT64 does that denies the prefix itself.
_NAT64 = (ip_network("64:ff9b::/96"), ip_network("64:ff9b:1::/48"))
_IPV4_COMPATIBLE = ip_network("::/96")
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


def ipv4_reached(address: IPAddress) -> list[tuple[IPv4Address, str]]:
    """The IPv4 addresses a packet to this IPv6 address may end up at, each with the mechanism that takes it
    there: IPv4-mapped (the hub's own kernel connects over IPv4), NAT64 (a gateway translates; the well-known
    64:ff9b::/96 and the local-use 64:ff9b:1::/48, read with the IPv4 address in the last 32 bits as in a /96),
    6to4 and Teredo (relays tunnel to it) and the deprecated IPv4-compatible ::a.b.c.d."""
    if not isinstance(address, IPv6Address):
        return []
    found: list[tuple[IPv4Address, str]] = []
    if address.ipv4_mapped is not None:
        found.append((address.ipv4_mapped, "IPv4-mapped"))
    if any(address in prefix for prefix in _NAT64):
        found.append((IPv4Address(int(address) & 0xFFFF_FFFF), "NAT64"))
    if address.sixtofour is not None:
        found.append((address.sixtofour, "6to4"))
    if address.teredo is not None:
        server, client = address.teredo
        found += [(server, "Teredo server"), (client, "Teredo client")]
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves, not 0.0.0.0 and 0.0.0.1
        found.append((IPv4Address(int(address)), "IPv4-compatible"))
    return found


def _naming(address: IPAddress, form: IPAddress, how: str) -> str:
    """The start of a refusal: the address, and the IPv4 address it reaches (`how`) when that is what is refused."""
    return f"{address} reaches {form} ({how}), which is" if how else f"{address} is"


@dataclass(frozen=True, slots=True)
class EndpointPolicy:
    deny: tuple[Network, ...]
    allow: tuple[Network, ...] = ()

    @classmethod
    def from_text(cls, deny: str, allow: str = "") -> EndpointPolicy:
        return cls(parse_networks(deny), parse_networks(allow))

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be notified, else None. An IPv6 address that leads to an IPv4 address
        (`ipv4_reached`) is judged as each of them too, and refused when ANY of them is denied and not allowed: an
        exception for 10.9.0.0/16 covers 10.9.1.1 in all its forms, but one for 64:ff9b::a09:101/128 alone does
        not open the 10.9.1.1 behind it, nor does an exception for 10.9.1.1 open a denied 6to4 prefix."""
        forms: list[tuple[IPAddress, str]] = [(address, ""), *ipv4_reached(address)]
        for form, how in forms:
            if any(form in network for network in _NEVER):
                return f"{_naming(address, form, how)} an unspecified, multicast or broadcast address, not an endpoint"
        for form, how in forms:
            if any(form in network for network in self.allow):
                continue
            for network in self.deny:
                if form in network:
                    return (f"{_naming(address, form, how)} in the denied network {network} "
                            "(POLIS_SUBSCRIPTION_ENDPOINT_DENY)")
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

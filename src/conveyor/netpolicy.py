"""Which addresses a tenant's webhook may connect to. Pure, no I/O.

Only globally routable unicast addresses: everything that could reach the node's own host or
network is refused, including the forms that smuggle an internal IPv4 address inside IPv6.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
CGNAT = ipaddress.ip_network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
# special-purpose blocks that some Python versions still call global
SPECIAL = (
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("2001::/23"),
)


def networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def refusal(address: IPAddress, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why a webhook may not connect to this address, or None when it may. Addresses in an
    explicitly allowed network (a trusted internal service) pass."""
    if any(address.version == net.version and address in net for net in allowed):
        return None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if address.sixtofour is not None or address.teredo is not None:
            return "an IPv6 address that tunnels IPv4 (6to4 or Teredo)"
        if address in NAT64 or address in NAT64_LOCAL:
            return "a NAT64 address"
        if address in UNIQUE_LOCAL:
            return "a unique-local address"
    if address.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if isinstance(address, ipaddress.IPv4Address) and address in CGNAT:
        return "a shared (CGNAT) address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved or not address.is_global or any(
        address.version == net.version and address in net for net in SPECIAL
    ):
        return "a reserved address"
    return None

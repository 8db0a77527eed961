"""Personal data that the platform must never store whole."""

from __future__ import annotations

import ipaddress


def truncate_ip(ip: str | None) -> str | None:
    """Zero the host part of an address: IPv4 to its /24, IPv6 to its /48.

    A value that is not an IP address is dropped rather than stored, because
    it may hold one in a form we did not recognise.
    """
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)

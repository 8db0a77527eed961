"""Personal data that the platform must never store whole."""

from __future__ import annotations

import ipaddress
import re

# A dotted quad as ``ipaddress`` accepts it: four decimal octets, no leading zeros.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


def truncate_ip(ip: str | None) -> str | None:
    """Zero the host part of an address: IPv4 to its /24, IPv6 to its /48.

    IPv6 addresses that embed a whole IPv4 address are cut like it:
    IPv4-mapped ones become that address's /24, and 6to4 ones keep their /40
    (their /48, ``2002:AABB:CCDD::``, holds all of ``A.B.C.D``).
    A value that is not an IP address is dropped rather than stored, because
    it may hold one in a form we did not recognise.
    """
    if not ip:
        return None
    ip = ip.strip()
    quad = _IPV4.fullmatch(ip)
    if quad is not None:  # the common case, without ipaddress' objects (~10x faster)
        return f"{quad[1]}.{quad[2]}.{quad[3]}.0"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    if isinstance(address, ipaddress.IPv6Address) and address.sixtofour is not None:
        prefix = 40  # its /48 would keep the whole IPv4 address it embeds
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)

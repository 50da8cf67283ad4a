"""Which addresses an outgoing notification may reach: public ones, unless allowed."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_public(address: str) -> bool:
    """True for a globally routable unicast address (IPv4-mapped IPv6 judged as IPv4).

    Loopback, private (RFC 1918, fc00::/7), link-local (169.254/16 holds the cloud
    metadata services), shared (100.64/10), multicast, reserved and unspecified
    addresses are not.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IP address written out (no name to resolve)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def url_problem(url: str) -> str | None:
    """Why ``url`` may not be a notification target by its form alone, or None.

    https only (the URL carries the robot's key), a host, no credentials in it.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme != "https":
        return "must be an https:// URL (it carries the robot's key)"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not hold a user name or password"
    del port
    return None

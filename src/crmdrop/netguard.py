"""Where crmdrop may send a request an account chose (webhook URLs): not to this host or
its private network (server-side request forgery). A URL is judged by the addresses its
host resolves to, at registration and again at every send, and the send connects to the
very address that was judged, so a name that resolves elsewhere later (DNS rebinding)
gains nothing. Knows nothing of HTTP or storage."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(ValueError):
    """The URL's host is, or resolves to, an address crmdrop will not send to."""


def blocked_reason(ip: IPAddress) -> str | None:
    """Why this address is refused (loopback, private, ...), or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for name, hit in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if hit:
            return name
    return None if ip.is_global else "not public"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal is itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise BlockedAddress(f"{host} does not resolve ({exc})") from exc
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0])) for info in infos))


def public_address(url: str) -> IPAddress:
    """The address to connect to for `url`: its host's first address, provided *every*
    address it resolves to is public (one private answer is enough to refuse it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    literal = _is_ip(host)
    for ip in addresses:
        reason = blocked_reason(ip)
        if reason is not None:
            raise BlockedAddress(
                f"{host} is {reason}" if literal else f"{host} resolves to {ip}, which is {reason}"
            )
    if not addresses:
        raise BlockedAddress(f"{host} does not resolve")
    return addresses[0]

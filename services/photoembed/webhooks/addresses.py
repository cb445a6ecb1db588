"""Which URLs a webhook may call: http or https, to a host that resolves only to public addresses.

A webhook URL is the customer's to choose, and the service calls it from inside its own network:
without a check it could be pointed at the database, the metrics port, a cloud's metadata service
(169.254.169.254) or anything else behind the firewall (server-side request forgery). So every
address the host resolves to must be global (not loopback, private, link-local, shared, multicast,
reserved or unspecified), checked when the endpoint is made and again at every send, and the send
connects to the address that was checked (a name that resolves to a public address at the check
and a private one a moment later gets nowhere). WEBHOOK_ALLOW_PRIVATE=true lifts it (`make run`
and the tests, whose receivers listen on loopback).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """The URL cannot be called: what is wrong with it, in words for the 422."""


@dataclass(frozen=True)
class Target:
    """Where a send goes: the URL as given, its host and port, and the address to connect to."""

    url: str
    scheme: str
    host: str
    port: int
    address: IpAddress

    def connect_url(self) -> str:
        """The URL with the checked address in place of the host (the Host header and TLS still
        name the host)."""
        parts = urlsplit(self.url)
        shown = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return parts._replace(netloc=f"{shown}:{self.port}").geturl()

    @property
    def host_header(self) -> str:
        default = {"http": 80, "https": 443}[self.scheme]
        return self.host if self.port == default else f"{self.host}:{self.port}"


def why_not_public(address: IpAddress) -> str | None:
    """Why an address may not be called, or None for a global one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_global and not address.is_multicast:
        return None
    for reason, test in (
        ("loopback", address.is_loopback),
        ("link-local, where cloud metadata services answer", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
    ):
        if test:
            return reason
    return "not a public address"


def split(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; AddressRefused for anything else."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise AddressRefused(f"a webhook URL is http:// or https://, not {scheme or 'nothing'}")
    if not parts.hostname:
        raise AddressRefused("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("the URL may not hold a user name or password")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def check(url: str, allow_private: bool) -> Target:
    """The URL's target, its host resolved now; AddressRefused when it may not be called."""
    scheme, host, port = split(url)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused(f"{host} cannot be resolved: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    if not addresses:
        raise AddressRefused(f"{host} resolves to no address")
    if not allow_private:
        for address in addresses:
            reason = why_not_public(address)
            if reason is not None:
                raise AddressRefused(
                    f"{host} resolves to {address} ({reason}): webhooks may only call public "
                    "addresses (an operator can allow others with WEBHOOK_ALLOW_PRIVATE=true)"
                )
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])

"""Where webhooks may be sent (contract section 11): the SSRF rules, in one place.

``https://`` only, unless ``WEBHOOK_ALLOW_HTTP``. A host that resolves to a loopback, private,
link-local, reserved, multicast or otherwise non-public address is refused, unless it is listed
in ``WEBHOOK_ALLOWED_HOSTS``. The endpoint's URL is checked when it is saved, and its host is
resolved and checked again before every attempt: the delivery connects to the address checked
then, so a name that later resolves inside (DNS rebinding) reaches nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2000

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A URL or an address webhooks may not go to; the message says why."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A checked URL: where to connect, and what to say in Host and SNI."""

    url: str
    scheme: str
    host: str  # as in the URL, lower case, without brackets
    port: int
    target: str  # path and query

    @property
    def allow_listed(self) -> bool:
        return self.host in allowed_hosts()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: Address) -> str:
        """The URL with its host replaced by the checked address (connect there, nowhere else)."""
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.target}"


def allowed_hosts() -> set[str]:
    return {host.lower().strip("[]") for host in settings.WEBHOOK_ALLOWED_HOSTS}


def parse(url: object) -> Destination:
    """The URL's parts, or Refused for anything that is not an http(s) URL we may use."""
    if not isinstance(url, str) or not url:
        raise Refused("url is required")
    if len(url) > MAX_URL_LENGTH:
        raise Refused(f"url is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise Refused("url must not contain spaces or control characters")
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(f"url is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise Refused("url must start with https://")
    if scheme == "http" and not settings.WEBHOOK_ALLOW_HTTP:
        raise Refused("url must start with https:// (plain http:// needs WEBHOOK_ALLOW_HTTP=1)")
    if parts.username is not None or parts.password is not None:
        raise Refused("url must not contain credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused("url has no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(
        url=url,
        scheme=scheme,
        host=host,
        port=port or (443 if scheme == "https" else 80),
        target=target,
    )


def public(address: Address) -> bool:
    """Whether an address is on the public internet (not loopback, private, link-local,
    reserved, multicast, shared or unspecified)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_addresses(destination: Destination, addresses: list[Address]) -> list[Address]:
    """The addresses the destination may be reached at; Refused when it may not be."""
    if not addresses:
        raise Refused(f"{destination.host} does not resolve")
    if destination.allow_listed:
        return addresses
    inside = [a for a in addresses if not public(a)]
    if inside:
        raise Refused(
            f"{destination.host} resolves to {inside[0]}, a loopback, private, link-local or "
            "reserved address (allow it with WEBHOOK_ALLOWED_HOSTS)"
        )
    return addresses


def literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def addresses_of(infos: list) -> list[Address]:
    """The addresses of getaddrinfo's answer, each once, in its order."""
    seen: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


def resolve(destination: Destination) -> list[Address]:
    """The host's addresses, checked (blocking; the delivery worker resolves asynchronously)."""
    address = literal(destination.host)
    if address is not None:
        return check_addresses(destination, [address])
    try:
        infos = socket.getaddrinfo(
            destination.host, destination.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError):
        raise Refused(f"{destination.host} does not resolve") from None
    return check_addresses(destination, addresses_of(infos))


def check_url(url: object) -> Destination:
    """An endpoint's URL as it is saved: its form, its scheme and where its host resolves now."""
    destination = parse(url)
    resolve(destination)
    return destination

"""Webhook URL safety: http(s) only, and no private, loopback or link-local targets (SSRF).

A URL is checked when it is saved (every address its host resolves to must be public) and again at
each delivery, which then connects to the address just checked (the ``Host`` header and the TLS
server name stay the URL's host), so a DNS answer that changes after the check (rebinding) cannot
steer a delivery onto the internal network. ``webhooks_allow_private_urls`` turns all of this
off for tests and local use.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any

import httpx

from cdp.errors import UnsafeURL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_LENGTH = 2048


def parse(url: object, *, field_name: str = "url") -> httpx.URL:
    """The URL if it is a well-formed absolute http(s) URL without credentials."""
    if not isinstance(url, str) or not url.strip():
        raise UnsafeURL("url must be an http:// or https:// URL", {"field": field_name})
    url = url.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"url must be at most {MAX_URL_LENGTH} characters", {"field": field_name})
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeURL(f"url is not a valid URL: {exc}", {"field": field_name}) from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeURL(
            f"url must use http or https, not {parsed.scheme or 'no scheme'!r}", {"field": field_name, "url": url}
        )
    if not parsed.host:
        raise UnsafeURL("url has no host", {"field": field_name, "url": url})
    if parsed.userinfo:
        raise UnsafeURL(
            "url must not hold a user name or password; verify deliveries with the signing secret instead",
            {"field": field_name},
        )
    if parsed.fragment:
        raise UnsafeURL("url must not have a #fragment", {"field": field_name})
    return parsed


def unsafe_reason(address: IPAddress) -> str | None:
    """Why deliveries may not go to this address (None when it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return unsafe_reason(mapped)
    checks = (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("private", address.is_private),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("reserved", address.is_reserved),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


def check_addresses(host: str, addresses: list[str], *, field_name: str = "url") -> list[IPAddress]:
    """Every address must be public; returns them parsed."""
    parsed = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
    for address in parsed:
        reason = unsafe_reason(address)
        if reason:
            raise UnsafeURL(
                f"url host {host!r} resolves to {address}, a {reason} address; webhooks only go to public "
                "addresses (set CDP_WEBHOOKS_ALLOW_PRIVATE_URLS=true for local use)",
                {"field": field_name, "address": str(address), "reason": reason},
            )
    return parsed


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"url host {host!r} does not resolve: {exc}", {"field": "url", "host": host}) from exc
    return in_order(infos)


def in_order(infos: Sequence[tuple[Any, ...]]) -> list[str]:
    """Addresses of a getaddrinfo answer, once each, in its order (which follows the system's preferences)."""
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def validate(url: object, *, allow_private: bool, field_name: str = "url") -> str:
    """The URL as stored, after the scheme check and (unless allowed) the address check."""
    parsed = parse(url, field_name=field_name)
    if not allow_private:
        host = parsed.raw_host.decode("ascii")
        check_addresses(host, resolve(host, port_of(parsed)), field_name=field_name)
    return str(parsed)


def connect_addresses(host: str, addresses: list[str]) -> list[str]:
    """The addresses to try for ``host``, in order, once every one of them was checked."""
    check_addresses(host, addresses)
    if not addresses:
        raise UnsafeURL(f"url host {host!r} resolves to no address", {"field": "url", "host": host})
    return addresses

"""Where the orchestrator may send an agency's messages, and how a new webhook address is confirmed.

A webhook address carries the person's data. Outside development (``Settings.webhook_guard``):

- An address whose host resolves to a loopback, private, link-local (cloud metadata included),
  shared, multicast, reserved or unspecified address is refused, when it is registered and again at
  each delivery, on the address the connection is actually made to (``GuardedTransport`` resolves,
  checks, then connects to the checked address, so a DNS change between check and use cannot send
  a message inside). A private network where agencies really are (a VPN) can be allowed by name
  (``Settings.webhook_private_networks``); loopback, link-local and metadata never.
- A new address (or secret) is not used until the agency confirms it: a signed ``webhook.verification``
  request carrying a challenge goes to the new address, and a partner of the agency gives the
  challenge back through the API (``POST /v1/agencies/{id}/webhook/confirm``). Answering the request
  alone is not enough: the admin who set the address may own the server behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Never a partner's system, whatever the settings say.
_ALWAYS_REFUSED = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "169.254.0.0/16",
        "fe80::/10",
        "0.0.0.0/8",
        "::/128",
        "fd00:ec2::254/128",  # AWS's IPv6 instance metadata
    )
]


class UnsafeAddress(Exception):
    """The webhook's host resolves to an address the orchestrator must not send personal data to."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature an agency recomputes to know a message is ours and unchanged."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def host_of(url: str) -> str:
    """The host of a webhook address, for the audit trail and notices (never its path or query)."""
    return (urlsplit(url).hostname or "").lower()


def _networks(names: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n, strict=False) for n in names]


def refused_address(address: IPAddress, allowed_private: Iterable[str] = ()) -> str | None:
    """Why a message must not go to this address, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address carried inside an IPv6 one (mapped, 6to4, Teredo) is checked as itself.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            why = refused_address(embedded, allowed_private)
            if why:
                return why
            if address.ipv4_mapped is not None:
                return None
    if any(address in n for n in _ALWAYS_REFUSED if n.version == address.version):
        return "a loopback, link-local or metadata address"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "a multicast, reserved or unspecified address"
    if not address.is_global:
        if any(address in n for n in _networks(allowed_private) if n.version == address.version):
            return None
        return "a private address"
    return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses a host name resolves to (an address literal: itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeAddress(f"the webhook's host does not resolve ({type(exc).__name__})") from None
    # The host of an IPv4 or IPv6 address is a str (typeshed allows an int for other families).
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))


async def checked_addresses(host: str, port: int, allowed_private: Iterable[str] = ()) -> list[IPAddress]:
    """Every address the host resolves to, if each may receive messages; ``UnsafeAddress`` otherwise
    (one bad address is enough: which one a connection takes is not ours to choose)."""
    addresses = await resolve(host, port)
    for address in addresses:
        why = refused_address(address, allowed_private)
        if why:
            raise UnsafeAddress(f"the webhook's host resolves to {why}")
    if not addresses:
        raise UnsafeAddress("the webhook's host resolves to no address")
    return addresses


async def check_url(url: str, allowed_private: Iterable[str] = ()) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await checked_addresses(parts.hostname or "", port, allowed_private)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses ``checked_addresses`` allows: resolution, check and connection
    happen here, once per connection, on the address used."""

    def __init__(self, allowed_private: list[str]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allowed = allowed_private

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        error: Exception | None = None
        for address in await checked_addresses(host, port, self._allowed):
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.AsyncNetworkStream:
        raise UnsafeAddress("no unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, connecting through ``_GuardedBackend``; TLS still checks the host name."""

    def __init__(self, *, allowed_private: list[str], verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=_GuardedBackend(list(allowed_private)),
        )


def delivery_client(settings: Any) -> httpx.AsyncClient:
    """The HTTP client of every message to an agency: no redirects, no proxy from the environment
    (a proxy would connect where the check did not look), and the address guard where it applies."""
    if settings.webhook_guard_on:
        transport = GuardedTransport(allowed_private=settings.webhook_private_networks)
        return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False)
    return httpx.AsyncClient(follow_redirects=False, trust_env=False)

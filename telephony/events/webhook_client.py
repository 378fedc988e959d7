"""One webhook attempt, sent so that a tenant's URL cannot reach inside our network.

- https only, unless the tenant's webhook allows http (tenant.yaml is the operator's file);
- the host is resolved when a connection is opened, every address it resolves to must be a
  public one (not loopback, private, link-local, carrier-grade NAT, multicast or reserved)
  unless the webhook allows private networks, and the connection goes to an address that was
  checked: there is no second lookup that a hostile DNS server could answer differently;
- no proxy from the environment, no redirects (a 3xx is a failed attempt, as Standard Webhooks
  advises), one deadline for the whole attempt, and no more than `max_response_bytes` of the
  answer are read;
- at most `per_endpoint` attempts at once to one receiver (scheme, host and port), each with a
  pool of kept-alive connections of its own; attempts waiting their turn are not yet timed.

httpcore (under httpx) does the HTTP and TLS: its network backend is where the check sits, and
TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpcore
from httpcore._backends.auto import AutoBackend

from personas.tenant import Webhook
from telephony.events.signature import signed_headers

Resolver = Callable[[str, int], Awaitable[list[str]]]
USER_AGENT = "plexline-webhooks/1"


class TargetRefused(httpcore.ConnectError):
    """The URL may not be called: its scheme, or the addresses its host resolves to."""


@dataclass(frozen=True)
class Attempt:
    status: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    error: str  # "" when delivered
    retry_after: float | None = None  # seconds, as the receiver asked
    seconds: float = 0.0

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# IPv6 prefixes whose last 32 bits are an IPv4 address a gateway or the host itself reaches:
# NAT64 (RFC 6052), IPv4-compatible (deprecated), SIIT (RFC 2765).
_IPV4_IN_LAST_32_BITS = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96"))
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: translated by the operator's own gateway


def is_public(address: str) -> bool:
    """Whether `address` is on the public internet; an IPv6 address that carries an IPv4 one
    (mapped, NAT64, 6to4, Teredo, ...) is judged by the IPv4 address it reaches."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    return ip.is_global and not ip.is_multicast


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if any(ip in network for network in _IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses that pass the check, and only to the addresses checked."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolver):
        self.allow_private = allow_private
        self.resolver = resolver
        self._inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.resolver(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"cannot resolve {host}: {error}") from error
        refused = [a for a in addresses if not is_public(a)]
        if refused and not self.allow_private:
            raise TargetRefused(f"{host} resolves to {', '.join(refused)}: not a public address "
                                "(the tenant's webhook does not allow private networks)")
        error: Exception = httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable | None = None) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks are not sent to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


@dataclass
class _Endpoint:
    pool: httpcore.AsyncConnectionPool
    turns: asyncio.Semaphore


class WebhookClient:
    def __init__(self, timeout: float = 15.0, max_response_bytes: int = 64 * 1024, per_endpoint: int = 8,
                 resolver: Resolver = system_resolver):
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.per_endpoint = per_endpoint
        self._ssl = ssl.create_default_context()
        self._backends = {allow: CheckedBackend(allow, resolver) for allow in (False, True)}
        self._endpoints: dict[tuple[str, str, int | None, bool], _Endpoint] = {}

    def _endpoint(self, webhook: Webhook) -> _Endpoint:
        u = webhook.url
        key = (u.scheme, u.host or "", u.port, webhook.allow_private_network)
        if key not in self._endpoints:
            pool = httpcore.AsyncConnectionPool(ssl_context=self._ssl, max_connections=self.per_endpoint,
                                                keepalive_expiry=30.0,
                                                network_backend=self._backends[webhook.allow_private_network])
            self._endpoints[key] = _Endpoint(pool, asyncio.Semaphore(self.per_endpoint))
        return self._endpoints[key]

    async def send(self, webhook: Webhook, msg_id: str, body: bytes) -> Attempt:
        start = time.monotonic()
        url = str(webhook.url)
        if webhook.url.scheme != "https" and not webhook.allow_http:
            return Attempt(None, f"refused {url}: https is required (the tenant's webhook does not allow http)")
        if webhook.secret is None:
            return Attempt(None, "the tenant's webhook has no secret to sign with")
        headers = {**signed_headers(webhook.secret, msg_id, body), "content-type": "application/json",
                   "user-agent": USER_AGENT}
        endpoint = self._endpoint(webhook)
        try:
            async with endpoint.turns, asyncio.timeout(self.timeout):
                status, retry_after = await self._post(endpoint.pool, url, headers, body)
        except TimeoutError:
            return Attempt(None, f"no answer within {self.timeout:g} s", seconds=time.monotonic() - start)
        except httpcore.TimeoutException as error:
            return Attempt(None, f"timed out: {error or type(error).__name__}", seconds=time.monotonic() - start)
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, OSError) as error:
            return Attempt(None, f"{type(error).__name__}: {error}", seconds=time.monotonic() - start)
        error = "" if 200 <= status < 300 else f"HTTP {status}"
        return Attempt(status, error, retry_after, time.monotonic() - start)

    async def _post(self, pool: httpcore.AsyncConnectionPool, url: str, headers: dict[str, str],
                    body: bytes) -> tuple[int, float | None]:
        t = self.timeout
        extensions = {"timeout": {"connect": t, "read": t, "write": t, "pool": t}}
        async with pool.stream("POST", url, headers=headers, content=body, extensions=extensions) as response:
            read = 0
            async for chunk in response.aiter_stream():  # read a little of the answer, then hang up
                read += len(chunk)
                if read >= self.max_response_bytes:
                    break
            return response.status, _retry_after(response.headers)

    async def close(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.pool.aclose()


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    value = next((v.decode("latin-1") for k, v in headers if k.lower() == b"retry-after"), None)
    if value is None:
        return None
    if re.fullmatch(r"[0-9]{1,10}", value.strip()):  # str.isdigit() takes "²", which float() refuses
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None

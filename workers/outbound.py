"""Requests to URLs llmqueue's users give (webhooks, images to fetch): never to an address
inside the deployment.

A URL is refused when its host is, or resolves to, a loopback, private, link-local,
multicast, reserved, unspecified or otherwise non-public address, IPv4 or IPv6 (an
IPv4-mapped, 6to4, Teredo or NAT64 address is judged by the IPv4 address inside it). The
check runs where it cannot be dodged: in the network backend that opens each connection,
on the addresses it is about to connect to (so a name that resolved to a public address
when it was checked and to an internal one a moment later is still refused), and again for
every hop of a redirect, which is followed here, by hand, at most `outbound_max_redirects`
times. No proxy from the environment is used (it would resolve the name itself).

Operators who need internal targets list networks in `LLMQUEUE_OUTBOUND_ALLOWED_NETWORKS`
(CIDRs), or let webhooks go anywhere with `LLMQUEUE_WEBHOOK_ALLOW_PRIVATE=true`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from core.settings import Settings, get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
REDIRECTS = (301, 302, 303, 307, 308)
SCHEMES = ("http", "https")


class Refused(Exception):
    """A URL llmqueue will not request; the message says which address and why."""


@dataclass(frozen=True)
class Policy:
    """Which addresses outbound requests may reach."""

    allow_any: bool = False
    allowed: tuple[IPNetwork, ...] = ()
    max_redirects: int = 5

    @classmethod
    def of(cls, settings: Settings | None = None, *, webhook: bool = False) -> Policy:
        settings = settings or get_settings()
        return cls(
            allow_any=webhook and settings.webhook_allow_private,
            allowed=tuple(ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks),
            max_redirects=settings.outbound_max_redirects,
        )

    def reason(self, ip: IPAddress) -> str | None:
        """Why this address may not be reached, or None when it may."""
        if self.allow_any or any(ip in network for network in self.allowed):
            return None
        inner = embedded_ipv4(ip)
        if inner is not None:
            if any(inner in network for network in self.allowed):
                return None
            why = forbidden_range(inner)
            if why is not None or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped):
                return why
        return forbidden_range(ip)


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo client, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_range(ip: IPAddress) -> str | None:
    """The kind of non-public range an address is in, or None for a public address."""
    for kind, inside in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not public", not ip.is_global),
    ):
        if inside:
            return kind
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (an IP literal: itself). OSError when it does not."""
    literal = host.strip("[]")
    try:
        return [ipaddress.ip_address(literal)]
    except ValueError:
        pass
    infos = socket.getaddrinfo(literal, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # drop an IPv6 zone
        if ip not in addresses:
            addresses.append(ip)
    return addresses


def allowed_addresses(host: str, port: int, policy: Policy) -> list[IPAddress]:
    """The addresses of `host` to connect to; Refused if any of them is forbidden."""
    addresses = resolve(host, port)
    for ip in addresses:
        why = policy.reason(ip)
        if why is not None:
            shown = host if host.strip("[]") == str(ip) else f"{host} ({ip})"
            raise Refused(f"{shown} is a {why} address; llmqueue does not send requests there")
    return addresses


def check_url(url: str, policy: Policy | None = None, *, unresolvable_ok: bool = True) -> None:
    """Refused unless `url` is http(s) with a host whose every address is allowed. A name that
    does not resolve now passes when `unresolvable_ok` (it is checked again at connect time)."""
    policy = policy or Policy.of()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise Refused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in SCHEMES:
        raise Refused(f"only http and https URLs are requested, not {parsed.scheme or 'a relative'!r} ones")
    if not parsed.host:
        raise Refused("the URL has no host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        allowed_addresses(parsed.host, port, policy)
    except OSError:
        if not unresolvable_ok:
            raise Refused(f"{parsed.host} does not resolve") from None


class GuardedBackend(httpcore.NetworkBackend):
    """Opens a connection only to an allowed address of the host (resolved here, once)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = allowed_addresses(host, port, self.policy)
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from exc
        failure: Exception | None = None
        for ip in addresses:
            try:
                return self._inner.connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise Refused("unix sockets are never requested")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def guarded_client(policy: Policy, timeout: float) -> httpx.Client:
    """An httpx client whose every connection goes through the guard, redirects not followed
    (`fetch` follows them itself), and no proxy or credentials from the environment."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx takes no network backend; its pool is rebuilt with ours (same TLS defaults).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=GuardedBackend(policy),
        max_connections=10,
    )
    return httpx.Client(transport=transport, timeout=timeout, follow_redirects=False, trust_env=False)


@dataclass(frozen=True)
class Fetched:
    status_code: int
    headers: httpx.Headers
    body: bytes
    url: str


def fetch(
    method: str,
    url: str,
    *,
    policy: Policy,
    timeout: float,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    max_bytes: int = 1 << 16,
) -> Fetched:
    """One request through the guard, following up to `policy.max_redirects` redirects (each
    hop's URL checked, its connection guarded); reads at most `max_bytes` + 1 of the body.
    Raises Refused, or httpx.HTTPError for a network failure."""
    with guarded_client(policy, timeout) as client:
        for _hop in range(policy.max_redirects + 1):
            check_url(url, policy)
            request = client.build_request(method, url, content=content, headers=headers)
            response = client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code not in REDIRECTS or not location:
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            break
                    return Fetched(response.status_code, response.headers, bytes(body), url)
            finally:
                response.close()
            url = urljoin(url, location)
            if response.status_code in (301, 302, 303) and method != "GET":
                method, content = "GET", None  # as browsers do; 307 and 308 keep the body
        raise Refused(f"more than {policy.max_redirects} redirects")

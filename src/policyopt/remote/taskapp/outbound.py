"""Where the job server may send requests: the outbound policy for task apps.

A job names its task app's URL, and the server then sends requests there carrying the task
app's key, so the URL is a server-side request forgery vector. The owner lists the hosts,
addresses and networks task apps may be on (``serve --task-app-hosts``; loopback by default).

- :meth:`OutboundPolicy.check_url` runs at submit: http(s) only, no user info, query or
  fragment, and the host must resolve to allowed addresses (a 422 otherwise).
- :meth:`OutboundPolicy.transport` is an httpx transport that resolves the host **on every
  new connection**, checks each address and connects to the checked address itself, so a name
  that later resolves elsewhere (DNS rebinding) is refused before any packet is sent.
  :meth:`OutboundPolicy.async_transport` is the same for ``httpx.AsyncClient`` (the lookup runs
  on a worker thread, so a slow resolver never blocks the event loop).
- Link-local, metadata, unspecified and multicast addresses (:data:`ALWAYS_REFUSED`) are
  refused even for an allowed name, unless a network entry names them explicitly.

Redirects are never followed (the task-app client sets ``follow_redirects=False``).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from policyopt.remote.errors import PolicyViolation

__all__ = ["ALWAYS_REFUSED", "DEFAULT_TASK_APP_HOSTS", "OutboundPolicy", "OutboundRefused"]

#: where task apps may be by default: this machine (so the README's quick start works)
DEFAULT_TASK_APP_HOSTS = ("127.0.0.0/8", "::1", "localhost")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: refused unless an explicit network entry contains them: cloud metadata and link-local
#: services, "this host" and broadcast/multicast addresses
ALWAYS_REFUSED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "224.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "fe80::/10",
        "fd00:ec2::254/128",
        "ff00::/8",
    )
)


class OutboundRefused(httpcore.ConnectError):
    """A connection the outbound policy does not allow (raised before connecting)."""


class OutboundPolicy:
    """Allowed task-app hosts: IP networks (``10.0.0.0/8``), addresses and host names
    (``tasks.internal``, ``*.example.org``)."""

    def __init__(self, hosts: Iterable[str] = DEFAULT_TASK_APP_HOSTS) -> None:
        self.networks: list[IPNetwork] = []
        self.names: list[str] = []
        self.entries = tuple(hosts)
        for entry in self.entries:
            text = entry.strip().lower().strip("[]")
            if not text:
                continue
            try:
                self.networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                self.names.append(text.rstrip("."))

    # ------------------------------------------------------------------ checks
    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to ``address`` (resolved from ``host``) is refused, or None."""
        ip = _ip(address)
        if ip is None:
            return f"{address!r} is not an IP address"
        explicit = any(ip in net for net in self.networks if ip.version == net.version)
        if explicit:
            return None
        if any(ip in net for net in ALWAYS_REFUSED if ip.version == net.version):
            return f"{ip} is a link-local, metadata or unspecified address"
        if self._name_allowed(host):
            return None
        return f"{host} ({ip}) is not in the allowed task-app hosts ({', '.join(self.entries)})"

    def _name_allowed(self, host: str) -> bool:
        name = host.lower().rstrip(".")
        for entry in self.names:
            if entry.startswith("*.") and name.endswith(entry[1:]):
                return True
            if name == entry:
                return True
        return False

    def resolve(self, host: str, port: int) -> list[str]:
        """The allowed addresses of ``host``; raises :class:`OutboundRefused` when none are."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise OutboundRefused(f"cannot resolve {host!r}: {exc}") from None
        allowed: list[str] = []
        reasons: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            reason = self.refusal(host, address)
            if reason is None:
                if address not in allowed:
                    allowed.append(address)
            else:
                reasons.append(reason)
        if not allowed:
            raise OutboundRefused(
                "refused by the server's outbound policy: "
                + ("; ".join(dict.fromkeys(reasons)) or f"{host!r} has no address")
            )
        return allowed

    def check_url(self, url: str, path: str = "task_app.url") -> None:
        """Raise :class:`PolicyViolation` (422) unless ``url`` is a task-app URL this server
        may call. Resolves the host name (a blocking call: run it off the event loop)."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise PolicyViolation(path, f"not a valid URL: {exc}") from None
        if parsed.scheme not in ("http", "https"):
            raise PolicyViolation(path, "must start with http:// or https://")
        if parsed.userinfo:
            raise PolicyViolation(path, "must not hold a user name or password")
        if parsed.query or "?" in url:
            raise PolicyViolation(path, "must not hold a query string")
        if parsed.fragment or "#" in url:
            raise PolicyViolation(path, "must not hold a fragment")
        if not parsed.host:
            raise PolicyViolation(path, "has no host")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            self.resolve(parsed.host, port)
        except OutboundRefused as exc:
            raise PolicyViolation(
                path,
                f"{exc}. The server's owner sets the allowed hosts (serve --task-app-hosts).",
            ) from None

    # ------------------------------------------------------------------ transport
    def transport(
        self, *, max_connections: int = 8, ssl_context: ssl.SSLContext | None = None
    ) -> httpx.HTTPTransport:
        """An httpx transport whose every new connection is resolved and checked here
        (``ssl_context``: one to share between transports; a new default one otherwise)."""
        return self._guarded(
            httpx.HTTPTransport,
            httpcore.ConnectionPool,
            _GuardedBackend,
            max_connections,
            ssl_context,
        )

    def async_transport(
        self, *, max_connections: int = 8, ssl_context: ssl.SSLContext | None = None
    ) -> httpx.AsyncHTTPTransport:
        """The async twin of :meth:`transport`: every new connection is resolved and checked."""
        return self._guarded(
            httpx.AsyncHTTPTransport,
            httpcore.AsyncConnectionPool,
            _AsyncGuardedBackend,
            max_connections,
            ssl_context,
        )

    def _guarded(
        self,
        transport_class: Any,
        pool_class: Any,
        backend_class: Any,
        max_connections: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        """A transport of ``transport_class`` whose pool connects through ``backend_class``."""
        ssl_context = ssl_context or httpx.create_ssl_context(trust_env=False)
        transport = transport_class(verify=ssl_context, trust_env=False)
        transport._pool = pool_class(  # the documented httpcore extension point
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=backend_class(self),
        )
        return transport

    def __repr__(self) -> str:
        return f"OutboundPolicy({list(self.entries)!r})"


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, but a TCP connection goes only to an address the policy
    allowed, resolved here (never re-resolved by the socket layer)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self.policy.resolve(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last


class _AsyncGuardedBackend(httpcore.AnyIOBackend):
    """httpcore's async socket backend, guarded as :class:`_GuardedBackend`: it connects only to
    addresses the policy allowed (an IP literal, so anyio does not resolve the name again)."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        import anyio.to_thread

        addresses = await anyio.to_thread.run_sync(
            self.policy.resolve, host, port, abandon_on_cancel=True
        )
        last: Exception | None = None
        for address in addresses:
            try:
                return await super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip

"""Keep outgoing requests away from the server's own network (SSRF).

Webhook URLs, and the URLs the network processors (http, scrape, llm) fill from a job's rows and
params, are typed by users but fetched by our workers, which sit inside the operator's network:
without a check, `http://169.254.169.254/` or `http://10.0.0.5:6379/` would make the worker talk to
the cloud metadata service or an internal Redis on the user's behalf, and hand back the answer.

Each kind of request has its own policy (`WEBHOOKS`, `PROCESSORS`): the setting that lets the
operator allow some or all private networks (an internal API is a common processor target), and
how a refusal reads. The same rules are applied in two layers:
- `validate_webhook_url()` when a job is created, so a bad URL is a 400 at once;
- `open_socket()` at every connection (jobs/outbound.py's client, for webhooks and processors),
  which resolves the host once, checks every address and connects to the checked
  address itself. Checking a name and then letting the HTTP client resolve it again would leave a
  window for DNS rebinding (public answer for the check, 127.0.0.1 for the connection); here the
  address checked is the address connected to. Redirects open new connections, so they are
  checked too.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import typing
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance metadata endpoints. "all" in the allowlist does not cover them: an operator who
# wants them must list their network explicitly, since they hand out the machine's credentials.
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

# Ranges Python's ipaddress flags imperfectly or that we name explicitly for a clear message.
_NAMED: tuple[tuple[str, Network], ...] = tuple(
    (label, ipaddress.ip_network(net))
    for label, net in (
        ("loopback", "127.0.0.0/8"),
        ("private", "10.0.0.0/8"),
        ("private", "172.16.0.0/12"),
        ("private", "192.168.0.0/16"),
        ("carrier-grade NAT", "100.64.0.0/10"),
        ("link-local", "169.254.0.0/16"),
        ("unspecified", "0.0.0.0/8"),
        ("multicast", "224.0.0.0/4"),
        ("reserved", "240.0.0.0/4"),
        ("loopback", "::1/128"),
        ("unspecified", "::/128"),
        ("private", "fc00::/7"),
        ("link-local", "fe80::/10"),
        ("site-local", "fec0::/10"),
        ("multicast", "ff00::/8"),
    )
)

_ALL = {"all", "1", "true", "yes", "on", "*"}
_NONE = {"", "0", "false", "no", "off", "none"}


class Policy(typing.NamedTuple):
    setting: str  # the Django setting (and environment variable) naming the allowed networks
    refused: str  # the refusal, with {shown} (host and address) and {reason} ("loopback", …)
    host: str  # what the host is called in a message ("The webhook host 'x' could not …")


WEBHOOKS = Policy(
    "BATCHHUB_WEBHOOK_ALLOW_PRIVATE",
    "Webhook URLs must point at a public address; {shown} is {reason}.",
    "webhook host",
)
PROCESSORS = Policy(
    "BATCHHUB_PROCESSOR_ALLOW_PRIVATE",
    "{shown} is {reason}: processors reach only public addresses unless the operator allows "
    "others (BATCHHUB_PROCESSOR_ALLOW_PRIVATE).",
    "host",
)


class UnsafeURL(ValidationError):
    """A URL the server refuses to call; the message says why, in a user's words."""


class UnresolvableHost(OSError):
    """DNS gave no answer: maybe temporary, so a delivery retries instead of giving up."""


@functools.lru_cache(maxsize=8)
def _parse_allowlist(raw: str, setting: str) -> tuple[bool, tuple[Network, ...]]:
    value = raw.strip().lower()
    if value in _NONE:
        return False, ()
    if value in _ALL:
        return True, ()
    networks = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{setting}: {part!r} is not a network "
                "(use '', 'all' or a comma-separated list such as '127.0.0.0/8,10.0.0.0/8')."
            ) from None
    return False, tuple(networks)


def allowlist(policy: Policy = WEBHOOKS) -> tuple[bool, tuple[Network, ...]]:
    """(allow every non-public address except metadata, explicitly allowed networks).

    Parsed once per distinct setting value (cached), and re-read so test overrides take effect.
    """
    return _parse_allowlist(getattr(settings, policy.setting, "") or "", policy.setting)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address actually reaches, for the forms that tunnel to one."""
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # 2002:aabb:ccdd::/48
        return ip.sixtofour
    if ip.teredo is not None:  # 2001::/32: (server, client); the client is the far end
        return ip.teredo[1]
    packed = ip.packed
    if packed[:12] == bytes(12) and ip not in (
        ipaddress.IPv6Address("::"),
        ipaddress.IPv6Address("::1"),
    ):
        return ipaddress.IPv4Address(packed[12:])  # deprecated IPv4-compatible ::a.b.c.d
    if ip in ipaddress.ip_network("64:ff9b::/96"):  # NAT64 well-known prefix
        return ipaddress.IPv4Address(packed[12:])
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why an address is not on the public internet, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "link-local"
        inner = _embedded_v4(ip)
        if inner is not None:
            reason = non_public_reason(inner)
            return f"{reason} (IPv4 {inner} inside IPv6)" if reason else None
    if ip in METADATA:
        return "cloud metadata"
    for label, network in _NAMED:
        if ip.version == network.version and ip in network:
            return label
    if not ip.is_global or ip.is_reserved or ip.is_multicast:
        return "reserved"
    return None


def refusal(ip: IPAddress, policy: Policy = WEBHOOKS) -> str | None:
    """Why a connection to `ip` is refused under the policy's allowlist, or None if it may go."""
    reason = non_public_reason(ip)
    if reason is None:
        return None
    allow_all, networks = allowlist(policy)
    # ::ffff:127.0.0.1 is allowed by "127.0.0.0/8" as much as it is refused by it.
    embedded = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    candidates = [a for a in (ip, embedded) if a is not None]
    if any(a.version == n.version and a in n for a in candidates for n in networks):
        return None
    if allow_all and not any(a in METADATA for a in candidates):
        return None
    return reason


def split_url(url: str) -> tuple[str, str, int]:
    """(host, scheme, port) of an http(s) URL; UnsafeURL, in a webhook's words, for any other."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"The webhook URL is not valid: {exc}.", code="invalid_url") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL("Webhook URLs must start with http:// or https://.", code="bad_scheme")
    host = parts.hostname
    if not host:
        raise UnsafeURL("The webhook URL has no host.", code="no_host")
    return host, scheme, port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int, policy: Policy = WEBHOOKS) -> list[tuple]:
    """getaddrinfo for TCP; a failure is a user-facing message, not a socket error."""
    try:
        # Called through the module so tests can stand in for DNS with monkeypatch.
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(
            f"The {policy.host} {host!r} could not be resolved ({exc})."
        ) from None


def check_addresses(host: str, infos: list[tuple], policy: Policy = WEBHOOKS) -> None:
    if not infos:
        raise UnresolvableHost(f"The {policy.host} {host!r} has no addresses.")
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        reason = refusal(ip, policy)
        if reason:
            shown = host if host == str(ip) else f"{host} ({ip})"
            raise UnsafeURL(
                policy.refused.format(shown=shown, reason=reason), code="private_address"
            )


def checked_addresses(host: str, port: int, policy: Policy) -> list[tuple]:
    """Every address of `host`, each allowed by the policy; UnsafeURL or UnresolvableHost else."""
    infos = resolve(host, port, policy)
    check_addresses(host, infos, policy)
    return infos


def open_socket(
    host: str,
    port: int,
    timeout: float | None,
    policy: Policy,
    socket_options: typing.Iterable[typing.Any] | None = None,
) -> socket.socket:
    """A TCP connection to `host`, made only to addresses the policy allows, the ones checked.

    Raises UnsafeURL (never worth retrying), UnresolvableHost, TimeoutError or OSError.
    """
    infos = checked_addresses(host, port, policy)
    last_error: OSError | None = None
    for family, _type, proto, _canon, sockaddr in infos:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        try:
            sock.settimeout(timeout)
            # sockaddr holds the checked IP: no second lookup can swap the address.
            sock.connect(sockaddr)
        except TimeoutError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in socket_options or ():
            sock.setsockopt(*option)
        return sock
    raise last_error or OSError(f"no address of {host!r} could be connected to")


def validate_webhook_url(url: str) -> None:
    """Raise ValidationError unless `url` is http(s) and every address its host has is allowed."""
    host, _scheme, port = split_url(url)
    try:
        checked_addresses(host, port, WEBHOOKS)
    except UnresolvableHost as exc:
        raise UnsafeURL(str(exc), code="unresolvable") from None

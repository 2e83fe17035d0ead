"""Host names, and patterns of them matched label by label.

A pattern is a host name whose labels may be ``*`` (any one label) or hold
``*`` and ``?`` within a label (``model-*``); it matches a name of exactly
as many labels, so ``127.0.0.*`` matches ``127.0.0.9`` but never
``127.0.0.evil.example``, and ``*.example.org`` matches ``a.example.org``
but not ``example.org`` nor ``a.b.example.org``. A pattern may end with a
port (``host:8443``); ``*`` alone matches every name.
"""

from __future__ import annotations

import fnmatch
import ipaddress

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def split_host_port(value: str) -> tuple[str, int | None]:
    """The host (lower case, brackets of an IPv6 address dropped, a final
    dot dropped) and the port of a ``Host`` header's value or a URL's
    netloc; the port is None when there is none, -1 when it is not one."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:])
        elif rest:
            port = -1
    elif value.count(":") == 1:
        host, _, digits = value.partition(":")
        port = _port(digits)
    else:
        host = value
    return host.rstrip("."), port


def _port(digits: str) -> int:
    return int(digits) if digits.isdigit() and int(digits) < 65536 else -1


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (as ``split_host_port`` gives it) is a loopback
    address or a name that always means this machine (``localhost`` and
    the ``.localhost`` names, which browsers never look up in the DNS)."""
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class HostPattern:
    """One pattern (see the module's doc)."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        host, port = split_host_port(self.text)
        if not host or port == -1:
            raise ValueError(f"not a host name pattern: {text!r}")
        self.port = port
        self.any = host == "*"
        self.labels = host.split(".")

    def matches(self, host: str, port: int | None = None) -> bool:
        """Whether ``host`` (lower case) matches, and ``port`` is the
        pattern's when it names one."""
        if self.port is not None and port != self.port:
            return False
        if self.any:
            return True
        labels = host.split(".")
        return len(labels) == len(self.labels) and all(
            fnmatch.fnmatchcase(label, pattern)
            for label, pattern in zip(labels, self.labels, strict=True)
        )

    def __repr__(self) -> str:
        return f"HostPattern({self.text!r})"


def parse_patterns(texts: list[str], option: str) -> list[HostPattern]:
    """The patterns of an option's values; ``ValueError`` naming the option
    for one that is not a pattern."""
    patterns = []
    for text in texts:
        if not text.strip():
            continue
        try:
            patterns.append(HostPattern(text))
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    return patterns

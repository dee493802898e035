"""resolv.conf (resolv.conf(5)) and /etc/hosts, parsed and rendered.

The subset a stub resolver acts on: ``nameserver ADDR`` (IPv4 or IPv6, at most
``MAXNS`` used, as glibc), ``search DOMAIN...`` (``domain D`` is a one-entry search
list), ``options ndots:N timeout:N attempts:N rotate``. Unknown lines are kept out of
the parsed form silently, as glibc does. With no nameserver, the local one is asked
(127.0.0.1, glibc's default)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

MAXNS = 3
MAXDNSRCH = 6
DEFAULT_NAMESERVER = "127.0.0.1"


@dataclass
class ResolvConf:
    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    ndots: int = 1
    timeout: float = 5.0
    attempts: int = 2
    rotate: bool = False

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        conf = cls()
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            key, args = words[0], words[1:]
            if key == "nameserver" and args:
                if valid_address(args[0]) and args[0] not in conf.nameservers:
                    conf.nameservers.append(args[0])
            elif key == "search":
                conf.search = [a.rstrip(".") for a in args][:MAXDNSRCH]
            elif key == "domain" and args:
                conf.search = [args[0].rstrip(".")]
            elif key == "options":
                conf.set_options(args)
        return conf

    def set_options(self, args: list[str]) -> None:
        for opt in args:
            name, _, value = opt.partition(":")
            try:
                if name == "ndots":
                    self.ndots = max(0, min(15, int(value)))
                elif name == "timeout":
                    self.timeout = max(0.01, min(30.0, float(value)))
                elif name == "attempts":
                    self.attempts = max(1, min(5, int(value)))
                elif name == "rotate":
                    self.rotate = True
            except ValueError:
                continue

    def options_words(self) -> list[str]:
        words = [f"ndots:{self.ndots}", f"timeout:{self.timeout:g}",
                 f"attempts:{self.attempts}"]
        return words + (["rotate"] if self.rotate else [])

    def servers(self) -> list[str]:
        """The servers to ask, in order (the default when none is configured)."""
        return self.nameservers[:MAXNS] or [DEFAULT_NAMESERVER]

    def render(self) -> str:
        lines = [f"nameserver {ns}" for ns in self.nameservers]
        if self.search:
            lines.append("search " + " ".join(self.search))
        lines.append("options " + " ".join(self.options_words()))
        return "\n".join(lines) + "\n"


def valid_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_hosts(text: str) -> list[tuple[str, list[str]]]:
    """``/etc/hosts`` lines as (address, [canonical name, aliases...])."""
    out = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and valid_address(words[0]):
            out.append((words[0], words[1:]))
    return out


def read_hosts(path: str = "/etc/hosts") -> list[tuple[str, list[str]]]:
    try:
        with open(path) as f:
            return parse_hosts(f.read())
    except OSError:
        return []


def hosts_lookup(hosts: list[tuple[str, list[str]]], name: str,
                 family: int | None = None) -> tuple[str, list[str]] | None:
    """(canonical name, addresses) of ``name`` in a hosts table; ``family`` 4 or 6
    limits the addresses (None: both)."""
    want = name.rstrip(".").lower()
    canon = ""
    addrs: list[str] = []
    for addr, names in hosts:
        if want in (n.lower() for n in names):
            version = ipaddress.ip_address(addr).version
            if family is not None and version != family:
                continue
            canon = canon or names[0]
            if addr not in addrs:
                addrs.append(addr)
    return (canon, addrs) if addrs else None

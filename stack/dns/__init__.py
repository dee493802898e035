"""The stack's resolver: one resolver configuration per stack, fed by its sources, and
name-to-address translation for the text door (Plan 9's ``cs`` and ``dns`` files).

Files (docs/lan.md):

``$SOCK/dev/socket/config/resolv.conf``
    read: the merged configuration in resolv.conf(5) form (each line's source in a
    comment), which rmgr.libsocket's getaddrinfo reads; write (root): the hand-written
    part (source ``manual``), replaced as a whole by each write (``nameserver``,
    ``search``/``domain``, ``options ndots:N timeout:N attempts:N rotate``).
``$SOCK/dev/socket/cs``
    Plan 9's connection server: write ``tcp!name.lan!http`` (``net!`` for both
    transports, ``*`` for any host), read back one line per address,
    ``$SOCK/dev/socket/tcp/clone 192.0.2.1!80``.
``$SOCK/dev/socket/dns``
    Plan 9's dns file: write ``name.lan ip`` (or ``ipv6``, or ``192.0.2.1 ptr``), read
    back ``name.lan ip 192.0.2.1`` lines.

Lookups here use /etc/hosts first, then the configured servers through the stack's own
UDP sockets (TCP when an answer is truncated); the logic is stack/dns/lookup.py's,
shared with rmgr.libsocket. Counters: group ``dns``.
"""

from __future__ import annotations

import errno
import logging
import socket as _std
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import Caller, ControlFile
from stack.addr import format_addr
from stack.counters import Counters
from stack.dns import wire
from stack.dns.conf import MAXDNSRCH, ResolvConf, hosts_lookup, read_hosts, valid_address
from stack.dns.lookup import DNS_COUNTERS, Exchange, Result, plan, qtypes_for, tcp_frame
from stack.services import RESOLVER

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack

log = logging.getLogger("io-pkt.dns")

__all__ = ["RESOLVER", "Resolver", "Source", "attach"]

#: the source a write of config/resolv.conf sets
MANUAL = "manual"
DNS_PORT = 53


@dataclass
class Source:
    """What one source contributes: servers (text addresses), search domains, options
    words (``ndots:2``...)."""

    nameservers: list[str] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


class Resolver:
    """The resolver configuration of one stack, and its lookups.

    Contributors call, from the stack's trio thread:

    ``set_source(name, nameservers=[...], search=[...], options=[...])``
        sets (replaces) what source ``name`` contributes. Names say who: ``manual`` (the
        hand-written file), ``dhcp:tap0`` (the DHCP client of tap0), ``ra:tap0`` (an
        IPv6 router advertisement's RDNSS/DNSSL, RFC 8106), ``dhcp6:tap0``. Addresses
        are text (IPv4 or IPv6; a link-local IPv6 server as ``fe80::1%tap0``);
        invalid ones are dropped. A source with nothing in it is removed.
    ``clear_source(name)``
        removes what source ``name`` contributed (a lease ended, a router's lifetime
        ran out). Unknown names are ignored.

    The merged configuration (``config()``) lists the manual source first, then the
    others in the order they first appeared; servers and domains appear once; options
    are the manual source's over the others'. Every change calls ``listeners``.
    """

    def __init__(self, stack: Stack | None = None) -> None:
        self.stack = stack
        self.counters = Counters("dns", DNS_COUNTERS)
        self.sources: dict[str, Source] = {}
        self.listeners: list[Callable[[], None]] = []
        self.hosts_path = "/etc/hosts"

    # -- configuration ------------------------------------------------------------------
    def set_source(self, name: str, *, nameservers: Sequence[str] = (),
                   search: Sequence[str] = (), options: Sequence[str] = ()) -> None:
        src = Source([ns for ns in nameservers if valid_address(ns.partition("%")[0])],
                     [d.rstrip(".") for d in search if d.strip(".")][:MAXDNSRCH],
                     list(options))
        if not (src.nameservers or src.search or src.options):
            self.clear_source(name)
            return
        if self.sources.get(name) == src:
            return
        self.sources[name] = src
        self._changed()

    def clear_source(self, name: str) -> None:
        if self.sources.pop(name, None) is not None:
            self._changed()

    def _changed(self) -> None:
        for fn in list(self.listeners):
            try:
                fn()
            except Exception:
                log.exception("resolver listener raised")

    def _ordered(self) -> list[tuple[str, Source]]:
        items = list(self.sources.items())
        return sorted(items, key=lambda kv: kv[0] != MANUAL)  # stable: manual first

    def config(self) -> ResolvConf:
        conf = ResolvConf()
        opts: list[str] = []
        for _, src in reversed(self._ordered()):  # the first source's options win
            opts += src.options
        conf.set_options(opts)
        for _, src in self._ordered():
            conf.nameservers += [n for n in src.nameservers if n not in conf.nameservers]
            conf.search += [d for d in src.search if d not in conf.search]
        conf.search = conf.search[:MAXDNSRCH]
        return conf

    def render(self) -> str:
        lines = ["# io-pkt resolver configuration: written by hand (source manual) and "
                 "by its sources"]
        for name, src in self._ordered():
            lines += [f"nameserver {ns}  # {name}" for ns in src.nameservers]
        conf = self.config()
        if conf.search:
            lines.append("search " + " ".join(conf.search) + "  # " + ", ".join(
                name for name, src in self._ordered() if src.search))
        lines.append("options " + " ".join(conf.options_words()))
        return "\n".join(lines) + "\n"

    def _write(self, text: str, caller: Caller) -> str:
        if not caller.is_root:
            raise OSError(errno.EPERM, "changing the resolver configuration needs root")
        conf = ResolvConf.parse(text)
        opts = [w for line in text.splitlines() for w in
                (line.split("#", 1)[0].split()[1:] if line.split()[:1] == ["options"]
                 else [])]
        self.set_source(MANUAL, nameservers=conf.nameservers, search=conf.search,
                        options=opts)
        return "ok\n"

    # -- lookups (the text door's) ----------------------------------------------------
    async def lookup(self, name: str, family: int = _std.AF_UNSPEC) -> Result:
        """/etc/hosts, then DNS through the stack's own sockets."""
        c = self.counters
        c["lookups"] += 1
        name = name.rstrip(".") if name != "." else name
        if valid_address(name):
            v = 6 if ":" in name else 4
            return Result(name, name, [(v, name)])
        fam = None if family == _std.AF_UNSPEC else 6 if family == _std.AF_INET6 else 4
        hit = hosts_lookup(read_hosts(self.hosts_path), name, fam)
        if hit is not None:
            return Result(name, hit[0], [(6 if ":" in a else 4, a) for a in hit[1]])
        conf = self.config()
        # the stack's own transports speak IPv4 today: AAAA only when asked for
        qtypes = qtypes_for(family) if family != _std.AF_UNSPEC else [wire.TYPE_A]
        gen = plan(name, qtypes, conf)
        try:
            questions = next(gen)
            while True:
                questions = gen.send(await self._ask(conf, questions))
        except StopIteration as stop:
            result: Result = stop.value
        if result.error:
            c["lookup_errors"] += 1
        return result

    async def _ask(self, conf: ResolvConf, questions: list[wire.Question]
                   ) -> dict[tuple[str, int], wire.Message] | None:
        servers = [s for s in conf.servers() if valid_address(s) and ":" not in s]
        last: dict[tuple[str, int], wire.Message] | None = None
        for _ in range(conf.attempts):
            for server in servers:
                ex = Exchange(server, DNS_PORT, questions, self.counters)
                await self._udp(ex, conf.timeout)
                for qid, query in ex.truncated():
                    await self._tcp(ex, qid, query, conf.timeout)
                if ex.usable():
                    return ex.answers
                if ex.answers:
                    last = ex.answers
        return last

    async def _udp(self, ex: Exchange, timeout: float) -> None:
        assert self.stack is not None
        sock = self.stack.udp.socket()
        try:
            for q in ex.datagrams():
                try:
                    sock.sendto_nowait(q, (ex.server, ex.port))
                    self.counters["queries_out"] += 1
                except OSError:
                    self.counters["send_errors"] += 1
                    return
            with trio.move_on_after(timeout):
                while not ex.done:
                    try:
                        data, src = await sock.recvfrom(65536)
                    except OSError:
                        self.counters["send_errors"] += 1
                        return
                    ex.accept(data, format_addr(src.addr), src.port)
            if not ex.done and not ex.truncated():
                self.counters["timeouts"] += 1
        finally:
            sock.close()

    async def _tcp(self, ex: Exchange, qid: int, query: bytes, timeout: float) -> None:
        assert self.stack is not None
        sock = self.stack.tcp.socket()
        try:
            with trio.move_on_after(timeout):
                await sock.connect((ex.server, ex.port))
                await sock.send(tcp_frame(query))
                buf = b""
                need = 2
                while len(buf) < need:
                    chunk = await sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    if len(buf) >= 2:
                        need = 2 + int.from_bytes(buf[:2], "big")
                if len(buf) >= need > 2 and not ex.accept(buf[2:need], ex.server, ex.port,
                                                          tcp_id=qid):
                    return
        except OSError:
            pass
        finally:
            sock.close()
        ex.tcp_failed(qid)

    # -- the text door's files ---------------------------------------------------------
    async def _cs(self, text: str, caller: Caller) -> str:
        """``net!host!service`` → ``<door>/net/clone addr!port`` lines."""
        self.counters["cs_requests"] += 1
        parts = text.split("!")
        if len(parts) == 2:
            parts = ["net", *parts]
        if len(parts) != 3 or not all(parts):
            self.counters["cs_errors"] += 1
            raise OSError(errno.EINVAL, f"cs: bad address {text!r}; expected net!host!service")
        net, host, service = parts
        nets = ["tcp", "udp"] if net == "net" else [net]
        door = self.stack.config.socket_path if self.stack is not None else "/dev/socket"
        for n in nets:
            if n not in ("tcp", "udp", "raw"):
                self.counters["cs_errors"] += 1
                raise OSError(errno.ENOENT, f"cs: unknown network {n!r}")
        lines = []
        for n in nets:
            port = _service_port(service, n)
            if port is None:
                self.counters["cs_errors"] += 1
                raise OSError(errno.ENOENT, f"cs: unknown service {service!r} for {n}")
            if host == "*":
                lines.append(f"{door}/{n}/clone {port}")
                continue
            res = await self.lookup(host)
            if res.error:
                self.counters["cs_errors"] += 1
                raise OSError(errno.ENOENT, f"cs: can't translate address: {host}: "
                                            f"{res.message}")
            lines += [f"{door}/{n}/clone {a}!{port}" for _, a in res.addrs]
        return "\n".join(lines) + "\n"

    async def _dns(self, text: str, caller: Caller) -> str:
        """``name ip|ipv6`` / ``addr ptr`` → ``name type value`` lines."""
        words = text.split()
        if len(words) != 2 or words[1] not in ("ip", "ipv6", "ptr"):
            raise OSError(errno.EINVAL, "dns: expected 'NAME ip', 'NAME ipv6' or 'ADDR ptr'")
        name, kind = words
        if kind == "ptr":
            return await self._ptr(name)
        res = await self.lookup(name, _std.AF_INET6 if kind == "ipv6" else _std.AF_INET)
        if res.error:
            raise OSError(errno.ENOENT, f"dns: {name}: {res.message}")
        return "".join(f"{name} {kind} {a}\n" for _, a in res.addrs)

    async def _ptr(self, addr: str) -> str:
        if not valid_address(addr):
            raise OSError(errno.EINVAL, f"dns: {addr!r} is not an address")
        import ipaddress

        rname = ipaddress.ip_address(addr).reverse_pointer
        for ip, names in read_hosts(self.hosts_path):
            if ip == addr:
                return f"{addr} ptr {names[0]}\n"
        conf = self.config()
        answers = await self._ask(conf, [wire.Question(rname, wire.TYPE_PTR)])
        msg = (answers or {}).get((rname, wire.TYPE_PTR))
        names = [str(r.data) for r in msg.answers if r.rtype == wire.TYPE_PTR] if msg else []
        if not names:
            raise OSError(errno.ENOENT, f"dns: {addr}: no name")
        return "".join(f"{addr} ptr {n}\n" for n in names)


def _service_port(service: str, net: str) -> int | None:
    if service.isdigit():
        port = int(service)
        return port if port < 65536 else None
    try:
        return _std.getservbyname(service, net if net in ("tcp", "udp") else "tcp")
    except OSError:
        return None


def attach(stack: Stack) -> None:
    """Built-in component entry (stack/core.py builtin_components)."""
    res = Resolver(stack)
    stack.services.register(RESOLVER, res)
    stack.config_dir.add("resolv.conf", ControlFile(res._write, res.render, mode=0o644))
    stack.tree.add("cs", ControlFile(res._cs, mode=0o666))
    stack.tree.add("dns", ControlFile(res._dns, mode=0o666))

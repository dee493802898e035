"""``config/interfaces`` (stanzas / commands) and ``config/nicinfo/<IF>``.

Commands (one line; several verbs after the interface name run in order)::

    NAME addr|alias|inet ADDR[/LEN] [netmask MASK] [broadcast BCAST]   (adds)
    NAME set ADDR[/LEN] [netmask MASK] [broadcast BCAST]   (replaces the first address)
    NAME delete|-alias ADDR
    NAME inet6 ADDR[/LEN] [prefixlen N] [pltime S] [vltime S]   (adds an IPv6 address)
    NAME accept_rtadv | -accept_rtadv | auto_linklocal | -auto_linklocal
    NAME up | down | mtu N | promisc | -promisc
    NAME vlan TAG vlanif PARENT | NAME -vlanif
    create NAME [vlan TAG vlanif PARENT] [KEY=VALUE,...]
    destroy NAME
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import math
import re

import trio

from rmgr.nodes import Caller, Directory, Node, TextFile
from stack.addr import AF_INET, Addr, Prefix, family, format_addr, from_ip
from stack.control import backend
from stack.control.util import (
    ControlFiles,
    einval,
    format_addr6,
    parse_addr,
    parse_ifaddr,
    parse_int,
    parse_prefix6,
    require_root,
    take,
)
from stack.l2.iface import FLAG_NAMES, IFF_UP, Interface, format_mac

_NAME = re.compile(r"^[a-z][a-z_]*[0-9]+$")


def flag_names(flags: int) -> str:
    return ",".join(name for bit, name in FLAG_NAMES if flags & bit) or "-"


class InterfaceFiles(ControlFiles):
    def nicinfo_dir(self) -> Directory:
        return Directory(dynamic=self._nicinfo_entries)

    def _nicinfo_entries(self) -> dict[str, Node]:
        return {name: TextFile(functools.partial(self.render_nicinfo, name))
                for name in list(self.stack.interfaces)}

    # -- reading ---------------------------------------------------------------------
    def ifinfo(self, iface: Interface) -> str:
        return f"flags {iface.flags:#x} {flag_names(iface.flags)} mtu {iface.mtu}"

    def get(self, name: str) -> Interface:
        iface = self.stack.interfaces.get(name)
        if iface is None:
            raise OSError(errno.ENXIO, f"no such interface: {name}")
        return iface

    def render(self) -> str:
        return "".join(self.render_one(i) for i in list(self.stack.interfaces.values()))

    def render_one(self, iface: Interface) -> str:
        out = [f"{iface.name}:\n",
               f"\tindex {iface.index}\n",
               f"\tflags {iface.flags:#x} {flag_names(iface.flags)}\n",
               f"\tmtu {iface.mtu}\n",
               f"\tmac {format_mac(iface.mac)}\n",
               f"\tdriver {iface.driver or '-'}\n",
               f"\tkind {iface.kind}\n"]
        for a in backend.addresses(self.stack, iface):
            bc = f" broadcast {format_addr(a.broadcast)}" if a.broadcast is not None else ""
            out.append(f"\t{'inet' if a.prefix.family == AF_INET else 'inet6'} {a.prefix}{bc}\n")
        out += [f"\tinet6 {line}\n" for line in self._inet6_lines(iface)]
        nd = backend.nd_flags(self.stack, iface)
        if nd is not None:
            words = [f"{k} {int(v)}" for k, v in nd.items() if not isinstance(v, bool)]
            fl = ",".join(k for k, v in nd.items() if isinstance(v, bool) and v) or "-"
            out.append(f"\tnd6 {' '.join(words)} flags {fl}\n")
        vlan = backend.vlan_info(self.stack, iface)
        if vlan is not None:
            out.append(f"\tvlan {vlan[0]} vlanif {vlan[1] or '-'}\n")
        br = backend.bridge_of(self.stack, iface)
        if br:
            out.append(f"\tbridge {br}\n")
        if iface.capabilities:
            out.append(f"\tcapabilities {','.join(sorted(iface.capabilities))}\n")
            out.append(f"\toffloads {','.join(sorted(iface.offloads)) or '-'}\n")
        if iface.owner is not None:
            out.append(f"\tmodule {iface.owner.name}\n")
        counters = dict(iface.counters)
        for key in ("ipackets", "ibytes", "ierrors", "iqdrops",
                    "opackets", "obytes", "oerrors", "oqdrops"):
            counters.setdefault(key, 0)
        for key in ("ipackets", "ibytes", "ierrors", "iqdrops",
                    "opackets", "obytes", "oerrors", "oqdrops"):
            out.append(f"\tcounter {key} {counters.pop(key)}\n")
        for key, value in sorted(counters.items()):
            out.append(f"\tcounter {key} {value}\n")
        out.append("\n")
        return "".join(out)

    def _inet6_lines(self, iface: Interface) -> list[str]:
        """``ADDR/LEN [scopeid 0xN] [FLAG...] pltime P vltime V`` per IPv6 address: a
        link-local address with its zone (``fe80::1%tap0/64``) and the interface index
        as its scope id; flags as KAME's ifconfig (tentative, duplicated, deprecated,
        autoconf, temporary); lifetimes in seconds left, ``infty`` for none."""
        now = trio.current_time()
        out = []
        for ia in backend.addresses6(self.stack, iface):
            a = ia.addr
            text = format_addr6(a, iface.name)
            words = [f"{text}/{ia.plen}"]
            if "%" in text:
                words.append(f"scopeid {iface.index:#x}")
            words += ia.flags()
            for key, until in (("pltime", ia.preferred_until), ("vltime", ia.valid_until)):
                words += [key, "infty" if math.isinf(until) else str(max(0, int(until - now)))]
            out.append(" ".join(words))
        return out

    def render_nicinfo(self, name: str) -> str:
        iface = self.get(name)
        lines = [f"interface {iface.name}", f"driver {iface.driver or '-'}",
                 f"module {iface.owner.name if iface.owner else 'built-in'}",
                 f"kind {iface.kind}", f"mac {format_mac(iface.mac)}", f"mtu {iface.mtu}",
                 f"link {'up' if iface.running else 'down'}",
                 f"promiscuous {'on' if iface.promisc_refs else 'off'}",
                 f"capabilities {','.join(sorted(iface.capabilities)) or '-'}",
                 f"offloads {','.join(sorted(iface.offloads)) or '-'}"]
        try:
            facts = iface.describe()
        except Exception as exc:  # a driver bug must not hide the rest
            facts = {"describe_error": f"{type(exc).__name__}"}
        lines += [f"{k} {str(v).replace(chr(10), ' ')}" for k, v in facts.items()]
        lines += [f"counter {k} {v}" for k, v in sorted(iface.counters.items())]
        return "\n".join(lines) + "\n"

    # -- commands --------------------------------------------------------------------
    async def command(self, text: str, caller: Caller) -> str:
        require_root(caller, "configuring an interface")
        words = text.split()
        if not words:
            raise einval("empty command; expected NAME VERB... or create/destroy NAME")
        self.control.hold()
        try:
            if words[0] == "create":
                return await self._create(words[1:])
            if words[0] == "destroy":
                if len(words) != 2:
                    raise einval("usage: destroy NAME")
                self._destroy(words[1])
                return f"destroyed {words[1]}\n"
            name, verbs = words[0], words[1:]
            if len(verbs) >= 1 and verbs[0] in ("create", "destroy"):
                # ifconfig word order: "vlan0 create ..." / "tap0 destroy"
                return await self.command(" ".join([verbs[0], name, *verbs[1:]]), caller)
            iface = self.get(name)
            if not verbs:
                raise einval(f"{name}: no verb given")
            self._apply(iface, verbs)
            return "ok\n"
        finally:
            self.control.changed()

    def _apply(self, iface: Interface, words: list[str]) -> None:
        while words:
            verb = words.pop(0)
            if verb == "inet6" or (verb in ("addr", "alias", "add", "set") and words
                                   and ":" in words[0]):
                self._add6(iface, verb, words)
            elif verb in ND_FLAG_VERBS:
                backend.set_nd_flag(self.stack, iface, verb.lstrip("-"),
                                    not verb.startswith("-"))
            elif verb in ("addr", "alias", "inet", "add", "set"):
                spec = take(words, verb)
                mask = bcast = None
                while words and words[0] in ("netmask", "broadcast"):
                    kw = words.pop(0)
                    if kw == "netmask":
                        mask = take(words, "netmask")
                    else:
                        bcast = take(words, "broadcast")
                ifaddr = parse_ifaddr(spec, mask)
                baddr = _broadcast(bcast) if bcast is not None else None
                if verb == "set":
                    self._replace_first(iface, ifaddr, baddr)
                else:
                    backend.add_address(self.stack, iface, ifaddr, baddr)
            elif verb in ("delete", "-alias", "del"):
                spec = take(words, verb)
                if ":" in spec:
                    prefix, zone = parse_prefix6(spec)
                    _check_zone(iface, zone)
                    backend.delete_address6(self.stack, iface, prefix.addr)
                else:
                    backend.delete_address(self.stack, iface,
                                           parse_addr(spec.partition("/")[0], any_family=True))
            elif verb == "up":
                iface.set_flags(IFF_UP)
            elif verb == "down":
                iface.set_flags(0, IFF_UP)
            elif verb == "mtu":
                mtu = parse_int(take(words, "mtu"), "mtu", 68, 65535)
                try:
                    iface.set_mtu(mtu)
                except ValueError as exc:
                    raise einval(str(exc)) from None
                if iface.stack is not None:
                    iface.stack.interface_changed(iface)
            elif verb in ("promisc", "-promisc"):
                iface.set_promisc(verb == "promisc")
                if iface.stack is not None:
                    iface.stack.interface_changed(iface)
            elif verb == "vlan":
                tag = parse_int(take(words, "vlan"), "vlan tag", 1, 4094)
                if not words or words[0] != "vlanif":
                    raise einval("vlan TAG needs vlanif PARENT")
                words.pop(0)
                parent = self.get(take(words, "vlanif"))
                backend.vlan_config(self.stack, iface, tag, parent)
            elif verb == "-vlanif":
                backend.vlan_config(self.stack, iface, None, None)
            else:
                raise einval(f"unknown ifconfig verb: {verb}")

    def _add6(self, iface: Interface, verb: str, words: list[str]) -> None:
        """``inet6 ADDR[/LEN] [prefixlen N] [pltime S] [vltime S]``: adds (KAME's
        ifconfig adds an IPv6 address with or without ``alias``; a bare address is a
        /64). The address is tentative until DAD passes."""
        spec = take(words, verb)
        opts: dict[str, str] = {}
        while words and words[0] in ("prefixlen", "pltime", "vltime"):
            kw = words.pop(0)
            opts[kw] = take(words, kw)
        prefix, zone = parse_prefix6(spec, opts.get("prefixlen"))
        _check_zone(iface, zone)
        life = {k: float(parse_int(opts[k], k, 0, 1 << 32)) for k in ("pltime", "vltime")
                if k in opts}
        valid, preferred = life.get("vltime"), life.get("pltime")
        if valid is not None and preferred is not None and preferred > valid:
            raise einval(f"pltime {int(preferred)} exceeds vltime {int(valid)}")
        backend.add_address6(self.stack, iface, prefix, valid=valid, preferred=preferred)

    def _replace_first(self, iface: Interface, ifaddr: Prefix | Addr,
                       bcast: Addr | None) -> None:
        """BSD ``ifconfig IF ADDR`` without ``alias``: the new address replaces the
        first one of its family (put back if the new one is refused)."""
        fam = family(ifaddr.addr if isinstance(ifaddr, Prefix) else ifaddr)
        old = [a for a in backend.addresses(self.stack, iface) if a.prefix.family == fam]
        if not old:
            backend.add_address(self.stack, iface, ifaddr, bcast)
            return
        first = old[0]
        backend.delete_address(self.stack, iface, first.addr)
        try:
            backend.add_address(self.stack, iface, ifaddr, bcast)
        except OSError:
            backend.add_address(self.stack, iface, first.prefix, first.broadcast)
            raise

    async def _create(self, words: list[str]) -> str:
        if not words:
            raise einval("usage: create NAME [vlan TAG vlanif PARENT] [OPTIONS]")
        name = words.pop(0)
        if not _NAME.match(name):
            raise einval(f"bad interface name: {name} (letters then a unit number)")
        if name in self.stack.interfaces:
            raise OSError(errno.EEXIST, f"interface {name} already exists")
        base = name.rstrip("0123456789")
        if base == "bridge":
            if words:
                raise einval(f"create {name}: unexpected {' '.join(words)}")
            backend.create_bridge(self.stack, name)
        elif base == "vlan":
            iface = backend.create_vlan(self.stack, name)
            if words:
                try:
                    self._apply(iface, words)
                except BaseException:
                    self.stack.detach_interface(name)
                    raise
        else:
            opts = ",".join(words)
            await backend.create_driver_interface(self.stack, base, name, opts)
        return f"created {name}\n"

    def _destroy(self, name: str) -> None:
        self.get(name)
        if name == "lo0":
            raise OSError(errno.EPERM, "lo0 cannot be destroyed")
        backend.destroy_interface(self.stack, name)


#: per-interface ND switches (``ifconfig IF inet6 [-]accept_rtadv``, ``ndp -i IF ...``)
ND_FLAG_VERBS = ("accept_rtadv", "-accept_rtadv", "auto_linklocal", "-auto_linklocal")


def _check_zone(iface: Interface, zone: str | None) -> None:
    if zone is not None and zone != iface.name:
        raise einval(f"scope %{zone} is not {iface.name}")


def _broadcast(text: str) -> Addr:
    try:
        return from_ip(ipaddress.ip_address(text))
    except ValueError:
        raise einval(f"bad broadcast address: {text}") from None

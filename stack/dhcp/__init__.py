"""The DHCP client service (RFC 2131): one client per interface, started by ``io-pkt
dhcp IF`` or by the ``dhcp`` option on a driver line (``-d tap name=tap0,dhcp``).

A bound lease installs the address and netmask (``ifconfig`` shows it), a default route
through the first router (``route show``), and the DNS servers and domain search list
as the resolver source ``dhcp:IF`` (stack/dns, config/resolv.conf). Stopping a client
(``io-pkt dhcp -x IF``, the interface going away, the stack stopping) releases the lease
(DHCPRELEASE) and removes what it installed; ``io-pkt dhcp -k IF`` stops it without a
release, and the next start asks for the same address first (INIT-REBOOT), as does a
client started again for an interface whose lease this stack remembers.

Files (docs/lan.md): ``config/dhcp/ctl`` takes ``start IF``, ``stop IF``,
``release IF``, ``renew IF``; ``config/dhcp/IF`` shows one client (state, lease, server,
routers, DNS, times left); counters are group ``dhcp``.

Sysctls: ``net.inet.dhcp.retransmit_ms`` (first retransmission, RFC 2131's 4 s),
``net.inet.dhcp.arp_probes`` / ``net.inet.dhcp.arp_probe_ms`` (RFC 5227 conflict check;
0 probes: none), ``net.inet.dhcp.decline_wait`` (seconds before starting over after a
DECLINE, RFC 2131's 10), ``net.inet.dhcp.reboot_tries``.
"""

from __future__ import annotations

import errno
import logging
import socket as _std
from typing import TYPE_CHECKING

from rmgr.nodes import Caller, ControlFile, Directory, Node, TextFile
from stack.addr import ANY4, Prefix, v4
from stack.counters import Counters, names
from stack.dhcp import wire
from stack.dhcp.client import BOUND, Client, Lease, lease_prefix
from stack.dhcp.client6 import DHCP6_COUNTERS, Client6, Dhcp6
from stack.dhcp.service import ClientService
from stack.inet.wire.ipv4 import int_to_ip
from stack.l2.iface import Interface
from stack.services import CONTROL, DHCP, RESOLVER

if TYPE_CHECKING:  # cycle: the Stack owns this part and the part holds the Stack; types only
    from stack.core import Stack
    from stack.transport.udp import UDPSocket

log = logging.getLogger("io-pkt.dhcp")

__all__ = ["Dhcp", "Dhcp6", "Client", "Client6", "Lease", "attach", "DHCP_COUNTERS"]

DHCP_COUNTERS: frozenset[str] = names("""
    in_packets in_offer in_ack in_nak drop_bad_xid drop_bad_chaddr drop_unexpected
    drop_no_server_id drop_wrong_server drop_bad_address drop_queue_full
    out_discover out_request out_decline out_release send_errors
    arp_probes arp_conflicts renewed rebound renew_nak lease_expired reboot_ack reboot_nak
    install_errors clients_started clients_stopped
""") | {f"drop_{r}" for r in wire.PARSE_REASONS} | DHCP6_COUNTERS


class Dhcp(ClientService[Client]):
    """The clients of one stack and their shared socket (see the module docstring)."""

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack, log)
        self.counters = Counters("dhcp", DHCP_COUNTERS)
        #: leases of stopped clients (not released), for INIT-REBOOT
        self.remembered: dict[str, Lease] = {}
        reg = stack.sysctl.register
        self.k_retransmit = reg("net.inet.dhcp.retransmit_ms", 4000,
                                "first DHCP retransmission (doubles up to 16x)", lo=10)
        self.k_arp_probes = reg("net.inet.dhcp.arp_probes", 3,
                                "ARP probes of a new address before using it (RFC 5227)",
                                lo=0, hi=10)
        self.k_arp_probe_ms = reg("net.inet.dhcp.arp_probe_ms", 1000,
                                  "interval between ARP probes (ms)", lo=10)
        self.k_decline_wait = reg("net.inet.dhcp.decline_wait", 10,
                                  "seconds before restarting after a DECLINE", lo=0)
        self.k_reboot_tries = reg("net.inet.dhcp.reboot_tries", 2,
                                  "REQUESTs for a remembered lease before INIT", lo=1)
        self.dir = Directory(dynamic=self._entries)
        self.dir.add("ctl", ControlFile(self._command, self._render_all, mode=0o644))
        #: the DHCPv6 clients (stack/dhcp/client6.py): config/dhcp/v6/{ctl,IF}
        self.v6 = Dhcp6(stack, self.counters)
        self.dir.add("v6", self.v6.dir)

    # -- the socket: UDP *:68, open while any client runs (as dhclient's) -----------------
    def _make_socket(self) -> UDPSocket:
        sock = self.stack.udp.socket()
        sock.setsockopt(_std.SOL_SOCKET, _std.SO_BROADCAST, 1)
        sock.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
        sock.bind(("", wire.CLIENT_PORT))
        return sock

    def dispatch(self, data: bytes) -> None:
        """A datagram to port 68: to the client whose xid it carries."""
        c = self.counters
        c["in_packets"] += 1
        try:
            msg = wire.parse(data)
        except wire.DhcpError as exc:
            c[f"drop_{exc.reason}"] += 1
            return
        client = self._xids.get(msg.xid)
        if client is None:
            c["drop_bad_xid"] += 1
            return
        client.deliver(msg)

    # -- clients ----------------------------------------------------------------------------
    def start(self, ifname: str) -> Client:
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {ifname}")
        if not iface.medium.resolves:
            raise OSError(errno.EOPNOTSUPP, f"{ifname}: DHCP needs a broadcast link")
        old = self.clients.get(ifname)
        if old is not None:
            return old
        client = Client(self, iface, self.remembered.pop(ifname, None))
        self.counters["clients_started"] += 1
        self._launch(client)
        return client

    def stop(self, ifname: str, *, release: bool = True) -> None:
        client = self.clients.pop(ifname, None)
        if client is None:
            raise OSError(errno.ESRCH, f"no DHCP client on {ifname}")
        self.counters["clients_stopped"] += 1
        if release:
            client.release()
        elif client.lease is not None:
            self.remembered[ifname] = client.lease
        client.scope.cancel()
        self.uninstall(client)
        self._close_if_idle()

    def _on_iface(self, event: str, iface: Interface) -> None:
        if event == "attach":
            owner = iface.owner
            if owner is not None and owner.opts.flag("dhcp"):
                self.start(iface.name)
        elif event == "detach" and iface.name in self.clients:
            client = self.clients[iface.name]
            if client.lease is not None and client.state == BOUND:
                self.remembered[iface.name] = client.lease
            self.stop(iface.name, release=True)

    def shutdown(self) -> None:
        """The stack stops: release every lease while the drivers can still send."""
        for name in list(self.clients):
            client = self.clients[name]
            if client.lease is not None:
                self.remembered[name] = client.lease
            self.stop(name, release=True)

    # -- what a lease installs ----------------------------------------------------------
    def install(self, client: Client, lease: Lease) -> None:
        inet = self.stack.inet
        name = client.iface.name
        old = client.installed
        try:
            if old is None or old.address != lease.address or old.plen != lease.plen:
                if old is not None:
                    self.uninstall(client)
                inet.manage.add_address(name, lease_prefix(lease))
            if lease.routers and (old is None or old.routers[:1] != lease.routers[:1]):
                if old is not None and old.routers:
                    self._delete_default(name, old.routers[0])
                try:
                    inet.manage.route_add(Prefix(ANY4, 0), v4(lease.routers[0]), ifname=name)
                except OSError as exc:
                    log.warning("%s: default route through %s not added: %s", name,
                                int_to_ip(lease.routers[0]), exc.strerror)
            if lease.mtu and 68 <= lease.mtu < client.iface.mtu:
                client.iface.set_mtu(lease.mtu)
        except OSError as exc:
            self.counters["install_errors"] += 1
            client.last_error = f"install: {exc.strerror}"
            log.warning("%s: installing the lease failed: %s", name, exc.strerror)
        client.installed = lease
        res = self.stack.services.get(RESOLVER)
        if res is not None:
            search = lease.search or ([lease.domain] if lease.domain else [])
            res.set_source(f"dhcp:{name}", nameservers=[int_to_ip(a) for a in lease.dns],
                           search=search)
        self._resync()

    def uninstall(self, client: Client) -> None:
        old, client.installed = client.installed, None
        name = client.iface.name
        res = self.stack.services.get(RESOLVER)
        if res is not None:
            res.clear_source(f"dhcp:{name}")
        if old is None or name not in self.stack.interfaces:
            return
        if old.routers:
            self._delete_default(name, old.routers[0])
        try:
            self.stack.inet.manage.remove_address(name, v4(old.address))
        except OSError:
            pass
        self._resync()

    def _delete_default(self, ifname: str, router: int) -> None:
        try:
            self.stack.inet.manage.route_delete(Prefix(ANY4, 0), v4(router), ifname=ifname)
        except OSError:
            pass

    def _resync(self) -> None:
        """Post the address and route changes on the route monitor."""
        control = self.stack.services.get(CONTROL)
        if control is not None:
            control.resync()

    # -- files ------------------------------------------------------------------------------
    def _entries(self) -> dict[str, Node]:
        return {name: TextFile(client.render) for name, client in list(self.clients.items())}

    def _render_all(self) -> str:
        return "".join(c.render() + "\n" for c in self.clients.values()) or "no clients\n"

    def _command(self, text: str, caller: Caller) -> str:
        words = text.split()
        if len(words) != 2 or words[0] not in ("start", "stop", "release", "renew", "keep"):
            raise OSError(errno.EINVAL, "expected: start IF | stop IF | release IF | "
                                        "keep IF | renew IF")
        if not caller.is_root:
            raise OSError(errno.EPERM, "DHCP needs root")
        verb, ifname = words
        if verb == "start":
            return f"{ifname} {self.start(ifname).state}\n"
        if verb in ("stop", "release"):
            self.stop(ifname, release=True)
        elif verb == "keep":
            self.stop(ifname, release=False)
        else:
            running = self.clients.get(ifname)
            if running is None or running.lease is None:
                raise OSError(errno.ESRCH, f"no bound DHCP client on {ifname}")
            running.renew_now.set()  # T1 now (dhcpcd -n)
        return "ok\n"


def attach(stack: Stack) -> None:
    """Built-in component entry (stack/core.py builtin_components)."""
    dhcp = Dhcp(stack)
    stack.services.register(DHCP, dhcp)
    stack.config_dir.add("dhcp", dhcp.dir)
    # first: at a detach, the release must leave before the IP layer removes the
    # interface's addresses and routes (its own listener)
    stack.iface_listeners.insert(0, dhcp._on_iface)
    stack.iface_listeners.insert(0, dhcp.v6.on_iface)
    stack.shutdown_hooks.append(dhcp.shutdown)
    stack.shutdown_hooks.append(dhcp.v6.shutdown)

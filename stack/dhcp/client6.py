"""The DHCPv6 client (RFC 8415): one per interface, stateful (IA_NA) or stateless.

::

    stateless:  INFORMATION-REQUEST --REPLY--> configured --refresh time--> again
    stateful:   SOLICIT --ADVERTISE(s)--> REQUEST --REPLY--> DAD --> BOUND
                BOUND --T1--> RENEW (to the server) --T2--> REBIND (any server)
                      --valid lifetime--> the address goes, SOLICIT again
                DAD fails: DECLINE, SOLICIT again; stop: RELEASE

Started by ``io-pkt dhcp -6 [-S] IF`` (``config/dhcp/v6/ctl``) or by a router
advertisement with the M flag (stateful) or the O flag (stateless) when
``net.inet6.dhcp6.ra_start`` is on. Messages go over the stack's UDP (a socket of
family AF_INET6 bound to port 546) to ff02::1:2 port 547 with the interface's scope,
so from the link-local address; answers come back to the same socket and the service
hands each to the client whose transaction id it carries.

Retransmission is RFC 8415 §15's: RT = IRT ± 10 %, doubling (± 10 %) up to MRT, at most
MRC transmissions, at most MRD seconds; every message carries the elapsed-time option.
What a client takes (else counted in group ``dhcp`` and ignored): a message of a type it
waits for (``v6_drop_unexpected``) with our client identifier
(``v6_drop_bad_client_id``), a server identifier (``v6_drop_no_server_id``) and, where
we asked one server, that one (``v6_drop_wrong_server``).

A lease installs its address as a /128 (DHCPv6 gives no prefix length: the on-link
prefix comes from RAs) with the lease's lifetimes, after DAD; the DNS servers (option
23) and domain list (24) go to the resolver as source ``dhcp6:IF``.
"""

from __future__ import annotations

import errno
import logging
import random
import socket as _std
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from rmgr.nodes import Caller, ControlFile, Directory, Node, TextFile
from stack.addr import AF_INET6, Addr, Prefix, ScopedEndpoint, format_addr, parse_addr
from stack.counters import names
from stack.dhcp import wire6 as w6
from stack.dhcp.service import ClientService
from stack.inet6.ifaddr import is_link_local
from stack.l2.iface import IFF_UP, Interface
from stack.services import RESOLVER

if TYPE_CHECKING:  # the service is owned by the stack's DHCP service; types only
    from stack.core import Stack
    from stack.counters import Counters
    from stack.transport.udp import UDPSocket

log = logging.getLogger("io-pkt.dhcp6")

#: counters of the DHCPv6 client, in group ``dhcp`` (declared there)
DHCP6_COUNTERS: frozenset[str] = names("""
    v6_in_packets v6_in_advertise v6_in_reply v6_drop_bad_xid v6_drop_bad_client_id
    v6_drop_no_server_id v6_drop_wrong_server v6_drop_unexpected v6_drop_queue_full
    v6_out_solicit v6_out_request v6_out_renew v6_out_rebind v6_out_release v6_out_decline
    v6_out_inforeq v6_send_errors v6_no_addrs_avail v6_renewed v6_rebound v6_lease_expired
    v6_dad_failed v6_info_refreshed v6_clients_started v6_clients_stopped v6_ra_started
    v6_install_errors
""") | {f"v6_drop_{r}" for r in w6.PARSE_REASONS}

# RFC 8415 §7.6 (seconds)
SOL_TIMEOUT, SOL_MAX_RT = 1.0, 3600.0
REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC = 1.0, 30.0, 10
REN_TIMEOUT, REN_MAX_RT = 10.0, 600.0
REB_TIMEOUT, REB_MAX_RT = 10.0, 600.0
INF_TIMEOUT, INF_MAX_RT = 1.0, 3600.0
DEC_TIMEOUT, DEC_MAX_RC = 1.0, 4
IRT_DEFAULT = 86400
INFINITY = 0xFFFFFFFF

INIT, SOLICITING, REQUESTING, CHECKING, BOUND = "init", "soliciting", "requesting", \
    "checking", "bound"
RENEWING, REBINDING, DECLINING, INFORMING, CONFIGURED, STOPPED = "renewing", "rebinding", \
    "declining", "informing", "configured", "stopped"

IAID = 1  # one IA_NA per interface
ALL_SERVERS = parse_addr(w6.ALL_SERVERS)


@dataclass
class Lease6:
    address: Addr
    server_duid: bytes
    preferred: int
    valid: int
    t1: int
    t2: int
    dns: list[Addr] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    obtained: float = 0.0
    obtained_wall: float = 0.0

    def deadline(self, seconds: int) -> float:
        return float("inf") if seconds == INFINITY else self.obtained + seconds


def _addr(b: bytes) -> Addr:
    return Addr(int.from_bytes(b, "big"))


def _times(ia: w6.IaNa, a: w6.IaAddr) -> tuple[int, int]:
    """T1/T2 (§21.4): the server's, else 0.5 and 0.8 of the preferred lifetime."""
    t1, t2 = ia.t1, ia.t2
    if a.preferred == INFINITY:
        return (t1 or INFINITY), (t2 or INFINITY)
    if not t1 or (t2 and t1 > t2):
        t1 = a.preferred // 2
    if not t2 or t2 < t1:
        t2 = a.preferred * 4 // 5
    return t1, t2


class Client6:
    """The DHCPv6 client of one interface. ``run()`` is its task (cancel to stop)."""

    def __init__(self, service: Dhcp6, iface: Interface, stateful: bool) -> None:
        self.service = service
        self.iface = iface
        self.stateful = stateful
        self.state = INIT
        self.xid = 0
        self.lease: Lease6 | None = None
        self.server_duid = b""
        self.dns: list[Addr] = []
        self.domains: list[str] = []
        self.refresh_at = float("inf")
        self.declines = 0
        self.last_error = ""
        self.started = trio.current_time()
        self._inbox_send, self._inbox = trio.open_memory_channel[w6.Message](16)
        self.scope = trio.CancelScope()
        self.configured = trio.Event()
        self.renew_now = trio.Event()

    @property
    def counters(self) -> Counters:
        return self.service.counters

    @property
    def duid(self) -> bytes:
        return self.service.duid(self.iface)

    # -- input ------------------------------------------------------------------------
    def deliver(self, msg: w6.Message) -> None:
        try:
            self._inbox_send.send_nowait(msg)
        except trio.WouldBlock:
            self.counters["v6_drop_queue_full"] += 1

    def _new_xid(self) -> None:
        self.service.forget_xid(self.xid)
        self.xid = random.getrandbits(24)
        self.service.register_xid(self.xid, self)

    def _acceptable(self, msg: w6.Message, types: tuple[int, ...], server: bytes | None) -> bool:
        c = self.counters
        if msg.xid != self.xid:
            c["v6_drop_bad_xid"] += 1
            return False
        if msg.msg_type not in types:
            c["v6_drop_unexpected"] += 1
            return False
        if msg.bytes_of(w6.OPT_CLIENTID) != self.duid:
            c["v6_drop_bad_client_id"] += 1
            return False
        sid = msg.bytes_of(w6.OPT_SERVERID)
        if sid is None:
            c["v6_drop_no_server_id"] += 1
            return False
        if server is not None and sid != server:
            c["v6_drop_wrong_server"] += 1
            return False
        c[f"v6_in_{w6.TYPE_NAMES[msg.msg_type]}"] += 1
        return True

    # -- output -----------------------------------------------------------------------
    def _send(self, msg_type: int, options: list[bytes], since: float) -> None:
        cs = int((trio.current_time() - since) * 100)
        body = w6.build(msg_type, self.xid, [w6.option(w6.OPT_CLIENTID, self.duid),
                                             w6.elapsed(cs), *options])
        if self.service.send(self.iface, body):
            self.counters[f"v6_out_{w6.TYPE_NAMES[msg_type]}"] += 1
        else:
            self.last_error = "send failed"

    async def _exchange(self, msg_type: int, options: list[bytes],
                        types: tuple[int, ...], irt: float, mrt: float = 0.0,
                        mrc: int = 0, mrd: float = 0.0, server: bytes | None = None,
                        collect: bool = False) -> w6.Message | None:
        """RFC 8415 §15: send, wait RT, retransmit; the first acceptable answer (with
        ``collect``, SOLICIT's: the best-preference ADVERTISE heard during the first RT,
        or any after it; preference 255 at once)."""
        self._new_xid()
        since = trio.current_time()
        end = since + mrd if mrd else float("inf")
        scale = self.service.time_scale()
        rt = irt * scale * (1 + random.uniform(0, 0.1) if collect else
                            1 + random.uniform(-0.1, 0.1))
        sent = 0
        best: w6.Message | None = None
        while True:
            self._send(msg_type, options, since)
            sent += 1
            until = min(end, trio.current_time() + rt)
            with trio.move_on_at(until):
                while True:
                    msg = await self._inbox.receive()
                    if not self._acceptable(msg, types, server):
                        continue
                    if not collect:
                        return msg
                    if msg.preference == 255 or (sent > 1 and best is None):
                        return msg
                    if best is None or msg.preference > best.preference:
                        best = msg
            if best is not None:
                return best
            if (mrc and sent >= mrc) or trio.current_time() >= end:
                return None
            rt = 2 * rt + random.uniform(-0.1, 0.1) * rt
            if mrt and rt > mrt * scale:
                rt = mrt * scale * (1 + random.uniform(-0.1, 0.1))

    # -- the state machine --------------------------------------------------------------
    async def run(self) -> None:
        if not self.iface.up:
            self.iface.set_flags(IFF_UP)
        try:
            with self.scope:
                await self._wait_link_local()
                if self.stateful:
                    await self._run_stateful()
                else:
                    await self._run_stateless()
        finally:
            self.service.forget_xid(self.xid)

    async def _wait_link_local(self) -> None:
        manage = self.service.stack.inet6.manage
        while True:
            try:
                if any(is_link_local(ia.addr) and ia.usable
                       for ia in manage.addresses(self.iface.name)):
                    return
            except OSError:
                pass
            await trio.sleep(0.05)

    def _oro(self) -> bytes:
        return w6.oro([w6.OPT_DNS_SERVERS, w6.OPT_DOMAIN_LIST]
                      + ([] if self.stateful else [w6.OPT_INFO_REFRESH_TIME]))

    def _take_dns(self, msg: w6.Message) -> None:
        self.dns = [_addr(b) for b in msg.dns_servers()]
        self.domains = msg.domains()
        self.service.set_dns(self)

    async def _run_stateless(self) -> None:
        while True:
            self.state = INFORMING
            reply = await self._exchange(w6.INFORMATION_REQUEST, [self._oro()],
                                         (w6.REPLY,), INF_TIMEOUT, INF_MAX_RT)
            assert reply is not None  # no MRC/MRD: it keeps asking
            self.server_duid = reply.bytes_of(w6.OPT_SERVERID) or b""
            self._take_dns(reply)
            refresh = reply.refresh_time()
            if refresh is None:
                refresh = IRT_DEFAULT
            refresh = max(refresh, int(self.service.k_irt_minimum.value))
            self.state = CONFIGURED
            self.configured.set()
            self.refresh_at = trio.current_time() + refresh if refresh != INFINITY \
                else float("inf")
            with trio.move_on_at(self.refresh_at):
                await self.renew_now.wait()
            self.renew_now = trio.Event()
            self.counters["v6_info_refreshed"] += 1

    async def _run_stateful(self) -> None:
        while True:
            self.state = SOLICITING
            adv = await self._exchange(
                w6.SOLICIT, [self._oro(), w6.ia_na(IAID)], (w6.ADVERTISE,),
                SOL_TIMEOUT, SOL_MAX_RT, collect=True)
            assert adv is not None
            offer = _offered(adv)
            if offer is None:
                self.counters["v6_no_addrs_avail"] += 1
                self.last_error = f"no address offered: {adv.message or 'NoAddrsAvail'}"
                await trio.sleep(SOL_TIMEOUT * self.service.time_scale())
                continue
            sid = adv.bytes_of(w6.OPT_SERVERID) or b""
            self.state = REQUESTING
            _ia, a = offer
            reply = await self._exchange(
                w6.REQUEST, [w6.option(w6.OPT_SERVERID, sid), self._oro(),
                             w6.ia_na(IAID, 0, 0, [w6.IaAddr(a.address, 0, 0)])],
                (w6.REPLY,), REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC, server=sid)
            lease = self._lease_of(reply, sid) if reply is not None else None
            if lease is None:
                continue
            self.state = CHECKING
            if not await self.service.install(self, lease):
                await self._decline(lease)
                continue
            await self._bound(lease)

    def _lease_of(self, reply: w6.Message, sid: bytes) -> Lease6 | None:
        if reply.status != w6.STATUS_SUCCESS:
            self.last_error = f"status {reply.status}: {reply.message}"
            return None
        got = _offered(reply)
        if got is None:
            self.counters["v6_no_addrs_avail"] += 1
            self.last_error = "reply without an address"
            return None
        ia, a = got
        t1, t2 = _times(ia, a)
        now = trio.current_time()
        return Lease6(_addr(a.address), sid, a.preferred, a.valid, t1, t2,
                      [_addr(b) for b in reply.dns_servers()], reply.domains(), now, time.time())

    async def _decline(self, lease: Lease6) -> None:
        self.declines += 1
        self.counters["v6_dad_failed"] += 1
        self.last_error = f"declined {format_addr(lease.address)} (DAD failed)"
        log.warning("%s: %s is in use by another host: declining it", self.iface.name,
                    format_addr(lease.address))
        self.state = DECLINING
        raw = lease.address.to_bytes(16, "big")
        await self._exchange(
            w6.DECLINE, [w6.option(w6.OPT_SERVERID, lease.server_duid),
                         w6.ia_na(IAID, 0, 0, [w6.IaAddr(raw, 0, 0)])],
            (w6.REPLY,), DEC_TIMEOUT, mrc=DEC_MAX_RC, server=lease.server_duid)

    async def _bound(self, lease: Lease6) -> None:
        """BOUND → RENEW → REBIND until the lease ends (returns: solicit again)."""
        while True:
            self.lease = lease
            self.server_duid = lease.server_duid
            self.state = BOUND
            self.configured.set()
            with trio.move_on_at(lease.deadline(lease.t1)):
                await self.renew_now.wait()
            self.renew_now = trio.Event()
            raw = lease.address.to_bytes(16, "big")
            ia = w6.ia_na(IAID, 0, 0, [w6.IaAddr(raw, 0, 0)])
            self.state = RENEWING
            now = trio.current_time()
            reply = await self._exchange(
                w6.RENEW, [w6.option(w6.OPT_SERVERID, lease.server_duid), self._oro(), ia],
                (w6.REPLY,), REN_TIMEOUT, REN_MAX_RT,
                mrd=max(1.0, lease.deadline(lease.t2) - now), server=lease.server_duid)
            rebound = False
            if reply is None or self._lease_of(reply, lease.server_duid) is None:
                self.state = REBINDING
                now = trio.current_time()
                reply = await self._exchange(
                    w6.REBIND, [self._oro(), ia], (w6.REPLY,), REB_TIMEOUT,
                    REB_MAX_RT, mrd=max(1.0, lease.deadline(lease.valid) - now))
                rebound = True
            new = None
            if reply is not None:
                new = self._lease_of(reply, reply.bytes_of(w6.OPT_SERVERID) or b"")
            if new is None or new.address != lease.address or new.valid == 0:
                self.counters["v6_lease_expired"] += 1
                self.last_error = "lease expired" if reply is None else "not renewed"
                self.service.uninstall(self)
                self.lease = None
                return
            self.counters["v6_rebound" if rebound else "v6_renewed"] += 1
            lease = new
            await self.service.install(self, lease)

    def release(self) -> None:
        """RELEASE to the servers (one transmission: the stack may be stopping), then
        the address goes."""
        lease = self.lease
        if lease is not None and self.state in (BOUND, RENEWING, REBINDING):
            self._new_xid()
            raw = lease.address.to_bytes(16, "big")
            self._send(w6.RELEASE, [w6.option(w6.OPT_SERVERID, lease.server_duid),
                                    w6.ia_na(IAID, 0, 0, [w6.IaAddr(raw, 0, 0)])],
                       trio.current_time())
        self.service.uninstall(self)
        self.lease = None
        self.state = STOPPED

    # -- config/dhcp/v6/IF -------------------------------------------------------------
    def render(self) -> str:
        now = trio.current_time()
        lines = [f"interface {self.iface.name}",
                 f"mode {'stateful' if self.stateful else 'stateless'}",
                 f"state {self.state}", f"xid {self.xid:#08x}", f"duid {self.duid.hex()}",
                 f"server_duid {self.server_duid.hex() or '-'}"]
        lease = self.lease
        dns, domains = self.dns, self.domains
        if lease is not None:
            dns, domains = lease.dns, lease.domains

            def left(t: int) -> str:
                d = lease.deadline(t)
                return "infinite" if d == float("inf") else f"{max(0.0, d - now):.0f}"

            lines += [
                f"address {format_addr(lease.address)}/128",
                f"preferred {lease.preferred}", f"valid {lease.valid}",
                f"t1 {lease.t1}", f"t2 {lease.t2}",
                "obtained " + time.strftime("%Y-%m-%dT%H:%M:%S",
                                            time.localtime(lease.obtained_wall)),
                f"renew_in {left(lease.t1)}", f"rebind_in {left(lease.t2)}",
                f"expires_in {left(lease.valid)}",
            ]
        lines += [f"dns {' '.join(format_addr(a) for a in dns) or '-'}",
                  f"domains {' '.join(domains) or '-'}"]
        if not self.stateful:
            r = self.refresh_at
            lines.append("refresh_in " + ("-" if r == float("inf") else f"{max(0.0, r - now):.0f}"))
        lines.append(f"declines {self.declines}")
        if self.last_error:
            lines.append(f"last_error {self.last_error}")
        return "\n".join(lines) + "\n"


def _offered(msg: w6.Message) -> tuple[w6.IaNa, w6.IaAddr] | None:
    """The first usable address of our IA_NA (status success, valid lifetime > 0)."""
    for ia in msg.ia_na:
        if ia.iaid != IAID or ia.status != w6.STATUS_SUCCESS:
            continue
        for a in ia.addrs:
            if a.status == w6.STATUS_SUCCESS and a.valid and a.preferred <= a.valid:
                return ia, a
    return None


class Dhcp6(ClientService[Client6]):
    """The DHCPv6 clients of one stack and their socket (UDP [::]:546)."""

    label = "DHCPv6"

    def __init__(self, stack: Stack, counters: Counters) -> None:
        super().__init__(stack, log)
        self.counters = counters
        reg = stack.sysctl.register
        self.k_ra_start = reg("net.inet6.dhcp6.ra_start", 1,
                              "start DHCPv6 when an RA has the M (stateful) or O (stateless) flag",
                              lo=0, hi=1)
        self.k_irt_minimum = reg("net.inet6.dhcp6.irt_minimum", 600,
                                 "shortest information refresh time (s, RFC 8415 IRT_MINIMUM)",
                                 lo=1)
        self.k_time_scale = reg("net.inet6.dhcp6.timeout_pct", 100,
                                "retransmission times in percent of RFC 8415's", lo=1, hi=1000)
        self.k_duid_llt = reg("net.inet6.dhcp6.duid_llt", 0,
                              "client DUID: 0 DUID-LL, 1 DUID-LLT", lo=0, hi=1)
        self._llt_time = int(time.time()) - 946684800  # seconds since 2000-01-01 UTC
        self.dir = Directory(dynamic=self._entries)
        self.dir.add("ctl", ControlFile(self._command, self._render_all, mode=0o644))

    def time_scale(self) -> float:
        return int(self.k_time_scale.value) / 100

    def duid(self, iface: Interface) -> bytes:
        if int(self.k_duid_llt.value):
            return w6.duid_llt(iface.mac, self._llt_time)
        return w6.duid_ll(iface.mac)

    # -- the socket ---------------------------------------------------------------------------
    def _make_socket(self) -> UDPSocket:
        sock = self.stack.udp.socket(AF_INET6)
        sock.setsockopt(_std.SOL_SOCKET, _std.SO_REUSEADDR, 1)
        sock.bind(("::", w6.CLIENT_PORT))
        return sock

    def dispatch(self, data: bytes) -> None:
        c = self.counters
        c["v6_in_packets"] += 1
        try:
            msg = w6.parse(data)
        except w6.Dhcp6Error as exc:
            c[f"v6_drop_{exc.reason}"] += 1
            return
        client = self._xids.get(msg.xid)
        if client is None:
            c["v6_drop_bad_xid"] += 1
            return
        client.deliver(msg)

    def send(self, iface: Interface, data: bytes) -> bool:
        sock = self.sock
        if sock is None:
            return False
        try:
            sock.sendto_nowait(data, ScopedEndpoint(ALL_SERVERS, w6.SERVER_PORT, iface.index))
        except OSError as exc:
            self.counters["v6_send_errors"] += 1
            log.debug("%s: DHCPv6 send: %s", iface.name, exc.strerror)
            return False
        return True

    # -- clients ----------------------------------------------------------------------------
    def start(self, ifname: str, *, stateful: bool = True) -> Client6:
        iface = self.stack.interfaces.get(ifname)
        if iface is None:
            raise OSError(errno.ENXIO, f"no interface {ifname}")
        if getattr(self.stack, "inet6", None) is None:
            raise OSError(errno.EAFNOSUPPORT, "no IPv6 in this stack")
        old = self.clients.get(ifname)
        if old is not None:
            if old.stateful == stateful:
                return old
            self.stop(ifname)
        client = Client6(self, iface, stateful)
        self.counters["v6_clients_started"] += 1
        self._launch(client)
        return client

    def stop(self, ifname: str, *, release: bool = True) -> None:
        client = self.clients.pop(ifname, None)
        if client is None:
            raise OSError(errno.ESRCH, f"no DHCPv6 client on {ifname}")
        self.counters["v6_clients_stopped"] += 1
        if release:
            client.release()
        else:
            self.uninstall(client)
        client.scope.cancel()
        self._close_if_idle()

    def ra_flags(self, iface: Interface, managed: bool, other: bool) -> None:
        """An RA with the M or O flag (stack/inet6/nd.py): start a client if none runs
        (M: stateful, O: stateless; a stateless one becomes stateful on M)."""
        if not int(self.k_ra_start.value) or not (managed or other):
            return
        cur = self.clients.get(iface.name)
        if cur is not None and (cur.stateful or not managed):
            return
        try:
            self.start(iface.name, stateful=managed)
        except OSError as exc:
            log.debug("%s: DHCPv6 not started: %s", iface.name, exc.strerror)
            return
        self.counters["v6_ra_started"] += 1

    def on_iface(self, event: str, iface: Interface) -> None:
        if event == "detach" and iface.name in self.clients:
            self.stop(iface.name, release=True)

    def shutdown(self) -> None:
        for name in list(self.clients):
            self.stop(name, release=True)

    # -- what a lease installs ----------------------------------------------------------
    async def install(self, client: Client6, lease: Lease6) -> bool:
        """Put the address on (DAD first for a new one): False when DAD failed."""
        manage = self.stack.inet6.manage
        name = client.iface.name
        old = client.lease
        if old is not None and old.address != lease.address:
            self.uninstall(client)
        existing = [ia for ia in manage.addresses(name) if ia.addr == lease.address]
        if existing:
            ia = existing[0]
            now = trio.current_time()
            ia.valid_until = lease.deadline(lease.valid) if lease.valid != INFINITY \
                else float("inf")
            ia.preferred_until = now + lease.preferred if lease.preferred != INFINITY \
                else float("inf")
            self.stack.inet6.addrconf._arm_lifetimes(ia)
        else:
            try:
                manage.add_address(name, Prefix(lease.address, 128),
                                   valid=None if lease.valid == INFINITY else lease.valid,
                                   preferred=None if lease.preferred == INFINITY
                                   else lease.preferred)
                await manage.wait_usable(name, lease.address, timeout=10.0)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:  # duplicated
                    try:
                        manage.remove_address(name, lease.address)
                    except OSError:
                        pass
                    return False
                self.counters["v6_install_errors"] += 1
                client.last_error = f"install: {exc.strerror}"
        client.lease = lease
        client.dns, client.domains = lease.dns, lease.domains
        self.set_dns(client)
        log.info("%s: DHCPv6 address %s, valid %ss", name, format_addr(lease.address),
                 lease.valid)
        return True

    def set_dns(self, client: Client6) -> None:
        res = self.stack.services.get(RESOLVER)
        if res is None:
            return
        name = client.iface.name
        servers = [format_addr(a) + (f"%{name}" if is_link_local(a) else "")
                   for a in client.dns]
        res.set_source(f"dhcp6:{name}", nameservers=servers, search=list(client.domains))

    def uninstall(self, client: Client6) -> None:
        name = client.iface.name
        res = self.stack.services.get(RESOLVER)
        if res is not None:
            res.clear_source(f"dhcp6:{name}")
        lease = client.lease
        if lease is None or name not in self.stack.interfaces:
            return
        try:
            self.stack.inet6.manage.remove_address(name, lease.address)
        except OSError:
            pass

    # -- files ------------------------------------------------------------------------------
    def _entries(self) -> dict[str, Node]:
        return {name: TextFile(c.render) for name, c in list(self.clients.items())}

    def _render_all(self) -> str:
        return "".join(c.render() + "\n" for c in self.clients.values()) or "no clients\n"

    def _command(self, text: str, caller: Caller) -> str:
        words = text.split()
        verbs = ("start", "info", "stop", "release", "keep", "renew")
        if len(words) != 2 or words[0] not in verbs:
            raise OSError(errno.EINVAL, "expected: start IF | info IF | stop IF | "
                                        "release IF | keep IF | renew IF")
        if not caller.is_root:
            raise OSError(errno.EPERM, "DHCPv6 needs root")
        verb, ifname = words
        if verb in ("start", "info"):
            return f"{ifname} {self.start(ifname, stateful=verb == 'start').state}\n"
        if verb in ("stop", "release"):
            self.stop(ifname, release=True)
        elif verb == "keep":
            self.stop(ifname, release=False)
        else:
            running = self.clients.get(ifname)
            if running is None:
                raise OSError(errno.ESRCH, f"no DHCPv6 client on {ifname}")
            running.renew_now.set()
        return "ok\n"
